//! The retryd side of the benchmark (`bench/run.sh`): the embedded engine on SQLite or
//! PostgreSQL, measured the way each peer's harness in `bench/peers/` is.
//!
//! ```text
//! retryd-bench throughput DATABASE --jobs N --concurrency C [--marks]
//! retryd-bench lateness   DATABASE --jobs N --concurrency C [--marks]
//! ```
//!
//! `throughput` enqueues N no-op jobs, then drains them. `lateness` enqueues, while the
//! workers run, 100 jobs a second that fail their first attempt with a 100 ms retry delay,
//! and records for each how late the second attempt started after its due time. With `--marks` the harness prints `MARK drain-start`
//! and `MARK drain-end` and waits for a line on stdin after each, so that the driver can read
//! CPU and commit counters at exactly those points. The last line is `RESULT {json}`.

use retryd_core::retry::Transient;
use retryd_core::{Jitter, JobId, JobState, Policy};
use retryd_embed::{Context, Embedded, Job};
use retryd_worker::Policies;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

struct Args {
    mode: String,
    database: String,
    jobs: usize,
    concurrency: usize,
    marks: bool,
}

fn parse_args() -> Result<Args, String> {
    let usage =
        "usage: retryd-bench throughput|lateness DATABASE --jobs N --concurrency C [--marks]";
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(usage)?;
    if mode != "throughput" && mode != "lateness" {
        return Err(format!(
            "mode: must be throughput or lateness, got {mode:?}"
        ));
    }
    let database = args.next().ok_or(usage)?;
    let mut parsed = Args {
        mode,
        database,
        jobs: 1000,
        concurrency: 16,
        marks: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--marks" {
            parsed.marks = true;
            continue;
        }
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
            other => {
                return Err(format!(
                    "{other}: unknown flag (known: --jobs, --concurrency, --marks)"
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

/// Waits until `jobs` jobs have finished, counting the engine's events (a count query per
/// event would cost the database more than the jobs do).
async fn wait_until_done(engine: &Embedded, jobs: usize) -> Result<(), retryd_store::Error> {
    let mut events = engine.engine().subscribe();
    let store = engine.engine().store().clone();
    let count = || async {
        let counts = store.count_by_state().await?;
        Ok::<_, retryd_store::Error>(
            [JobState::Succeeded, JobState::Failed]
                .iter()
                .map(|s| counts.get(s).copied().unwrap_or(0) as usize)
                .sum::<usize>(),
        )
    };
    let mut finished = count().await?;
    loop {
        if finished >= jobs {
            // Events that came between subscribing and the first count were counted twice:
            // the database has the last word.
            finished = count().await?;
            if finished >= jobs {
                return Ok(());
            }
        }
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Ok(event)) if event.to.is_terminal() => finished += 1,
            Ok(Ok(_)) => {}
            // Missed events, or a quiet second: the database has the true count.
            Ok(Err(_)) | Err(_) => finished = count().await?,
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
    let engine = Embedded::builder(&args.database)
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
        .concurrency(args.concurrency)
        .open()
        .await?;

    let enqueue_started = Instant::now();
    let throughput = args.mode == "throughput";
    if throughput {
        // Enqueued from as many tasks as the drain's concurrency: a server would see as
        // many clients at once.
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
            done??;
        }
    }
    let enqueue_s = enqueue_started.elapsed().as_secs_f64();

    mark(&args, "drain-start");
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let runner = {
        let engine = engine.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { engine.run(shutdown).await })
    };
    if !throughput {
        // Lateness: jobs arrive at RATE per second while the engine runs, so that a retry
        // measures the scheduler, not a backlog.
        let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE);
        for _ in 0..args.jobs {
            tick.tick().await;
            engine.enqueue(&FailOnce {}).await?;
        }
    }
    wait_until_done(&engine, args.jobs).await?;
    let drain_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu_before;
    mark(&args, "drain-end");
    shutdown.cancel();
    runner.await?;

    let mut result = serde_json::json!({
        "system": "retryd",
        "mode": args.mode,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "drain_s": drain_s,
        "jobs_per_s": args.jobs as f64 / drain_s,
        "worker_cpu_s": cpu_s,
    });
    if throughput {
        result["enqueue_per_s"] = (args.jobs as f64 / enqueue_s).into();
    } else {
        let mut late = late.lock().expect("list").clone();
        late.sort_by(f64::total_cmp);
        result["retried"] = late.len().into();
        result["p50_ms"] = percentile(&late, 50.0).into();
        result["p99_ms"] = percentile(&late, 99.0).into();
    }
    println!("RESULT {result}");
    Ok(())
}
