//! Issue 3, must-shows 5 and 6: SIGKILL of the server loses nothing, and a job that kills
//! the server every time ends in the dead-letter queue instead of looping forever.

use crate::helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_finishes_every_job() {
    let mut server = Server::start(&["--concurrency", "64"]).await;
    let policy = json!({ "max_attempts": 3, "initial_delay": "100ms", "max_delay": "500ms" });
    // The first attempt of each job hangs (a long sleep with a marker); later ones succeed.
    let marker = format!("sleep 300.{}", std::process::id());
    let mut ids = Vec::new();
    for i in 0..50 {
        let seen = server.dir.join(format!("started-{i}"));
        let script = format!(
            "if [ -e '{s}' ]; then echo resumed; exit 0; fi; touch '{s}'; {marker}",
            s = seen.display()
        );
        ids.push(
            server
                .submit(&["sh", "-c", &script], json!({ "policy": policy }))
                .await,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // Each job's shell and its sleep carry the marker: 100 processes once all have started.
    while processes_with(&marker).len() < 100
        || (0..50).any(|i| !server.dir.join(format!("started-{i}")).exists())
    {
        assert!(Instant::now() < deadline, "the 50 jobs did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let orphans = processes_with(&marker);
    server.kill9();
    server.restart().await;
    for id in &ids {
        let job = server.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempts = server.attempts(id).await;
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert_eq!(attempts[0]["outcome"], "lost");
        assert_eq!(attempts[0]["class"], "transient");
        assert_eq!(attempts[1]["outcome"], "succeeded");
    }
    let (_, running) = server.get("/jobs?state=running").await;
    assert!(
        running["jobs"].as_array().unwrap().is_empty(),
        "nothing stays running"
    );
    let survivors: Vec<i32> = processes_with(&marker)
        .into_iter()
        .filter(|p| orphans.contains(p))
        .collect();
    assert!(
        survivors.is_empty(),
        "commands of the killed server still run: {survivors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_job_ends_failed_while_the_others_finish() {
    let mut server = Server::start(&[]).await;
    // The others first: once the poison job is in, the server can die at any moment. They
    // may run through each of its 3 crashes, so they allow more lost attempts than that.
    let mut others = Vec::new();
    let mut tolerant = fast_policy(10);
    tolerant["max_lost_attempts"] = json!(5);
    for i in 0..10 {
        others.push(
            server
                .submit(
                    &["sh", "-c", &format!("sleep 0.{i}")],
                    json!({ "policy": tolerant }),
                )
                .await,
        );
    }
    // The command SIGKILLs its parent: the server itself.
    let poison = server
        .submit(
            &["sh", "-c", "sleep 0.2; kill -9 $PPID"],
            json!({ "policy": fast_policy(3), "priority": 90 }),
        )
        .await;
    let mut restarts = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "the poison job never ended");
        // The server may die while answering: a refused or reset request means "not yet".
        let job: Option<serde_json::Value> = match server
            .http
            .get(server.api(&format!("/jobs/{poison}")))
            .send()
            .await
        {
            Ok(response) => response.json().await.ok(),
            Err(_) => None,
        };
        if job.is_some_and(|job| job["state"] == "failed") {
            break;
        }
        if server.wait_exit(Duration::from_secs(10)) {
            restarts += 1;
            assert!(restarts <= 5, "the poison job keeps killing the server");
            server.restart().await;
        }
    }
    let job = server.job(&poison).await;
    assert_eq!(
        restarts, 3,
        "one crash per lost attempt allowed (max_lost_attempts 3)"
    );
    // Issue 14: lost attempts are counted apart from failed ones, and the reason says so.
    assert!(
        job["finish_reason"]
            .as_str()
            .unwrap()
            .starts_with("lost 3 attempts (the node running it died each time)"),
        "{job}"
    );
    assert!(
        job["diagnosis"]["summary"]
            .as_str()
            .unwrap()
            .contains("lost 3 attempts"),
        "{job}"
    );
    let attempts = server.attempts(&poison).await;
    assert!(
        attempts.iter().all(|a| a["outcome"] == "lost"),
        "{attempts:?}"
    );
    for id in &others {
        let job = server.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_attempts_finish() {
    let mut server = Server::start(&["--shutdown-grace", "10s"]).await;
    let id = server.submit(&["sleep", "1"], json!({})).await;
    server
        .wait_for(&id, Duration::from_secs(10), |j| j["state"] == "running")
        .await;
    assert_eq!(server.terminate(), Some(0), "clean exit");
    server.restart().await;
    let job = server.job(&id).await;
    assert_eq!(
        job["state"], "succeeded",
        "the attempt finished before the server stopped: {job}"
    );
    assert_eq!(job["attempt"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_grace_releases_attempts_to_run_again() {
    let mut server = Server::start(&["--shutdown-grace", "200ms"]).await;
    let id = server
        .submit(
            &["sh", "-c", "sleep 30"],
            json!({ "policy": fast_policy(3) }),
        )
        .await;
    server
        .wait_for(&id, Duration::from_secs(10), |j| j["state"] == "running")
        .await;
    assert_eq!(server.terminate(), Some(0));
    let job_after = {
        server.restart().await;
        server.job(&id).await
    };
    let attempts = server.attempts(&id).await;
    assert_eq!(attempts[0]["outcome"], "lost");
    assert_eq!(attempts[0]["rule"], "released at shutdown");
    assert_ne!(job_after["state"], "failed", "{job_after}");
    let rerun = server
        .wait_for(&id, Duration::from_secs(10), |j| j["state"] == "running")
        .await;
    assert_eq!(rerun["attempt"], 1, "a released attempt is not counted");
}

#[tokio::test]
async fn a_second_server_on_the_same_database_is_refused() {
    let server = Server::start(&[]).await;
    let db = server.dir.join("retryd.db");
    let out = cli(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database",
            db.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("in use by another retryd process"),
        "{}",
        stderr(&out)
    );
}
