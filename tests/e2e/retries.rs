//! Issue 3, must-show 1: a transient failure is retried until it succeeds, and every step is
//! stored and shown.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn transient_failures_retry_until_success_and_show_tells_the_story() {
    let server = Server::start(&[]).await;
    let script = flaky(
        &server.dir.join("count"),
        2,
        "curl: (7) Failed to connect to db.internal port 5432: Connection refused",
    );
    let policy =
        json!({ "max_attempts": 3, "initial_delay": "100ms", "max_delay": "1s", "jitter": "none" });
    let policy_flag = policy.to_string();
    let out = server.cli(&[
        "submit",
        "--policy",
        &policy_flag,
        "--kind",
        "deploy",
        "--target",
        "db.internal",
        "--json",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let submitted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = submitted["id"].as_str().unwrap().to_owned();

    let job = server.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 3);

    let states: Vec<String> = server
        .events(&id)
        .await
        .iter()
        .map(|e| e["to"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        states,
        [
            "pending",
            "running",
            "retrying",
            "running",
            "retrying",
            "running",
            "succeeded"
        ]
    );

    let attempts = server.attempts(&id).await;
    assert_eq!(attempts.len(), 3);
    for (i, attempt) in attempts.iter().take(2).enumerate() {
        assert_eq!(attempt["outcome"], "failed");
        assert_eq!(attempt["class"], "transient");
        assert_eq!(attempt["rule"], "output: connection refused or reset");
        assert_eq!(attempt["delay_reason"], "backoff");
        assert_eq!(
            attempt["next_delay_ms"],
            100 * 2u64.pow(i as u32),
            "exponential backoff without jitter"
        );
    }
    assert_eq!(attempts[2]["outcome"], "succeeded");

    let show = server.cli(&["show", &id]);
    let text = stdout(&show);
    assert!(show.status.success(), "{}", stderr(&show));
    for expected in [
        "succeeded",
        "transient",
        "output: connection refused or reset",
        "retry in 100ms (backoff)",
        "retry in 200ms (backoff)",
        "deployed",
    ] {
        assert!(text.contains(expected), "show lacks {expected:?}:\n{text}");
    }
}

#[tokio::test]
async fn submit_wait_follows_the_job_and_exits_with_its_outcome() {
    let server = Server::start(&[]).await;
    let script = flaky(
        &server.dir.join("count"),
        1,
        "read tcp 10.0.0.2:443: connection reset by peer",
    );
    let policy = fast_policy(3).to_string();
    let ok = server.cli(&[
        "submit", "--wait", "--policy", &policy, "--", "sh", "-c", &script,
    ]);
    let text = stdout(&ok);
    assert_eq!(ok.status.code(), Some(0), "{text}{}", stderr(&ok));
    assert!(
        text.contains("running → retrying") && text.contains("running → succeeded"),
        "{text}"
    );

    let failed = server.cli(&[
        "submit",
        "--wait",
        "--",
        "sh",
        "-c",
        "echo 'Error: invalid configuration: port' >&2; exit 1",
    ]);
    assert_eq!(failed.status.code(), Some(3), "a failed job exits 3");
    assert!(
        stdout(&failed).contains("permanent error"),
        "{}",
        stdout(&failed)
    );
}

#[tokio::test]
async fn idempotency_key_returns_the_same_job() {
    let server = Server::start(&[]).await;
    let body = json!({ "action": { "type": "command", "program": "true" }, "idempotency_key": "deploy-1234" });
    let (first, a) = server.post("/jobs", body.clone()).await;
    let (second, b) = server.post("/jobs", body).await;
    assert_eq!((first, second), (201, 200));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["created"], false);
}

#[tokio::test]
async fn deadlines_expire_jobs_that_cannot_finish_in_time() {
    let server = Server::start(&[]).await;
    let deadline = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let backing_off = server
        .submit(&["sh", "-c", "echo 'connection refused' >&2; exit 1"], json!({
            "deadline": deadline,
            "policy": { "max_attempts": 10, "initial_delay": "5s", "max_delay": "5s", "jitter": "none" },
        }))
        .await;
    let too_slow = server
        .submit(&["sleep", "30"], json!({ "deadline": deadline }))
        .await;
    let job = server
        .wait_terminal(&backing_off, Duration::from_secs(10))
        .await;
    assert_eq!(job["state"], "expired", "{job}");
    let job = server
        .wait_terminal(&too_slow, Duration::from_secs(10))
        .await;
    assert_eq!(job["state"], "expired", "{job}");
    assert_eq!(server.attempts(&too_slow).await[0]["outcome"], "timed_out");
}

#[tokio::test]
async fn attempt_timeout_kills_the_attempt_and_counts_as_transient() {
    let server = Server::start(&[]).await;
    let id = server
        .submit(&["sleep", "30"], json!({ "policy": { "max_attempts": 2, "initial_delay": "50ms", "attempt_timeout": "300ms" } }))
        .await;
    let job = server.wait_terminal(&id, Duration::from_secs(15)).await;
    assert_eq!(job["state"], "failed");
    let attempts = server.attempts(&id).await;
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .all(|a| a["outcome"] == "timed_out" && a["class"] == "transient"),
        "{attempts:?}"
    );
    assert_eq!(attempts[0]["rule"], "killed by the attempt timeout");
}

#[tokio::test]
async fn secret_env_values_never_reach_output_or_api() {
    let server = Server::start(&[]).await;
    let body = json!({ "action": {
        "type": "command", "program": "sh",
        "args": ["-c", "echo token is $API_TOKEN; echo \"denied for $API_TOKEN\" >&2; exit 1"],
        "env": { "API_TOKEN": { "value": "tok-8f3a9c", "secret": true }, "REGION": "eu" },
    }, "policy": fast_policy(1) });
    let (status, job) = server.post("/jobs", body).await;
    assert_eq!(status, 201);
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(!job.to_string().contains("tok-8f3a9c"));
    server.wait_terminal(&id, Duration::from_secs(10)).await;
    let (_, log) = server.get(&format!("/jobs/{id}/log")).await;
    let text = log.to_string();
    assert!(text.contains("token is [REDACTED]"), "{text}");

    // Requeued after a fix with a new secret: recorded as a change, never shown.
    let (status, requeued) = server
        .post(
            &format!("/jobs/{id}/retry"),
            json!({ "reset": true, "env": { "API_TOKEN": { "value": "tok-NEW-77", "secret": true } } }),
        )
        .await;
    assert_eq!(status, 200, "{requeued}");
    server.wait_terminal(&id, Duration::from_secs(10)).await;
    let events = server.events(&id).await;
    assert!(
        events.iter().any(|e| e["reason"]
            .as_str()
            .unwrap()
            .contains("changed: env (API_TOKEN)")),
        "{events:?}"
    );

    // Every read of the API, the event stream, the CLI and the server log.
    let mut seen = Vec::new();
    for path in [
        format!("/jobs/{id}"),
        format!("/jobs/{id}/attempts"),
        format!("/jobs/{id}/events"),
        format!("/jobs/{id}/log"),
        "/jobs".to_owned(),
        "/dlq".to_owned(),
        "/stats".to_owned(),
    ] {
        let (status, body) = server.get(&path).await;
        assert_eq!(status, 200, "{path}");
        seen.push((path, body.to_string()));
    }
    let stream = server
        .http
        .get(server.api("/events?after=0"))
        .send()
        .await
        .unwrap();
    let mut chunks = stream.bytes_stream();
    let mut sse = String::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout(
        Duration::from_millis(500),
        futures::StreamExt::next(&mut chunks),
    )
    .await
    {
        sse.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(sse.contains("succeeded") || sse.contains("failed"), "{sse}");
    seen.push(("SSE".to_owned(), sse));
    seen.push((
        "retryd show".to_owned(),
        stdout(&server.cli(&["show", &id])),
    ));
    seen.push((
        "retryd logs".to_owned(),
        stdout(&server.cli(&["logs", &id])),
    ));
    seen.push(("server log".to_owned(), server.log()));
    for (place, text) in &seen {
        for secret in ["tok-8f3a9c", "tok-NEW-77"] {
            assert!(!text.contains(secret), "{secret} shown by {place}: {text}");
        }
    }
}
