//! Issue 3, must-show 7: cancel reaches a running command within a second and leaves no
//! child process behind.

use crate::helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn cancel_reaches_a_running_sleep_within_a_second_and_leaves_no_child() {
    let server = Server::start(&[]).await;
    let marker = format!("30.{}", std::process::id());
    // A shell with two children, one in the background: the whole group must go.
    let script = format!("sleep {marker} & sleep {marker}; wait");
    let id = server.submit(&["sh", "-c", &script], json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&format!("sleep {marker}")).len() < 2 {
        assert!(Instant::now() < deadline, "the children did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let out = server.cli(&["cancel", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = server.wait_terminal(&id, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(job["state"], "cancelled");
    assert!(took < Duration::from_secs(1), "cancel took {took:?}");
    assert!(
        processes_with(&format!("sleep {marker}")).is_empty(),
        "a child survived the cancel"
    );
    assert_eq!(server.attempts(&id).await[0]["outcome"], "cancelled");
}

#[tokio::test]
async fn cancelling_a_waiting_job_is_immediate_and_a_finished_one_is_refused() {
    let server = Server::start(&[]).await;
    let later = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let id = server.submit(&["true"], json!({ "run_at": later })).await;
    assert!(
        server.job(&id).await["waiting_reason"]
            .as_str()
            .unwrap()
            .starts_with("waiting for its run_at")
    );
    let (status, job) = server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!((status, job["state"].as_str()), (200, Some("cancelled")));
    let (status, body) = server.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "invalid_transition");
}
