//! The PostgreSQL backend: several retryd nodes share one queue.
//!
//! # Layout
//!
//! - `migrations/`: schema, applied at start under an advisory lock so that nodes starting
//!   together do not race.
//! - `queries/`: the longer queries, with the same file names as the SQLite backend.
//! - this file: [`PostgresStore`] (the [`retryd_store`] traits), the LISTEN task that turns
//!   NOTIFY into [`Notice`]s, and [`DbClock`].
//!
//! Claims lock candidates with `FOR UPDATE SKIP LOCKED`, so two nodes never claim one job
//! and never wait for each other. Writes that make work due or cancel a running attempt
//! `pg_notify` in the same transaction: other nodes wake at commit. A notification only
//! wakes a node; what it runs is decided by the claim query.
//!
//! # Tuning
//!
//! Statements go through deadpool's per-connection statement cache (`Cached` in `lib.rs`):
//! text queries would be parsed and planned on every call, with a second round trip. The
//! scheduler pool's connections run with `synchronous_commit=off` (a claim or sweep lost in
//! a database crash is simply redone), `enable_sort=off` and
//! `plan_cache_mode=force_custom_plan`: with the stale statistics of a queue table the
//! planner otherwise collected and sorted every due row on each claim instead of walking
//! `jobs_claim` for one batch. Migration 0008 leaves room on pages (fillfactor) so that the
//! end-of-attempt update of an attempt row is HOT.
//!
//! Three pools: general traffic (8 connections), the claim loop (1: its latency is the
//! retry wake-up latency) and lease renewals (1: a busy API cannot starve them). Migrations
//! run in one transaction under `pg_advisory_xact_lock`; the retention purge under
//! `pg_try_advisory_xact_lock`, and so does the deadline sweep, so one node does each at a
//! time and another takes over when it dies. The rescue needs no lock: every node may find
//! an expired lease, and the fence lets exactly one rescuer record the lost attempt.

pub mod clock;
mod floors;
pub mod testing;
mod tx;

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

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_queues.sql")),
    (4, include_str!("../migrations/0004_access_and_stats.sql")),
    (5, include_str!("../migrations/0005_pipelines.sql")),
    (
        6,
        include_str!("../migrations/0006_limits_notifications.sql"),
    ),
    (7, include_str!("../migrations/0007_list_indexes.sql")),
    (8, include_str!("../migrations/0008_fillfactor.sql")),
    (9, include_str!("../migrations/0009_event_stream_order.sql")),
    (11, include_str!("../migrations/0011_process_host.sql")),
    (12, include_str!("../migrations/0012_schedules.sql")),
    (13, include_str!("../migrations/0013_organizations.sql")),
    (14, include_str!("../migrations/0014_circuit_history.sql")),
    (15, include_str!("../migrations/0015_claim_floor.sql")),
    (
        16,
        include_str!("../migrations/0016_list_by_org_and_state.sql"),
    ),
];

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

const JOB_COLUMNS: &str = "id, queue, kind, target, action, policy_name, policy, priority, run_at, deadline, \
     labels, idempotency_key, created_by, state, attempt, next_attempt_at, last_error, last_error_class, \
     last_rule, finish_reason, lease_owner, lease_expires_at, cancel_requested, created_at, started_at, \
     finished_at, updated_at, current_attempt_id, steps, step_attempt_base, hold_reason, org";

const EVENT_COLUMNS: &str = "id, job_id, at, from_state, to_state, reason, actor, step";

/// Connections for API and engine traffic.
const POOL_SIZE: usize = 8;
/// Connections reserved for lease renewals.
const HEARTBEAT_POOL_SIZE: usize = 1;
/// Connections reserved for the claim loop, whose latency is the retry wake-up latency.
const SCHEDULER_POOL_SIZE: usize = 1;

fn with_columns(query: &str) -> String {
    query.replace("{JOB_COLUMNS}", JOB_COLUMNS)
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

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(what.to_string())
}

fn json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(corrupt)
}

fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("plain data serializes")
}

fn state(text: &str) -> Result<JobState> {
    text.parse().map_err(corrupt)
}

fn class(text: Option<String>) -> Result<Option<Class>> {
    text.map(|t| Class::parse(&t).ok_or_else(|| corrupt(format!("class {t}"))))
        .transpose()
}

fn job_from_row(row: &Row) -> Result<Job> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    Ok(Job {
        id: JobId(row.try_get(0).map_err(get)?),
        queue: row.try_get(1).map_err(get)?,
        kind: row.try_get(2).map_err(get)?,
        target: row.try_get(3).map_err(get)?,
        action: json(row.try_get(4).map_err(get)?)?,
        policy_name: row.try_get(5).map_err(get)?,
        policy: json(row.try_get(6).map_err(get)?)?,
        priority: u8::try_from(row.try_get::<_, i32>(7).map_err(get)?).map_err(corrupt)?,
        run_at: row.try_get(8).map_err(get)?,
        deadline: row.try_get(9).map_err(get)?,
        labels: json(row.try_get(10).map_err(get)?)?,
        idempotency_key: row.try_get(11).map_err(get)?,
        created_by: row.try_get(12).map_err(get)?,
        state: state(row.try_get(13).map_err(get)?)?,
        attempt: u32::try_from(row.try_get::<_, i32>(14).map_err(get)?).map_err(corrupt)?,
        next_attempt_at: row.try_get(15).map_err(get)?,
        last_error: row.try_get(16).map_err(get)?,
        last_error_class: class(row.try_get(17).map_err(get)?)?,
        last_rule: row.try_get(18).map_err(get)?,
        finish_reason: row.try_get(19).map_err(get)?,
        lease_owner: row.try_get(20).map_err(get)?,
        lease_expires_at: row.try_get(21).map_err(get)?,
        cancel_requested: row.try_get(22).map_err(get)?,
        hold_reason: row.try_get(30).map_err(get)?,
        created_at: row.try_get(23).map_err(get)?,
        started_at: row.try_get(24).map_err(get)?,
        finished_at: row.try_get(25).map_err(get)?,
        updated_at: row.try_get(26).map_err(get)?,
        attempt_id: row.try_get(27).map_err(get)?,
        steps: json(row.try_get(28).map_err(get)?)?,
        step_attempt_base: u32::try_from(row.try_get::<_, i32>(29).map_err(get)?)
            .map_err(corrupt)?,
        org: row.try_get(31).map_err(get)?,
    })
}

fn log_line_from_row(row: &Row) -> Result<LogLine> {
    let stream: String = row.get(3);
    Ok(LogLine {
        seq: row.get(0),
        attempt: row.get::<_, i32>(1) as u32,
        at: row.get(2),
        stream: Stream::parse(&stream).ok_or_else(|| corrupt(format!("stream {stream}")))?,
        line: row.get(4),
    })
}

fn event_from_row(row: &Row) -> Result<Event> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    let from: Option<String> = row.try_get(3).map_err(get)?;
    Ok(Event {
        id: row.try_get(0).map_err(get)?,
        job_id: JobId(row.try_get(1).map_err(get)?),
        at: row.try_get(2).map_err(get)?,
        from: from.as_deref().map(state).transpose()?,
        to: state(row.try_get(4).map_err(get)?)?,
        reason: row.try_get(5).map_err(get)?,
        actor: row.try_get(6).map_err(get)?,
        step: row.try_get(7).map_err(get)?,
    })
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

/// Writes a group of results in one transaction; answers each in order. `Err` when the
/// transaction failed: then nothing of the group is written.
async fn finish_group(pool: &Pool, results: &[AttemptResult]) -> Result<Vec<Result<(Job, Event)>>> {
    let mut ids: Vec<uuid::Uuid> = results.iter().map(|r| r.lease.job_id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    // In id order, so that two groups lock their common jobs in one order.
    let (tx, rows) = Tx::begin_with(
        pool.get().await.map_err(pool_error)?,
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE"),
        &[&ids],
    )
    .await?;
    let mut jobs: HashMap<JobId, Job> = rows
        .iter()
        .map(|row| job_from_row(row).map(|job| (job.id, job)))
        .collect::<Result<_>>()?;
    let mut answers: Vec<Option<Result<(Job, Event)>>> = results.iter().map(|_| None).collect();
    let mut finished = Finished::default();
    let mut accepted: Vec<(usize, Job)> = Vec::new();
    let mut log = LogRows::default();
    let mut wake = false;
    for (i, result) in results.iter().enumerate() {
        let lease = &result.lease;
        let Some(job) = jobs.get(&lease.job_id) else {
            // Gone, or finished by an earlier result of this group: after that one, no
            // lease is held any more (what the attempt printed is kept all the same).
            answers[i] = Some(Err(if accepted.iter().any(|(_, j)| j.id == lease.job_id) {
                log.push(lease, result.log.first_index, &result.log.lines);
                Error::LeaseLost {
                    job_id: lease.job_id,
                    attempt_id: lease.attempt_id,
                }
            } else {
                Error::NotFound(lease.job_id)
            }));
            continue;
        };
        log.push(lease, result.log.first_index, &result.log.lines);
        if !rules::fence_holds(job, lease, result.fence) {
            answers[i] = Some(Err(Error::LeaseLost {
                job_id: job.id,
                attempt_id: lease.attempt_id,
            }));
            continue;
        }
        let to = match job.state.transition(result.next.state()) {
            Ok(to) => to,
            Err(e) => {
                answers[i] = Some(Err(e.into()));
                continue;
            }
        };
        let job = jobs.remove(&lease.job_id).expect("looked up above");
        wake |= result.next.state() == JobState::Retrying || !result.notify.is_empty();
        finished.push(FinishRow::of(&job, to, result));
        accepted.push((i, job));
    }
    // Every statement sent with the COMMIT below is prepared first, so that none falls
    // behind it (see `tx`).
    let [attempts_sql, jobs_sql, events_sql] = Finished::statements();
    let notify_sql = "SELECT pg_notify($1, $2)";
    futures::try_join!(
        tx.prepare(LogRows::SQL),
        tx.prepare(&attempts_sql),
        tx.prepare(&jobs_sql),
        tx.prepare(&events_sql),
        tx.prepare(notify_sql),
    )?;
    if accepted.is_empty() {
        // Only refused results: their output lines are all there is to write.
        futures::try_join!(log.insert(tx.client()), async {
            tx.commit().await.map_err(pg)
        })?;
        return Ok(answers
            .into_iter()
            .map(|a| a.expect("every result is answered"))
            .collect());
    }
    let mut targets: Vec<&str> = accepted
        .iter()
        .filter(|(i, _)| results[*i].circuit.is_some())
        .filter_map(|(_, job)| job.target.as_deref())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let rare = !targets.is_empty() || accepted.iter().any(|(i, _)| !results[*i].notify.is_empty());
    let notify_sql = &tx.prepare(notify_sql).await?;
    let tx = &tx;
    let wake_others = |wake: bool| async move {
        if wake {
            tx.client()
                .execute(notify_sql, &[&WAKE_CHANNEL, &""])
                .await
                .map_err(pg)?;
        }
        Ok(())
    };
    let (jobs, events) = if !rare {
        // The group's writes and its COMMIT, in one round trip.
        let ((), written, (), ()) = futures::try_join!(
            log.insert(tx.client()),
            finished.write(tx),
            wake_others(wake),
            async { tx.commit().await.map_err(pg) },
        )?;
        written
    } else {
        let ((), written) = futures::try_join!(log.insert(tx.client()), finished.write(tx))?;
        // Circuits count the attempt rows written above; one statement each.
        if !targets.is_empty() {
            lock_targets(tx.client(), &targets).await?;
        }
        for (k, (i, job)) in accepted.iter().enumerate() {
            let result = &results[*i];
            if let (Some(target), Some(config)) = (&job.target, &result.circuit) {
                let failed = finished.target_failed[k];
                wake |= update_circuit(
                    tx.client(),
                    target,
                    result.lease.attempt_id,
                    failed,
                    config,
                    result.now,
                )
                .await?;
            }
            for notification in &result.notify {
                enqueue(tx.client(), job.id, notification, result.now).await?;
            }
        }
        futures::try_join!(wake_others(wake), async { tx.commit().await.map_err(pg) })?;
        written
    };
    let mut jobs: HashMap<JobId, Job> = jobs.into_iter().map(|j| (j.id, j)).collect();
    let mut events: HashMap<JobId, Event> = events.into_iter().map(|e| (e.job_id, e)).collect();
    for (i, job) in &accepted {
        let missing = || corrupt(format!("finished job {} vanished", job.id));
        let job = jobs.remove(&job.id).ok_or_else(missing)?;
        let event = events.remove(&job.id).ok_or_else(missing)?;
        answers[*i] = Some(Ok((job, event)));
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every result is answered"))
        .collect())
}

/// New jobs as the columns of `queries/insert_jobs.sql`, in its parameter order.
struct NewJobColumns {
    ids: Vec<uuid::Uuid>,
    queues: Vec<String>,
    kinds: Vec<String>,
    targets: Vec<Option<String>>,
    actions: Vec<Value>,
    policy_names: Vec<String>,
    policies: Vec<Value>,
    priorities: Vec<i32>,
    run_ats: Vec<DateTime<Utc>>,
    deadlines: Vec<Option<DateTime<Utc>>>,
    labels: Vec<Value>,
    idempotency_keys: Vec<Option<String>>,
    created_bys: Vec<Option<String>>,
    created_ats: Vec<DateTime<Utc>>,
    orgs: Vec<String>,
}

impl NewJobColumns {
    fn of(jobs: &[NewJob]) -> Self {
        NewJobColumns {
            ids: jobs.iter().map(|j| j.id.0).collect(),
            queues: jobs.iter().map(|j| j.queue.clone()).collect(),
            kinds: jobs.iter().map(|j| j.kind.clone()).collect(),
            targets: jobs.iter().map(|j| j.target.clone()).collect(),
            actions: jobs.iter().map(|j| to_json(&j.action)).collect(),
            policy_names: jobs.iter().map(|j| j.policy_name.clone()).collect(),
            policies: jobs.iter().map(|j| to_json(&j.policy)).collect(),
            priorities: jobs.iter().map(|j| i32::from(j.priority)).collect(),
            run_ats: jobs.iter().map(|j| j.run_at).collect(),
            deadlines: jobs.iter().map(|j| j.deadline).collect(),
            labels: jobs.iter().map(|j| to_json(&j.labels)).collect(),
            idempotency_keys: jobs.iter().map(|j| j.idempotency_key.clone()).collect(),
            created_bys: jobs.iter().map(|j| j.created_by.clone()).collect(),
            created_ats: jobs.iter().map(|j| j.created_at).collect(),
            orgs: jobs.iter().map(|j| j.org.clone()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.ids,
            &self.queues,
            &self.kinds,
            &self.targets,
            &self.actions,
            &self.policy_names,
            &self.policies,
            &self.priorities,
            &self.run_ats,
            &self.deadlines,
            &self.labels,
            &self.idempotency_keys,
            &self.created_bys,
            &self.created_ats,
            &self.orgs,
        ]
    }
}

/// Log lines of one or more attempts, as the columns of one INSERT.
#[derive(Default)]
struct LogRows {
    job_ids: Vec<uuid::Uuid>,
    attempt_ids: Vec<i64>,
    attempts: Vec<i32>,
    indexes: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    streams: Vec<&'static str>,
    lines: Vec<String>,
}

impl LogRows {
    fn push(&mut self, lease: &Lease, first_index: u64, lines: &[NewLogLine]) {
        for (i, line) in lines.iter().enumerate() {
            self.job_ids.push(lease.job_id.0);
            self.attempt_ids.push(lease.attempt_id);
            self.attempts.push(lease.attempt as i32);
            self.indexes.push((first_index + i as u64) as i64);
            self.ats.push(line.at);
            self.streams.push(line.stream.as_str());
            // PostgreSQL text cannot hold NUL; such bytes become U+FFFD.
            self.lines.push(line.line.replace('\0', "\u{FFFD}"));
        }
    }

    const SQL: &str = "INSERT INTO log_lines (job_id, attempt_id, attempt, idx, at, stream, line) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::int[], $4::bigint[], $5::timestamptz[], $6::text[], $7::text[])";

    /// Its statement must be in the connection's cache already (see [`Tx`]) when it is sent
    /// together with others.
    async fn insert(&self, client: &impl GenericClient) -> Result<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        client
            .cached_execute(
                Self::SQL,
                &[
                    &self.job_ids,
                    &self.attempt_ids,
                    &self.attempts,
                    &self.indexes,
                    &self.ats,
                    &self.streams,
                    &self.lines,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }
}

/// A result waiting for its group's transaction, and where its answer goes.
type QueuedResult = (AttemptResult, oneshot::Sender<Result<(Job, Event)>>);

/// Results of attempts are written in groups (see [`GroupQueue`]): each call queues its
/// result and starts the committer task unless one runs.
type ResultGroups = GroupQueue<QueuedResult>;

/// The committer: writes groups until the queue is empty. If it panics, the role is handed
/// back, so that the next result starts a new committer.
async fn commit_results(pool: Pool, groups: Arc<ResultGroups>) {
    let _role = groups.role();
    loop {
        let group = groups.take();
        if !group.is_empty() {
            let (results, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            match finish_group(&pool, &results).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Err(e) => {
                    // Nothing of the group was written: each result may be sent again.
                    let message = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(Error::Backend(message.clone())));
                    }
                }
            }
        }
        if !groups.keep_committing() {
            return;
        }
    }
}

/// What a group's accepted result writes, by column.
#[derive(Default)]
struct Finished {
    ids: Vec<uuid::Uuid>,
    states: Vec<&'static str>,
    next_at: Vec<Option<DateTime<Utc>>>,
    errors: Vec<Option<String>>,
    classes: Vec<Option<&'static str>>,
    rules: Vec<Option<String>>,
    finish_reasons: Vec<Option<String>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    now: Vec<DateTime<Utc>>,
    refunds: Vec<i32>,
    steps: Vec<Value>,
    // The attempts' rows.
    attempt_ids: Vec<i64>,
    outcomes: Vec<&'static str>,
    exit_codes: Vec<Option<i32>>,
    delays: Vec<Option<i64>>,
    delay_reasons: Vec<Option<String>>,
    dropped: Vec<i64>,
    target_failed: Vec<Option<bool>>,
    // The events.
    from_states: Vec<&'static str>,
    reasons: Vec<String>,
    actors: Vec<String>,
    event_steps: Vec<Option<String>>,
}

impl Finished {
    /// Adds a result's rows as one more element of each column (for `unnest`).
    fn push(&mut self, row: FinishRow) {
        let FinishRow {
            attempt,
            job_id,
            from,
            to,
            finish_reason,
            finished_at,
            steps,
            reason,
            actor,
            step,
        } = row;
        self.ids.push(job_id.0);
        self.states.push(to.as_str());
        self.next_at.push(attempt.next.at);
        self.errors.push(attempt.error);
        self.classes.push(attempt.class);
        self.rules.push(attempt.rule);
        self.finish_reasons.push(finish_reason);
        self.finished_at.push(finished_at);
        self.now.push(attempt.finished_at);
        self.refunds.push(attempt.next.refund as i32);
        self.steps.push(to_json(&steps));
        self.attempt_ids.push(attempt.id);
        self.outcomes.push(attempt.outcome);
        self.exit_codes.push(attempt.exit_code);
        self.delays.push(attempt.next.delay_ms);
        self.delay_reasons.push(attempt.next.delay_reason);
        self.dropped.push(attempt.output_dropped_bytes);
        self.target_failed.push(attempt.target_failed);
        self.from_states.push(from.as_str());
        self.reasons.push(reason);
        self.actors.push(actor);
        self.event_steps.push(step);
    }

    /// The statements of [`Finished::write`]: the attempts' rows, the jobs' rows, the events.
    fn statements() -> [String; 3] {
        [
"UPDATE attempts SET finished_at = t.now, outcome = t.outcome, exit_code = t.exit_code, error = t.error, \
             class = t.class, rule = t.rule, next_delay_ms = t.delay, delay_reason = t.delay_reason, \
             output_dropped_bytes = t.dropped, target_failed = t.target_failed \
             FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], \
                         $8::bigint[], $9::text[], $10::bigint[], $11::bool[]) \
               AS t(id, now, outcome, exit_code, error, class, rule, delay, delay_reason, dropped, target_failed) \
             WHERE attempts.id = t.id".to_owned(),
            format!(
            "UPDATE jobs SET state = t.n_state, next_attempt_at = t.n_next_at, hold_reason = NULL, \
             last_error = COALESCE(t.n_error, last_error), \
             last_error_class = CASE WHEN t.n_error IS NULL THEN last_error_class ELSE t.n_class END, \
             last_rule = CASE WHEN t.n_error IS NULL THEN last_rule ELSE t.n_rule END, \
             finish_reason = t.n_finish_reason, finished_at = t.n_finished_at, lease_owner = NULL, \
             lease_expires_at = NULL, current_attempt_id = NULL, cancel_requested = false, \
             updated_at = t.n_now, attempt = attempt - t.n_refund, steps = t.n_steps \
             FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], \
                         $8::timestamptz[], $9::timestamptz[], $10::int[], $11::jsonb[]) \
               AS t(n_id, n_state, n_next_at, n_error, n_class, n_rule, n_finish_reason, n_finished_at, n_now, n_refund, n_steps) \
             WHERE jobs.id = t.n_id RETURNING {JOB_COLUMNS}"
            ),
            format!(
            "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) \
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
             RETURNING {EVENT_COLUMNS}"
            ),
        ]
    }

    /// The attempts' rows, the jobs' rows and the events, in one round trip. Its statements
    /// must be prepared already (see [`Tx`]) when it is sent together with others.
    async fn write(&self, tx: &Tx) -> Result<(Vec<Job>, Vec<Event>)> {
        let attempt_columns: [&(dyn ToSql + Sync); 11] = [
            &self.attempt_ids,
            &self.now,
            &self.outcomes,
            &self.exit_codes,
            &self.errors,
            &self.classes,
            &self.rules,
            &self.delays,
            &self.delay_reasons,
            &self.dropped,
            &self.target_failed,
        ];
        let job_columns: [&(dyn ToSql + Sync); 11] = [
            &self.ids,
            &self.states,
            &self.next_at,
            &self.errors,
            &self.classes,
            &self.rules,
            &self.finish_reasons,
            &self.finished_at,
            &self.now,
            &self.refunds,
            &self.steps,
        ];
        let event_columns: [&(dyn ToSql + Sync); 7] = [
            &self.ids,
            &self.now,
            &self.from_states,
            &self.states,
            &self.reasons,
            &self.actors,
            &self.event_steps,
        ];
        let [attempts_sql, jobs_sql, events_sql] = Self::statements();
        let (attempts_sql, jobs_sql, events_sql) = futures::try_join!(
            tx.prepare(&attempts_sql),
            tx.prepare(&jobs_sql),
            tx.prepare(&events_sql)
        )?;
        // Sent together (one round trip); the server runs them in this order.
        let (_, jobs, events) = futures::try_join!(
            tx.client().execute(&attempts_sql, &attempt_columns),
            tx.client().query(&jobs_sql, &job_columns),
            tx.client().query(&events_sql, &event_columns),
        )
        .map_err(pg)?;
        let jobs = jobs.iter().map(job_from_row).collect::<Result<_>>()?;
        let events = events.iter().map(event_from_row).collect::<Result<_>>()?;
        Ok((jobs, events))
    }
}

/// Writes a finished attempt's row (the last attempt of a pipeline step).
async fn finish_attempt_row(tx: &impl GenericClient, row: &AttemptRow) -> Result<()> {
    tx.cached_execute(
        "UPDATE attempts SET finished_at = $2, outcome = $3, exit_code = $4, error = $5, class = $6, rule = $7, \
         next_delay_ms = $8, delay_reason = $9, output_dropped_bytes = $10, target_failed = $11 WHERE id = $1",
        &[
            &row.id,
            &row.finished_at,
            &row.outcome,
            &row.exit_code,
            &row.error,
            &row.class,
            &row.rule,
            &row.next.delay_ms,
            &row.next.delay_reason,
            &row.output_dropped_bytes,
            &row.target_failed,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

async fn migrate(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg)?;
    // Nodes starting together queue here; the first applies, the others find it done.
    tx.cached_execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS retryd_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        .await
        .map_err(pg)?;
    for (version, sql) in MIGRATIONS {
        let applied = tx
            .cached_query_opt(
                "SELECT 1 FROM retryd_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(pg)?
            .is_some();
        if !applied {
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.cached_execute(
                "INSERT INTO retryd_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg)?;
            info!(version, "applied migration");
        }
    }
    tx.commit().await.map_err(pg)
}

/// Holds a LISTEN connection, reconnecting with backoff. After every (re)connect it sends a
/// `Wake`: notifications sent while it was away are lost, so the node looks again.
async fn listen(config: tokio_postgres::Config, signals: Signals) {
    let mut wait = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message {
                            let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                        }
                    }
                });
                if client
                    .batch_execute(&format!(
                        "LISTEN {WAKE_CHANNEL}; LISTEN {CANCEL_CHANNEL}; LISTEN {QUEUES_CHANNEL}; LISTEN {POLICIES_CHANNEL}; LISTEN {SCHEDULES_CHANNEL}"
                    ))
                    .await
                    .is_ok()
                {
                    wait = Duration::from_millis(100);
                    // What changed while no connection listened is read again.
                    signals.notice(Notice::Wake);
                    signals.notice(Notice::Policies);
                    signals.notice(Notice::Schedules);
                    while let Some((channel, payload)) = rx.recv().await {
                        let notice = match channel.as_str() {
                            QUEUES_CHANNEL => Notice::Queues,
                            POLICIES_CHANNEL => Notice::Policies,
                            SCHEDULES_CHANNEL => Notice::Schedules,
                            CANCEL_CHANNEL => match payload.parse() {
                                Ok(id) => Notice::Cancel(id),
                                Err(_) => continue,
                            },
                            _ => Notice::Wake,
                        };
                        signals.notice(notice);
                    }
                }
                driver.abort();
                warn!("lost the LISTEN connection to PostgreSQL; reconnecting");
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?wait, "cannot open the LISTEN connection to PostgreSQL")
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
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

/// Takes the advisory locks of the given targets until the transaction ends, in one order so
/// that two transactions cannot wait for each other.
/// The parameters of `claim_candidates.sql`, its walk starting at `walk`'s floors.
fn claim_params<'a>(
    request: &'a ClaimRequest,
    skipped: &'a Vec<String>,
    window: &'a i64,
    walk: &'a floors::Walk,
) -> [&'a (dyn ToSql + Sync); 10] {
    [
        &request.now,
        skipped,
        window,
        &request.runnable.handler_kinds,
        &request.runnable.builtin,
        &request.due_by,
        &walk.orgs,
        &walk.ranks,
        &walk.dues,
        &walk.ids,
    ]
}

async fn lock_targets(client: &impl GenericClient, targets: &[&str]) -> Result<()> {
    lock_names(client, TARGET_LOCK_CLASS, targets).await
}

/// Takes the transaction's advisory locks of `class` on `names`, in hash order (so that two
/// transactions never wait on each other crosswise).
async fn lock_names(client: &impl GenericClient, class: i32, names: &[&str]) -> Result<()> {
    client
        .cached_execute(
            "SELECT pg_advisory_xact_lock($1, h) FROM (SELECT hashtext(t) AS h FROM unnest($2::text[]) AS t ORDER BY 1) AS s",
            &[&class, &names],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

/// The retry budgets of the organizations with a retry among the candidates, read under
/// their locks.
async fn read_org_budgets(
    client: &impl GenericClient,
    candidates: &[Job],
    now: DateTime<Utc>,
) -> Result<HashMap<String, rules::OrgBudget>> {
    let orgs = rules::retrying_orgs(candidates);
    if orgs.is_empty() {
        return Ok(HashMap::new());
    }
    // Only organizations with a budget are locked and counted: most have none, and their
    // retries must not wait for either (each claim with a retry paid tens of milliseconds).
    let budgeted: Vec<String> = client
        .cached_query(
            "SELECT name FROM organizations WHERE retry_budget IS NOT NULL AND name = ANY($1)",
            &[&orgs],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if budgeted.is_empty() {
        return Ok(HashMap::new());
    }
    let orgs: Vec<&str> = budgeted.iter().map(String::as_str).collect();
    lock_names(client, ORG_LOCK_CLASS, &orgs).await?;
    let since = now
        - chrono::Duration::from_std(retryd_store::limits::ORG_BUDGET_WINDOW).unwrap_or_default();
    let rows = client
        .cached_query(include_str!("../queries/org_budgets.sql"), &[&orgs, &since])
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|row| {
            let cap: i32 = row.get(1);
            Ok((
                row.get(0),
                rules::OrgBudget {
                    cap: u32::try_from(cap).map_err(corrupt)?,
                    used: TargetUsage {
                        retries: row.get::<_, i64>(2) as u32,
                        oldest: row.get(3),
                    },
                },
            ))
        })
        .collect()
}

/// The circuits and budget usage of the candidates' targets, as far as the limits need them,
/// read under the targets' locks so that two nodes never both take the last slot.
async fn read_limits(
    client: &impl GenericClient,
    candidates: &[Job],
    limits: &TargetLimits,
    now: DateTime<Utc>,
) -> Result<(HashMap<String, Circuit>, HashMap<String, TargetUsage>)> {
    let targets = rules::targets_of(candidates);
    let (mut circuits, mut usage) = (HashMap::new(), HashMap::new());
    if targets.is_empty() || limits.is_empty() {
        return Ok((circuits, usage));
    }
    lock_targets(client, &targets).await?;
    if limits.circuit.is_some() {
        for row in client
            .cached_query(
                &format!("SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target = ANY($1)"),
                &[&targets],
            )
            .await
            .map_err(pg)?
        {
            let circuit = circuit_from_row(&row)?;
            circuits.insert(circuit.target.clone(), circuit);
        }
    }
    if let Some(budget) = &limits.budget {
        let since = now - chrono::Duration::from_std(budget.window).unwrap_or_default();
        for row in client
            .cached_query(
                "SELECT target, COUNT(*), MIN(started_at) FROM attempts \
                 WHERE target = ANY($1) AND number > 1 AND started_at > $2 GROUP BY target",
                &[&targets, &since],
            )
            .await
            .map_err(pg)?
        {
            usage.insert(
                row.get(0),
                TargetUsage {
                    retries: row.get::<_, i64>(1) as u32,
                    oldest: row.get(2),
                },
            );
        }
    }
    Ok((circuits, usage))
}

const CIRCUIT_COLUMNS: &str = "target, opened_at, open_until, probe_attempt_id, failures, attempts";

fn circuit_from_row(row: &Row) -> Result<Circuit> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    Ok(Circuit {
        target: row.try_get(0).map_err(get)?,
        opened_at: row.try_get(1).map_err(get)?,
        open_until: row.try_get(2).map_err(get)?,
        probe_attempt_id: row.try_get(3).map_err(get)?,
        failures: row.try_get::<_, i32>(4).map_err(get)? as u32,
        attempts: row.try_get::<_, i32>(5).map_err(get)? as u32,
    })
}

/// Deletes a target's circuit and ends its outage (`closed_by` says how); the jobs it held
/// may start at once. Whether there was one.
async fn close_circuit_rows(
    client: &impl GenericClient,
    target: &str,
    closed_by: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let closed = client
        .cached_execute("DELETE FROM circuits WHERE target = $1", &[&target])
        .await
        .map_err(pg)?;
    client
        .cached_execute(
            "UPDATE circuit_history SET closed_at = $2, closed_by = $3 WHERE target = $1 AND closed_at IS NULL",
            &[&target, &now, &closed_by],
        )
        .await
        .map_err(pg)?;
    client
        .cached_execute(
            "DELETE FROM circuit_history WHERE closed_at < $1",
            &[&(now - retryd_store::OUTAGE_RETENTION)],
        )
        .await
        .map_err(pg)?;
    // SKIP LOCKED: a job a claim holds right now is being looked at anyway, and waiting for it
    // could deadlock with that claim.
    client
        .cached_execute(
            "UPDATE jobs SET next_attempt_at = $2, hold_reason = NULL, updated_at = $2 WHERE id IN \
             (SELECT id FROM jobs WHERE target = $1 AND state IN ('pending', 'retrying') \
              AND starts_with(hold_reason, $3) FOR UPDATE SKIP LOCKED)",
            &[&target, &now, &rules::CIRCUIT_HOLD],
        )
        .await
        .map_err(pg)?;
    Ok(closed == 1)
}

/// Counts a finished attempt towards its target's circuit (under the target's lock).
/// Returns true when the circuit closed, which makes the jobs it held due now.
async fn update_circuit(
    client: &impl GenericClient,
    target: &str,
    attempt_id: i64,
    failed: Option<bool>,
    config: &CircuitConfig,
    now: DateTime<Utc>,
) -> Result<bool> {
    let circuit = client
        .cached_query_opt(
            &format!("SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target = $1"),
            &[&target],
        )
        .await
        .map_err(pg)?
        .map(|row| circuit_from_row(&row))
        .transpose()?;
    let window = if failed == Some(true) {
        let since = now - chrono::Duration::from_std(config.window).unwrap_or_default();
        let row = client
            .cached_query_one(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE target_failed) FROM attempts \
                 WHERE target = $1 AND target_failed IS NOT NULL AND started_at > $2",
                &[&target, &since],
            )
            .await
            .map_err(pg)?;
        (row.get::<_, i64>(0) as u32, row.get::<_, i64>(1) as u32)
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
            client
                .cached_execute(
                    "INSERT INTO circuits (target, opened_at, open_until, probe_attempt_id, failures, attempts) \
                     VALUES ($1, $2, $3, NULL, $4, $5) ON CONFLICT (target) DO UPDATE SET \
                     opened_at = $2, open_until = $3, probe_attempt_id = NULL, failures = $4, attempts = $5",
                    &[&target, &now, &until, &(failures as i32), &(attempts as i32)],
                )
                .await
                .map_err(pg)?;
            // A failed probe continues the outage; otherwise one begins.
            if circuit.is_some() {
                client
                    .cached_execute(
                        "UPDATE circuit_history SET reopened = reopened + 1 WHERE target = $1 AND closed_at IS NULL",
                        &[&target],
                    )
                    .await
            } else {
                client
                    .cached_execute(
                        "INSERT INTO circuit_history (target, opened_at, failures, attempts) VALUES ($1, $2, $3, $4)",
                        &[&target, &now, &(failures as i32), &(attempts as i32)],
                    )
                    .await
            }
            .map_err(pg)?;
        }
        CircuitChange::Close => {
            close_circuit_rows(client, target, &retryd_store::closed_by(None), now).await?;
            return Ok(true);
        }
        CircuitChange::FreeProbe => {
            client
                .cached_execute(
                    "UPDATE circuits SET probe_attempt_id = NULL WHERE target = $1",
                    &[&target],
                )
                .await
                .map_err(pg)?;
        }
    }
    Ok(false)
}

async fn enqueue(
    client: &impl GenericClient,
    job: JobId,
    notification: &NewNotification,
    now: DateTime<Utc>,
) -> Result<()> {
    client
        .cached_execute(
            "INSERT INTO notifications (job_id, event, sink, payload, state, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
            &[&job.0, &notification.event, &notification.sink, &notification.payload, &now],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

const NOTIFICATION_COLUMNS: &str = "id, job_id, event, sink, payload, state, attempts, next_attempt_at, last_error, created_at, updated_at";

fn notification_from_row(row: &Row) -> Result<Notification> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    let state: String = row.try_get(5).map_err(get)?;
    Ok(Notification {
        id: row.try_get(0).map_err(get)?,
        job_id: JobId(row.try_get(1).map_err(get)?),
        event: row.try_get(2).map_err(get)?,
        sink: row.try_get(3).map_err(get)?,
        payload: row.try_get(4).map_err(get)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt(format!("delivery state {state}")))?,
        attempts: row.try_get::<_, i32>(6).map_err(get)? as u32,
        next_attempt_at: row.try_get(7).map_err(get)?,
        last_error: row.try_get(8).map_err(get)?,
        created_at: row.try_get(9).map_err(get)?,
        updated_at: row.try_get(10).map_err(get)?,
        log: Vec::new(),
    })
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
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let columns = NewJobColumns::of(&jobs);
        // One statement for the whole batch; a key already taken (by a stored job or an
        // earlier one of this batch) inserts nothing and is looked up below.
        let inserted = tx
            .cached_query(
                &with_columns(include_str!("../queries/insert_jobs.sql")),
                &columns.params(),
            )
            .await
            .map_err(pg)?;
        let mut stored: HashMap<uuid::Uuid, Job> = inserted
            .iter()
            .map(|row| job_from_row(row).map(|j| (j.id.0, j)))
            .collect::<Result<_>>()?;
        let created: Vec<&NewJob> = jobs
            .iter()
            .filter(|j| stored.contains_key(&j.id.0))
            .collect();
        let events = if created.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<uuid::Uuid> = created.iter().map(|j| j.id.0).collect();
            let ats: Vec<DateTime<Utc>> = created.iter().map(|j| j.created_at).collect();
            let actors: Vec<&str> = created.iter().map(|j| rules::submitter(j)).collect();
            let steps: Vec<Option<String>> = created.iter().map(|j| rules::first_step(j)).collect();
            let rows = tx
                .cached_query(
                    &format!(
                        "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) \
                         SELECT job, at, NULL, 'pending', 'submitted', actor, step \
                         FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) AS t(job, at, actor, step) \
                         RETURNING {EVENT_COLUMNS}"
                    ),
                    &[&ids, &ats, &actors, &steps],
                )
                .await
                .map_err(pg)?;
            notify(&tx, WAKE_CHANNEL, "").await?;
            rows.iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>>>()?
        };
        let taken: Vec<(&str, &str, &str)> = jobs
            .iter()
            .filter(|j| !stored.contains_key(&j.id.0))
            .filter_map(|j| {
                Some((
                    j.org.as_str(),
                    j.queue.as_str(),
                    j.idempotency_key.as_deref()?,
                ))
            })
            .collect();
        let orgs: Vec<&str> = taken.iter().map(|t| t.0).collect();
        let queues: Vec<&str> = taken.iter().map(|t| t.1).collect();
        let keys: Vec<&str> = taken.iter().map(|t| t.2).collect();
        if !keys.is_empty() {
            let existing = tx
                .cached_query(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM jobs \
                         WHERE (org, queue, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
                    ),
                    &[&orgs, &queues, &keys],
                )
                .await
                .map_err(pg)?;
            for row in &existing {
                let job = job_from_row(row)?;
                stored.insert(job.id.0, job);
            }
        }
        tx.commit().await.map_err(pg)?;
        for job in stored.values().filter(|j| j.state.is_waiting()) {
            self.floors.lower(job);
        }
        rules::answer_inserts(&jobs, stored.into_values().collect(), events)
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let skipped = rules::skipped_queues(request);
        let window = rules::candidate_window(request) as i64;
        let sql = with_columns(include_str!("../queries/claim_candidates.sql"));
        let walk = self.floors.walk(!skipped.is_empty());
        let (tx, mut rows) = Tx::begin_with(
            self.scheduler_client().await?,
            &sql,
            &claim_params(request, &skipped, &window, &walk),
        )
        .await?;
        let mut from_floors = walk.starts_at_floors();
        if from_floors && rows.len() < request.limit {
            // Not enough above the floors: what lies below them is looked at now, not later.
            from_floors = false;
            let from_start = tx.prepare(&sql).await?;
            rows = tx
                .client()
                .query(
                    &from_start,
                    &claim_params(request, &skipped, &window, &floors::Walk::default()),
                )
                .await
                .map_err(pg)?;
        }
        let candidates = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        self.floors.found(from_floors, &candidates);
        let candidates = rules::fair_share(candidates);
        let budgets = read_org_budgets(tx.client(), &candidates, request.now).await?;
        let by_org = rules::gate_orgs(candidates, &budgets, request.now);
        let candidates = by_org.admitted;
        let (circuits, usage) =
            read_limits(tx.client(), &candidates, &request.limits, request.now).await?;
        let mut gated = rules::gate(candidates, &circuits, &usage, &request.limits, request.now);
        gated.held.extend(by_org.held);
        if !gated.held.is_empty() {
            let ids: Vec<uuid::Uuid> = gated.held.iter().map(|h| h.id.0).collect();
            let until: Vec<DateTime<Utc>> = gated.held.iter().map(|h| h.until).collect();
            let reasons: Vec<&str> = gated.held.iter().map(|h| h.reason.as_str()).collect();
            tx.client()
                .cached_execute(
                    "UPDATE jobs SET next_attempt_at = t.until, hold_reason = t.reason, updated_at = $4 \
                     FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS t(id, until, reason) WHERE jobs.id = t.id",
                    &[&ids, &until, &reasons, &request.now],
                )
                .await
                .map_err(pg)?;
            for held in gated.held.iter().filter(|h| h.starts) {
                insert_event(
                    tx.client(),
                    held.id,
                    request.now,
                    Some(held.state),
                    held.state,
                    &held.reason,
                    &request.node,
                    None,
                )
                .await?;
            }
        }
        let chosen = rules::within_slots(gated.admitted, request);
        if chosen.is_empty() {
            // Commit, not drop: the candidates' row locks end with it, and the connection
            // stays in the pool.
            tx.commit().await.map_err(pg)?;
            return Ok(Vec::new());
        }
        let rows = chosen
            .iter()
            .map(|job| ClaimRow::of(job, request))
            .collect::<Result<Vec<_>>>()?;
        // The rows as columns, for `unnest`.
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.job_id.0).collect();
        let numbers: Vec<i32> = rows.iter().map(|r| r.number as i32).collect();
        let steps: Vec<Option<&str>> = rows.iter().map(|r| r.step.as_deref()).collect();
        let targets: Vec<Option<&str>> = rows.iter().map(|r| r.target.as_deref()).collect();
        let starts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.started_at).collect();
        let from_states: Vec<&str> = rows.iter().map(|r| r.from.as_str()).collect();
        let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
        let start_sql = tx
            .prepare(&with_columns(include_str!("../queries/claim_start.sql")))
            .await?;
        let events_sql = tx
            .prepare(&format!(
                "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) \
                 SELECT job, $2, from_state, 'running', reason, $3, step \
                 FROM unnest($1::uuid[], $4::text[], $5::text[], $6::text[]) AS t(job, from_state, reason, step) \
                 RETURNING {EVENT_COLUMNS}"
            ))
            .await?;
        let start: [&(dyn ToSql + Sync); 8] = [
            &ids,
            &numbers,
            &request.node,
            &request.now,
            &steps,
            &targets,
            &request.lease_until,
            &starts,
        ];
        let event: [&(dyn ToSql + Sync); 6] = [
            &ids,
            &request.now,
            &request.node,
            &from_states,
            &reasons,
            &steps,
        ];
        let probes = rules::probe_targets(&chosen, &circuits, request.now);
        // The batch's writes and, when no probe needs its attempt id, the COMMIT: one round
        // trip, whatever the batch's size. The server runs them in this order.
        let (started, events) = if probes.is_empty() {
            let (started, events, ()) = futures::try_join!(
                tx.client().query(&start_sql, &start),
                tx.client().query(&events_sql, &event),
                tx.commit(),
            )
            .map_err(pg)?;
            (started, events)
        } else {
            futures::try_join!(
                tx.client().query(&start_sql, &start),
                tx.client().query(&events_sql, &event),
            )
            .map_err(pg)?
        };
        let started: BTreeMap<JobId, Job> = started
            .iter()
            .map(|row| job_from_row(row).map(|j| (j.id, j)))
            .collect::<Result<_>>()?;
        let events: BTreeMap<JobId, Event> = events
            .iter()
            .map(|row| event_from_row(row).map(|e| (e.job_id, e)))
            .collect::<Result<_>>()?;
        let attempt_ids: BTreeMap<uuid::Uuid, i64> = started
            .values()
            .filter_map(|j| Some((j.id.0, j.attempt_id?)))
            .collect();
        if !probes.is_empty() {
            for (job, target) in probes {
                tx.client()
                    .cached_execute(
                        "UPDATE circuits SET probe_attempt_id = $2 WHERE target = $1",
                        &[&target, &attempt_ids[&job.0]],
                    )
                    .await
                    .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
        }
        let (mut started, mut events) = (started, events);
        chosen
            .iter()
            .map(|job| {
                let missing = || corrupt(format!("claimed job {} vanished", job.id));
                Ok(Claimed {
                    job: started.remove(&job.id).ok_or_else(missing)?,
                    due_at: rules::due_at(job),
                    lease: Lease {
                        job_id: job.id,
                        attempt_id: attempt_ids[&job.id.0],
                        attempt: job.attempt + 1,
                        node: request.node.clone(),
                    },
                    event: events.remove(&job.id).ok_or_else(missing)?,
                })
            })
            .collect()
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
            tokio::spawn(commit_results(self.pool.clone(), self.results.clone()));
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
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let job = lock_job(&tx, id).await?;
        if job.state == JobState::Running {
            tx.cached_execute(
                "UPDATE jobs SET cancel_requested = true, updated_at = $2 WHERE id = $1",
                &[&id.0, &now],
            )
            .await
            .map_err(pg)?;
            notify(&tx, CANCEL_CHANNEL, &id.to_string()).await?;
            let event = if job.cancel_requested {
                None
            } else {
                let reason = rules::cancel_request_reason(actor);
                let step = rules::claimed_step(&job);
                Some(
                    insert_event(
                        &tx,
                        id,
                        now,
                        Some(job.state),
                        job.state,
                        &reason,
                        actor,
                        step,
                    )
                    .await?,
                )
            };
            let job = load_job(&tx, id).await?;
            tx.commit().await.map_err(pg)?;
            return Ok((job, event));
        }
        let to = match job.state.transition(JobState::Cancelled) {
            Ok(to) => to,
            Err(refused) => {
                tx.rollback().await.map_err(pg)?;
                return Err(refused.into());
            }
        };
        let reason = rules::cancel_reason(actor);
        tx.cached_execute(
            "UPDATE jobs SET state = $2, finish_reason = $3, finished_at = $4, next_attempt_at = NULL, updated_at = $4 WHERE id = $1",
            &[&id.0, &to.as_str(), &reason, &now],
        )
        .await
        .map_err(pg)?;
        let event = insert_event(
            &tx,
            id,
            now,
            Some(job.state),
            to,
            &reason,
            actor,
            rules::claimed_step(&job),
        )
        .await?;
        let job = load_job(&tx, id).await?;
        tx.commit().await.map_err(pg)?;
        Ok((job, Some(event)))
    }

    async fn requeue_job(&self, id: JobId, requeue: &Requeue) -> Result<(Job, Option<Event>)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let job = lock_job(&tx, id).await?;
        if let Err(refused) = rules::check_changes(&job, requeue) {
            tx.rollback().await.map_err(pg)?;
            return Err(refused);
        }
        if let Some(changes) = &requeue.changes {
            tx.cached_execute(
                "UPDATE jobs SET action = $2, policy_name = $3, policy = $4, deadline = $5 WHERE id = $1",
                &[
                    &id.0,
                    &to_json(&changes.action),
                    &changes.policy_name,
                    &to_json(&changes.policy),
                    &changes.deadline,
                ],
            )
            .await
            .map_err(pg)?;
        }
        if job.state == JobState::Retrying {
            tx.cached_execute(
                "UPDATE jobs SET next_attempt_at = $2, updated_at = $2 WHERE id = $1",
                &[&id.0, &requeue.now],
            )
            .await
            .map_err(pg)?;
            notify(&tx, WAKE_CHANNEL, "").await?;
            let job = load_job(&tx, id).await?;
            tx.commit().await.map_err(pg)?;
            self.floors.lower(&job);
            return Ok((job, None));
        }
        let to = match job.state.transition(JobState::Pending) {
            Ok(to) => to,
            Err(refused) => {
                tx.rollback().await.map_err(pg)?;
                return Err(refused.into());
            }
        };
        let attempt = if requeue.reset { 0 } else { job.attempt as i32 };
        tx.cached_execute(
            "UPDATE jobs SET state = $2, attempt = $3, next_attempt_at = $4, finish_reason = NULL, finished_at = NULL, \
             cancel_requested = false, updated_at = $4, started_at = CASE WHEN $5 THEN NULL ELSE started_at END, \
             step_attempt_base = CASE WHEN $5 THEN 0 ELSE step_attempt_base END WHERE id = $1",
            &[&id.0, &to.as_str(), &attempt, &requeue.now, &requeue.reset],
        )
        .await
        .map_err(pg)?;
        let reason = rules::requeue_reason(&job, requeue);
        let event = insert_event(
            &tx,
            id,
            requeue.now,
            Some(job.state),
            to,
            &reason,
            &requeue.actor,
            rules::claimed_step(&job),
        )
        .await?;
        notify(&tx, WAKE_CHANNEL, "").await?;
        let job = load_job(&tx, id).await?;
        tx.commit().await.map_err(pg)?;
        self.floors.lower(&job);
        Ok((job, Some(event)))
    }

    async fn expire_jobs(&self, now: DateTime<Utc>) -> Result<Vec<(Job, Event)>> {
        let mut client = self.scheduler_client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // One node sweeps at a time; another finds the lock taken and leaves it to that one
        // (whose sweep this is), and takes over on its next tick if that node dies.
        let locked: bool = tx
            .cached_query_one("SELECT pg_try_advisory_xact_lock($1)", &[&EXPIRE_LOCK])
            .await
            .map_err(pg)?
            .get(0);
        if !locked {
            tx.commit().await.map_err(pg)?;
            return Ok(Vec::new());
        }
        let due = select_jobs(
            &tx,
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('pending', 'retrying') AND deadline IS NOT NULL AND deadline <= $1 \
                 FOR UPDATE SKIP LOCKED"
            ),
            &[&now],
        )
        .await?;
        let mut expired = Vec::with_capacity(due.len());
        for job in due {
            let to = job.state.transition(JobState::Expired)?;
            let reason = rules::expire_reason(&job, now);
            tx.cached_execute(
                "UPDATE jobs SET state = $2, finish_reason = $3, finished_at = $4, next_attempt_at = NULL, updated_at = $4 WHERE id = $1",
                &[&job.id.0, &to.as_str(), &reason, &now],
            )
            .await
            .map_err(pg)?;
            let event = insert_event(
                &tx,
                job.id,
                now,
                Some(job.state),
                to,
                &reason,
                rules::SCHEDULER,
                rules::claimed_step(&job),
            )
            .await?;
            expired.push((load_job(&tx, job.id).await?, event));
        }
        tx.commit().await.map_err(pg)?;
        Ok(expired)
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

#[async_trait]
impl JobReader for PostgresStore {
    async fn get_job(&self, id: JobId) -> Result<Job> {
        load_job(&self.client().await?, id).await
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<Page> {
        let client = self.client().await?;
        let states: Vec<&str> = if filter.states.is_empty() {
            JobState::ALL.iter().map(|s| s.as_str()).collect()
        } else {
            filter.states.iter().map(|s| s.as_str()).collect()
        };
        let (label_key, label_value) = filter.label.clone().unzip();
        let jobs = select_jobs(
            &client,
            &filter.in_order(&with_columns(include_str!("../queries/list_jobs.sql"))),
            &[
                &states,
                &filter.queue,
                &filter.kind,
                &filter.target,
                &label_key,
                &label_value,
                &filter.created_after,
                &filter.created_before,
                &cursor.map(|c| c.0),
                &((limit + 1) as i64),
                &filter.org,
                &filter.text.as_deref().map(str::to_lowercase),
            ],
        )
        .await?;
        Ok(Page::of_one_more(jobs, limit))
    }

    async fn list_attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT job_id, number, step, node, started_at, finished_at, outcome, exit_code, error, class, rule, \
                 next_delay_ms, delay_reason, output_dropped_bytes FROM attempts WHERE job_id = $1 ORDER BY id",
                &[&id.0],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                let get = |e: tokio_postgres::Error| corrupt(e);
                let outcome: Option<String> = row.try_get(6).map_err(get)?;
                Ok(Attempt {
                    job_id: JobId(row.try_get(0).map_err(get)?),
                    number: row.try_get::<_, i32>(1).map_err(get)? as u32,
                    step: row.try_get(2).map_err(get)?,
                    node: row.try_get(3).map_err(get)?,
                    started_at: row.try_get(4).map_err(get)?,
                    finished_at: row.try_get(5).map_err(get)?,
                    outcome: outcome
                        .map(|o| {
                            AttemptOutcome::parse(&o).ok_or_else(|| corrupt(format!("outcome {o}")))
                        })
                        .transpose()?,
                    exit_code: row.try_get(7).map_err(get)?,
                    error: row.try_get(8).map_err(get)?,
                    class: class(row.try_get(9).map_err(get)?)?,
                    rule: row.try_get(10).map_err(get)?,
                    next_delay_ms: row
                        .try_get::<_, Option<i64>>(11)
                        .map_err(get)?
                        .map(|v| v.max(0) as u64),
                    delay_reason: row.try_get(12).map_err(get)?,
                    output_dropped_bytes: row.try_get::<_, i64>(13).map_err(get)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn list_events(&self, id: JobId) -> Result<Vec<Event>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE job_id = $1 ORDER BY id"),
                &[&id.0],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(event_from_row).collect()
    }

    /// Stream order here is (writing transaction, id), not id: ids are drawn before commit,
    /// so a later id can commit first. Only the events of transactions older than the
    /// snapshot's xmin are delivered; those are final, so nothing is ever skipped (see
    /// migration 0009). The cursor event's own position is looked up; if it was pruned, the
    /// stream goes on from the oldest transaction among the events after it.
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events \
                     WHERE (xid, id) > (COALESCE((SELECT xid FROM events WHERE id = $1), \
                                                 (SELECT min(xid) FROM events WHERE id > $1), '0'), $1) \
                       AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY xid, id LIMIT $2"
                ),
                &[&after, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_id(&self) -> Result<i64> {
        let client = self.client().await?;
        Ok(client
            .cached_query_opt(
                "SELECT id FROM events WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY xid DESC, id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(pg)?
            .map_or(0, |row| row.get(0)))
    }

    async fn read_log(&self, id: JobId, after: i64, limit: usize) -> Result<Vec<LogLine>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT seq, attempt, at, stream, line FROM log_lines WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&id.0, &after, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(log_line_from_row).collect()
    }

    async fn read_log_tail(
        &self,
        id: JobId,
        limit: usize,
        containing: Option<&str>,
        attempt: Option<u32>,
    ) -> Result<Vec<LogLine>> {
        let client = self.client().await?;
        let containing = containing.map(str::to_lowercase);
        let attempt = attempt.map(|n| n as i32);
        let rows = client
            .cached_query(
                "SELECT seq, attempt, at, stream, line FROM log_lines \
                 WHERE job_id = $1 AND ($3::text IS NULL OR strpos(lower(line), $3) > 0) \
                 AND ($4::int IS NULL OR attempt = $4) ORDER BY seq DESC LIMIT $2",
                &[&id.0, &(limit as i64), &containing, &attempt],
            )
            .await
            .map_err(pg)?;
        let mut lines = rows
            .iter()
            .map(log_line_from_row)
            .collect::<Result<Vec<_>>>()?;
        lines.reverse();
        Ok(lines)
    }

    async fn count_ahead(&self, job: &Job, now: DateTime<Utc>) -> Result<u64> {
        let client = self.client().await?;
        let due = job.next_attempt_at.unwrap_or(job.run_at);
        let row = client
            .cached_query_one(
                include_str!("../queries/count_ahead.sql"),
                &[
                    &job.queue,
                    &now,
                    &i32::from(job.priority),
                    &due,
                    &job.id.0,
                    &job.org,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn count_running(&self, org: &str) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .cached_query_one(
                "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND org = $1",
                &[&org],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn paused_queues(&self, org: &str) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT name FROM queues WHERE org = $1 AND paused ORDER BY name",
                &[&org],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn queue_depths(&self, org: Option<&str>) -> Result<BTreeMap<String, u64>> {
        let client = self.client().await?;
        let rows = client
            .cached_query("SELECT queue, COUNT(*) FROM jobs WHERE state IN ('pending', 'retrying') AND ($1::text IS NULL OR org = $1) GROUP BY queue", &[&org])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn count_by_state(&self, org: Option<&str>) -> Result<BTreeMap<JobState, u64>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT state, COUNT(*) FROM jobs WHERE $1::text IS NULL OR org = $1 GROUP BY state",
                &[&org],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| Ok((state(r.get(0))?, r.get::<_, i64>(1) as u64)))
            .collect()
    }

    async fn expired_leases(&self, cutoff: DateTime<Utc>) -> Result<Vec<Job>> {
        let client = self.scheduler_client().await?;
        select_jobs(
            &client,
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_expires_at < $1"
            ),
            &[&cutoff],
        )
        .await
    }

    async fn list_circuits(&self, org: Option<&str>) -> Result<Vec<Circuit>> {
        let client = self.client().await?;
        client
            .cached_query(
                &format!(
                    "SELECT {CIRCUIT_COLUMNS} FROM circuits \
                     WHERE $1::text IS NULL OR target IN (SELECT target FROM jobs WHERE org = $1 AND target IS NOT NULL) \
                     ORDER BY target"
                ),
                &[&org],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(circuit_from_row)
            .collect()
    }

    async fn circuit_history(&self, org: Option<&str>, limit: usize) -> Result<Vec<CircuitOutage>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT target, opened_at, closed_at, failures, attempts, reopened, closed_by \
                 FROM circuit_history \
                 WHERE $1::text IS NULL OR target IN (SELECT target FROM jobs WHERE org = $1 AND target IS NOT NULL) \
                 ORDER BY opened_at DESC, id DESC LIMIT $2",
                &[&org, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| CircuitOutage {
                target: r.get(0),
                opened_at: r.get(1),
                closed_at: r.get(2),
                failures: r.get::<_, i32>(3) as u32,
                attempts: r.get::<_, i32>(4) as u32,
                reopened: r.get::<_, i32>(5) as u32,
                closed_by: r.get(6),
            })
            .collect())
    }

    async fn held_by_circuits(&self, org: &str) -> Result<BTreeMap<String, u64>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT target, COUNT(*) FROM jobs WHERE org = $1 AND state IN ('pending', 'retrying') \
                 AND target IS NOT NULL AND starts_with(hold_reason, $2) GROUP BY target",
                &[&org, &rules::CIRCUIT_HOLD],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn attempt_process(&self, attempt_id: i64) -> Result<Option<Process>> {
        let client = self.client().await?;
        let row = client
            .cached_query_opt(
                "SELECT pid, pid_started, pid_host FROM attempts WHERE id = $1",
                &[&attempt_id],
            )
            .await
            .map_err(pg)?;
        Ok(row.and_then(
            |r| match (r.get::<_, Option<i64>>(0), r.get::<_, Option<i64>>(1)) {
                (Some(pid), Some(started)) => Some(Process {
                    pid: pid as u32,
                    started: started as u64,
                    host: r.get(2),
                }),
                _ => None,
            },
        ))
    }

    async fn next_wakeup(&self, skipped: &[String], runnable: &Runnable) -> Result<Wakeups> {
        let client = self.scheduler_client().await?;
        let row = client
            .cached_query_one(
                include_str!("../queries/next_wakeup.sql"),
                &[&skipped, &runnable.handler_kinds, &runnable.builtin],
            )
            .await
            .map_err(pg)?;
        Ok(Wakeups {
            due: row.get(0),
            deadline: row.get(1),
            lease_expiry: row.get(2),
        })
    }

    async fn ping(&self) -> Result<()> {
        let client = self.client().await?;
        client.cached_query_one("SELECT 1", &[]).await.map_err(pg)?;
        Ok(())
    }

    async fn stats_rows(&self, query: &StatsQuery) -> Result<StatsRows> {
        stats_rows(&self.client().await?, query).await
    }
}

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn claim_deliveries(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let claimed: Vec<Notification> = tx
            .cached_query(
                &format!(
                    "WITH due AS (SELECT id FROM notifications \
                       WHERE (state = 'pending' AND next_attempt_at <= $1) OR (state = 'delivering' AND lease_expires_at < $1) \
                       ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     UPDATE notifications n SET state = 'delivering', attempts = n.attempts + 1, lease_owner = $3, \
                       lease_expires_at = $4, next_attempt_at = NULL, updated_at = $1 \
                     FROM due WHERE n.id = due.id RETURNING {}",
                    NOTIFICATION_COLUMNS
                        .split(", ")
                        .map(|c| format!("n.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&now, &(limit as i64), &node, &lease_until],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(notification_from_row)
            .collect::<Result<_>>()?;
        let ids: Vec<i64> = claimed.iter().map(|n| n.id).collect();
        let numbers: Vec<i32> = claimed.iter().map(|n| n.attempts as i32).collect();
        let attempt_ids: HashMap<i64, i64> = tx
            .cached_query(
                "INSERT INTO notification_attempts (notification_id, number, node, started_at) \
                 SELECT id, number, $3, $4 FROM unnest($1::bigint[], $2::int[]) AS t(id, number) \
                 RETURNING notification_id, id",
                &[&ids, &numbers, &node, &now],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        tx.commit().await.map_err(pg)?;
        Ok(claimed
            .into_iter()
            .map(|notification| ClaimedDelivery {
                attempt_id: attempt_ids[&notification.id],
                number: notification.attempts,
                notification,
            })
            .collect())
    }

    async fn finish_delivery(&self, result: &DeliveryResult) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let holds = tx
            .cached_query_opt(
                "SELECT 1 FROM notifications WHERE id = $1 AND state = 'delivering' AND lease_owner = $2 \
                 AND (SELECT MAX(id) FROM notification_attempts WHERE notification_id = $1) = $3 FOR UPDATE",
                &[&result.notification_id, &result.node, &result.attempt_id],
            )
            .await
            .map_err(pg)?
            .is_some();
        if !holds {
            tx.rollback().await.map_err(pg)?;
            return Err(lost_delivery(result.notification_id));
        }
        tx.cached_execute(
            "UPDATE notification_attempts SET finished_at = $2, ok = $3, status = $4, error = $5 WHERE id = $1",
            &[&result.attempt_id, &result.now, &result.ok, &result.status, &result.error],
        )
        .await
        .map_err(pg)?;
        let next_at = match &result.next {
            DeliveryNext::Retry { at } => Some(*at),
            _ => None,
        };
        tx.cached_execute(
            "UPDATE notifications SET state = $2, next_attempt_at = $3, lease_owner = NULL, lease_expires_at = NULL, \
             last_error = COALESCE($4, last_error), updated_at = $5 WHERE id = $1",
            &[
                &result.notification_id,
                &result.next.state().as_str(),
                &next_at,
                &result.error,
                &result.now,
            ],
        )
        .await
        .map_err(pg)?;
        if next_at.is_some() {
            notify(&tx, WAKE_CHANNEL, "").await?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn list_notifications(
        &self,
        job: Option<JobId>,
        org: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let client = self.client().await?;
        let mut notifications: Vec<Notification> = client
            .cached_query(
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE ($1::uuid IS NULL OR job_id = $1) \
                     AND ($3::text IS NULL OR job_id IN (SELECT id FROM jobs WHERE org = $3)) \
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&job.map(|j| j.0), &(limit as i64), &org],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(notification_from_row)
            .collect::<Result<_>>()?;
        let ids: Vec<i64> = notifications.iter().map(|n| n.id).collect();
        let mut logs: HashMap<i64, Vec<DeliveryAttempt>> = HashMap::new();
        for r in client
            .cached_query(
                "SELECT notification_id, number, node, started_at, finished_at, ok, status, error \
                 FROM notification_attempts WHERE notification_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .map_err(pg)?
        {
            logs.entry(r.get(0)).or_default().push(DeliveryAttempt {
                number: r.get::<_, i32>(1) as u32,
                node: r.get(2),
                started_at: r.get(3),
                finished_at: r.get(4),
                ok: r.get(5),
                status: r.get(6),
                error: r.get(7),
            });
        }
        for n in &mut notifications {
            n.log = logs.remove(&n.id).unwrap_or_default();
        }
        Ok(notifications)
    }

    async fn next_delivery(&self) -> Result<Option<DateTime<Utc>>> {
        let client = self.client().await?;
        let row = client
            .cached_query_one(
                "SELECT LEAST((SELECT MIN(next_attempt_at) FROM notifications WHERE state = 'pending'), \
                 (SELECT MIN(lease_expires_at) FROM notifications WHERE state = 'delivering'))",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
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

const TOKEN_COLUMNS: &str =
    "id, name, role, secret_hash, created_at, created_by, revoked_at, org, instance";

const ORG_COLUMNS: &str = "name, default_policy, max_running, created_at, created_by, retry_budget";

fn org_from_row(row: &Row) -> Result<Org> {
    Ok(Org {
        name: row.get(0),
        default_policy: row.get(1),
        max_running: row
            .get::<_, Option<i32>>(2)
            .map(u32::try_from)
            .transpose()
            .map_err(corrupt)?,
        created_at: row.get(3),
        created_by: row.get(4),
        retry_budget: row
            .get::<_, Option<i32>>(5)
            .map(u32::try_from)
            .transpose()
            .map_err(corrupt)?,
    })
}

fn token_from_row(row: &Row) -> Result<TokenRecord> {
    let role: String = row.get(2);
    Ok(TokenRecord {
        id: row.get(0),
        name: row.get(1),
        role: Role::parse(&role).ok_or_else(|| corrupt(format!("role {role}")))?,
        secret_hash: row.get(3),
        created_at: row.get(4),
        created_by: row.get(5),
        revoked_at: row.get(6),
        org: row.get(7),
        instance: row.get(8),
    })
}

const SCHEDULE_COLUMNS: &str = "id, name, definition, paused, next_fire, last_fire, last_job_id, last_skip, \
     created_at, created_by, updated_at, org";

fn schedule_from_row(row: &Row) -> Result<Schedule> {
    Ok(Schedule {
        id: row.get(0),
        name: row.get(1),
        definition: json(row.get(2))?,
        paused: row.get(3),
        next_fire: row.get(4),
        last_fire: row.get(5),
        last_job_id: row.get::<_, Option<uuid::Uuid>>(6).map(JobId),
        last_skip: row.get(7),
        created_at: row.get(8),
        created_by: row.get(9),
        updated_at: row.get(10),
        org: row.get(11),
    })
}

/// Runs one schedule write and tells every node's scheduler (delivered at commit).
async fn schedule_write(
    store: &PostgresStore,
    name: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg)?;
    let changed = tx
        .cached_execute(sql, params)
        .await
        .map_err(|e| match e.code() {
            Some(&SqlState::UNIQUE_VIOLATION) => {
                Error::Conflict(format!("a schedule named '{name}' already exists"))
            }
            _ => pg(e),
        })?;
    notify(&tx, SCHEDULES_CHANNEL, name).await?;
    tx.commit().await.map_err(pg)?;
    Ok(changed)
}

#[async_trait]
impl ScheduleStore for PostgresStore {
    async fn insert_schedule(&self, s: &Schedule) -> Result<()> {
        schedule_write(
            self,
            &s.name,
            &format!("INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"),
            &[
                &s.id,
                &s.name,
                &to_json(&s.definition),
                &s.paused,
                &s.next_fire,
                &s.last_fire,
                &s.last_job_id.map(|j| j.0),
                &s.last_skip,
                &s.created_at,
                &s.created_by,
                &s.updated_at,
                &s.org,
            ],
        )
        .await
        .map(drop)
    }

    async fn update_schedule(&self, s: &Schedule) -> Result<bool> {
        schedule_write(
            self,
            &s.name,
            "UPDATE schedules SET definition = $2, paused = $3, next_fire = $4, updated_at = $5 WHERE id = $1",
            &[&s.id, &to_json(&s.definition), &s.paused, &s.next_fire, &s.updated_at],
        )
        .await
        .map(|n| n == 1)
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        schedule_write(self, id, "DELETE FROM schedules WHERE id = $1", &[&id])
            .await
            .map(|n| n == 1)
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY org, name"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn lead_schedules(
        &self,
        node: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let client = self.client().await?;
        let led = client
            .cached_query_opt(
                "INSERT INTO schedule_leader (id, node, until) VALUES (1, $1, $3) \
                 ON CONFLICT (id) DO UPDATE SET node = $1, until = $3 \
                 WHERE schedule_leader.node = $1 OR schedule_leader.until < $2 RETURNING node",
                &[&node, &now, &until],
            )
            .await
            .map_err(pg)?;
        Ok(led.is_some())
    }

    async fn advance_schedule(
        &self,
        id: &str,
        expected: Option<DateTime<Utc>>,
        p: &Progress,
    ) -> Result<bool> {
        let client = self.client().await?;
        let changed = client
            .cached_execute(
                "UPDATE schedules SET next_fire = $3, last_fire = COALESCE($4, last_fire), \
                 last_job_id = COALESCE($5, last_job_id), last_skip = COALESCE($6, last_skip), updated_at = $7 \
                 WHERE id = $1 AND next_fire IS NOT DISTINCT FROM $2",
                &[&id, &expected, &p.next_fire, &p.last_fire, &p.last_job_id.map(|j| j.0), &p.last_skip, &p.updated_at],
            )
            .await
            .map_err(pg)?;
        Ok(changed == 1)
    }
}

#[async_trait]
impl AccessStore for PostgresStore {
    async fn insert_token(&self, token: &TokenRecord) -> Result<()> {
        let client = self.client().await?;
        client
            .cached_execute(
                &format!(
                    "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &token.id,
                    &token.name,
                    &token.role.as_str(),
                    &token.secret_hash,
                    &token.created_at,
                    &token.created_by,
                    &token.revoked_at,
                    &token.org,
                    &token.instance,
                ],
            )
            .await
            .map_err(|e| match e.code() {
                Some(&SqlState::UNIQUE_VIOLATION) => {
                    Error::Conflict(format!("a token named '{}' already exists", token.name))
                }
                _ => pg(e),
            })?;
        Ok(())
    }

    async fn revoke_token(
        &self,
        org: &str,
        id_or_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>> {
        let client = self.client().await?;
        let row = client
            .cached_query_opt(
                &format!(
                    "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $3) \
                     WHERE org = $1 AND (id = $2 OR name = $2) RETURNING {TOKEN_COLUMNS}"
                ),
                &[&org, &id_or_name, &now],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let client = self.client().await?;
        let row = client
            .cached_query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn put_policy(&self, policy: &StoredPolicy) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.cached_execute(
                "INSERT INTO managed_policies (name, policy, active, updated_at, updated_by, org) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (org, name) DO UPDATE SET policy = $2, active = $3, updated_at = $4, updated_by = $5",
                &[
                    &policy.name,
                    &to_json(&policy.policy),
                    &policy.active,
                    &policy.updated_at,
                    &policy.updated_by,
                    &policy.org,
                ],
            )
            .await
            .map_err(pg)?;
        // Every node reads its policies again at once (delivered at commit).
        notify(&tx, POLICIES_CHANNEL, &policy.name).await?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT name, policy, active, updated_at, updated_by, org FROM managed_policies ORDER BY org, name",
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| {
                Ok(StoredPolicy {
                    name: r.get(0),
                    policy: json(r.get(1))?,
                    active: r.get(2),
                    updated_at: r.get(3),
                    updated_by: r.get(4),
                    org: r.get(5),
                })
            })
            .collect()
    }

    async fn insert_org(&self, org: &Org) -> Result<()> {
        let client = self.client().await?;
        client
            .cached_execute(
                &format!(
                    "INSERT INTO organizations ({ORG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
                ),
                &[
                    &org.name,
                    &org.default_policy,
                    &org.max_running.map(|n| n as i32),
                    &org.created_at,
                    &org.created_by,
                    &org.retry_budget.map(|n| n as i32),
                ],
            )
            .await
            .map_err(|e| match e.code() {
                Some(&SqlState::UNIQUE_VIOLATION) => Error::Conflict(format!(
                    "an organization named '{}' already exists",
                    org.name
                )),
                _ => pg(e),
            })?;
        Ok(())
    }

    async fn update_org(&self, org: &Org) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let changed = tx
            .cached_execute(
                "UPDATE organizations SET default_policy = $2, max_running = $3, retry_budget = $4 WHERE name = $1",
                &[
                    &org.name,
                    &org.default_policy,
                    &org.max_running.map(|n| n as i32),
                    &org.retry_budget.map(|n| n as i32),
                ],
            )
            .await
            .map_err(pg)?;
        // The default policy is part of every node's policy book.
        notify(&tx, POLICIES_CHANNEL, &org.name).await?;
        tx.commit().await.map_err(pg)?;
        Ok(changed == 1)
    }

    async fn list_orgs(&self) -> Result<Vec<Org>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!("SELECT {ORG_COLUMNS} FROM organizations ORDER BY name"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(org_from_row).collect()
    }

    async fn put_channel(&self, c: &StoredChannel) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        tx.cached_execute(
            "INSERT INTO channels (org, name, config, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (org, name) DO UPDATE SET config = $3, updated_at = $4, updated_by = $5",
            &[&c.org, &c.name, &c.config, &c.updated_at, &c.updated_by],
        )
        .await
        .map_err(pg)?;
        // Channels are read with the policies: every node reads both again.
        notify(&tx, POLICIES_CHANNEL, &c.org).await?;
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    async fn delete_channel(&self, org: &str, name: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let changed = tx
            .cached_execute(
                "DELETE FROM channels WHERE org = $1 AND name = $2",
                &[&org, &name],
            )
            .await
            .map_err(pg)?;
        notify(&tx, POLICIES_CHANNEL, org).await?;
        tx.commit().await.map_err(pg)?;
        Ok(changed == 1)
    }

    async fn list_channels(&self) -> Result<Vec<StoredChannel>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT org, name, config, updated_at, updated_by FROM channels ORDER BY org, name",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| StoredChannel {
                org: r.get(0),
                name: r.get(1),
                config: r.get(2),
                updated_at: r.get(3),
                updated_by: r.get(4),
            })
            .collect())
    }
}

/// Reads the grouped rows behind stats; `$1`..`$6` are since, until, queue, kind, target, org.
async fn stats_rows(client: &impl GenericClient, query: &StatsQuery) -> Result<StatsRows> {
    const FILTER: &str = "($3::text IS NULL OR j.queue = $3) AND ($4::text IS NULL OR j.kind = $4) AND ($5::text IS NULL OR j.target = $5) \
                          AND ($6::text IS NULL OR j.org = $6)";
    let window: [&(dyn ToSql + Sync); 6] = [
        &query.since,
        &query.until,
        &query.queue,
        &query.kind,
        &query.target,
        &query.org,
    ];
    let mut rows = StatsRows::default();
    for r in client
        .cached_query(
            &format!("SELECT j.state, COUNT(*) FROM jobs j WHERE j.created_at >= $1 AND j.created_at < $2 AND {FILTER} GROUP BY j.state"),
            &window,
        )
        .await
        .map_err(pg)?
    {
        rows.created.insert(state(r.get(0))?, r.get::<_, i64>(1) as u64);
    }
    rows.pending_retries = client
        .cached_query_one(
            &format!("SELECT COUNT(*) FROM jobs j WHERE j.state = 'retrying' AND $1::timestamptz <= $2::timestamptz AND {FILTER}"),
            &window,
        )
        .await
        .map_err(pg)?
        .get::<_, i64>(0) as u64;
    for r in client
        .cached_query(
            &format!(
                "SELECT j.kind, j.target, j.state, j.attempt <= 1, COUNT(*), SUM(j.attempt)::bigint FROM jobs j \
                 WHERE j.state IN ('succeeded', 'failed', 'expired', 'cancelled') \
                   AND j.finished_at >= $1 AND j.finished_at < $2 AND {FILTER} \
                 GROUP BY j.kind, j.target, j.state, j.attempt <= 1"
            ),
            &window,
        )
        .await
        .map_err(pg)?
    {
        rows.finished.push(FinishedGroup {
            kind: r.get(0),
            target: r.get(1),
            state: state(r.get(2))?,
            first_attempt: r.get(3),
            jobs: r.get::<_, i64>(4) as u64,
            attempts: r.get::<_, i64>(5) as u64,
        });
    }
    for r in client
        .cached_query(
            &format!(
                "SELECT a.class, a.error, COUNT(DISTINCT a.job_id), COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id \
                 WHERE a.started_at >= $1 AND a.started_at < $2 AND {FILTER} \
                   AND a.outcome IN ('failed', 'timed_out', 'lost') AND a.error IS NOT NULL \
                 GROUP BY a.class, a.error ORDER BY 3 DESC, 4 DESC, a.error LIMIT {TOP_ERRORS}"
            ),
            &window,
        )
        .await
        .map_err(pg)?
    {
        rows.errors.push(ErrorGroup {
            class: class(r.get(0))?,
            message: r.get(1),
            count: r.get::<_, i64>(2) as u64,
            attempts: r.get::<_, i64>(3) as u64,
        });
    }
    let bucket_ms = query.bucket.num_milliseconds().max(1);
    let series_params: [&(dyn ToSql + Sync); 7] = [
        &query.since,
        &query.until,
        &query.queue,
        &query.kind,
        &query.target,
        &query.org,
        &bucket_ms,
    ];
    for r in client
        .cached_query(
            &format!(
                "SELECT (floor(extract(epoch FROM a.started_at - $1) * 1000)::bigint / $7) AS b, COUNT(*), \
                        COUNT(*) FILTER (WHERE a.outcome IN ('failed', 'timed_out', 'lost')) \
                 FROM attempts a JOIN jobs j ON j.id = a.job_id \
                 WHERE a.started_at >= $1 AND a.started_at < $2 AND {FILTER} GROUP BY b ORDER BY b"
            ),
            &series_params,
        )
        .await
        .map_err(pg)?
    {
        rows.series.push(Bucket {
            start: query.since + chrono::Duration::milliseconds(r.get::<_, i64>(0) * bucket_ms),
            attempts: r.get::<_, i64>(1) as u64,
            failures: r.get::<_, i64>(2) as u64,
        });
    }
    Ok(rows)
}
