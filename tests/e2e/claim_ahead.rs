//! Issue 13: a node claims ahead of its free slots while actions are short (one claim and
//! one commit then cover many jobs), yet never executes more than its slots at once, and an
//! attempt still waiting for a slot is cancelled or released without its action starting.

use retryd_core::retry::Transient;
use retryd_core::{AttemptOutcome, JobId, JobState};
use retryd_embed::{Context, Embedded, Job};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Serialize, Deserialize)]
struct Short {
    n: u32,
}

impl Job for Short {
    const KIND: &'static str = "short";
}

#[derive(Serialize, Deserialize)]
struct Held {
    name: String,
}

impl Job for Held {
    const KIND: &'static str = "held";
}

async fn databases() -> Vec<(String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ahead.db").display().to_string();
    vec![
        (file, Some(dir)),
        (retryd_store_postgres::testing::fresh_database().await, None),
    ]
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> F,
) {
    let until = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < until, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_actions_are_claimed_ahead_but_never_run_beyond_the_slots() {
    for (database, _dir) in databases().await {
        let executing = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let embedded = Embedded::builder(&database)
            .concurrency(4)
            .handler({
                let (executing, most) = (executing.clone(), most.clone());
                move |_: Short, _: Context| {
                    let (executing, most) = (executing.clone(), most.clone());
                    async move {
                        most.fetch_max(executing.fetch_add(1, SeqCst) + 1, SeqCst);
                        tokio::task::yield_now().await;
                        executing.fetch_sub(1, SeqCst);
                        Ok::<(), Transient<String>>(())
                    }
                }
            })
            .open()
            .await
            .expect("open");
        let jobs: Vec<Short> = (0..2_000).map(|n| Short { n }).collect();
        embedded.enqueue_many(&jobs).await.expect("enqueue");
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let (embedded, shutdown) = (embedded.clone(), shutdown.clone());
            async move { embedded.run(shutdown).await }
        });
        let store = embedded.engine().store().clone();
        let most_running = Arc::new(AtomicUsize::new(0));
        wait_until("every job succeeded", Duration::from_secs(60), || {
            let (store, most_running) = (store.clone(), most_running.clone());
            async move {
                let counts = store.count_by_state(None).await.expect("count");
                let count = |state| counts.get(&state).copied().unwrap_or(0);
                most_running.fetch_max(count(JobState::Running) as usize, SeqCst);
                count(JobState::Succeeded) == 2_000
            }
        })
        .await;
        let most_running = most_running.load(SeqCst);
        shutdown.cancel();
        run.await.expect("engine");
        assert!(
            most.load(SeqCst) <= 4,
            "{database}: at most 4 actions at once, saw {}",
            most.load(SeqCst)
        );
        assert!(
            most_running > 4,
            "{database}: jobs were claimed ahead of the 4 slots (most running at once: {most_running})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_waiting_for_a_slot_is_cancelled_or_released_without_starting() {
    for (database, _dir) in databases().await {
        let started: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let gate = Arc::new(Semaphore::new(0));
        // Two slots, so that a claim ahead of both is two jobs within 10 ms by the
        // estimate: twice the margin one slot leaves on a busy machine.
        let embedded = Embedded::builder(&database)
            .concurrency(2)
            .handler(|_: Short, _: Context| async { Ok::<(), Transient<String>>(()) })
            .handler({
                let (started, gate) = (started.clone(), gate.clone());
                move |job: Held, _: Context| {
                    let (started, gate) = (started.clone(), gate.clone());
                    async move {
                        started.lock().unwrap().insert(job.name);
                        let _ = gate.acquire().await;
                        Ok::<(), Transient<String>>(())
                    }
                }
            })
            .open()
            .await
            .expect("open");
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let (embedded, shutdown) = (embedded.clone(), shutdown.clone());
            async move { embedded.run(shutdown).await }
        });
        let store = embedded.engine().store().clone();
        // Short actions first: the node learns that it may claim ahead. Enough of them that
        // its estimate comes down even when the first ones ran slowly on a busy machine (it
        // falls by a sixteenth per shorter action).
        let quick: Vec<Short> = (0..400).map(|n| Short { n }).collect();
        embedded.enqueue_many(&quick).await.expect("enqueue");
        let succeeded = |n: u64| {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move {
                    let counts = store.count_by_state(None).await.expect("count");
                    counts.get(&JobState::Succeeded).copied().unwrap_or(0) == n
                }
            }
        };
        wait_until("the short jobs", Duration::from_secs(30), succeeded(400)).await;
        let held = |name: &str| Held {
            name: name.to_owned(),
        };
        let ids: Vec<JobId> = embedded
            .enqueue_many(&[held("a"), held("b"), held("c"), held("d")])
            .await
            .expect("enqueue");
        // a and b take the two slots; c and d wait for one.
        let (c, d) = (ids[2], ids[3]);
        let state = |id: JobId| {
            let store = store.clone();
            async move { store.get_job(id).await.expect("job").state }
        };
        // One claim takes all four: a and b run, c and d wait for a slot as `running`.
        wait_until("a, b, c and d claimed", Duration::from_secs(30), || async {
            for &id in &ids {
                if state(id).await != JobState::Running {
                    return false;
                }
            }
            true
        })
        .await;
        embedded
            .engine()
            .control()
            .cancel(c, "tester")
            .await
            .expect("cancel c");
        wait_until("c cancelled", Duration::from_secs(30), || async {
            state(c).await == JobState::Cancelled
        })
        .await;
        let attempts = store.list_attempts(c).await.expect("attempts");
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Cancelled));
        assert_eq!(
            attempts[0].error.as_deref(),
            Some("cancelled before it started")
        );
        // Shutdown: d, still waiting, is released at once (due again, not counted); a and b
        // finish within the grace.
        shutdown.cancel();
        wait_until("d released", Duration::from_secs(30), || async {
            state(d).await == JobState::Retrying
        })
        .await;
        gate.add_permits(2);
        run.await.expect("engine");
        assert_eq!(state(ids[0]).await, JobState::Succeeded);
        assert_eq!(state(ids[1]).await, JobState::Succeeded);
        let job = store.get_job(d).await.expect("d");
        assert_eq!(job.attempt, 0, "{database}: a release does not count");
        let attempts = store.list_attempts(d).await.expect("attempts");
        assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Lost));
        assert_eq!(
            started.lock().unwrap().clone(),
            BTreeSet::from(["a".to_owned(), "b".to_owned()]),
            "{database}: only a's and b's actions ever started"
        );
    }
}
