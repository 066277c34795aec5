//! The embedded SQLite backend: one file, WAL mode, `synchronous=FULL` by default so that an
//! acknowledged write survives power loss.
//!
//! # Layout
//!
//! - `migrations/`: schema, applied in order at open, recorded in `schema_migrations`.
//! - `queries/`: the longer queries, one file each.
//! - this file: [`SqliteStore`], the [`retryd_store`] traits over it.
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
//! error rolls back that call only), and commits once: one fsync for the group under
//! `synchronous=FULL`. Replies are sent after the commit, so a call that returned is
//! durable, with one exception: a group made only of claims commits at `synchronous=NORMAL`
//! (no fsync of its own; the next durable commit's fsync covers it). Power loss can take
//! the newest claims, whose jobs are then claimed and run again: at least once, as on
//! PostgreSQL, where claims commit asynchronously. A retry's claim so never waits for a
//! flush of its own. The claim, wake-up, deadline and lease queries name their partial
//! index (`INDEXED BY`): without statistics the planner picks `jobs_state` and reads every
//! job in the state.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use retryd_core::Role;
use retryd_core::job::{Attempt, Event, Job, LogLine, NewJob, Stream};
use retryd_core::org::Org;
use retryd_core::schedule::{Progress, Schedule};
use retryd_core::{AttemptOutcome, Class, JobId, JobState};
use retryd_store::group::GroupQueue;
use retryd_store::notify::lost_delivery;
use retryd_store::rows::{AttemptRow, ClaimRow, FinishRow};
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

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_attempt_process.sql")),
    (3, include_str!("../migrations/0003_queues.sql")),
    (4, include_str!("../migrations/0004_access_and_stats.sql")),
    (5, include_str!("../migrations/0005_pipelines.sql")),
    (
        6,
        include_str!("../migrations/0006_limits_notifications.sql"),
    ),
    (7, include_str!("../migrations/0007_list_indexes.sql")),
    (9, include_str!("../migrations/0009_process_host.sql")),
    (10, include_str!("../migrations/0010_schedules.sql")),
    (11, include_str!("../migrations/0011_organizations.sql")),
    (12, include_str!("../migrations/0012_circuit_history.sql")),
];

const JOB_COLUMNS: &str = "id, queue, kind, target, action, policy_name, policy, priority, run_at, deadline, \
     labels, idempotency_key, created_by, state, attempt, next_attempt_at, last_error, last_error_class, \
     last_rule, finish_reason, lease_owner, lease_expires_at, cancel_requested, created_at, started_at, \
     finished_at, updated_at, current_attempt_id, steps, step_attempt_base, hold_reason, org";

fn with_columns(query: &str) -> String {
    query.replace("{JOB_COLUMNS}", JOB_COLUMNS)
}

/// The job listing with only the lines that apply (see the query file): `given` lists the
/// parameters that have a value. The lines are the file's own: no input reaches the SQL.
fn list_query(given: &[usize]) -> String {
    let applies = |condition: &str| match condition.strip_prefix('!') {
        Some(negated) => !given.iter().any(|n| format!("?{n}") == negated),
        None => given.iter().any(|n| format!("?{n}") == condition),
    };
    let query = include_str!("../queries/list_jobs.sql")
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .filter(|line| match line.split_once(" -- ") {
            Some((_, conditions)) => conditions.split_whitespace().all(applies),
            None => true,
        })
        .collect::<Vec<_>>()
        .join("\n");
    with_columns(&query)
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

/// A queued write: runs inside its savepoint and returns its value type-erased.
type WriteOp = Box<dyn FnOnce(&Connection) -> Result<Box<dyn Any + Send>> + Send>;
type WriteReply = tokio::sync::oneshot::Sender<Result<Box<dyn Any + Send>>>;
type WriteQueue = Arc<GroupQueue<Queued>>;

/// A write waiting for its group commit.
struct Queued {
    op: WriteOp,
    reply: WriteReply,
    /// False for a write whose loss on power failure only repeats work (a claim): a group of
    /// such writes alone commits without fsync.
    durable: bool,
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

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

fn corrupt(column: usize, message: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        message.to_string().into(),
    )
}

fn json_col<T: serde::de::DeserializeOwned>(row: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| corrupt(i, e))
}

fn state_col(row: &Row<'_>, i: usize) -> rusqlite::Result<JobState> {
    let text: String = row.get(i)?;
    text.parse().map_err(|e| corrupt(i, e))
}

fn id_col(row: &Row<'_>, i: usize) -> rusqlite::Result<JobId> {
    let text: String = row.get(i)?;
    text.parse().map_err(|e: String| corrupt(i, e))
}

fn class_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<Class>> {
    let text: Option<String> = row.get(i)?;
    text.map(|t| Class::parse(&t).ok_or_else(|| corrupt(i, format!("class {t}"))))
        .transpose()
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: id_col(row, 0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        target: row.get(3)?,
        action: json_col(row, 4)?,
        policy_name: row.get(5)?,
        policy: json_col(row, 6)?,
        priority: row.get(7)?,
        run_at: from_ms(row.get(8)?),
        deadline: row.get::<_, Option<i64>>(9)?.map(from_ms),
        labels: json_col(row, 10)?,
        idempotency_key: row.get(11)?,
        created_by: row.get(12)?,
        state: state_col(row, 13)?,
        attempt: row.get(14)?,
        next_attempt_at: row.get::<_, Option<i64>>(15)?.map(from_ms),
        last_error: row.get(16)?,
        last_error_class: class_col(row, 17)?,
        last_rule: row.get(18)?,
        finish_reason: row.get(19)?,
        lease_owner: row.get(20)?,
        lease_expires_at: row.get::<_, Option<i64>>(21)?.map(from_ms),
        attempt_id: row.get(27)?,
        cancel_requested: row.get(22)?,
        hold_reason: row.get(30)?,
        created_at: from_ms(row.get(23)?),
        started_at: row.get::<_, Option<i64>>(24)?.map(from_ms),
        finished_at: row.get::<_, Option<i64>>(25)?.map(from_ms),
        updated_at: from_ms(row.get(26)?),
        steps: json_col(row, 28)?,
        step_attempt_base: row.get(29)?,
        org: row.get(31)?,
    })
}

fn log_line_from_row(row: &Row<'_>) -> rusqlite::Result<LogLine> {
    let stream: String = row.get(3)?;
    Ok(LogLine {
        seq: row.get(0)?,
        attempt: row.get(1)?,
        at: from_ms(row.get(2)?),
        stream: Stream::parse(&stream).ok_or_else(|| corrupt(3, format!("stream {stream}")))?,
        line: row.get(4)?,
    })
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let from: Option<String> = row.get(3)?;
    Ok(Event {
        id: row.get(0)?,
        job_id: id_col(row, 1)?,
        at: from_ms(row.get(2)?),
        from: from
            .map(|f| f.parse().map_err(|e| corrupt(3, e)))
            .transpose()?,
        to: state_col(row, 4)?,
        reason: row.get(5)?,
        actor: row.get(6)?,
        step: row.get(7)?,
    })
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
    exec(
        conn,
        "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id.to_string(), ms(at), from.map(JobState::as_str), to.as_str(), reason, actor, step],
    )
    .map_err(to_store)?;
    Ok(Event {
        id: conn.last_insert_rowid(),
        job_id: id,
        at,
        from,
        to,
        reason: reason.to_owned(),
        actor: actor.to_owned(),
        step,
    })
}

/// Writes a finished attempt's row.
fn finish_attempt_row(conn: &Connection, row: &AttemptRow) -> Result<()> {
    exec(
        conn,
        "UPDATE attempts SET finished_at = ?2, outcome = ?3, exit_code = ?4, error = ?5, class = ?6, rule = ?7, \
         next_delay_ms = ?8, delay_reason = ?9, output_dropped_bytes = ?10, target_failed = ?11 WHERE id = ?1",
        params![
            row.id,
            ms(row.finished_at),
            row.outcome,
            row.exit_code,
            row.error,
            row.class,
            row.rule,
            row.next.delay_ms,
            row.next.delay_reason,
            row.output_dropped_bytes,
            row.target_failed,
        ],
    )
    .map_err(to_store)?;
    Ok(())
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("plain data serializes")
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
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; {}; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
        synchronous.pragma()
    ))
    .map_err(backend)?;
    // Every query of this backend stays prepared.
    conn.set_prepared_statement_cache_capacity(128);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(backend)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(backend)?;
    for (version, sql) in MIGRATIONS {
        let applied: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if !applied {
            tx.execute_batch(sql).map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, ms(Utc::now())],
            )
            .map_err(backend)?;
        }
    }
    tx.commit().map_err(backend)
}

/// The retry budgets of the organizations with a retry among the candidates.
fn read_org_budgets(
    tx: &Connection,
    candidates: &[Job],
    now: DateTime<Utc>,
) -> Result<HashMap<String, rules::OrgBudget>> {
    let orgs = rules::retrying_orgs(candidates);
    if orgs.is_empty() {
        return Ok(HashMap::new());
    }
    // Only organizations with a budget are counted: most have none, and their retries must
    // not pay for a read of the window's attempts.
    let budgeted: Vec<String> = tx
        .prepare_cached(
            "SELECT name FROM organizations WHERE retry_budget IS NOT NULL \
             AND name IN (SELECT value FROM json_each(?1))",
        )
        .and_then(|mut stmt| {
            stmt.query_map([json(&orgs)], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(to_store)?;
    if budgeted.is_empty() {
        return Ok(HashMap::new());
    }
    let orgs = budgeted;
    let since = now
        - chrono::Duration::from_std(retryd_store::limits::ORG_BUDGET_WINDOW).unwrap_or_default();
    let mut stmt = tx
        .prepare_cached(include_str!("../queries/org_budgets.sql"))
        .map_err(to_store)?;
    let rows = stmt
        .query_map(params![json(&orgs), ms(since)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                rules::OrgBudget {
                    cap: r.get(1)?,
                    used: TargetUsage {
                        retries: r.get(2)?,
                        oldest: r.get::<_, Option<i64>>(3)?.map(from_ms),
                    },
                },
            ))
        })
        .map_err(to_store)?;
    rows.collect::<rusqlite::Result<_>>().map_err(to_store)
}

/// The circuits and budget usage of the candidates' targets, as far as the limits need them.
fn read_limits(
    tx: &Connection,
    candidates: &[Job],
    limits: &TargetLimits,
    now: DateTime<Utc>,
) -> Result<(HashMap<String, Circuit>, HashMap<String, TargetUsage>)> {
    let targets = rules::targets_of(candidates);
    let (mut circuits, mut usage) = (HashMap::new(), HashMap::new());
    if targets.is_empty() || limits.is_empty() {
        return Ok((circuits, usage));
    }
    let targets = json(&targets);
    if limits.circuit.is_some() {
        let mut stmt = tx
            .prepare_cached(&format!("SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target IN (SELECT value FROM json_each(?1))"))
            .map_err(to_store)?;
        let rows = stmt
            .query_map([&targets], circuit_from_row)
            .map_err(to_store)?;
        for circuit in rows {
            let circuit = circuit.map_err(to_store)?;
            circuits.insert(circuit.target.clone(), circuit);
        }
    }
    if let Some(budget) = &limits.budget {
        let since = now - chrono::Duration::from_std(budget.window).unwrap_or_default();
        let mut stmt = tx
            .prepare_cached(
                "SELECT target, COUNT(*), MIN(started_at) FROM attempts \
                 WHERE target IN (SELECT value FROM json_each(?1)) AND number > 1 AND started_at > ?2 GROUP BY target",
            )
            .map_err(to_store)?;
        let rows = stmt
            .query_map(params![targets, ms(since)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    TargetUsage {
                        retries: r.get(1)?,
                        oldest: r.get::<_, Option<i64>>(2)?.map(from_ms),
                    },
                ))
            })
            .map_err(to_store)?;
        for row in rows {
            let (target, used) = row.map_err(to_store)?;
            usage.insert(target, used);
        }
    }
    Ok((circuits, usage))
}

const CIRCUIT_COLUMNS: &str = "target, opened_at, open_until, probe_attempt_id, failures, attempts";

fn circuit_from_row(row: &Row<'_>) -> rusqlite::Result<Circuit> {
    Ok(Circuit {
        target: row.get(0)?,
        opened_at: from_ms(row.get(1)?),
        open_until: from_ms(row.get(2)?),
        probe_attempt_id: row.get(3)?,
        failures: row.get(4)?,
        attempts: row.get(5)?,
    })
}

/// Deletes a target's circuit and ends its outage (`closed_by` says how); the jobs it held
/// may start at once. Whether there was one.
fn close_circuit_rows(
    tx: &Connection,
    target: &str,
    closed_by: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let closed = tx
        .execute("DELETE FROM circuits WHERE target = ?1", [target])
        .map_err(to_store)?;
    tx.execute(
        "UPDATE circuit_history SET closed_at = ?2, closed_by = ?3 WHERE target = ?1 AND closed_at IS NULL",
        params![target, ms(now), closed_by],
    )
    .map_err(to_store)?;
    tx.execute(
        "DELETE FROM circuit_history WHERE closed_at < ?1",
        [ms(now - retryd_store::OUTAGE_RETENTION)],
    )
    .map_err(to_store)?;
    tx.execute(
        "UPDATE jobs SET next_attempt_at = ?2, hold_reason = NULL, updated_at = ?2 \
         WHERE target = ?1 AND state IN ('pending', 'retrying') AND substr(hold_reason, 1, length(?3)) = ?3",
        params![target, ms(now), rules::CIRCUIT_HOLD],
    )
    .map_err(to_store)?;
    Ok(closed == 1)
}

/// Counts a finished attempt towards its target's circuit.
fn update_circuit(
    tx: &Connection,
    target: &str,
    attempt_id: i64,
    failed: Option<bool>,
    config: &CircuitConfig,
    now: DateTime<Utc>,
) -> Result<()> {
    let circuit = tx
        .query_row(
            &format!("SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target = ?1"),
            [target],
            circuit_from_row,
        )
        .optional()
        .map_err(to_store)?;
    let window = if failed == Some(true) {
        let since = now - chrono::Duration::from_std(config.window).unwrap_or_default();
        tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(target_failed), 0) FROM attempts \
             WHERE target = ?1 AND target_failed IS NOT NULL AND started_at > ?2",
            params![target, ms(since)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(to_store)?
    } else {
        (0, 0)
    };
    match rules::circuit_after(circuit.as_ref(), attempt_id, failed, window, config, now) {
        CircuitChange::Keep => {}
        CircuitChange::Open {
            until,
            failures,
            attempts,
        } => {
            tx.execute(
                "INSERT INTO circuits (target, opened_at, open_until, probe_attempt_id, failures, attempts) \
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5) ON CONFLICT (target) DO UPDATE SET \
                 opened_at = ?2, open_until = ?3, probe_attempt_id = NULL, failures = ?4, attempts = ?5",
                params![target, ms(now), ms(until), failures, attempts],
            )
            .map_err(to_store)?;
            // A failed probe continues the outage; otherwise one begins.
            if circuit.is_some() {
                tx.execute(
                    "UPDATE circuit_history SET reopened = reopened + 1 WHERE target = ?1 AND closed_at IS NULL",
                    [target],
                )
            } else {
                tx.execute(
                    "INSERT INTO circuit_history (target, opened_at, failures, attempts) VALUES (?1, ?2, ?3, ?4)",
                    params![target, ms(now), failures, attempts],
                )
            }
            .map_err(to_store)?;
        }
        CircuitChange::Close => {
            close_circuit_rows(tx, target, &retryd_store::closed_by(None), now)?;
        }
        CircuitChange::FreeProbe => {
            tx.execute(
                "UPDATE circuits SET probe_attempt_id = NULL WHERE target = ?1",
                [target],
            )
            .map_err(to_store)?;
        }
    }
    Ok(())
}

fn enqueue(
    tx: &Connection,
    job: JobId,
    notification: &NewNotification,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO notifications (job_id, event, sink, payload, state, attempts, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5, ?5)",
        params![job.to_string(), notification.event, notification.sink, json(&notification.payload), ms(now)],
    )
    .map_err(to_store)?;
    Ok(())
}

const NOTIFICATION_COLUMNS: &str = "id, job_id, event, sink, payload, state, attempts, next_attempt_at, last_error, created_at, updated_at";

fn notification_from_row(row: &Row<'_>) -> rusqlite::Result<Notification> {
    let state: String = row.get(5)?;
    Ok(Notification {
        id: row.get(0)?,
        job_id: id_col(row, 1)?,
        event: row.get(2)?,
        sink: row.get(3)?,
        payload: json_col(row, 4)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt(5, format!("delivery state {state}")))?,
        attempts: row.get(6)?,
        next_attempt_at: row.get::<_, Option<i64>>(7)?.map(from_ms),
        last_error: row.get(8)?,
        created_at: from_ms(row.get(9)?),
        updated_at: from_ms(row.get(10)?),
        log: Vec::new(),
    })
}

fn load_notification(conn: &Connection, id: i64) -> Result<Notification> {
    let mut notification = conn
        .query_row(
            &format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?1"),
            [id],
            notification_from_row,
        )
        .map_err(to_store)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT number, node, started_at, finished_at, ok, status, error FROM notification_attempts \
             WHERE notification_id = ?1 ORDER BY id",
        )
        .map_err(to_store)?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(DeliveryAttempt {
                number: r.get(0)?,
                node: r.get(1)?,
                started_at: from_ms(r.get(2)?),
                finished_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                ok: r.get(4)?,
                status: r.get(5)?,
                error: r.get(6)?,
            })
        })
        .map_err(to_store)?;
    notification.log = rows.collect::<rusqlite::Result<_>>().map_err(to_store)?;
    Ok(notification)
}

/// Appends lines to an attempt's log, numbered from `first_index`.
fn insert_log_lines(
    tx: &Connection,
    lease: &Lease,
    first_index: u64,
    lines: &[NewLogLine],
) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO log_lines (job_id, attempt_id, attempt, idx, at, stream, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(to_store)?;
    let job_id = lease.job_id.to_string();
    for (i, line) in lines.iter().enumerate() {
        stmt.execute(params![
            job_id,
            lease.attempt_id,
            lease.attempt,
            (first_index + i as u64) as i64,
            ms(line.at),
            line.stream.as_str(),
            line.line
        ])
        .map_err(to_store)?;
    }
    Ok(())
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Commits every queued write as one transaction, group after group until none is queued:
/// the one committer of [`GroupQueue`].
///
/// A group of claims only commits at `synchronous=NORMAL`: in WAL mode that commit survives
/// a process crash, and the next durable commit's fsync covers it too, so power loss can
/// only take the newest claims, whose jobs are then claimed and run again (at least once,
/// as on PostgreSQL, where claims commit asynchronously). A retry's claim thus never waits
/// for a disk flush of its own.
fn commit_groups(conn: &Mutex<Connection>, queue: &GroupQueue<Queued>, synchronous: Synchronous) {
    let _role = queue.role();
    loop {
        commit_group(conn, queue.take(), synchronous);
        if !queue.keep_committing() {
            return;
        }
    }
}

fn commit_group(conn: &Mutex<Connection>, group: Vec<Queued>, synchronous: Synchronous) {
    if group.is_empty() {
        return;
    }
    let Ok(mut conn) = conn.lock() else {
        for queued in group {
            let _ = queued
                .reply
                .send(Err(backend("writer connection poisoned")));
        }
        return;
    };
    // Set before every group rather than restored after one: a failed restore cannot leave
    // durable writes unflushed.
    if synchronous == Synchronous::Full {
        let relaxed = group.iter().all(|q| !q.durable);
        let level = if relaxed {
            Synchronous::Normal
        } else {
            Synchronous::Full
        };
        if let Err(e) = conn.execute_batch(level.pragma()) {
            let message = e.to_string();
            for queued in group {
                let _ = queued.reply.send(Err(backend(&message)));
            }
            return;
        }
    }
    commit_in_one_transaction(&mut conn, group);
}

fn commit_in_one_transaction(conn: &mut Connection, group: Vec<Queued>) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let message = e.to_string();
            for queued in group {
                let _ = queued.reply.send(Err(backend(&message)));
            }
            return;
        }
    };
    let mut replies = Vec::with_capacity(group.len());
    for Queued { op, reply, .. } in group {
        if tx.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full): nothing of
            // this group is written, and no later write may run outside a transaction.
            let _ = reply.send(Err(backend("the group's transaction was rolled back")));
            continue;
        }
        let result = match exec(&tx, "SAVEPOINT w", []) {
            Ok(_) => {
                let result = op(&tx);
                let undo = if result.is_ok() {
                    Ok(0)
                } else {
                    exec(&tx, "ROLLBACK TO w", [])
                };
                match undo.and_then(|_| exec(&tx, "RELEASE w", [])) {
                    Ok(_) => result,
                    Err(e) => Err(backend(e)),
                }
            }
            Err(e) => Err(backend(e)),
        };
        replies.push((reply, result));
    }
    let rolled_back = tx.is_autocommit();
    match tx.commit() {
        Ok(()) if rolled_back => {
            for (reply, _) in replies {
                let _ = reply.send(Err(backend("the group's transaction was rolled back")));
            }
        }
        Ok(()) => {
            for (reply, result) in replies {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (reply, _) in replies {
                let _ = reply.send(Err(backend(&message)));
            }
        }
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
        self.queue_write(f, true).await
    }

    /// [`write`](Self::write) for a claim: as atomic, but see [`commit_group`] on durability.
    async fn write_claim<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.queue_write(f, false).await
    }

    async fn queue_write<T, F>(&self, f: F, durable: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let op: WriteOp = Box::new(move |conn| f(conn).map(|v| Box::new(v) as Box<dyn Any + Send>));
        if self.queue.push(Queued { op, reply, durable }) {
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
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |tx| {
            let mut stored = Vec::with_capacity(jobs.len());
            let mut events = Vec::with_capacity(jobs.len());
            for job in &jobs {
                // A key taken by a stored job, or by an earlier job of this batch (the same
                // transaction sees it), is answered with that job.
                if let Some(key) = &job.idempotency_key {
                    let existing: Option<String> = tx
                        .prepare_cached(
                            "SELECT id FROM jobs WHERE org = ?1 AND queue = ?2 AND idempotency_key = ?3",
                        )
                        .and_then(|mut stmt| {
                            stmt.query_row(params![job.org, job.queue, key], |r| r.get(0))
                                .optional()
                        })
                        .map_err(to_store)?;
                    if let Some(existing) = existing {
                        stored.push(load_job(tx, existing.parse().map_err(Error::Corrupt)?)?);
                        continue;
                    }
                }
                tx.prepare_cached(include_str!("../queries/insert_jobs.sql"))
                    .and_then(|mut stmt| {
                        stmt.execute(params![
                            job.id.to_string(),
                            job.queue,
                            job.kind,
                            job.target,
                            json(&job.action),
                            job.policy_name,
                            json(&job.policy),
                            job.priority,
                            ms(job.run_at),
                            opt_ms(job.deadline),
                            json(&job.labels),
                            job.idempotency_key,
                            job.created_by,
                            ms(job.created_at),
                            job.org,
                        ])
                    })
                    .map_err(to_store)?;
                events.push(insert_event(
                    tx,
                    job.id,
                    job.created_at,
                    None,
                    JobState::Pending,
                    "submitted",
                    rules::submitter(job),
                    rules::first_step(job),
                )?);
                stored.push(load_job(tx, job.id)?);
            }
            rules::answer_inserts(&jobs, stored, events)
        })
        .await
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        let request = request.clone();
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        self.write_claim(move |tx| {
            let skipped = rules::skipped_queues(&request);
            let now = ms(request.now);
            let window = rules::candidate_window(&request);
            // Each organization's own candidates (what it has left under its running limit),
            // then shared out between them.
            let mut candidates: Vec<Job> = Vec::new();
            let mut orgs = tx.prepare_cached(include_str!("../queries/claim_orgs.sql")).map_err(to_store)?;
            let offers = orgs
                .query_map([window as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(to_store)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(to_store)?;
            let mut stmt = tx.prepare_cached(&with_columns(include_str!("../queries/claim_candidates.sql"))).map_err(to_store)?;
            for (org, offer) in offers.into_iter().filter(|(_, offer)| *offer > 0) {
                let rows = stmt
                    .query_map(
                        params![
                            now,
                            json(&skipped),
                            offer,
                            json(&request.runnable.handler_kinds),
                            request.runnable.builtin,
                            ms(request.due_by),
                            org
                        ],
                        job_from_row,
                    )
                    .map_err(to_store)?;
                candidates.extend(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(to_store)?);
            }
            let candidates = rules::fair_share(candidates);
            let budgets = read_org_budgets(tx, &candidates, request.now)?;
            let by_org = rules::gate_orgs(candidates, &budgets, request.now);
            let candidates = by_org.admitted;
            let (circuits, usage) = read_limits(tx, &candidates, &request.limits, request.now)?;
            let mut gated = rules::gate(candidates, &circuits, &usage, &request.limits, request.now);
            gated.held.extend(by_org.held);
            for held in &gated.held {
                tx.execute(
                    "UPDATE jobs SET next_attempt_at = ?2, hold_reason = ?3, updated_at = ?4 WHERE id = ?1",
                    params![held.id.to_string(), ms(held.until), held.reason, now],
                )
                .map_err(to_store)?;
                if held.starts {
                    insert_event(tx, held.id, request.now, Some(held.state), held.state, &held.reason, &request.node, None)?;
                }
            }
            let chosen = rules::within_slots(gated.admitted, &request);
            let probes: HashMap<JobId, String> = rules::probe_targets(&chosen, &circuits, request.now).into_iter().collect();
            let mut claimed = Vec::new();
            for job in chosen {
                let row = ClaimRow::of(&job, &request)?;
                let (number, start) = (row.number, ms(row.started_at));
                exec(tx,
                    "INSERT INTO attempts (job_id, number, step, node, started_at, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![job.id.to_string(), number, row.step, request.node, start, row.target],
                )
                .map_err(to_store)?;
                let attempt_id = tx.last_insert_rowid();
                if let Some(target) = probes.get(&job.id) {
                    tx.execute("UPDATE circuits SET probe_attempt_id = ?2 WHERE target = ?1", params![target, attempt_id])
                        .map_err(to_store)?;
                }
                exec(tx,
                    "UPDATE jobs SET state = 'running', attempt = ?2, lease_owner = ?3, lease_expires_at = ?4, \
                     current_attempt_id = ?5, next_attempt_at = NULL, hold_reason = NULL, started_at = COALESCE(started_at, ?7), updated_at = ?6 \
                     WHERE id = ?1",
                    params![job.id.to_string(), number, request.node, ms(request.lease_until), attempt_id, now, start],
                )
                .map_err(to_store)?;
                let event = insert_event(tx, job.id, request.now, Some(row.from), JobState::Running, &row.reason, &request.node, row.step)?;
                claimed.push(Claimed {
                    job: load_job(tx, job.id)?,
                    due_at: rules::due_at(&job),
                    lease: Lease { job_id: job.id, attempt_id, attempt: number, node: request.node.clone() },
                    event,
                });
            }
            Ok(claimed)
        })
        .await
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
        self.write(move |tx| {
            let lease = &result.lease;
            let job = load_job(tx, lease.job_id)?;
            insert_log_lines(tx, lease, result.log.first_index, &result.log.lines)?;
            if !rules::fence_holds(&job, lease, result.fence) {
                return Ok(Err(Error::LeaseLost { job_id: job.id, attempt_id: lease.attempt_id }));
            }
            let to = job.state.transition(result.next.state())?;
            let row = FinishRow::of(&job, to, &result);
            finish_attempt_row(tx, &row.attempt)?;
            if let (Some(target), Some(config)) = (&job.target, &result.circuit) {
                update_circuit(tx, target, lease.attempt_id, row.attempt.target_failed, config, result.now)?;
            }
            for notification in &result.notify {
                enqueue(tx, job.id, notification, result.now)?;
            }
            let now = ms(row.attempt.finished_at);
            exec(tx,
                "UPDATE jobs SET state = ?2, next_attempt_at = ?3, steps = ?11, hold_reason = NULL, \
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
            let event = insert_event(tx, job.id, result.now, Some(row.from), row.to, &row.reason, &row.actor, row.step)?;
            Ok(Ok((load_job(tx, job.id)?, event)))
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
        let actor = actor.to_owned();
        self.write(move |tx| {
            let job = load_job(tx, id)?;
            if job.state == JobState::Running {
                exec(tx, "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1", params![id.to_string(), ms(now)])
                    .map_err(to_store)?;
                let event = if job.cancel_requested {
                    None
                } else {
                    let reason = rules::cancel_request_reason(&actor);
                    Some(insert_event(tx, id, now, Some(job.state), job.state, &reason, &actor, rules::claimed_step(&job))?)
                };
                return Ok((load_job(tx, id)?, event));
            }
            let to = job.state.transition(JobState::Cancelled)?;
            let reason = rules::cancel_reason(&actor);
            exec(tx,
                "UPDATE jobs SET state = ?2, finish_reason = ?3, finished_at = ?4, next_attempt_at = NULL, updated_at = ?4 WHERE id = ?1",
                params![id.to_string(), to.as_str(), reason, ms(now)],
            )
            .map_err(to_store)?;
            let event = insert_event(tx, id, now, Some(job.state), to, &reason, &actor, rules::claimed_step(&job))?;
            Ok((load_job(tx, id)?, Some(event)))
        })
        .await
    }

    async fn requeue_job(&self, id: JobId, requeue: &Requeue) -> Result<(Job, Option<Event>)> {
        let requeue = requeue.clone();
        self.write(move |tx| {
            let job = load_job(tx, id)?;
            let now = ms(requeue.now);
            rules::check_changes(&job, &requeue)?;
            if let Some(changes) = &requeue.changes {
                exec(tx,
                    "UPDATE jobs SET action = ?2, policy_name = ?3, policy = ?4, deadline = ?5 WHERE id = ?1",
                    params![id.to_string(), json(&changes.action), changes.policy_name, json(&changes.policy), opt_ms(changes.deadline)],
                )
                .map_err(to_store)?;
            }
            if job.state == JobState::Retrying {
                exec(tx, "UPDATE jobs SET next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1", params![id.to_string(), now])
                    .map_err(to_store)?;
                return Ok((load_job(tx, id)?, None));
            }
            let to = job.state.transition(JobState::Pending)?;
            let attempt = if requeue.reset { 0 } else { job.attempt };
            exec(tx,
                "UPDATE jobs SET state = ?2, attempt = ?3, next_attempt_at = ?4, finish_reason = NULL, finished_at = NULL, \
                 cancel_requested = 0, updated_at = ?4, started_at = CASE WHEN ?5 THEN NULL ELSE started_at END, \
                 step_attempt_base = CASE WHEN ?5 THEN 0 ELSE step_attempt_base END WHERE id = ?1",
                params![id.to_string(), to.as_str(), attempt, now, requeue.reset],
            )
            .map_err(to_store)?;
            let reason = rules::requeue_reason(&job, &requeue);
            let event = insert_event(tx, id, requeue.now, Some(job.state), to, &reason, &requeue.actor, rules::claimed_step(&job))?;
            Ok((load_job(tx, id)?, Some(event)))
        })
        .await
    }

    async fn expire_jobs(&self, now: DateTime<Utc>) -> Result<Vec<(Job, Event)>> {
        self.write(move |tx| {
            let due: Vec<Job> = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_deadline WHERE state IN ('pending', 'retrying') AND deadline IS NOT NULL AND deadline <= ?1"
                    ))
                    .map_err(to_store)?;
                let rows = stmt.query_map([ms(now)], job_from_row).map_err(to_store)?;
                rows.collect::<rusqlite::Result<_>>().map_err(to_store)?
            };
            let mut expired = Vec::with_capacity(due.len());
            for job in due {
                let to = job.state.transition(JobState::Expired)?;
                let reason = rules::expire_reason(&job, now);
                exec(tx,
                    "UPDATE jobs SET state = ?2, finish_reason = ?3, finished_at = ?4, next_attempt_at = NULL, updated_at = ?4 WHERE id = ?1",
                    params![job.id.to_string(), to.as_str(), reason, ms(now)],
                )
                .map_err(to_store)?;
                let event = insert_event(tx, job.id, now, Some(job.state), to, &reason, rules::SCHEDULER, rules::claimed_step(&job))?;
                expired.push((load_job(tx, job.id)?, event));
            }
            Ok(expired)
        })
        .await
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

#[async_trait]
impl JobReader for SqliteStore {
    async fn get_job(&self, id: JobId) -> Result<Job> {
        self.read(move |conn| load_job(conn, id)).await
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<Page> {
        let filter = filter.clone();
        self.read(move |conn| {
            let states = (!filter.states.is_empty())
                .then(|| json(&filter.states.iter().map(|s| s.as_str()).collect::<Vec<_>>()));
            let (label_key, label_value) = filter.label.clone().unzip();
            // One state is an equality, which walks the (state, id) index in order.
            let (states, state) = match filter.states.as_slice() {
                [one] => (None, Some(one.as_str())),
                _ => (states, None),
            };
            let given: Vec<usize> = [
                (1, states.is_some()),
                (2, filter.queue.is_some()),
                (3, filter.kind.is_some()),
                (4, filter.target.is_some()),
                (5, label_key.is_some()),
                (7, filter.created_after.is_some()),
                (8, filter.created_before.is_some()),
                (9, cursor.is_some()),
                (10, state.is_some()),
                (11, filter.org.is_some()),
                (12, filter.text.is_some()),
            ]
            .into_iter()
            .filter_map(|(n, on)| on.then_some(n))
            .collect();
            let mut stmt = conn
                .prepare_cached(&filter.in_order(&list_query(&given)))
                .map_err(to_store)?;
            let rows = stmt
                .query_map(
                    params![
                        states,
                        filter.queue,
                        filter.kind,
                        filter.target,
                        label_key,
                        label_value,
                        opt_ms(filter.created_after),
                        opt_ms(filter.created_before),
                        cursor.map(|c| c.to_string()),
                        state,
                        filter.org,
                        filter.text.as_deref().map(str::to_lowercase),
                        (limit + 1) as i64,
                    ],
                    job_from_row,
                )
                .map_err(to_store)?;
            let jobs: Vec<Job> = rows.collect::<rusqlite::Result<_>>().map_err(to_store)?;
            Ok(Page::of_one_more(jobs, limit))
        })
        .await
    }

    async fn list_attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT job_id, number, step, node, started_at, finished_at, outcome, exit_code, error, class, rule, \
                     next_delay_ms, delay_reason, output_dropped_bytes FROM attempts WHERE job_id = ?1 ORDER BY id",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map([id.to_string()], |row| {
                    let outcome: Option<String> = row.get(6)?;
                    Ok(Attempt {
                        job_id: id_col(row, 0)?,
                        number: row.get(1)?,
                        step: row.get(2)?,
                        node: row.get(3)?,
                        started_at: from_ms(row.get(4)?),
                        finished_at: row.get::<_, Option<i64>>(5)?.map(from_ms),
                        outcome: outcome
                            .map(|o| AttemptOutcome::parse(&o).ok_or_else(|| corrupt(6, format!("outcome {o}"))))
                            .transpose()?,
                        exit_code: row.get(7)?,
                        error: row.get(8)?,
                        class: class_col(row, 9)?,
                        rule: row.get(10)?,
                        next_delay_ms: row.get::<_, Option<i64>>(11)?.map(|v| v.max(0) as u64),
                        delay_reason: row.get(12)?,
                        output_dropped_bytes: row.get::<_, i64>(13)?.max(0) as u64,
                    })
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn list_events(&self, id: JobId) -> Result<Vec<Event>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, job_id, at, from_state, to_state, reason, actor, step FROM events WHERE job_id = ?1 ORDER BY id")
                .map_err(to_store)?;
            let rows = stmt.query_map([id.to_string()], event_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, job_id, at, from_state, to_state, reason, actor, step FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")
                .map_err(to_store)?;
            let rows = stmt.query_map(params![after, limit as i64], event_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn last_event_id(&self) -> Result<i64> {
        self.read(|conn| {
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
                .map_err(to_store)
        })
        .await
    }

    async fn read_log(&self, id: JobId, after: i64, limit: usize) -> Result<Vec<LogLine>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT seq, attempt, at, stream, line FROM log_lines WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
                .map_err(to_store)?;
            let rows = stmt
                .query_map(params![id.to_string(), after, limit as i64], log_line_from_row)
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn read_log_tail(
        &self,
        id: JobId,
        limit: usize,
        containing: Option<&str>,
        attempt: Option<u32>,
    ) -> Result<Vec<LogLine>> {
        let containing = containing.map(str::to_lowercase);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, attempt, at, stream, line FROM log_lines \
                     WHERE job_id = ?1 AND (?3 IS NULL OR instr(lower(line), ?3) > 0) \
                     AND (?4 IS NULL OR attempt = ?4) ORDER BY seq DESC LIMIT ?2",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map(
                    params![id.to_string(), limit as i64, containing, attempt],
                    log_line_from_row,
                )
                .map_err(to_store)?;
            let mut lines = rows
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(to_store)?;
            lines.reverse();
            Ok(lines)
        })
        .await
    }

    async fn count_ahead(&self, job: &Job, now: DateTime<Utc>) -> Result<u64> {
        let (queue, priority, id) = (job.queue.clone(), job.priority, job.id.to_string());
        let (org, due) = (
            job.org.clone(),
            ms(job.next_attempt_at.unwrap_or(job.run_at)),
        );
        self.read(move |conn| {
            conn.query_row(
                include_str!("../queries/count_ahead.sql"),
                params![queue, ms(now), priority, due, id, org],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(to_store)
        })
        .await
    }

    async fn count_running(&self, org: &str) -> Result<u64> {
        let org = org.to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM jobs INDEXED BY jobs_lease WHERE state = 'running' AND org = ?1")
                .and_then(|mut stmt| stmt.query_row([org], |r| r.get::<_, i64>(0)))
                .map(|n| n as u64)
                .map_err(to_store)
        })
        .await
    }

    async fn paused_queues(&self, org: &str) -> Result<Vec<String>> {
        let org = org.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name FROM queues WHERE org = ?1 AND paused = 1 ORDER BY name",
                )
                .map_err(to_store)?;
            let rows = stmt.query_map([org], |r| r.get(0)).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn queue_depths(&self, org: Option<&str>) -> Result<BTreeMap<String, u64>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT queue, COUNT(*) FROM jobs WHERE state IN ('pending', 'retrying') AND (?1 IS NULL OR org = ?1) GROUP BY queue")
                .map_err(to_store)?;
            let rows = stmt.query_map([org], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn count_by_state(&self, org: Option<&str>) -> Result<BTreeMap<JobState, u64>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT state, COUNT(*) FROM jobs WHERE ?1 IS NULL OR org = ?1 GROUP BY state",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map([org], |r| {
                    Ok((state_col(r, 0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn expired_leases(&self, cutoff: DateTime<Utc>) -> Result<Vec<Job>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_lease WHERE state = 'running' AND lease_expires_at < ?1"))
                .map_err(to_store)?;
            let rows = stmt.query_map([ms(cutoff)], job_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn next_wakeup(&self, skipped: &[String], runnable: &Runnable) -> Result<Wakeups> {
        let skipped = json(&skipped);
        let kinds = json(&runnable.handler_kinds);
        let builtin = runnable.builtin;
        self.read(move |conn| {
            conn.query_row(
                include_str!("../queries/next_wakeup.sql"),
                params![skipped, kinds, builtin],
                |r| {
                    let at = |i| r.get::<_, Option<i64>>(i).map(|t| t.map(from_ms));
                    Ok(Wakeups {
                        due: at(0)?,
                        deadline: at(1)?,
                        lease_expiry: at(2)?,
                    })
                },
            )
            .map_err(to_store)
        })
        .await
    }

    async fn list_circuits(&self, org: Option<&str>) -> Result<Vec<Circuit>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {CIRCUIT_COLUMNS} FROM circuits \
                     WHERE ?1 IS NULL OR target IN (SELECT target FROM jobs WHERE org = ?1 AND target IS NOT NULL) \
                     ORDER BY target"
                ))
                .map_err(to_store)?;
            let rows = stmt.query_map([org], circuit_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn circuit_history(&self, org: Option<&str>, limit: usize) -> Result<Vec<CircuitOutage>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT target, opened_at, closed_at, failures, attempts, reopened, closed_by \
                     FROM circuit_history \
                     WHERE ?1 IS NULL OR target IN (SELECT target FROM jobs WHERE org = ?1 AND target IS NOT NULL) \
                     ORDER BY opened_at DESC, id DESC LIMIT ?2",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map(params![org, limit as i64], |r| {
                    Ok(CircuitOutage {
                        target: r.get(0)?,
                        opened_at: from_ms(r.get(1)?),
                        closed_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
                        failures: r.get(3)?,
                        attempts: r.get(4)?,
                        reopened: r.get(5)?,
                        closed_by: r.get(6)?,
                    })
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn held_by_circuits(&self, org: &str) -> Result<BTreeMap<String, u64>> {
        let org = org.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT target, COUNT(*) FROM jobs WHERE org = ?1 AND state IN ('pending', 'retrying') \
                     AND target IS NOT NULL AND substr(hold_reason, 1, length(?2)) = ?2 GROUP BY target",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map(params![org, rules::CIRCUIT_HOLD], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn attempt_process(&self, attempt_id: i64) -> Result<Option<Process>> {
        self.read(move |conn| {
            let row: Option<(Option<u32>, Option<i64>, Option<String>)> = conn
                .query_row(
                    "SELECT pid, pid_started, pid_host FROM attempts WHERE id = ?1",
                    [attempt_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(to_store)?;
            Ok(match row {
                Some((Some(pid), Some(started), host)) => Some(Process {
                    pid,
                    started: started as u64,
                    host,
                }),
                _ => None,
            })
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(to_store))
            .await
    }

    async fn stats_rows(&self, query: &StatsQuery) -> Result<StatsRows> {
        let query = query.clone();
        self.read(move |conn| stats_rows(conn, &query).map_err(to_store))
            .await
    }
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn claim_deliveries(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        let node = node.to_owned();
        self.write(move |tx| {
            let ids: Vec<i64> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id FROM notifications WHERE (state = 'pending' AND next_attempt_at <= ?1) \
                         OR (state = 'delivering' AND lease_expires_at < ?1) ORDER BY next_attempt_at, id LIMIT ?2",
                    )
                    .map_err(to_store)?;
                let rows = stmt.query_map(params![ms(now), limit as i64], |r| r.get(0)).map_err(to_store)?;
                rows.collect::<rusqlite::Result<_>>().map_err(to_store)?
            };
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                tx.execute(
                    "UPDATE notifications SET state = 'delivering', attempts = attempts + 1, lease_owner = ?2, \
                     lease_expires_at = ?3, next_attempt_at = NULL, updated_at = ?4 WHERE id = ?1",
                    params![id, node, ms(lease_until), ms(now)],
                )
                .map_err(to_store)?;
                let notification = load_notification(tx, id)?;
                tx.execute(
                    "INSERT INTO notification_attempts (notification_id, number, node, started_at) VALUES (?1, ?2, ?3, ?4)",
                    params![id, notification.attempts, node, ms(now)],
                )
                .map_err(to_store)?;
                claimed.push(ClaimedDelivery {
                    attempt_id: tx.last_insert_rowid(),
                    number: notification.attempts,
                    notification,
                });
            }
            Ok(claimed)
        })
        .await
    }

    async fn finish_delivery(&self, result: &DeliveryResult) -> Result<()> {
        let result = result.clone();
        self.write(move |tx| {
            let holds: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM notifications WHERE id = ?1 AND state = 'delivering' AND lease_owner = ?2 \
                     AND (SELECT MAX(id) FROM notification_attempts WHERE notification_id = ?1) = ?3)",
                    params![result.notification_id, result.node, result.attempt_id],
                    |r| r.get(0),
                )
                .map_err(to_store)?;
            if !holds {
                return Err(lost_delivery(result.notification_id));
            }
            let now = ms(result.now);
            tx.execute(
                "UPDATE notification_attempts SET finished_at = ?2, ok = ?3, status = ?4, error = ?5 WHERE id = ?1",
                params![result.attempt_id, now, result.ok, result.status, result.error],
            )
            .map_err(to_store)?;
            let next_at = match &result.next {
                retryd_store::DeliveryNext::Retry { at } => Some(ms(*at)),
                _ => None,
            };
            tx.execute(
                "UPDATE notifications SET state = ?2, next_attempt_at = ?3, lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = COALESCE(?4, last_error), updated_at = ?5 WHERE id = ?1",
                params![result.notification_id, result.next.state().as_str(), next_at, result.error, now],
            )
            .map_err(to_store)?;
            Ok(())
        })
        .await
    }

    async fn list_notifications(
        &self,
        job: Option<JobId>,
        org: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let ids: Vec<i64> = {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id FROM notifications WHERE (?1 IS NULL OR job_id = ?1) \
                         AND (?3 IS NULL OR job_id IN (SELECT id FROM jobs WHERE org = ?3)) ORDER BY id DESC LIMIT ?2",
                    )
                    .map_err(to_store)?;
                let rows = stmt
                    .query_map(params![job.map(|j| j.to_string()), limit as i64, org], |r| r.get(0))
                    .map_err(to_store)?;
                rows.collect::<rusqlite::Result<_>>().map_err(to_store)?
            };
            ids.into_iter().map(|id| load_notification(conn, id)).collect()
        })
        .await
    }

    async fn next_delivery(&self) -> Result<Option<DateTime<Utc>>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT MIN(t) FROM (SELECT MIN(next_attempt_at) AS t FROM notifications WHERE state = 'pending' \
                 UNION ALL SELECT MIN(lease_expires_at) FROM notifications WHERE state = 'delivering')",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|t| t.map(from_ms))
            .map_err(to_store)
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

fn token_from_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let role: String = row.get(2)?;
    Ok(TokenRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        role: Role::parse(&role).ok_or_else(|| corrupt(2, format!("role {role}")))?,
        secret_hash: row.get(3)?,
        created_at: from_ms(row.get(4)?),
        created_by: row.get(5)?,
        revoked_at: row.get::<_, Option<i64>>(6)?.map(from_ms),
        org: row.get(7)?,
        instance: row.get(8)?,
    })
}

const TOKEN_COLUMNS: &str =
    "id, name, role, secret_hash, created_at, created_by, revoked_at, org, instance";

fn org_from_row(row: &Row<'_>) -> rusqlite::Result<Org> {
    Ok(Org {
        name: row.get(0)?,
        default_policy: row.get(1)?,
        max_running: row.get(2)?,
        created_at: from_ms(row.get(3)?),
        created_by: row.get(4)?,
        retry_budget: row.get(5)?,
    })
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

const SCHEDULE_COLUMNS: &str = "id, name, definition, paused, next_fire, last_fire, last_job_id, last_skip, \
     created_at, created_by, updated_at, org";

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        id: row.get(0)?,
        name: row.get(1)?,
        definition: json_col(row, 2)?,
        paused: row.get(3)?,
        next_fire: row.get::<_, Option<i64>>(4)?.map(from_ms),
        last_fire: row.get::<_, Option<i64>>(5)?.map(from_ms),
        last_job_id: match row.get::<_, Option<String>>(6)? {
            Some(text) => Some(text.parse().map_err(|e: String| corrupt(6, e))?),
            None => None,
        },
        last_skip: row.get(7)?,
        created_at: from_ms(row.get(8)?),
        created_by: row.get(9)?,
        updated_at: from_ms(row.get(10)?),
        org: row.get(11)?,
    })
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn insert_schedule(&self, s: &Schedule) -> Result<()> {
        let s = s.clone();
        self.write(move |tx| {
            exec(
                tx,
                &format!("INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    s.id,
                    s.name,
                    json(&s.definition),
                    s.paused,
                    opt_ms(s.next_fire),
                    opt_ms(s.last_fire),
                    s.last_job_id.map(|j| j.to_string()),
                    s.last_skip,
                    ms(s.created_at),
                    s.created_by,
                    ms(s.updated_at),
                    s.org
                ],
            )
            .map_err(|e| unique_violation(e, &format!("a schedule named '{}'", s.name)))?;
            Ok(())
        })
        .await
    }

    async fn update_schedule(&self, s: &Schedule) -> Result<bool> {
        let s = s.clone();
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE schedules SET definition = ?2, paused = ?3, next_fire = ?4, updated_at = ?5 WHERE id = ?1",
                params![s.id, json(&s.definition), s.paused, opt_ms(s.next_fire), ms(s.updated_at)],
            )
            .map(|n| n == 1)
            .map_err(to_store)
        })
        .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            exec(tx, "DELETE FROM schedules WHERE id = ?1", [id])
                .map(|n| n == 1)
                .map_err(to_store)
        })
        .await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY org, name"
                ))
                .map_err(to_store)?;
            let rows = stmt.query_map([], schedule_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn lead_schedules(
        &self,
        node: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let node = node.to_owned();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO schedule_leader (id, node, until) VALUES (1, ?1, ?3) \
                 ON CONFLICT (id) DO UPDATE SET node = ?1, until = ?3 \
                 WHERE schedule_leader.node = ?1 OR schedule_leader.until < ?2 RETURNING node",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![node, ms(now), ms(until)], |_| Ok(()))
                    .optional()
            })
            .map(|led| led.is_some())
            .map_err(to_store)
        })
        .await
    }

    async fn advance_schedule(
        &self,
        id: &str,
        expected: Option<DateTime<Utc>>,
        p: &Progress,
    ) -> Result<bool> {
        let (id, p) = (id.to_owned(), p.clone());
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE schedules SET next_fire = ?3, last_fire = COALESCE(?4, last_fire), \
                 last_job_id = COALESCE(?5, last_job_id), last_skip = COALESCE(?6, last_skip), updated_at = ?7 \
                 WHERE id = ?1 AND next_fire IS ?2",
                params![
                    id,
                    opt_ms(expected),
                    opt_ms(p.next_fire),
                    opt_ms(p.last_fire),
                    p.last_job_id.map(|j| j.to_string()),
                    p.last_skip,
                    ms(p.updated_at)
                ],
            )
            .map(|n| n == 1)
            .map_err(to_store)
        })
        .await
    }
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        let token = token.clone();
        self.write(move |tx| {
            exec(
                tx,
                &format!(
                    "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                ),
                params![
                    token.id,
                    token.name,
                    token.role.as_str(),
                    token.secret_hash,
                    ms(token.created_at),
                    token.created_by,
                    opt_ms(token.revoked_at),
                    token.org,
                    token.instance
                ],
            )
            .map_err(|e| unique_violation(e, &format!("a token named '{}'", token.name)))?;
            Ok(())
        })
        .await
    }

    async fn revoke_token(
        &self,
        org: &str,
        id_or_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>> {
        let (org, key) = (org.to_owned(), id_or_name.to_owned());
        self.write(move |tx| {
            exec(tx,
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?3) WHERE org = ?1 AND (id = ?2 OR name = ?2)",
                params![org, key, ms(now)],
            )
            .map_err(to_store)?;
            tx.query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE org = ?1 AND (id = ?2 OR name = ?2)"),
                [&org, &key],
                token_from_row,
            )
            .optional()
            .map_err(to_store)
        })
        .await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_owned();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([id], token_from_row).optional())
            .map_err(to_store)
        })
        .await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
                ))
                .map_err(to_store)?;
            let rows = stmt.query_map([], token_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn put_policy(&self, policy: &StoredPolicy) -> Result<()> {
        let policy = policy.clone();
        self.write(move |tx| {
            exec(tx,
                "INSERT INTO managed_policies (name, policy, active, updated_at, updated_by, org) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (org, name) DO UPDATE SET policy = ?2, active = ?3, updated_at = ?4, updated_by = ?5",
                params![policy.name, json(&policy.policy), policy.active, ms(policy.updated_at), policy.updated_by, policy.org],
            )
            .map_err(to_store)?;
            Ok(())
        })
        .await
    }

    async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, policy, active, updated_at, updated_by, org FROM managed_policies ORDER BY org, name")
                .map_err(to_store)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(StoredPolicy {
                        name: r.get(0)?,
                        policy: json_col(r, 1)?,
                        active: r.get(2)?,
                        updated_at: from_ms(r.get(3)?),
                        updated_by: r.get(4)?,
                        org: r.get(5)?,
                    })
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn insert_org(&self, org: &Org) -> Result<()> {
        let org = org.clone();
        self.write(move |tx| {
            exec(
                tx,
                "INSERT INTO organizations (name, default_policy, max_running, created_at, created_by, retry_budget) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![org.name, org.default_policy, org.max_running, ms(org.created_at), org.created_by, org.retry_budget],
            )
            .map_err(|e| unique_violation(e, &format!("an organization named '{}'", org.name)))?;
            Ok(())
        })
        .await
    }

    async fn update_org(&self, org: &Org) -> Result<bool> {
        let org = org.clone();
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE organizations SET default_policy = ?2, max_running = ?3, retry_budget = ?4 WHERE name = ?1",
                params![org.name, org.default_policy, org.max_running, org.retry_budget],
            )
            .map(|n| n == 1)
            .map_err(to_store)
        })
        .await
    }

    async fn list_orgs(&self) -> Result<Vec<Org>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, default_policy, max_running, created_at, created_by, retry_budget FROM organizations ORDER BY name")
                .map_err(to_store)?;
            let rows = stmt.query_map([], org_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn put_channel(&self, channel: &StoredChannel) -> Result<()> {
        let c = channel.clone();
        self.write(move |tx| {
            exec(tx,
                "INSERT INTO channels (org, name, config, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (org, name) DO UPDATE SET config = ?3, updated_at = ?4, updated_by = ?5",
                params![c.org, c.name, json(&c.config), ms(c.updated_at), c.updated_by],
            )
            .map_err(to_store)?;
            Ok(())
        })
        .await
    }

    async fn delete_channel(&self, org: &str, name: &str) -> Result<bool> {
        let (org, name) = (org.to_owned(), name.to_owned());
        self.write(move |tx| {
            exec(
                tx,
                "DELETE FROM channels WHERE org = ?1 AND name = ?2",
                [org, name],
            )
            .map(|n| n == 1)
            .map_err(to_store)
        })
        .await
    }

    async fn list_channels(&self) -> Result<Vec<StoredChannel>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT org, name, config, updated_at, updated_by FROM channels ORDER BY org, name")
                .map_err(to_store)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(StoredChannel {
                        org: r.get(0)?,
                        name: r.get(1)?,
                        config: json_col(r, 2)?,
                        updated_at: from_ms(r.get(3)?),
                        updated_by: r.get(4)?,
                    })
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }
}

/// Reads the grouped rows behind stats; `?1`..`?6` are since, until, queue, kind, target, org.
fn stats_rows(conn: &Connection, query: &StatsQuery) -> rusqlite::Result<StatsRows> {
    const FILTER: &str = "(?3 IS NULL OR j.queue = ?3) AND (?4 IS NULL OR j.kind = ?4) AND (?5 IS NULL OR j.target = ?5) \
                          AND (?6 IS NULL OR j.org = ?6)";
    let window = params![
        ms(query.since),
        ms(query.until),
        query.queue,
        query.kind,
        query.target,
        query.org
    ];
    let mut rows = StatsRows::default();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT j.state, COUNT(*) FROM jobs j WHERE j.created_at >= ?1 AND j.created_at < ?2 AND {FILTER} GROUP BY j.state"
    ))?;
    rows.created = stmt
        .query_map(window, |r| {
            Ok((state_col(r, 0)?, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.pending_retries = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM jobs j WHERE j.state = 'retrying' AND ?1 <= ?2 AND {FILTER}"
        ))?
        .query_row(window, |r| r.get::<_, i64>(0))? as u64;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT j.kind, j.target, j.state, j.attempt <= 1, COUNT(*), SUM(j.attempt) FROM jobs j \
         WHERE j.state IN ('succeeded', 'failed', 'expired', 'cancelled') \
           AND j.finished_at >= ?1 AND j.finished_at < ?2 AND {FILTER} \
         GROUP BY j.kind, j.target, j.state, j.attempt <= 1"
    ))?;
    rows.finished = stmt
        .query_map(window, |r| {
            Ok(FinishedGroup {
                kind: r.get(0)?,
                target: r.get(1)?,
                state: state_col(r, 2)?,
                first_attempt: r.get(3)?,
                jobs: r.get::<_, i64>(4)? as u64,
                attempts: r.get::<_, i64>(5)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT a.class, a.error, COUNT(DISTINCT a.job_id), COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id \
         WHERE a.started_at >= ?1 AND a.started_at < ?2 AND {FILTER} \
           AND a.outcome IN ('failed', 'timed_out', 'lost') AND a.error IS NOT NULL \
         GROUP BY a.class, a.error ORDER BY 3 DESC, 4 DESC, a.error LIMIT {TOP_ERRORS}"
    ))?;
    rows.errors = stmt
        .query_map(window, |r| {
            Ok(ErrorGroup {
                class: class_col(r, 0)?,
                message: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
                attempts: r.get::<_, i64>(3)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let bucket_ms = query.bucket.num_milliseconds().max(1);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT (a.started_at - ?1) / ?7, COUNT(*), \
                SUM(CASE WHEN a.outcome IN ('failed', 'timed_out', 'lost') THEN 1 ELSE 0 END) \
         FROM attempts a JOIN jobs j ON j.id = a.job_id \
         WHERE a.started_at >= ?1 AND a.started_at < ?2 AND {FILTER} GROUP BY 1 ORDER BY 1"
    ))?;
    rows.series = stmt
        .query_map(
            params![
                ms(query.since),
                ms(query.until),
                query.queue,
                query.kind,
                query.target,
                query.org,
                bucket_ms
            ],
            |r| {
                Ok(Bucket {
                    start: from_ms(ms(query.since) + r.get::<_, i64>(0)? * bucket_ms),
                    attempts: r.get::<_, i64>(1)? as u64,
                    failures: r.get::<_, i64>(2)? as u64,
                })
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
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
