//! apalis (crates.io) as a peer of the benchmark suite (`bench/run.sh`), on PostgreSQL
//! (`apalis-postgres`) or SQLite (`apalis-sqlite`), measured the way the other harnesses in
//! `bench/peers/` are.
//!
//! ```text
//! apalis-bench throughput DATABASE --jobs N --concurrency C [--batch-size B] [--cap-s S] [--best] [--marks]
//! apalis-bench lateness   DATABASE --jobs N --concurrency C [--best] [--marks]
//! apalis-bench enqueue    DATABASE --jobs N [--batch-size B] [--marks]
//! ```
//!
//! DATABASE is a `postgres://` URL or a SQLite file path. `throughput` enqueues N no-op
//! jobs (`push_bulk`, B a call, 1,000 unless told), then drains them with one worker limited
//! to C tasks in flight. `lateness` enqueues 100 jobs a second while the worker runs; each
//! fails its first attempt and is retried after 100 ms. `enqueue` only enqueues, between the
//! marks `enqueue-start` and `enqueue-end`.
//!
//! A drain's end is counted in the handler (as the other harnesses do), then confirmed by
//! the database (apalis stores a job's result after its handler returned); it stops after S
//! seconds (90 unless told) and reports the jobs done so far.
//!
//! How apalis retries: its storages have no retry delay. A failed job whose attempts are
//! below its `max_attempts` is fetched again at once (`run_at` is not moved, and is whole
//! seconds anyway). A delay is expressed with the retry layer (`RetryPolicy` with a tower
//! backoff), which retries in the worker's process while the job stays claimed: the delay is a
//! timer, not a stored due time. So the due time here is the failure instant plus 100 ms,
//! and lateness is the second attempt's start minus that.
//!
//! Settings: defaults are the crates' READMEs' basic worker (no poll strategy: an idle worker
//! looks for new jobs when its heartbeat, every 30 s, or a completion wakes it). `--best`
//! (and every throughput run) adds the event sources the READMEs show, PostgreSQL's
//! `LISTEN/NOTIFY` (`Pubsub`) or SQLite's update hook, and a poll every 100 ms. A fetch takes
//! up to C jobs (`batch_size`; the default is 10).
//!
//! With `--marks` the harness prints `MARK drain-start` and `MARK drain-end` and waits for a
//! line on stdin after each (see bench/run.py). The last line is `RESULT {json}`.

use apalis::layers::retry::backoff::Backoff;
use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The retry delay of the lateness rows.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Jobs per second enqueued during the lateness rows (as in the other harnesses).
const RATE: u32 = 100;
/// The poll interval of `--best`.
const BEST_POLL: Duration = Duration::from_millis(100);
/// The queue (apalis' `job_type`) of every job.
const QUEUE: &str = "bench";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One job: `fail_once` jobs fail their first attempt (the lateness rows).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    id: u64,
    fail_once: bool,
}

/// What the handler shares with the harness: when each job's first attempt failed, how
/// late each second attempt started, and how many jobs the handler finished.
#[derive(Default)]
struct Shared {
    failed_at: Mutex<HashMap<u64, Instant>>,
    late_ms: Mutex<Vec<f64>>,
    done: AtomicU64,
}

async fn handle(job: Job, shared: Data<Arc<Shared>>) -> Result<(), BoxDynError> {
    if !job.fail_once {
        shared.done.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let now = Instant::now();
    let first = shared.failed_at.lock().unwrap().get(&job.id).copied();
    match first {
        None => {
            shared.failed_at.lock().unwrap().insert(job.id, now);
            Err("fails once".into())
        }
        Some(failed) => {
            let late = now.saturating_duration_since(failed + RETRY_DELAY);
            shared
                .late_ms
                .lock()
                .unwrap()
                .push(late.as_secs_f64() * 1000.0);
            shared.done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// A fixed retry delay, for apalis' `RetryPolicy::with_backoff` (tower's `Backoff`).
#[derive(Clone)]
struct Fixed(Duration);

impl Backoff for Fixed {
    type Future = tokio::time::Sleep;

    fn next_backoff(&mut self) -> Self::Future {
        tokio::time::sleep(self.0)
    }
}

struct Args {
    mode: String,
    database: String,
    jobs: u64,
    concurrency: usize,
    batch_size: u64,
    cap: Duration,
    best: bool,
    marks: bool,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: apalis-bench throughput|lateness|enqueue DATABASE --jobs N --concurrency C \
                 [--batch-size B] [--cap-s S] [--best] [--marks]";
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(usage)?;
    if !["throughput", "lateness", "enqueue"].contains(&mode.as_str()) {
        return Err(format!(
            "mode: must be throughput, lateness or enqueue, got {mode:?}"
        ));
    }
    let database = args.next().ok_or(usage)?;
    let mut parsed = Args {
        mode,
        database,
        jobs: 1000,
        concurrency: 16,
        batch_size: 1000,
        cap: Duration::from_secs(90),
        best: false,
        marks: false,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--best" => parsed.best = true,
            "--marks" => parsed.marks = true,
            "--jobs" | "--concurrency" | "--batch-size" | "--cap-s" => {
                let value = args.next().ok_or(format!("{flag}: needs a value"))?;
                let n = value.parse::<u64>().ok().filter(|n| *n > 0);
                let n = n.ok_or(format!(
                    "{flag}: must be a positive whole number, got {value:?}"
                ))?;
                match flag.as_str() {
                    "--jobs" => parsed.jobs = n,
                    "--concurrency" => parsed.concurrency = n as usize,
                    "--batch-size" => parsed.batch_size = n,
                    _ => parsed.cap = Duration::from_secs(n),
                }
            }
            _ => return Err(format!("{flag}: unknown flag\n{usage}")),
        }
    }
    Ok(parsed)
}

impl Args {
    /// No-op jobs (throughput and enqueue), not failing ones (lateness).
    fn throughput(&self) -> bool {
        self.mode != "lateness"
    }

    fn enqueue_only(&self) -> bool {
        self.mode == "enqueue"
    }

    /// Event sources and a 100 ms poll: for `--best` and for throughput.
    fn polled(&self) -> bool {
        self.best || self.throughput()
    }

    fn job(&self, id: u64) -> Job {
        Job {
            id,
            fail_once: !self.throughput(),
        }
    }

    /// Prints a mark and, with `--marks`, waits for the driver's line.
    async fn mark(&self, name: &str) -> Result<(), Error> {
        println!("MARK {name}");
        if self.marks {
            tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new()))
                .await??;
        }
        Ok(())
    }
}

/// Enqueues `n` jobs in `push_bulk` calls of `--batch-size`.
async fn enqueue_all<S, K>(sink: &mut S, args: &Args) -> Result<(), Error>
where
    S: TaskSink<Job, K>,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let mut id = 0;
    while id < args.jobs {
        let n = (args.jobs - id).min(args.batch_size);
        sink.push_bulk((id..id + n).map(|i| args.job(i)).collect())
            .await?;
        id += n;
    }
    Ok(())
}

/// Enqueues one job at a time, at RATE a second (the lateness rows).
async fn enqueue_paced<S, K>(sink: &mut S, args: &Args) -> Result<(), Error>
where
    S: TaskSink<Job, K>,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    let start = tokio::time::Instant::now();
    for i in 0..args.jobs {
        sink.push(args.job(i)).await?;
        tokio::time::sleep_until(start + Duration::from_secs(i + 1) / RATE).await;
    }
    Ok(())
}

/// Waits until the handler finished every job and `stored()` (the database's count of done
/// jobs) agrees, or `--cap-s` passed; returns the jobs done. The handler's count is an atomic
/// read every 2 ms; a count query every few milliseconds would cost the database and add up
/// to its interval to the drain.
async fn until_done<F, Fut>(args: &Args, shared: &Shared, mut stored: F) -> Result<u64, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<i64, sqlx::Error>>,
{
    let started = Instant::now();
    let tick = Duration::from_millis(2);
    while shared.done.load(Ordering::Relaxed) < args.jobs {
        if started.elapsed() > args.cap {
            return Ok(shared.done.load(Ordering::Relaxed));
        }
        tokio::time::sleep(tick).await;
    }
    loop {
        let n = stored().await? as u64;
        if n >= args.jobs {
            return Ok(n);
        }
        tokio::time::sleep(tick).await;
    }
}

/// Enqueues every job between the marks (the bulk enqueue rows).
async fn enqueue_only<S, K>(sink: &mut S, args: &Args) -> Result<u64, Error>
where
    S: TaskSink<Job, K>,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    args.mark("enqueue-start").await?;
    enqueue_all(sink, args).await?;
    args.mark("enqueue-end").await?;
    Ok(args.jobs)
}

/// Starts the same worker over any backend (their types differ, hence a macro).
macro_rules! spawn_worker {
    ($builder:expr, $backend:expr, $shared:expr, $args:expr) => {
        tokio::spawn(
            $builder
                .backend($backend)
                .data($shared)
                .retry(retry_policy())
                .concurrency($args.concurrency)
                .build(handle)
                .run(),
        )
    };
}

fn retry_policy() -> BackoffRetryPolicy<Fixed> {
    RetryPolicy::retries(1).with_backoff(Fixed(RETRY_DELAY))
}

/// Runs a row on PostgreSQL; returns how many jobs completed.
async fn postgres(args: &Args, shared: Arc<Shared>) -> Result<u64, Error> {
    let pool = PgPool::connect(&args.database).await?;
    PostgresStorage::setup(&pool).await?;
    let config = apalis_postgres::Config::default()
        .queue(QUEUE)
        .batch_size(args.concurrency);
    let mut storage = PostgresStorage::<Job>::new(&pool).with_config(config);
    if args.enqueue_only() {
        return enqueue_only(&mut storage, args).await;
    }
    if args.throughput() {
        enqueue_all(&mut storage, args).await?;
    }
    args.mark("drain-start").await?;
    let worker = WorkerContext::new("apalis-bench");
    let builder = WorkerBuilder::new(&worker);
    let running = if args.polled() {
        let strategy = Strategy::new()
            .stream(apalis_postgres::Pubsub::new(
                pool.clone(),
                QUEUE.to_string(),
            ))
            .interval(BEST_POLL);
        let backend = storage.clone().poll_with_strategy(strategy);
        spawn_worker!(builder, backend, shared.clone(), args)
    } else {
        let backend = storage.clone();
        spawn_worker!(builder, backend, shared.clone(), args)
    };
    if !args.throughput() {
        enqueue_paced(&mut storage, args).await?;
    }
    let done = until_done(args, &shared, || {
        sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'",
        )
        .bind(QUEUE)
        .fetch_one(&pool)
    })
    .await?;
    args.mark("drain-end").await?;
    worker.stop()?;
    running.await??;
    pool.close().await;
    Ok(done)
}

/// Runs a row on a SQLite file; returns how many jobs completed.
async fn sqlite(args: &Args, shared: Arc<Shared>) -> Result<u64, Error> {
    let url = format!("sqlite://{}?mode=rwc", args.database);
    let (pool, hook) = if args.polled() {
        let (pool, hook) = SqliteStorage::connect_with_callback(&url)?;
        (pool, Some(hook))
    } else {
        (
            SqlitePool::connect_with(SqliteConnectOptions::from_str(&url)?).await?,
            None,
        )
    };
    SqliteStorage::setup(&pool).await?;
    let config = apalis_sqlite::Config::default()
        .queue(QUEUE)
        .batch_size(args.concurrency);
    let mut storage = SqliteStorage::<Job>::new(&pool).with_config(config);
    if args.enqueue_only() {
        return enqueue_only(&mut storage, args).await;
    }
    if args.throughput() {
        enqueue_all(&mut storage, args).await?;
    }
    args.mark("drain-start").await?;
    let worker = WorkerContext::new("apalis-bench");
    let builder = WorkerBuilder::new(&worker);
    let running = if let Some(hook) = hook {
        use futures::StreamExt;
        let strategy = Strategy::new()
            .stream(hook.ready_chunks(args.concurrency))
            .interval(BEST_POLL);
        let backend = storage.clone().poll_with_strategy(strategy);
        spawn_worker!(builder, backend, shared.clone(), args)
    } else {
        let backend = storage.clone();
        spawn_worker!(builder, backend, shared.clone(), args)
    };
    if !args.throughput() {
        enqueue_paced(&mut storage, args).await?;
    }
    let done = until_done(args, &shared, || {
        sqlx::query_scalar("SELECT count(*) FROM Jobs WHERE job_type = ?1 AND status = 'Done'")
            .bind(QUEUE)
            .fetch_one(&pool)
    })
    .await?;
    args.mark("drain-end").await?;
    worker.stop()?;
    running.await??;
    pool.close().await;
    Ok(done)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = parse_args().map_err(|e| -> Error { e.into() })?;
    let shared = Arc::new(Shared::default());
    let on_postgres = args.database.starts_with("postgres");
    let completed = if on_postgres {
        postgres(&args, shared.clone()).await?
    } else {
        sqlite(&args, shared.clone()).await?
    };
    let mut result = serde_json::json!({
        "system": "apalis",
        "backend": if on_postgres { "PostgreSQL" } else { "SQLite" },
        "mode": args.mode,
        "jobs": args.jobs,
        "completed": completed,
    });
    if !args.throughput() {
        let mut late = shared.late_ms.lock().unwrap().clone();
        late.sort_by(f64::total_cmp);
        if !late.is_empty() {
            result["retried"] = late.len().into();
            result["p50_ms"] = percentile(&late, 50.0).into();
            result["p99_ms"] = percentile(&late, 99.0).into();
        }
    }
    println!("RESULT {result}");
    Ok(())
}
