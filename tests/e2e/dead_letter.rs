//! Issue 3, must-shows 2 and 3: permanent errors stop at once, exhausted jobs land in the
//! dead-letter queue with a diagnosis, and both can be requeued.

use crate::helpers::*;
use std::time::Duration;

#[tokio::test]
async fn permanent_error_fails_after_one_attempt_and_retry_reset_runs_it_again() {
    let server = Server::start(&[]).await;
    let marker = server.dir.join("fixed");
    let script = format!(
        "if [ -e '{}' ]; then echo deployed; exit 0; fi; echo 'scp: /var/www/html/index.php: Permission denied' >&2; exit 1",
        marker.display()
    );
    let id = server
        .submit(
            &["sh", "-c", &script],
            serde_json::json!({ "kind": "wordpress-deploy" }),
        )
        .await;
    let job = server.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["attempt"], 1, "a permanent error is not retried");
    assert_eq!(job["last_error_class"], "permanent");
    assert_eq!(job["last_rule"], "output: permission denied");
    assert!(
        job["diagnosis"]["summary"]
            .as_str()
            .unwrap()
            .contains("permanent error (output: permission denied)"),
        "{job}"
    );

    let dlq = server.cli(&["dlq", "list"]);
    let text = stdout(&dlq);
    assert!(
        text.contains(&id) && text.contains("Permission denied") && text.contains("1 ×"),
        "{text}"
    );

    std::fs::write(&marker, "").unwrap();
    let retry = server.cli(&["retry", &id, "--reset"]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    let job = server.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["attempt"], 1, "the reset restarted the count");
    assert_eq!(server.attempts(&id).await.len(), 2, "history is kept");
    let events = server.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("attempts reset")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_missing_program_is_permanent_with_the_exit_code_rule() {
    let server = Server::start(&[]).await;
    let id = server
        .submit(&["deploy-tool-that-does-not-exist"], serde_json::json!({}))
        .await;
    let job = server.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["last_rule"], "exit code 127 (command not found)");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("command not found"),
        "{job}"
    );
}

#[tokio::test]
async fn exhausted_job_lands_in_dead_letter_queue_with_explanation() {
    let server = Server::start(&[]).await;
    let script = "echo 'uploading theme'; echo 'ssh: connect to host sftp.example port 22: Connection timed out' >&2; exit 255";
    let id = server
        .submit(
            &["sh", "-c", script],
            serde_json::json!({ "policy": fast_policy(3), "target": "sftp.example" }),
        )
        .await;
    let job = server.wait_terminal(&id, Duration::from_secs(15)).await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["attempt"], 3);
    assert!(
        job["finish_reason"]
            .as_str()
            .unwrap()
            .starts_with("attempts exhausted (3 of 3)"),
        "{job}"
    );

    let show = server.cli(&["show", &id]);
    let text = stdout(&show);
    for expected in [
        "Diagnosis",
        "attempts exhausted (3 of 3)",
        "Connection timed out",
        "uploading theme",
        "retryd retry",
        "Last output (attempt 3)",
    ] {
        assert!(text.contains(expected), "show lacks {expected:?}:\n{text}");
    }

    let (_, dlq) = server.get("/dlq").await;
    assert_eq!(dlq["total"], 1);
    assert_eq!(dlq["groups"][0]["count"], 1);
    let fingerprint = dlq["groups"][0]["fingerprint"].as_str().unwrap().to_owned();
    let requeue = server.cli(&["dlq", "requeue", "--fingerprint", &fingerprint, "--reset"]);
    assert!(
        stdout(&requeue).contains("requeued 1 dead job"),
        "{}{}",
        stdout(&requeue),
        stderr(&requeue)
    );
    server
        .wait_for(&id, Duration::from_secs(5), |j| j["state"] != "failed")
        .await;
    server.wait_terminal(&id, Duration::from_secs(15)).await;
    let purge = server.cli(&["dlq", "purge", &id]);
    assert!(
        stdout(&purge).contains("purged 1 dead job"),
        "{}",
        stdout(&purge)
    );
    let (status, _) = server.get(&format!("/jobs/{id}")).await;
    assert_eq!(status, 404);
}
