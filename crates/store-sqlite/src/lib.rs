//! The embedded SQLite backend: one file, WAL mode, `synchronous=FULL` by default so that an
//! acknowledged write survives power loss.
//!
//! # Layout
//!
//! The same module names as the PostgreSQL backend, one area each: `insert`, `claim`,
//! `finish`, `cancel` (and deadlines), `requeue`, `read`, `logs`, `limits` (circuits,
//! budgets), `notifications`, `schedules`, `access`, `stats`, `decode` (rows to values),
//! `migrate`, and `tx` (the one writer and its group commit). This file holds
//! [`SqliteStore`] and the [`JobWriter`] methods too small for a module of their own.
//! `migrations/` is the schema; `queries/` the longer statements, with the same file names
//! as the PostgreSQL backend's.
//!
//! One process owns a database file: [`SqliteStore::open`] takes an exclusive lock on
//! `<file>.lock`, which is what makes rescuing every `running` job at start correct.
//!
//! # Tuning
//!
//! Why two connections: rusqlite is blocking, so every call runs in `spawn_blocking`.
//! Writes go through one connection (SQLite has one writer anyway, and `BEGIN IMMEDIATE`
//! makes the transaction take the write lock up front), reads through another, which WAL
//! lets proceed while a write is in flight. Both sit behind `std::sync::Mutex`es that are
//! never held across an `.await`.
//!
//! Group commit: a write call queues its closure; whichever blocking task gets the writer
//! next runs every queued closure in one transaction, each inside its own savepoint (an
//! error rolls back that call only) except claims, results and batches of new jobs, which
//! check what they may refuse before they write (see `tx::commit_in_one_transaction`), and
//! commits once: one
//! fsync for the group under `synchronous=FULL`. Savepoints' statement journals stay in
//! memory (`temp_store = MEMORY`): in a temporary file they were two of every three
//! `pwrite` calls of a drain. Replies are sent after the commit, so a call that returned is
//! durable, with one exception: a group made only of claims commits at `synchronous=NORMAL`
//! (no fsync of its own; the next durable commit's fsync covers it). Power loss can take
//! the newest claims, whose jobs are then claimed and run again: at least once, as on
//! PostgreSQL, where claims commit asynchronously. A retry's claim so never waits for a
//! flush of its own. The claim, wake-up, deadline and lease queries name their partial
//! index (`INDEXED BY`): without statistics the planner picks `jobs_list` and reads every
//! job in the state.
//!
//! Index predicates: SQLite checks a partial index's predicate for the old and the new
//! version of every row an UPDATE changes, and evaluates an `IN` list of more than two
//! constants through a temporary b-tree built anew each time. A predicate on a write path
//! is therefore a chain of comparisons (migration 0014): with `IN` lists, every change of a
//! job's state built six such b-trees, and the drain ran 30 % slower.
//! `tests/index_predicates.rs` keeps every write to a table with a partial index free of
//! them.
//!
//! Statement journals: inside a transaction, a statement that writes a table and its indexes
//! and may stop on a constraint with the default `ABORT` copies every page it changes into a
//! statement journal first, to undo its own half-done writes. A single-row statement checks
//! all its constraints before it writes anything, so the writes on every job's path (a new
//! job, its events, its attempts, the claim's and the result's updates, its log lines) are
//! `INSERT OR FAIL` / `UPDATE OR FAIL`: the same outcome, no journal. Bulk enqueue ran 19 %
//! faster.

mod access;
mod cancel;
mod claim;
mod decode;
mod finish;
mod insert;
mod limits;
mod logs;
mod migrate;
mod notifications;
mod read;
mod requeue;
mod schedules;
mod stats;
mod tx;

use decode::*;
use finish::*;
use limits::*;
use logs::*;
use migrate::*;
use notifications::*;
use stats::*;
use tx::*;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use retryd_core::Role;
use retryd_core::job::{Attempt, Event, Job, LogLine, NewJob, Stream};
use retryd_core::org::Org;
use retryd_core::schedule::{Progress, Schedule};
use retryd_core::{AttemptOutcome, Class, JobId, JobState};
use retryd_store::group::GroupQueue;
use retryd_store::notify::lost_delivery;
use retryd_store::rows::{AttemptRow, ClaimRow, FinishRow, ResultLines};
use retryd_store::rules::{CircuitChange, TargetUsage};
use retryd_store::stats::{Bucket, ErrorGroup, FinishedGroup, TOP_ERRORS};
use retryd_store::{
    AccessStore, AttemptResult, Circuit, CircuitConfig, CircuitOutage, ClaimRequest, Claimed,
    ClaimedDelivery, DeliveryAttempt, DeliveryResult, DeliveryState, Error, Inserted, JobFilter,
    JobReader, JobWriter, Lease, NewLogLine, NewNotification, Notification, NotificationStore,
    Page, Process, Renewal, Requeue, Result, Runnable, ScheduleStore, Signals, StatsQuery,
    StatsRows, Store, StoredChannel, StoredPolicy, TargetLimits, TokenRecord, Wakeups, rules,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const JOB_COLUMNS: &str = "id, queue, kind, target, action, policy_name, policy, priority, run_at, deadline, \
     labels, idempotency_key, created_by, state, attempt, next_attempt_at, last_error, last_error_class, \
     last_rule, finish_reason, lease_owner, lease_expires_at, cancel_requested, created_at, started_at, \
     finished_at, updated_at, current_attempt_id, steps, step_attempt_base, hold_reason, org";

fn with_columns(query: &str) -> String {
    query.replace("{JOB_COLUMNS}", JOB_COLUMNS)
}

/// How hard SQLite works to make each commit durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// WAL's `NORMAL`: survives a process crash, may lose the last commits on power loss.
    Normal,
}

pub struct SqliteStore {
    // Behind std Mutexes: each is used only inside spawn_blocking, never across .await.
    writer: Arc<Mutex<Connection>>,
    /// Writes waiting for the next group commit.
    queue: WriteQueue,
    reader: Arc<Mutex<Connection>>,
    /// The configured durability; a group of claims alone commits at `NORMAL`.
    synchronous: Synchronous,
    path: PathBuf,
    /// Held for the store's lifetime: the OS releases it if the process dies.
    _lock: File,
    signals: Signals,
}

/// An instant as this backend stores it: to the milliseconds. A row derived instead of
/// read back (an insert's, a claim's, a result's) carries instants cut the same way.
fn stored_instant(t: DateTime<Utc>) -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(t, 3)
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn to_store(e: rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, inner) => Error::Corrupt(inner.to_string()),
        other => backend(other),
    }
}

fn load_job(conn: &Connection, id: JobId) -> Result<Job> {
    // Cached: every result reads its job twice.
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row([id.to_string()], job_from_row))
        .optional()
        .map_err(to_store)?
        .ok_or(Error::NotFound(id))
}

/// Runs a statement through the connection's statement cache: parsing the SQL again on every
/// write showed in the profile (the text is constant, or built only from constants).
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

// One parameter per column: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
fn insert_event(
    conn: &Connection,
    id: JobId,
    at: DateTime<Utc>,
    from: Option<JobState>,
    to: JobState,
    reason: &str,
    actor: &str,
    step: Option<String>,
) -> Result<Event> {
    let mut event = Event {
        id: 0,
        job_id: id,
        at,
        from,
        to,
        reason: reason.to_owned(),
        actor: actor.to_owned(),
        step,
    };
    event.id = write_event(conn, &event)?;
    Ok(event)
}

/// Writes `event` (its id aside); answers the id it was given.
fn write_event(conn: &Connection, event: &Event) -> Result<i64> {
    exec(
        conn,
        "INSERT OR FAIL INTO events (job_id, at, from_state, to_state, reason, actor, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            event.job_id.to_string(),
            ms(event.at),
            event.from.map(JobState::as_str),
            event.to.as_str(),
            event.reason,
            event.actor,
            event.step
        ],
    )
    .map_err(to_store)?;
    Ok(conn.last_insert_rowid())
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "PRAGMA synchronous = FULL",
            Synchronous::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

fn open_connection(path: &Path, synchronous: Synchronous) -> Result<Connection> {
    let conn = Connection::open(path).map_err(backend)?;
    // temp_store = MEMORY: every write of a group runs in a savepoint, and SQLite keeps the
    // savepoint's undo copy of each page it changes in a statement journal, a temporary
    // file by default. That was two of every three pwrite calls of a drain (18 page copies
    // a job) and most of a bulk insert's time; in memory it costs a page per page changed,
    // for as long as one write runs.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; {}; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        synchronous.pragma()
    ))
    .map_err(backend)?;
    // Every query of this backend stays prepared.
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies migrations. Fails if another
    /// process holds the file.
    pub fn open(path: impl AsRef<Path>, synchronous: Synchronous) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::Backend(format!("cannot open {}: {e}", lock_path.display())))?;
        // A killed server's child may still hold the descriptor for a moment (forked, not
        // exec'd yet): a restart waits that out rather than failing.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let mut locked = lock.try_lock();
        while locked.is_err() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
            locked = lock.try_lock();
        }
        locked.map_err(|_| {
            Error::Conflict(format!(
                "{} is in use by another retryd process (lock {} is held); SQLite serves one node, use PostgreSQL to share work",
                path.display(),
                lock_path.display()
            ))
        })?;
        let mut writer = open_connection(&path, synchronous)?;
        migrate(&mut writer)?;
        let reader = open_connection(&path, synchronous)?;
        Ok(SqliteStore {
            writer: Arc::new(Mutex::new(writer)),
            queue: Arc::default(),
            reader: Arc::new(Mutex::new(reader)),
            synchronous,
            path,
            _lock: lock,
            signals: Signals::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` atomically on the writer connection, as a savepoint of a group commit.
    ///
    /// Group commit: each call queues its closure, then one blocking task takes the writer
    /// and runs every queued closure in one `BEGIN IMMEDIATE` transaction, each in its own
    /// savepoint (an error rolls back that closure only), and commits once. With
    /// `synchronous=FULL` that is one fsync for the whole group instead of one per call.
    /// While a group commits, the next calls queue up and form the next group, so a lone
    /// call waits for no one. A result is sent only after its group's commit: when `write`
    /// returns, the change is as durable as before.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.queue_write(f, true, true).await
    }

    /// [`write`](Self::write) for a claim: as atomic, but see [`commit_group`] on durability;
    /// without a savepoint, as [`write_checked`](Self::write_checked).
    async fn write_claim<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.queue_write(f, false, false).await
    }

    /// [`write`](Self::write) without a savepoint of its own, for the writes on every job's
    /// path (results, batches of new jobs): `f` must check all it may refuse before it
    /// writes (see [`commit_in_one_transaction`]).
    async fn write_checked<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.queue_write(f, true, false).await
    }

    async fn queue_write<T, F>(&self, f: F, durable: bool, savepoint: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let op: WriteOp = Box::new(move |conn| f(conn).map(|v| Box::new(v) as Box<dyn Any + Send>));
        if self.queue.push(Queued {
            op,
            reply,
            durable,
            savepoint,
        }) {
            let conn = self.writer.clone();
            let queue = self.queue.clone();
            let synchronous = self.synchronous;
            tokio::task::spawn_blocking(move || commit_groups(&conn, &queue, synchronous));
        }
        match rx.await {
            Ok(result) => result.map(|v| *v.downcast::<T>().expect("the type this call queued")),
            Err(_) => Err(backend("the write was dropped (the writer panicked)")),
        }
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .map_err(|_| backend("reader connection poisoned"))?;
            f(&conn)
        })
        .await
        .map_err(backend)?
    }
}

fn delete_jobs_where(
    tx: &Connection,
    condition: &str,
    params: impl rusqlite::Params + Clone,
) -> Result<u64> {
    for child in ["attempts", "events", "log_lines", "notifications"] {
        exec(
            tx,
            &format!("DELETE FROM {child} WHERE job_id IN (SELECT id FROM jobs WHERE {condition})"),
            params.clone(),
        )
        .map_err(to_store)?;
    }
    let n = tx
        .execute(&format!("DELETE FROM jobs WHERE {condition}"), params)
        .map_err(to_store)?;
    Ok(n as u64)
}

#[async_trait]
impl JobWriter for SqliteStore {
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<Inserted>> {
        self.insert(jobs).await
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        self.claim(request).await
    }

    async fn renew_leases(
        &self,
        node: &str,
        attempt_ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> Result<Renewal> {
        let node = node.to_owned();
        let named = attempt_ids.to_vec();
        let attempts = json(&attempt_ids);
        self.write(move |tx| {
            const HELD: &str = "state = 'running' AND lease_owner = ?1 AND current_attempt_id IN (SELECT value FROM json_each(?2))";
            exec(tx, &format!("UPDATE jobs SET lease_expires_at = ?3 WHERE {HELD}"), params![node, attempts, ms(lease_until)])
                .map_err(to_store)?;
            let mut stmt = tx
                .prepare_cached(&format!("SELECT current_attempt_id, id, cancel_requested FROM jobs WHERE {HELD}"))
                .map_err(to_store)?;
            let rows = stmt
                .query_map(params![node, attempts], |r| Ok((r.get(0)?, id_col(r, 1)?, r.get(2)?)))
                .map_err(to_store)?;
            let renewed: Vec<(i64, JobId, bool)> = rows.collect::<rusqlite::Result<_>>().map_err(to_store)?;
            Ok(rules::renewal(&named, &renewed))
        })
        .await
    }

    async fn finish_attempt(&self, result: &AttemptResult) -> Result<(Job, Event)> {
        let result = result.clone();
        // The attempt's lines are kept even when its result is refused: they are what it
        // did. So a refusal commits (the inner result), unlike other errors.
        // Without a savepoint: everything it may refuse is checked before its first write.
        self.write_checked(move |tx| {
            let lease = &result.lease;
            let job = load_job(tx, lease.job_id)?;
            let held = rules::fence_holds(&job, lease, result.fence);
            let to = if held { Some(job.state.transition(result.next.state())?) } else { None };
            let seqs = reserve_seqs(tx, result.log.lines.len())?;
            let mut lines = ResultLines::of(&result.log, &seqs, to.is_some());
            insert_log_rows(tx, lease, &lines.rows)?;
            let Some(to) = to else {
                return Ok(Err(Error::LeaseLost { job_id: job.id, attempt_id: lease.attempt_id }));
            };
            let mut row = FinishRow::of(&job, to, &result);
            row.attempt.keep(&mut lines);
            finish_attempt_row(tx, &row.attempt)?;
            if let (Some(target), Some(config)) = (&job.target, &result.circuit) {
                update_circuit(tx, target, lease.attempt_id, row.attempt.target_failed, config, result.now)?;
            }
            for notification in &result.notify {
                enqueue(tx, job.id, notification, result.now)?;
            }
            let now = ms(row.attempt.finished_at);
            exec(tx,
                "UPDATE OR FAIL jobs SET state = ?2, next_attempt_at = ?3, steps = ?11, hold_reason = NULL, \
                 last_error = CASE WHEN ?4 IS NULL THEN last_error ELSE ?4 END, \
                 last_error_class = CASE WHEN ?4 IS NULL THEN last_error_class ELSE ?5 END, \
                 last_rule = CASE WHEN ?4 IS NULL THEN last_rule ELSE ?6 END, \
                 finish_reason = ?7, finished_at = ?8, lease_owner = NULL, lease_expires_at = NULL, \
                 current_attempt_id = NULL, cancel_requested = 0, updated_at = ?9, attempt = attempt - ?10 WHERE id = ?1",
                params![
                    row.job_id.to_string(),
                    row.to.as_str(),
                    opt_ms(row.attempt.next.at),
                    row.attempt.error,
                    row.attempt.class,
                    row.attempt.rule,
                    row.finish_reason,
                    opt_ms(row.finished_at),
                    now,
                    row.attempt.next.refund,
                    json(&row.steps),
                ],
            )
            .map_err(to_store)?;
            let event = insert_event(tx, job.id, result.now, Some(row.from), row.to, &row.reason, &row.actor, row.step.clone())?;
            Ok(Ok((row.finished(job, stored_instant), event)))
        })
        .await?
    }

    async fn advance_step(
        &self,
        result: &AttemptResult,
        next_step: &str,
    ) -> Result<(Job, Lease, Event)> {
        let result = result.clone();
        let next_step = next_step.to_owned();
        self.write(move |tx| {
            let lease = &result.lease;
            let job = load_job(tx, lease.job_id)?;
            let record = rules::check_advance(&job, &result)?;
            finish_attempt_row(tx, &AttemptRow::of(&result, None))?;
            insert_log_lines(tx, lease, result.log.first_index, &result.log.lines)?;
            let number = job.attempt + 1;
            let now = ms(result.now);
            exec(tx,
                "INSERT INTO attempts (job_id, number, step, node, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![job.id.to_string(), number, next_step, lease.node, now],
            )
            .map_err(to_store)?;
            let attempt_id = tx.last_insert_rowid();
            exec(tx,
                "UPDATE jobs SET steps = ?2, step_attempt_base = attempt, attempt = ?3, current_attempt_id = ?4, \
                 last_error = COALESCE(?5, last_error), last_error_class = COALESCE(?6, last_error_class), \
                 last_rule = COALESCE(?7, last_rule), updated_at = ?8 WHERE id = ?1",
                params![
                    job.id.to_string(),
                    json(&rules::steps_after(&job, Some(&record))),
                    number,
                    attempt_id,
                    result.error,
                    result.class.map(Class::as_str),
                    result.rule,
                    now,
                ],
            )
            .map_err(to_store)?;
            let event = insert_event(tx, job.id, result.now, Some(job.state), job.state, &result.reason, &result.actor, Some(next_step.clone()))?;
            let lease = Lease { job_id: job.id, attempt_id, attempt: number, node: lease.node.clone() };
            Ok((load_job(tx, job.id)?, lease, event))
        })
        .await
    }

    async fn cancel_job(
        &self,
        id: JobId,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(Job, Option<Event>)> {
        self.cancel(id, actor, now).await
    }

    async fn requeue_job(&self, id: JobId, requeue: &Requeue) -> Result<(Job, Option<Event>)> {
        self.requeue(id, requeue).await
    }

    async fn expire_jobs(&self, now: DateTime<Utc>) -> Result<Vec<(Job, Event)>> {
        self.expire(now).await
    }

    async fn prune_jobs(&self, finished_before: &BTreeMap<JobState, DateTime<Utc>>) -> Result<u64> {
        let cutoffs: Vec<(JobState, i64)> = finished_before
            .iter()
            .filter(|(state, _)| state.is_terminal())
            .map(|(state, at)| (*state, ms(*at)))
            .collect();
        self.write(move |tx| {
            let mut total = 0;
            for (state, cutoff) in &cutoffs {
                total += delete_jobs_where(
                    tx,
                    "state = ?1 AND finished_at < ?2",
                    params![state.as_str(), cutoff],
                )?;
            }
            Ok(total)
        })
        .await
    }

    async fn purge_jobs(&self, ids: &[JobId]) -> Result<u64> {
        let ids = json(&ids.iter().map(JobId::to_string).collect::<Vec<_>>());
        self.write(move |tx| {
            delete_jobs_where(
                tx,
                "id IN (SELECT value FROM json_each(?1)) AND state IN ('succeeded', 'failed', 'cancelled', 'expired')",
                [ids],
            )
        })
        .await
    }

    async fn close_circuit(&self, target: &str, actor: &str, now: DateTime<Utc>) -> Result<bool> {
        let (target, closed_by) = (target.to_owned(), retryd_store::closed_by(Some(actor)));
        self.write(move |tx| close_circuit_rows(tx, &target, &closed_by, now))
            .await
    }

    async fn set_queue_paused(
        &self,
        org: &str,
        queue: &str,
        paused: bool,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (org, queue, actor) = (org.to_owned(), queue.to_owned(), actor.to_owned());
        self.write(move |tx| {
            exec(
                tx,
                "INSERT INTO queues (name, paused, updated_at, updated_by, org) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (org, name) DO UPDATE SET paused = ?2, updated_at = ?3, updated_by = ?4",
                params![queue, paused, ms(now), actor, org],
            )
            .map_err(to_store)?;
            Ok(())
        })
        .await
    }

    async fn record_process(&self, lease: &Lease, process: &Process) -> Result<()> {
        let lease = lease.clone();
        let process = process.clone();
        // Like a claim, it need not survive power loss (see `commit_group`): the process
        // it names does not either. It is on the way of the command's start.
        self.write_claim(move |tx| {
            let recorded = exec(
                tx,
                "UPDATE attempts SET pid = ?2, pid_started = ?3, pid_host = ?4 WHERE id = ?1 \
                 AND EXISTS (SELECT 1 FROM jobs WHERE id = ?5 AND state = 'running' \
                 AND current_attempt_id = ?1 AND lease_owner = ?6)",
                params![
                    lease.attempt_id,
                    process.pid,
                    process.started as i64,
                    process.host,
                    lease.job_id.to_string(),
                    lease.node
                ],
            )
            .map_err(to_store)?;
            if recorded == 0 {
                return Err(Error::LeaseLost {
                    job_id: lease.job_id,
                    attempt_id: lease.attempt_id,
                });
            }
            Ok(())
        })
        .await
    }

    async fn append_log(
        &self,
        lease: &Lease,
        first_index: u64,
        lines: &[NewLogLine],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let lease = lease.clone();
        let lines = lines.to_vec();
        self.write(move |tx| insert_log_lines(tx, &lease, first_index, &lines))
            .await
    }

    async fn trim_log(&self, lease: &Lease, before_index: u64) -> Result<()> {
        let attempt_id = lease.attempt_id;
        self.write(move |tx| {
            exec(
                tx,
                "DELETE FROM log_lines WHERE attempt_id = ?1 AND idx < ?2",
                params![attempt_id, before_index as i64],
            )
            .map_err(to_store)?;
            Ok(())
        })
        .await
    }
}

impl Store for SqliteStore {
    fn is_exclusive(&self) -> bool {
        true
    }

    fn signals(&self) -> &Signals {
        &self.signals
    }
}

fn unique_violation(e: rusqlite::Error, what: &str) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            Error::Conflict(format!("{what} already exists"))
        }
        other => to_store(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use retryd_store::conformance::{claim_request, new_job};

    fn writer_level(store: &SqliteStore) -> i64 {
        let conn = store.writer.lock().expect("writer");
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("read the level")
    }

    #[tokio::test]
    async fn a_group_of_claims_alone_commits_without_fsync_and_any_other_write_with_it() {
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("retryd.db"), Synchronous::Full).unwrap();
        store.insert_job(new_job("default", 50, 0)).await.unwrap();
        assert_eq!(writer_level(&store), FULL);
        let later = Utc::now() + chrono::Duration::days(3650);
        let claimed = store.claim_jobs(&claim_request(later, 1)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(writer_level(&store), NORMAL);
        store.insert_job(new_job("default", 50, 0)).await.unwrap();
        assert_eq!(
            writer_level(&store),
            FULL,
            "a durable write after a claim is flushed"
        );
    }
}
