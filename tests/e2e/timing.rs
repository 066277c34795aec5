//! Issue 3, must-show 4: due retries start on time, with no polling interval in the design.
//! The figures are printed for the record; the assertion only catches a regression to
//! polling (a poll of seconds would put p99 above 1.5 s), not a speed target.

use crate::helpers::*;
use chrono::DateTime;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_retries_start_on_time() {
    const JOBS: usize = 200;
    let server = Server::start(&["--concurrency", "256"]).await;
    let policy = json!({ "max_attempts": 2, "initial_delay": "100ms", "max_delay": "100ms", "jitter": "none" });
    let mut ids = Vec::new();
    for i in 0..JOBS {
        let counter = server.dir.join(format!("count-{i}"));
        let script = flaky(&counter, 1, "connection refused");
        ids.push(
            server
                .submit(&["sh", "-c", &script], json!({ "policy": policy }))
                .await,
        );
        if i % 20 == 19 {
            // Spread the failures so that retries fall due at different instants.
            tokio::time::sleep(Duration::from_millis(37)).await;
        }
    }
    let mut lateness = Vec::new();
    for id in &ids {
        let job = server.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempts = server.attempts(id).await;
        let first_end =
            DateTime::parse_from_rfc3339(attempts[0]["finished_at"].as_str().unwrap()).unwrap();
        let delay = attempts[0]["next_delay_ms"].as_i64().unwrap();
        let second_start =
            DateTime::parse_from_rfc3339(attempts[1]["started_at"].as_str().unwrap()).unwrap();
        lateness.push((second_start - first_end).num_milliseconds() - delay);
    }
    lateness.sort();
    let (p50, p99) = (percentile(&lateness, 50.0), percentile(&lateness, 99.0));
    eprintln!(
        "retry wake-up lateness over {JOBS} due retries (SQLite): p50 {p50} ms, p99 {p99} ms, max {} ms",
        lateness.last().unwrap()
    );
    assert!(
        lateness[0] >= 0,
        "no retry starts before it is due: {lateness:?}"
    );
    assert!(
        p99 < 1500,
        "retries are being polled for, not timed: p99 {p99} ms"
    );
}
