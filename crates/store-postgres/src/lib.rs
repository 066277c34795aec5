//! The PostgreSQL backend: several retryd nodes share one queue.
//!
//! # Layout
//!
//! The same module names as the SQLite backend, one area each: `insert`, `claim` (with
//! `floors`), `finish` (group commit of results), `cancel` (and deadlines), `requeue`,
//! `read`, `logs`, `limits` (circuits, budgets), `notifications`, `schedules`, `access`,
//! `stats`, `decode` (rows to values), `policies` (shared policy snapshots), `migrate`, and
//! `tx` (transactions that roll back on any error). This file holds [`PostgresStore`], its
//! pools and the [`JobWriter`] methods too small for a module of their own; `listen` turns
//! other nodes' NOTIFY into [`Notice`]s.
//! `migrations/` is the schema; `queries/` the longer statements, with the same file names
//! as the SQLite backend's.
//!
//! Claims lock candidates with `FOR UPDATE SKIP LOCKED`, so two nodes never claim one job
//! and never wait for each other. Writes that make work due or cancel a running attempt
//! `pg_notify` in the same transaction: other nodes wake at commit. A notification only
//! wakes a node; what it runs is decided by the claim query.
//!
//! # Tuning
//!
//! Statements go through deadpool's per-connection statement cache (`Cached` in `lib.rs`):
//! text queries would be parsed and planned on every call, with a second round trip. Every
//! connection runs with `plan_cache_mode=force_custom_plan`: a generic plan cached while a
//! new database's tables were empty scanned the whole attempts table on each result group.
//! The scheduler pool's connections also run with `synchronous_commit=off` (a claim or
//! sweep lost in a database crash is simply redone) and `enable_sort=off`: with the stale
//! statistics of a queue table the planner otherwise collected and sorted every due row on
//! each claim instead of walking `jobs_claim` for one batch (from the node's floor, see
//! `floors.rs`). Migrations 0008, 0018 and 0020 leave room on pages (fillfactor 25 for
//! attempts) so that the end-of-attempt update of an attempt row, which also takes its
//! opening and closing log lines (`rows::ResultLines`), is HOT even when a result group
//! updates a whole claim's attempts, which share pages, before their old versions can be
//! pruned (at 70 only four in ten were; at 40, with the lines, six in ten). A change of state is never a HOT update, so each
//! version of a job's row takes an entry in every index whose predicate it meets: the GIN
//! index of labels holds labelled jobs only (migration 0019; a label filter names its
//! predicate), and the list indexes by field hold finished jobs only (0017). JSON columns
//! decode straight into their types (`Json<T>`), not through a `serde_json::Value`, and
//! encode straight from them. A batch of new jobs is one transaction (`insert.rs`): without
//! idempotency keys it is streamed by binary `COPY`, which spares the server the arrays and
//! the tuple store of an `INSERT … SELECT FROM unnest(…)`; with keys, as a pipeline of 500-job
//! `INSERT … ON CONFLICT DO NOTHING` statements, eight in flight. Its `submitted` events are
//! streamed by `COPY` too, under ids drawn first from the events' sequence. A job's policy
//! is stored once per distinct policy (`policy_snapshots`, migration 0021, `policies.rs`) and
//! named by id from its row: a bulk enqueue parsed the same 190-byte jsonb document per job,
//! and every change of state copied it into a new row version. The claim and the result read
//! the id and take the policy from the snapshots the process knows (`LEAN_JOB_COLUMNS`);
//! other reads resolve it in SQL (`JOB_COLUMNS`). Snapshots are never deleted or changed.
//!
//! Three pools: general traffic (8 connections), the claim loop (1: its latency is the
//! retry wake-up latency) and lease renewals (1: a busy API cannot starve them). Migrations
//! run in one transaction under `pg_advisory_xact_lock`; the retention purge under
//! `pg_try_advisory_xact_lock`, and so does the deadline sweep, so one node does each at a
//! time and another takes over when it dies. The rescue needs no lock: every node may find
//! an expired lease, and the fence lets exactly one rescuer record the lost attempt.

/// A statement that takes `$1` numbers of the sequence named, in increasing order.
macro_rules! reserve_numbers {
    ($sequence:literal) => {
        concat!(
            "SELECT nextval('",
            $sequence,
            "') FROM generate_series(1, $1) ORDER BY 1"
        )
    };
}

mod access;
mod cancel;
mod claim;
pub mod clock;
mod decode;
mod finish;
mod floors;
mod insert;
mod limits;
mod listen;
mod logs;
mod migrate;
mod notifications;
mod policies;
mod read;
mod requeue;
mod schedules;
mod stats;
pub mod testing;
mod tx;

use decode::*;
use finish::*;
use limits::*;
use listen::*;
use logs::*;
use migrate::*;
use notifications::*;
use stats::*;

pub use clock::DbClock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt;
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
    ClaimedDelivery, DeliveryAttempt, DeliveryNext, DeliveryResult, DeliveryState, Error, Inserted,
    JobFilter, JobReader, JobWriter, Lease, NewLogLine, NewNotification, Notice, Notification,
    NotificationStore, Page, Process, Renewal, Requeue, Result, Runnable, ScheduleStore, Signals,
    StatsQuery, StatsRows, Store, StoredChannel, StoredPolicy, TargetLimits, TokenRecord, Wakeups,
    rules,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};
use tracing::{info, warn};
use tx::Tx;

/// Advisory lock keys ("retryd" in ASCII, plus a purpose).
const MIGRATION_LOCK: i64 = 0x7265_7472_7964_0001;
const PRUNE_LOCK: i64 = 0x7265_7472_7964_0002;
const EXPIRE_LOCK: i64 = 0x7265_7472_7964_0003;
/// The class of per-target advisory locks (the second key is the target's hash): claims and
/// results that read a target's circuit or budget take them, so that nodes count alike.
const TARGET_LOCK_CLASS: i32 = 0x7274;
/// The class of per-organization advisory locks: claims that count an organization's retries
/// against its budget take them (before any target's), so that nodes count alike.
const ORG_LOCK_CLASS: i32 = 0x726f;

const WAKE_CHANNEL: &str = "retryd_wake";
const CANCEL_CHANNEL: &str = "retryd_cancel";
const QUEUES_CHANNEL: &str = "retryd_queues";
const POLICIES_CHANNEL: &str = "retryd_policies";
const SCHEDULES_CHANNEL: &str = "retryd_schedules";

/// A job's columns with the policy expression given, as `decode` reads them (the trailing
/// `policy_id` lets a query select them again from a subquery of them).
macro_rules! job_columns {
    ($policy:literal) => {
        concat!(
            "id, queue, kind, target, action, policy_name, ",
            $policy,
            ", priority, run_at, deadline, labels, idempotency_key, created_by, state, attempt, \
             next_attempt_at, last_error, last_error_class, last_rule, finish_reason, lease_owner, \
             lease_expires_at, cancel_requested, created_at, started_at, finished_at, updated_at, \
             current_attempt_id, steps, step_attempt_base, hold_reason, org, policy_id"
        )
    };
}

/// A job's columns, its policy in full: the row's own (written before migration 0021, or by a
/// requeue that changed it) or its shared snapshot.
const JOB_COLUMNS: &str = job_columns!(
    "COALESCE(policy, (SELECT doc FROM policy_snapshots s WHERE s.id = policy_id)) AS policy"
);
/// A job's columns for the claim and the result, which read many jobs at a time: the policy
/// only when the row has its own, else the snapshot's id, which this process resolves from
/// the snapshots it knows (`policies`): no look-up and no JSON per job.
const LEAN_JOB_COLUMNS: &str = job_columns!("policy");

const EVENT_COLUMNS: &str = "id, job_id, at, from_state, to_state, reason, actor, step";

/// Connections for API and engine traffic.
const POOL_SIZE: usize = 8;
/// Connections reserved for lease renewals.
const HEARTBEAT_POOL_SIZE: usize = 1;
/// Connections reserved for the claim loop, whose latency is the retry wake-up latency.
const SCHEDULER_POOL_SIZE: usize = 1;

fn with_columns(query: &str) -> String {
    query
        .replace("{LEAN_JOB_COLUMNS}", LEAN_JOB_COLUMNS)
        .replace("{JOB_COLUMNS}", JOB_COLUMNS)
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn pg(e: tokio_postgres::Error) -> Error {
    // `Display` of a server error is just "db error"; the source carries the message.
    match e.as_db_error() {
        Some(db) => Error::Backend(format!("{}: {}", db.code().code(), db.message())),
        None => Error::Backend(e.to_string()),
    }
}

/// An instant as this backend stores it: to the microseconds (`timestamptz`). A row derived
/// instead of read back (an insert's, a claim's, a result's) carries instants cut the same way.
fn stored_instant(t: DateTime<Utc>) -> DateTime<Utc> {
    chrono::SubsecRound::trunc_subsecs(t, 6)
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(what.to_string())
}

/// A JSON column straight into its type (`Json<T>`), not through a `serde_json::Value`.
fn json_col<T: serde::de::DeserializeOwned>(row: &Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map(|tokio_postgres::types::Json(v)| v)
        .map_err(corrupt)
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("plain data serializes")
}

async fn load_job(client: &impl GenericClient, id: JobId) -> Result<Job> {
    let row = client
        .cached_query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
            &[&id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(Error::NotFound(id))?;
    job_from_row(&row)
}

/// Loads a job and locks its row for the rest of the transaction.
async fn lock_job(client: &impl GenericClient, id: JobId) -> Result<Job> {
    let row = client
        .cached_query_opt(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE"),
            &[&id.0],
        )
        .await
        .map_err(pg)?
        .ok_or(Error::NotFound(id))?;
    job_from_row(&row)
}

// One parameter per column: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn insert_event(
    client: &impl GenericClient,
    id: JobId,
    at: DateTime<Utc>,
    from: Option<JobState>,
    to: JobState,
    reason: &str,
    actor: &str,
    step: Option<String>,
) -> Result<Event> {
    let row = client
        .cached_query_one(
            &format!(
                "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 RETURNING {EVENT_COLUMNS}"
            ),
            &[&id.0, &at, &from.map(JobState::as_str), &to.as_str(), &reason, &actor, &step],
        )
        .await
        .map_err(pg)?;
    event_from_row(&row)
}

async fn notify(client: &impl GenericClient, channel: &str, payload: &str) -> Result<()> {
    client
        .cached_execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .await
        .map_err(pg)?;
    Ok(())
}

/// Every statement goes through the connection's statement cache: a query sent as text is
/// parsed and planned again on each call, and costs a second round trip.
#[async_trait]
trait Cached: GenericClient {
    async fn cached_execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }

    async fn cached_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    async fn cached_query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    async fn cached_query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }
}

impl<T: GenericClient> Cached for T {}

fn new_pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(backend)
}

/// Adds server settings to the connection's startup options (after the URL's own).
fn with_options(config: &mut tokio_postgres::Config, settings: &str) {
    let options = match config.get_options() {
        Some(options) => format!("{options} {settings}"),
        None => settings.to_owned(),
    };
    config.options(&options);
}

/// A deadpool error, with the database's own message when there is one.
fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        other => backend(other),
    }
}

#[derive(Debug)]
pub struct PostgresStore {
    pool: Pool,
    /// Lease renewals only, so that they never queue behind other work.
    heartbeat: Pool,
    /// Claims, due-time look-ups and sweeps: never queued behind output and results.
    scheduler: Pool,
    signals: Signals,
    clock: DbClock,
    results: Arc<ResultGroups>,
    floors: floors::ClaimFloors,
    policies: Arc<policies::PolicySnapshots>,
}

impl PostgresStore {
    /// Connects, applies migrations (one node at a time), starts listening for other nodes'
    /// notifications and measures the database clock.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_as(url, None).await
    }

    /// [`connect`](Self::connect), its connections named `retryd:<node>` in
    /// `pg_stat_activity` (unless the URL names them), so that operators see which node
    /// holds which connection.
    pub async fn connect_as(url: &str, node: Option<&str>) -> Result<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::Backend(format!("invalid PostgreSQL URL: {e}")))?;
        if let Some(node) = node
            && config.get_application_name().is_none()
        {
            config.application_name(format!("retryd:{node}"));
        }
        // Every statement is planned for its own parameters. A cached generic plan is made
        // after five calls, when a new database's tables are nearly empty, and kept until the
        // next ANALYZE: a result group's `UPDATE attempts ... FROM unnest(...)` then
        // scanned the whole attempts table (10 ms a group at 40,000 attempts, growing with
        // every job), and the list's optional filters (`$2 IS NULL OR queue = $2`) cannot
        // pick their index in a generic plan.
        with_options(&mut config, "-c plan_cache_mode=force_custom_plan");
        let pool = new_pool(&config, POOL_SIZE)?;
        let heartbeat = new_pool(&config, HEARTBEAT_POOL_SIZE)?;
        // Claims and sweeps need not wait for their WAL flush: if the database loses one in a
        // crash, the job is simply still due (or still to expire), and a result from the lost
        // claim's attempt is refused by the fence.
        // And a claim must walk the `jobs_claim` index in order and stop after its batch: on
        // a queue table the statistics lag far behind (thousands of rows change state a
        // second), and with stale ones the planner collects every due row and sorts them,
        // which made each claim cost O(due jobs). Without sorts it keeps the index walk; and
        // planning each call for its own batch size keeps a cached generic plan (made for
        // an unknown LIMIT) from undoing that.
        let mut scheduler_config = config.clone();
        with_options(
            &mut scheduler_config,
            "-c synchronous_commit=off -c enable_sort=off",
        );
        let scheduler = new_pool(&scheduler_config, SCHEDULER_POOL_SIZE)?;
        migrate(&pool).await?;
        let clock = DbClock::measure(&pool).await?;
        clock.keep_measuring(pool.clone());
        let signals = Signals::default();
        tokio::spawn(listen(config, signals.clone()));
        Ok(PostgresStore {
            pool,
            heartbeat,
            scheduler,
            signals,
            clock,
            results: Arc::default(),
            floors: floors::ClaimFloors::default(),
            policies: Arc::default(),
        })
    }

    /// Why the server of `url` cannot be reached, in an operator's words: its name does not
    /// resolve, or nothing accepts connections at its address. `None` when a connection
    /// opens (the trouble is further on: authentication, the database itself).
    pub async fn unreachable_because(url: &str) -> Option<String> {
        let config = tokio_postgres::Config::from_str(url).ok()?;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let mut reasons = Vec::new();
        for host in config.get_hosts() {
            let tokio_postgres::config::Host::Tcp(name) = host else {
                continue;
            };
            let addresses = match tokio::net::lookup_host((name.as_str(), port)).await {
                Ok(addresses) => addresses.collect::<Vec<_>>(),
                Err(e) => {
                    reasons.push(format!("the name {name} did not resolve ({e})"));
                    continue;
                }
            };
            for address in addresses {
                let attempt = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::net::TcpStream::connect(address),
                )
                .await;
                match attempt {
                    Ok(Ok(_)) => return None,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                        reasons.push(format!("{name} ({address}) refused the connection: is PostgreSQL running on port {port}?"));
                    }
                    Ok(Err(e)) => reasons.push(format!("{name} ({address}): {e}")),
                    Err(_) => reasons.push(format!("{name} ({address}) did not answer within 5 s")),
                }
            }
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// The database's clock, as seen from this node: leases and due times must not depend on
    /// the nodes' own clocks.
    pub fn clock(&self) -> DbClock {
        self.clock.clone()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn scheduler_client(&self) -> Result<deadpool_postgres::Object> {
        self.scheduler.get().await.map_err(pool_error)
    }
}

async fn select_jobs(
    client: &impl GenericClient,
    query: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Job>> {
    let rows = client.cached_query(query, params).await.map_err(pg)?;
    rows.iter().map(job_from_row).collect()
}

async fn delete_jobs(client: &impl GenericClient, ids: &[uuid::Uuid]) -> Result<u64> {
    for child in ["attempts", "events", "log_lines", "notifications"] {
        client
            .cached_execute(
                &format!("DELETE FROM {child} WHERE job_id = ANY($1)"),
                &[&ids],
            )
            .await
            .map_err(pg)?;
    }
    client
        .cached_execute("DELETE FROM jobs WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(pg)
}

#[async_trait]
impl JobWriter for PostgresStore {
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
        let client = self.heartbeat.get().await.map_err(pool_error)?;
        let rows = client
            .cached_query(
                "UPDATE jobs SET lease_expires_at = $2 \
                 WHERE state = 'running' AND lease_owner = $1 AND current_attempt_id = ANY($3) \
                 RETURNING current_attempt_id, id, cancel_requested",
                &[&node, &lease_until, &attempt_ids],
            )
            .await
            .map_err(pg)?;
        let renewed: Vec<(i64, JobId, bool)> = rows
            .iter()
            .map(|r| (r.get(0), JobId(r.get(1)), r.get(2)))
            .collect();
        Ok(rules::renewal(attempt_ids, &renewed))
    }

    async fn finish_attempt(&self, result: &AttemptResult) -> Result<(Job, Event)> {
        let (reply, answer) = oneshot::channel();
        if self.results.push((result.clone(), reply)) {
            tokio::spawn(commit_results(
                self.pool.clone(),
                self.policies.clone(),
                self.results.clone(),
            ));
        }
        let answer = answer.await.unwrap_or_else(|_| {
            Err(backend(
                "the result's group was dropped before it was written",
            ))
        });
        match &answer {
            Ok((job, _)) if job.state.is_waiting() => self.floors.lower(job),
            // A probe's success closes its target's circuit: the jobs it held are due now.
            Ok((job, _)) if job.target.is_some() => self.floors.forget(),
            _ => {}
        }
        answer
    }

    async fn advance_step(
        &self,
        result: &AttemptResult,
        next_step: &str,
    ) -> Result<(Job, Lease, Event)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let lease = &result.lease;
        let job = lock_job(&tx, lease.job_id).await?;
        let record = rules::check_advance(&job, result)?;
        finish_attempt_row(&tx, &AttemptRow::of(result, None)).await?;
        let mut log = LogRows::default();
        log.push(lease, result.log.first_index, &result.log.lines);
        log.insert(&tx).await?;
        let number = job.attempt as i32 + 1;
        let attempt_id: i64 = tx
            .cached_query_one(
                "INSERT INTO attempts (job_id, number, step, node, started_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&job.id.0, &number, &next_step, &lease.node, &result.now],
            )
            .await
            .map_err(pg)?
            .get(0);
        let row = tx
            .cached_query_one(
                &format!(
                    "UPDATE jobs SET steps = $2, step_attempt_base = attempt, attempt = $3, current_attempt_id = $4, \
                     last_error = COALESCE($5, last_error), last_error_class = COALESCE($6, last_error_class), \
                     last_rule = COALESCE($7, last_rule), updated_at = $8 WHERE id = $1 RETURNING {JOB_COLUMNS}"
                ),
                &[
                    &job.id.0,
                    &to_json(&rules::steps_after(&job, Some(&record))),
                    &number,
                    &attempt_id,
                    &result.error,
                    &result.class.map(Class::as_str),
                    &result.rule,
                    &result.now,
                ],
            )
            .await
            .map_err(pg)?;
        let job = job_from_row(&row)?;
        let event = insert_event(
            &tx,
            job.id,
            result.now,
            Some(job.state),
            job.state,
            &result.reason,
            &result.actor,
            Some(next_step.to_owned()),
        )
        .await?;
        tx.commit().await.map_err(pg)?;
        let lease = Lease {
            job_id: job.id,
            attempt_id,
            attempt: job.attempt,
            node: lease.node.clone(),
        };
        Ok((job, lease, event))
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // One node prunes at a time; the others find the lock taken and skip this round.
        let locked: bool = tx
            .cached_query_one("SELECT pg_try_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await
            .map_err(pg)?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let mut total = 0;
        for (state, cutoff) in finished_before.iter().filter(|(s, _)| s.is_terminal()) {
            let ids: Vec<uuid::Uuid> = tx
                .cached_query(
                    "SELECT id FROM jobs WHERE state = $1 AND finished_at < $2",
                    &[&state.as_str(), cutoff],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            total += delete_jobs(&tx, &ids).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(total)
    }

    async fn purge_jobs(&self, ids: &[JobId]) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let wanted: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        let dead: Vec<uuid::Uuid> = tx
            .cached_query(
                "SELECT id FROM jobs WHERE id = ANY($1) AND state IN ('succeeded', 'failed', 'cancelled', 'expired') FOR UPDATE",
                &[&wanted],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let n = delete_jobs(&tx, &dead).await?;
        tx.commit().await.map_err(pg)?;
        Ok(n)
    }

    async fn close_circuit(&self, target: &str, actor: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Under the target's lock, as a result that counts towards the circuit takes it.
        lock_targets(&tx, &[target]).await?;
        let closed =
            close_circuit_rows(&tx, target, &retryd_store::closed_by(Some(actor)), now).await?;
        notify(&tx, WAKE_CHANNEL, "").await?;
        tx.commit().await.map_err(pg)?;
        // The jobs the circuit held are due now, perhaps below a claim floor.
        self.floors.forget();
        Ok(closed)
    }

    async fn set_queue_paused(
        &self,
        org: &str,
        queue: &str,
        paused: bool,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.cached_execute(
            "INSERT INTO queues (name, paused, updated_at, updated_by, org) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org, name) DO UPDATE SET paused = $2, updated_at = $3, updated_by = $4",
            &[&queue, &paused, &now, &actor, &org],
        )
        .await
        .map_err(pg)?;
        notify(&tx, QUEUES_CHANNEL, queue).await?;
        tx.commit().await.map_err(pg)?;
        // A resumed queue's jobs were passed over by the claims while it was paused.
        self.floors.forget();
        Ok(())
    }

    async fn record_process(&self, lease: &Lease, process: &Process) -> Result<()> {
        let client = self.client().await?;
        let recorded = client
            .cached_execute(
                "UPDATE attempts SET pid = $2, pid_started = $3, pid_host = $4 WHERE id = $1 \
                 AND EXISTS (SELECT 1 FROM jobs WHERE id = $5 AND state = 'running' \
                 AND current_attempt_id = $1 AND lease_owner = $6)",
                &[
                    &lease.attempt_id,
                    &i64::from(process.pid),
                    &(process.started as i64),
                    &process.host,
                    &lease.job_id.0,
                    &lease.node,
                ],
            )
            .await
            .map_err(pg)?;
        if recorded == 0 {
            return Err(Error::LeaseLost {
                job_id: lease.job_id,
                attempt_id: lease.attempt_id,
            });
        }
        Ok(())
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
        let mut rows = LogRows::default();
        rows.push(lease, first_index, lines);
        rows.insert(&self.client().await?).await
    }

    async fn trim_log(&self, lease: &Lease, before_index: u64) -> Result<()> {
        let client = self.client().await?;
        client
            .cached_execute(
                "DELETE FROM log_lines WHERE attempt_id = $1 AND idx < $2",
                &[&lease.attempt_id, &(before_index as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }
}

impl Store for PostgresStore {
    fn is_exclusive(&self) -> bool {
        false
    }

    fn signals(&self) -> &Signals {
        &self.signals
    }
}
