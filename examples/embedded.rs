//! The embedded engine in a program of its own: typed `thumbnail` jobs on a SQLite file or
//! PostgreSQL, with a handler whose errors classify themselves.
//!
//! ```text
//! cargo run --example embedded -- jobs.db --enqueue 20      # enqueue 20 jobs, run them all
//! cargo run --example embedded -- jobs.db                   # finish what is left (after a crash)
//! cargo run --example embedded -- postgres://postgres@127.0.0.1/app --enqueue 20
//! ```
//!
//! Every fifth image fails once with a transient error (the policy retries it 200 ms later);
//! the program prints each finished job and exits when no job is waiting or running.

use retryd_core::retry::Classify;
use retryd_core::{Class, JobState, Policy};
use retryd_embed::{Context, Embedded, Job};
use retryd_worker::Policies;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Thumbnail {
    image: u32,
    /// How long the work takes, in milliseconds.
    work_ms: u64,
}

impl Job for Thumbnail {
    const KIND: &'static str = "thumbnail";
}

#[derive(Debug)]
enum ThumbnailError {
    StorageBusy,
}

impl fmt::Display for ThumbnailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThumbnailError::StorageBusy => f.write_str("object storage busy (503)"),
        }
    }
}

impl Classify for ThumbnailError {
    fn class(&self) -> Class {
        match self {
            ThumbnailError::StorageBusy => Class::Transient,
        }
    }
}

async fn make_thumbnail(job: Thumbnail, cx: Context) -> Result<(), ThumbnailError> {
    cx.log(format!(
        "resizing image {} (attempt {})",
        job.image,
        cx.attempt()
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(job.work_ms)).await;
    if job.image.is_multiple_of(5) && cx.attempt() == 1 {
        return Err(ThumbnailError::StorageBusy);
    }
    Ok(())
}

struct Args {
    database: String,
    enqueue: u32,
    work_ms: u64,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let database = args
        .next()
        .ok_or("usage: embedded DATABASE [--enqueue N] [--work-ms MS] [--concurrency N]")?;
    let mut parsed = Args {
        database,
        enqueue: 0,
        work_ms: 50,
        concurrency: 4,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag}: needs a value"))?;
        let number = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{what}: must be a whole number, got {value:?}"))
        };
        match flag.as_str() {
            "--enqueue" => parsed.enqueue = number("--enqueue")? as u32,
            "--work-ms" => parsed.work_ms = number("--work-ms")?,
            "--concurrency" => parsed.concurrency = number("--concurrency")?.max(1) as usize,
            other => {
                return Err(format!(
                    "{other}: unknown flag (known: --enqueue, --work-ms, --concurrency)"
                ));
            }
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // Thumbnails retry quickly and often; every other kind keeps the built-in default.
    let quick = Policy {
        max_attempts: 5,
        initial_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        ..Policy::default()
    };
    let policies = Policies::new(
        BTreeMap::from([("thumbnails".to_owned(), quick)]),
        BTreeMap::from([("thumbnail".to_owned(), "thumbnails".to_owned())]),
        Default::default(),
    )?;
    let engine = Embedded::builder(&args.database)
        .handler(make_thumbnail)
        .policies(policies)
        .concurrency(args.concurrency)
        .lease(Duration::from_secs(5))
        .open()
        .await?;

    for image in 0..args.enqueue {
        engine
            .enqueue(&Thumbnail {
                image,
                work_ms: args.work_ms,
            })
            .await?;
    }
    println!("enqueued {}", args.enqueue);

    let shutdown = CancellationToken::new();
    let mut events = engine.engine().store().signals().events();
    let store = engine.engine().store().clone();
    let done = shutdown.clone();
    let watcher = tokio::spawn(async move {
        loop {
            let counts = store.count_by_state(None).await?;
            let count = |s| counts.get(&s).copied().unwrap_or(0);
            let live =
                count(JobState::Pending) + count(JobState::Retrying) + count(JobState::Running);
            if live == 0 {
                println!(
                    "done: {} succeeded, {} failed",
                    count(JobState::Succeeded),
                    count(JobState::Failed)
                );
                done.cancel();
                return Ok::<_, retryd_store::Error>(());
            }
            // Any state change may be the last one; re-count after it.
            while let Ok(event) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await
            {
                match event {
                    Ok(event) if event.to == JobState::Succeeded => {
                        println!("succeeded {}", event.job_id);
                    }
                    Ok(event) if event.to == JobState::Running => {
                        println!("running {}", event.job_id);
                    }
                    Ok(event) if event.to.is_terminal() => {
                        println!("{} {}", event.to, event.job_id)
                    }
                    _ => {}
                }
                if events.is_empty() {
                    break;
                }
            }
        }
    });
    engine.run(shutdown).await;
    watcher.await??;
    Ok(())
}
