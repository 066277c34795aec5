//! The retryd side of the benchmark (`bench/run.sh`): the embedded engine on SQLite or
//! PostgreSQL, measured the way each peer's harness in `bench/peers/` is.
//!
//! ```text
//! retryd-bench throughput DATABASE --jobs N --concurrency C [--batch-size B | --one-at-a-time] [--cap-s S] [--marks]
//! retryd-bench lateness   DATABASE --jobs N --concurrency C [--marks]
//! retryd-bench enqueue    DATABASE --jobs N [--batch-size B | --one-at-a-time] [--concurrency C] [--marks]
//! retryd-bench drain      DATABASE --jobs N --concurrency C [--node NAME] [--cap-s S] [--marks]
//! ```
//!
//! - `throughput` enqueues N no-op jobs, then drains them.
//! - `lateness` enqueues, while the workers run, 100 jobs a second that fail their first
//!   attempt with a 100 ms retry delay, and records for each how late the second attempt
//!   started after its due time.
//! - `enqueue` only enqueues N no-op jobs, between the marks `enqueue-start` and
//!   `enqueue-end` (the bulk enqueue rows, and the first step of the several-node row).
//! - `drain` only drains: it runs the engine until N jobs of the database are finished,
//!   whichever node finished them (the several-node row starts one per node on jobs that
//!   `enqueue` stored). It reports how many this node finished and when its last one did.
//!
//! Enqueueing is in bulk by default: `Embedded::enqueue_many` with `--batch-size` jobs (1,000
//! unless told) per call, one call after the other; `--one-at-a-time` enqueues one job per
//! `enqueue` call instead, from C tasks at once (as many clients as the drain's concurrency).
//!
//! A drain ends when the engine's own events have counted N finished jobs and the database
//! agrees (one count query then; more only when the engine was quiet for `QUIET`, which is
//! how a `drain` node learns of the jobs the other nodes finished). With `--cap-s` a drain
//! stops after that many seconds and reports what finished (`completed`).
//!
//! With `--marks` the harness prints `MARK <mode>-start` and `MARK <mode>-end` (`drain-…`
//! for throughput, lateness and drain; `enqueue-…` for enqueue) and waits for a line on stdin
//! after each, so that the driver can read CPU and commit counters at exactly those points.
//! The last line is `RESULT {json}`.

use retryd_core::job::Event;
use retryd_core::retry::Transient;
use retryd_core::{Jitter, JobId, JobState, Policy};
use retryd_embed::{Context, Embedded, Job};
use retryd_store::Policies;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast::Receiver;
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct Noop {}

impl Job for Noop {
    const KIND: &'static str = "bench-noop";
}

#[derive(Serialize, Deserialize)]
struct FailOnce {}

impl Job for FailOnce {
    const KIND: &'static str = "bench-fail-once";
}

/// The retry delay of the lateness row.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Jobs per second enqueued during the lateness row (as in the peers' harnesses).
const RATE: u32 = 100;
/// After this long without an event of its own, a drain asks the database how many jobs are
/// finished: other nodes may have finished the rest.
const QUIET: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Throughput,
    Lateness,
    Enqueue,
    Drain,
}

struct Args {
    mode: Mode,
    mode_name: String,
    database: String,
    jobs: usize,
    concurrency: usize,
    batch_size: usize,
    one_at_a_time: bool,
    node: Option<String>,
    cap: Option<Duration>,
    marks: bool,
}

const USAGE: &str = "usage: retryd-bench throughput|lateness|enqueue|drain DATABASE --jobs N \
    [--concurrency C] [--batch-size B | --one-at-a-time] [--node NAME] [--cap-s S] [--marks]";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mode_name = args.next().ok_or(USAGE)?;
    let mode = match mode_name.as_str() {
        "throughput" => Mode::Throughput,
        "lateness" => Mode::Lateness,
        "enqueue" => Mode::Enqueue,
        "drain" => Mode::Drain,
        other => {
            return Err(format!(
                "mode: must be throughput, lateness, enqueue or drain, got {other:?}"
            ));
        }
    };
    let database = args.next().ok_or(USAGE)?;
    let mut parsed = Args {
        mode,
        mode_name,
        database,
        jobs: 1000,
        concurrency: 16,
        batch_size: 1000,
        one_at_a_time: false,
        node: None,
        cap: None,
        marks: false,
    };
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--marks" => parsed.marks = true,
            "--one-at-a-time" => parsed.one_at_a_time = true,
            "--node" => parsed.node = Some(args.next().ok_or("--node: needs a value")?),
            "--jobs" | "--concurrency" | "--batch-size" | "--cap-s" => {
                let value = args.next().ok_or(format!("{flag}: needs a value"))?;
                let number = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!(
                        "{flag}: must be a positive whole number, got {value:?}"
                    ))?;
                match flag.as_str() {
                    "--jobs" => parsed.jobs = number,
                    "--concurrency" => parsed.concurrency = number,
                    "--batch-size" => parsed.batch_size = number,
                    _ => parsed.cap = Some(Duration::from_secs(number as u64)),
                }
            }
            other => {
                return Err(format!(
                    "{other}: unknown flag (known: --jobs, --concurrency, --batch-size, \
                     --one-at-a-time, --node, --cap-s, --marks)"
                ));
            }
        }
    }
    Ok(parsed)
}

/// Prints a mark and, with `--marks`, waits until the driver has read its counters.
fn mark(args: &Args, name: &str) {
    println!("MARK {name}");
    if args.marks {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok();
    }
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Enqueues `args.jobs` no-op jobs: in batches of `--batch-size` through `enqueue_many`, or
/// with `--one-at-a-time` one `enqueue` per job from `--concurrency` tasks.
async fn enqueue_noops(engine: &Embedded, args: &Args) -> Result<(), retryd_embed::Error> {
    if !args.one_at_a_time {
        let batch: Vec<Noop> = (0..args.batch_size).map(|_| Noop {}).collect();
        let mut left = args.jobs;
        while left > 0 {
            let n = left.min(args.batch_size);
            engine.enqueue_many(&batch[..n]).await?;
            left -= n;
        }
        return Ok(());
    }
    let per_task = args.jobs.div_ceil(args.concurrency);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..args.concurrency {
        let engine = engine.clone();
        let count = per_task.min(args.jobs.saturating_sub(task * per_task));
        tasks.spawn(async move {
            for _ in 0..count {
                engine.enqueue(&Noop {}).await?;
            }
            Ok::<_, retryd_embed::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("an enqueue task panicked")?;
    }
    Ok(())
}

/// How a drain ended.
struct Drained {
    /// Finished jobs in the database (on every node).
    completed: usize,
    /// Finished by this node, as its events counted them.
    here: usize,
    /// When this node finished its last job.
    last_done: Option<SystemTime>,
}

/// Waits until `jobs` jobs of the database have finished, or `cap` passed. Counts the
/// engine's own `events` (subscribed before the engine ran; a count query per event would
/// cost the database more than the jobs do) and asks the database only to confirm the end,
/// or after `QUIET` without events.
async fn wait_until_done(
    engine: &Embedded,
    events: &mut Receiver<Event>,
    jobs: usize,
    cap: Option<Duration>,
) -> Result<Drained, retryd_store::Error> {
    let store = engine.engine().store().clone();
    let count = || async {
        let counts = store.count_by_state(None).await?;
        Ok::<_, retryd_store::Error>(
            [JobState::Succeeded, JobState::Failed]
                .iter()
                .map(|s| counts.get(s).copied().unwrap_or(0) as usize)
                .sum::<usize>(),
        )
    };
    let started = Instant::now();
    let mut drained = Drained {
        completed: 0,
        here: 0,
        last_done: None,
    };
    loop {
        if drained.completed >= jobs {
            // Events after a count of the database, of jobs it had counted, were counted
            // twice: the database has the last word.
            drained.completed = count().await?;
            if drained.completed >= jobs {
                return Ok(drained);
            }
        }
        if cap.is_some_and(|cap| started.elapsed() > cap) {
            drained.completed = count().await?;
            return Ok(drained);
        }
        match tokio::time::timeout(QUIET, events.recv()).await {
            Ok(Ok(event)) if event.to.is_terminal() => {
                drained.completed += 1;
                drained.here += 1;
                drained.last_done = Some(SystemTime::now());
            }
            Ok(Ok(_)) => {}
            // Missed events, or a quiet spell: the database has the true count.
            Ok(Err(_)) | Err(_) => drained.completed = count().await?,
        }
    }
}

/// After the end: counts the events of this node's last jobs that were published but not read
/// yet (the database saw their commits first), at their own time.
async fn settle(drained: &mut Drained, events: &mut Receiver<Event>) {
    while let Ok(Ok(event)) = tokio::time::timeout(QUIET, events.recv()).await {
        if event.to.is_terminal() {
            drained.here += 1;
            drained.last_done = drained.last_done.max(Some(SystemTime::from(event.at)));
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let retry_fast = Policy {
        max_attempts: 3,
        initial_delay: RETRY_DELAY,
        max_delay: RETRY_DELAY,
        jitter: Jitter::None,
        ..Policy::default()
    };
    let policies = Policies::new(
        BTreeMap::from([("bench".to_owned(), retry_fast)]),
        BTreeMap::from([
            (Noop::KIND.to_owned(), "bench".to_owned()),
            (FailOnce::KIND.to_owned(), "bench".to_owned()),
        ]),
        Default::default(),
    )?;
    // When each job's first attempt failed: its retry is due RETRY_DELAY later.
    let failed_at: Arc<Mutex<HashMap<JobId, Instant>>> = Arc::default();
    let late: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (failed, lateness) = (failed_at.clone(), late.clone());
    let mut builder = Embedded::builder(&args.database)
        .handler(|_: Noop, _: Context| async { Ok::<_, Transient<String>>(()) })
        .handler(move |_: FailOnce, cx: Context| {
            let (failed, lateness) = (failed.clone(), lateness.clone());
            async move {
                let now = Instant::now();
                let mut failed = failed.lock().expect("map");
                match failed.get(&cx.job_id()) {
                    None => {
                        failed.insert(cx.job_id(), now);
                        Err(Transient("fails once".to_owned()))
                    }
                    Some(at) => {
                        let due = *at + RETRY_DELAY;
                        let ms = now.saturating_duration_since(due).as_secs_f64() * 1e3;
                        lateness.lock().expect("list").push(ms);
                        Ok(())
                    }
                }
            }
        })
        .policies(policies)
        .concurrency(args.concurrency);
    if let Some(node) = &args.node {
        builder = builder.node(node);
    }
    let engine = builder.open().await?;

    let mut result = serde_json::json!({
        "system": "retryd",
        "mode": args.mode_name,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
    });
    let bulk = if args.one_at_a_time {
        serde_json::json!("one at a time")
    } else {
        args.batch_size.into()
    };

    if args.mode == Mode::Enqueue {
        mark(&args, "enqueue-start");
        let started = Instant::now();
        enqueue_noops(&engine, &args).await?;
        let enqueue_s = started.elapsed().as_secs_f64();
        mark(&args, "enqueue-end");
        result["batch_size"] = bulk;
        result["enqueue_s"] = enqueue_s.into();
        result["enqueue_per_s"] = (args.jobs as f64 / enqueue_s).into();
        println!("RESULT {result}");
        return Ok(());
    }

    if args.mode == Mode::Throughput {
        let started = Instant::now();
        enqueue_noops(&engine, &args).await?;
        result["batch_size"] = bulk;
        result["enqueue_per_s"] = (args.jobs as f64 / started.elapsed().as_secs_f64()).into();
    }

    mark(&args, "drain-start");
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let started_at = SystemTime::now();
    let mut events = engine.engine().store().signals().events();
    let shutdown = CancellationToken::new();
    let runner = {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { engine.run(shutdown).await })
    };
    if args.mode == Mode::Lateness {
        // Lateness: jobs arrive at RATE per second while the engine runs, so that a retry
        // measures the scheduler, not a backlog.
        let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
        for _ in 0..args.jobs {
            tick.tick().await;
            engine.enqueue(&FailOnce {}).await?;
        }
    }
    let mut drained = wait_until_done(&engine, &mut events, args.jobs, args.cap).await?;
    let drain_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu_before;
    mark(&args, "drain-end");
    if args.mode == Mode::Drain {
        settle(&mut drained, &mut events).await;
    }
    shutdown.cancel();
    runner.await?;

    result["completed"] = drained.completed.min(args.jobs).into();
    result["drain_s"] = drain_s.into();
    result["jobs_per_s"] = (drained.completed.min(args.jobs) as f64 / drain_s).into();
    result["worker_cpu_s"] = cpu_s.into();
    if args.mode == Mode::Drain {
        result["node"] = engine.engine().config().node.clone().into();
        result["completed_here"] = drained.here.into();
        result["started_unix"] = unix_seconds(started_at).into();
        result["last_done_unix"] = drained.last_done.map(unix_seconds).into();
    }
    if args.mode == Mode::Lateness {
        let mut late = late.lock().expect("list").clone();
        late.sort_by(f64::total_cmp);
        result["retried"] = late.len().into();
        result["p50_ms"] = percentile(&late, 50.0).into();
        result["p99_ms"] = percentile(&late, 99.0).into();
    }
    println!("RESULT {result}");
    Ok(())
}
