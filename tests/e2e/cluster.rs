//! Issue 4: several nodes on one PostgreSQL database. Every test gets a fresh database on the
//! real local server; a test that cannot reach it fails (see `testing::fresh_database`).

use crate::helpers::*;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The node's database URL, tagged so that its connections can be found in pg_stat_activity.
fn node_url(database: &str, node: &str) -> String {
    format!("{database}?application_name={node}")
}

async fn start_nodes(database: &str, names: &[&str], extra: &[&str]) -> Vec<Server> {
    // Together, on purpose: migrations must be safe when several nodes start at once.
    let starts = names.iter().map(|name| {
        let mut args = vec!["--node", name];
        args.extend_from_slice(extra);
        let url = node_url(database, name);
        async move { Server::start_node(&url, &args).await }
    });
    futures::future::join_all(starts).await
}

/// A command that appends its start and end instants to `runs`, then behaves as `tail`.
fn recorded(runs: &Path, tail: &str) -> String {
    format!(
        "echo \"start $(date +%s%N)\" >> '{r}'; {tail}; code=$?; echo \"end $(date +%s%N)\" >> '{r}'; exit $code",
        r = runs.display()
    )
}

/// (start, end) nanosecond intervals of the runs recorded in `runs`.
fn run_intervals(runs: &Path) -> Vec<(u128, u128)> {
    let text = std::fs::read_to_string(runs).unwrap_or_default();
    let mut intervals = Vec::new();
    let mut start = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("start", t)) => start = t.parse().ok(),
            Some(("end", t)) => {
                if let (Some(s), Ok(e)) = (start.take(), t.parse()) {
                    intervals.push((s, e));
                }
            }
            _ => {}
        }
    }
    intervals
}

fn runs_started(runs: &Path) -> usize {
    std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("start"))
        .count()
}

async fn all_jobs(node: &Server) -> Vec<Value> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/jobs?limit=500&cursor={c}"),
            None => "/jobs?limit=500".to_owned(),
        };
        let (status, page) = node.get_paced(&path).await;
        assert_eq!(status, 200, "{page}");
        jobs.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return jobs,
        }
    }
}

async fn wait_all_finished(node: &Server, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, page) = node
            .get("/jobs?state=pending,running,retrying&limit=5")
            .await;
        if status == 200 && page["jobs"].as_array().is_some_and(|j| j.is_empty()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "jobs still unfinished after {timeout:?}: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit_all(nodes: &[Server], bodies: Vec<Value>) -> Vec<String> {
    let requests = bodies.into_iter().enumerate().map(|(i, body)| {
        let node = &nodes[i % nodes.len()];
        async move {
            let (status, job) = node.post("/jobs", body).await;
            assert_eq!(status, 201, "{job}");
            job["id"].as_str().unwrap().to_owned()
        }
    });
    futures::stream::iter(requests).buffered(16).collect().await
}

/// Waits until `owner` runs at least `count` attempts, as `node` sees them.
async fn wait_until_running_on(node: &Server, owner: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = node.get("/jobs?state=running&limit=100").await;
        let running = page["jobs"].as_array().map_or(0, |jobs| {
            jobs.iter().filter(|j| j["lease_owner"] == owner).count()
        });
        if running >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{owner} never ran {count} attempts at once"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn command(script: String, policy: Value) -> Value {
    json!({ "action": { "type": "command", "program": "sh", "args": ["-c", script] }, "policy": policy })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_run_three_thousand_jobs_each_to_its_policys_end() {
    const JOBS: usize = 3000;
    let database = retryd_store_postgres::testing::fresh_database().await;
    let nodes = start_nodes(&database, &["n1", "n2", "n3"], &["--concurrency", "8"]).await;
    let work = tempfile::tempdir().unwrap();
    let policy = json!({ "max_attempts": 3, "initial_delay": "50ms", "max_delay": "200ms", "jitter": "full" });
    let mut bodies = Vec::new();
    for i in 0..JOBS {
        let runs = work.path().join(format!("runs-{i}"));
        let tail = match i % 3 {
            0 => "true".to_owned(),
            1 => format!(
                "[ $(grep -c start '{}') -ge 2 ] || {{ echo 'dial tcp: connection refused' >&2; false; }}",
                runs.display()
            ),
            _ => "echo 'open /srv/app: permission denied' >&2; false".to_owned(),
        };
        bodies.push(command(recorded(&runs, &tail), policy.clone()));
    }
    let started = Instant::now();
    let ids = submit_all(&nodes, bodies).await;
    wait_all_finished(&nodes[0], Duration::from_secs(300)).await;
    let elapsed = started.elapsed();

    let jobs: HashMap<String, Value> = all_jobs(&nodes[1])
        .await
        .into_iter()
        .map(|j| (j["id"].as_str().unwrap().to_owned(), j))
        .collect();
    assert_eq!(jobs.len(), JOBS);
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let job = &jobs[id];
        let (state, attempts) = match i % 3 {
            0 => ("succeeded", 1),
            1 => ("succeeded", 2),
            _ => ("failed", 1),
        };
        assert_eq!(
            (job["state"].as_str(), job["attempt"].as_u64()),
            (Some(state), Some(attempts)),
            "job {i}: {job}"
        );
        let recorded = nodes[i % 3].attempts(id).await;
        assert!(
            recorded.iter().all(|a| a["outcome"] != "lost"),
            "{recorded:?}"
        );
        for a in &recorded {
            *per_node
                .entry(a["node"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        let runs = runs_started(&work.path().join(format!("runs-{i}")));
        assert_eq!(
            runs,
            recorded.len(),
            "job {i} ran {runs} times for {} attempts",
            recorded.len()
        );
    }
    eprintln!("3 nodes ran {JOBS} jobs in {elapsed:?}; attempts per node: {per_node:?}");
    assert_eq!(per_node.len(), 3, "every node took work: {per_node:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_attempts_are_rescued_by_the_others() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let mut nodes = start_nodes(
        &database,
        &["n1", "n2", "n3"],
        &["--lease", "3s", "--concurrency", "10"],
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let policy = json!({ "max_attempts": 3, "initial_delay": "100ms", "max_delay": "200ms" });
    let bodies = (0..45)
        .map(|i| {
            command(
                recorded(&work.path().join(format!("runs-{i}")), "sleep 1.5"),
                policy.clone(),
            )
        })
        .collect();
    let ids = submit_all(&nodes, bodies).await;
    wait_until_running_on(&nodes[1], "n1", 3).await;
    let killed_at = Utc::now();
    nodes[0].kill9();
    wait_all_finished(&nodes[1], Duration::from_secs(60)).await;
    let mut rescued = 0;
    for id in &ids {
        let job = nodes[1].job(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempts = nodes[2].attempts(id).await;
        for (i, attempt) in attempts.iter().enumerate() {
            if attempt["outcome"] == "lost" {
                rescued += 1;
                assert_eq!(attempt["node"], "n1");
                let at: DateTime<Utc> = attempt["finished_at"].as_str().unwrap().parse().unwrap();
                let after = (at - killed_at).num_milliseconds();
                assert!(
                    after <= 3000 + 3000,
                    "rescued {after} ms after the kill (lease 3 s)"
                );
                assert_ne!(attempts[i + 1]["node"], "n1", "finished on another node");
            }
        }
    }
    eprintln!("{rescued} attempts of the killed node were rescued");
    assert!(rescued >= 3);
    let (_, running) = nodes[1].get("/jobs?state=running").await;
    assert!(running["jobs"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_retries_start_on_time_with_two_nodes() {
    const JOBS: usize = 200;
    let database = retryd_store_postgres::testing::fresh_database().await;
    let nodes = start_nodes(&database, &["n1", "n2"], &["--concurrency", "128"]).await;
    let work = tempfile::tempdir().unwrap();
    let policy = json!({ "max_attempts": 2, "initial_delay": "100ms", "max_delay": "100ms", "jitter": "none" });
    let mut ids = Vec::new();
    for chunk in 0..10 {
        let bodies = (0..JOBS / 10)
            .map(|i| {
                command(
                    flaky(
                        &work.path().join(format!("count-{chunk}-{i}")),
                        1,
                        "connection refused",
                    ),
                    policy.clone(),
                )
            })
            .collect();
        ids.extend(submit_all(&nodes, bodies).await);
        // Spread the failures so that retries fall due at different instants.
        tokio::time::sleep(Duration::from_millis(37)).await;
    }
    wait_all_finished(&nodes[0], Duration::from_secs(60)).await;
    let mut lateness = Vec::new();
    for id in &ids {
        let attempts = nodes[1].attempts(id).await;
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        let failed_at: DateTime<Utc> = attempts[0]["finished_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let started: DateTime<Utc> = attempts[1]["started_at"].as_str().unwrap().parse().unwrap();
        lateness.push(
            (started - failed_at).num_milliseconds()
                - attempts[0]["next_delay_ms"].as_i64().unwrap(),
        );
    }
    lateness.sort();
    let (p50, p99) = (percentile(&lateness, 50.0), percentile(&lateness, 99.0));
    eprintln!(
        "retry wake-up lateness over {JOBS} due retries (PostgreSQL, 2 nodes): p50 {p50} ms, p99 {p99} ms, max {} ms",
        lateness.last().unwrap()
    );
    assert!(lateness[0] >= 0, "no retry starts early: {lateness:?}");
    assert!(
        p99 < 1500,
        "retries are being polled for, not timed: p99 {p99} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_one_node_stops_the_attempt_on_another_within_a_second() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let nodes = start_nodes(&database, &["n1", "n2"], &[]).await;
    let marker = format!("sleep 40.{}", std::process::id());
    let id = nodes[0].submit(&["sh", "-c", &marker], json!({})).await;
    let job = nodes[0]
        .wait_for(&id, Duration::from_secs(10), |j| j["state"] == "running")
        .await;
    let (owner, other) = if job["lease_owner"] == "n1" {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    while processes_with(&marker).is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = Instant::now();
    let (status, _) = other.post(&format!("/jobs/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    let job = owner.wait_terminal(&id, Duration::from_secs(5)).await;
    assert_eq!(job["state"], "cancelled");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        asked.elapsed()
    );
    assert!(processes_with(&marker).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_cut_off_from_the_database_cannot_apply_late_results() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let nodes = start_nodes(
        &database,
        &["n1", "n2"],
        &["--lease", "2s", "--concurrency", "4"],
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let policy = json!({ "max_attempts": 4, "initial_delay": "100ms", "max_delay": "200ms" });
    let bodies = (0..16)
        .map(|i| {
            command(
                recorded(&work.path().join(format!("runs-{i}")), "sleep 0.7"),
                policy.clone(),
            )
        })
        .collect();
    let ids = submit_all(&nodes, bodies).await;
    wait_until_running_on(&nodes[1], "n1", 2).await;
    // Cut n1's database connections, then freeze it past its lease.
    let admin = retryd_store_postgres::testing::admin_url();
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let cut = client
        .query(
            // This test's n1 only: other tests run nodes named n1 on their own databases.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'n1' AND datname = $1",
            &[&database.rsplit('/').next().unwrap()],
        )
        .await
        .unwrap()
        .len();
    let n1 = nix::unistd::Pid::from_raw(nodes[0].pid().unwrap());
    nix::sys::signal::kill(n1, nix::sys::signal::Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    nix::sys::signal::kill(n1, nix::sys::signal::Signal::SIGCONT).unwrap();

    wait_all_finished(&nodes[1], Duration::from_secs(60)).await;
    let mut lost = 0;
    for (i, id) in ids.iter().enumerate() {
        let job = nodes[1].job(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempts = nodes[1].attempts(id).await;
        lost += attempts.iter().filter(|a| a["outcome"] == "lost").count();
        let mut runs = run_intervals(&work.path().join(format!("runs-{i}")));
        runs.sort();
        for pair in runs.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "job {i} ran twice at once: {runs:?}"
            );
        }
    }
    // The late results arrive after SIGCONT; give n1 a moment to try to record them.
    let deadline = Instant::now() + Duration::from_secs(15);
    // Issue 14: n1 learns from a renewal that its attempts were rescued (and stops them) or
    // from its refused results, whichever comes first.
    while !(nodes[0].log().contains("result refused")
        || nodes[0]
            .log()
            .contains("no longer holds the attempt's lease"))
    {
        assert!(
            Instant::now() < deadline,
            "n1 never learned it lost its attempts; log:\n{}",
            nodes[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "cut {cut} connections of n1, froze it 5 s past its 2 s lease: {lost} attempts rescued as lost, late results refused"
    );
    assert!(lost >= 2, "n1's attempts were rescued");
}

/// Restarts the PostgreSQL server: nextest runs tests named `disruptive` alone (see
/// `.config/nextest.toml`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruptive_postgres_restart_while_jobs_run_loses_nothing() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let nodes = start_nodes(&database, &["n1", "n2"], &["--concurrency", "10"]).await;
    let work = tempfile::tempdir().unwrap();
    let policy = json!({ "max_attempts": 5, "initial_delay": "200ms", "max_delay": "1s" });
    let bodies = (0..120)
        .map(|i| {
            command(
                recorded(&work.path().join(format!("runs-{i}")), "sleep 0.3"),
                policy.clone(),
            )
        })
        .collect();
    let ids = submit_all(&nodes, bodies).await;
    nodes[0]
        .wait_for(&ids[10], Duration::from_secs(20), |j| {
            j["state"] == "succeeded"
        })
        .await;

    let readyz = format!("{}/readyz", nodes[0].url);
    let probe = tokio::spawn(async move {
        let mut not_ready = 0;
        for _ in 0..100 {
            if reqwest::get(&readyz)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
                == 503
            {
                not_ready += 1;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        not_ready
    });
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let restart = std::process::Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            version.to_str().unwrap(),
            "main",
            "restart",
        ])
        .output()
        .expect("pg_ctlcluster");
    assert!(
        restart.status.success(),
        "{}",
        String::from_utf8_lossy(&restart.stderr)
    );
    let not_ready = probe.await.unwrap();

    wait_all_finished(&nodes[1], Duration::from_secs(120)).await;
    for (i, id) in ids.iter().enumerate() {
        let job = nodes[1].job(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let attempts = nodes[1].attempts(id).await;
        let runs = runs_started(&work.path().join(format!("runs-{i}")));
        let counted = attempts.iter().filter(|a| a["outcome"] != "lost").count();
        assert!(
            runs >= counted,
            "job {i}: {runs} runs for {counted} recorded attempts"
        );
    }
    for node in &nodes {
        let log = node.log();
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
            .collect();
        eprintln!("node log during the restart ({} warnings):", warnings.len());
        let mut seen = std::collections::BTreeSet::new();
        for line in warnings {
            let message = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if seen.insert(message.clone()) {
                eprintln!("  {message}");
            }
        }
    }
    eprintln!("/readyz answered 503 {not_ready} times during the restart");
    assert!(not_ready > 0, "readyz never reported the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_paused_on_one_node_is_paused_on_all() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let nodes = start_nodes(&database, &["n1", "n2"], &[]).await;
    // A job due later shows, through n2, when n2 has learnt of the pause (its view reads n2's list).
    let later = (Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let marker = nodes[1]
        .submit(&["true"], json!({ "queue": "deploy", "run_at": later }))
        .await;
    let (status, _) = nodes[0].post("/queues/deploy/pause", json!({})).await;
    assert_eq!(status, 200);
    nodes[1]
        .wait_for(&marker, Duration::from_secs(5), |j| {
            j["waiting_reason"] == "queue deploy paused"
        })
        .await;
    let ids: Vec<String> = futures::future::join_all(
        (0..4).map(|i| nodes[i % 2].submit(&["true"], json!({ "queue": "deploy" }))),
    )
    .await;
    let other = nodes[1].submit(&["true"], json!({ "queue": "mail" })).await;
    nodes[1]
        .wait_terminal(&other, Duration::from_secs(10))
        .await;
    for id in &ids {
        let job = nodes[1].job(id).await;
        assert_eq!(job["waiting_reason"], "queue deploy paused", "{job}");
    }
    nodes[1].post("/queues/deploy/resume", json!({})).await;
    for id in &ids {
        assert_eq!(
            nodes[0].wait_terminal(id, Duration::from_secs(10)).await["state"],
            "succeeded"
        );
    }
}

/// Issue 15: a policy created or changed on one node was unknown to the others for up to 2 s
/// (they polled). Now every node reads it again as the change's NOTIFY arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_on_one_node_reaches_the_others_at_once() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let nodes = start_nodes(&database, &["n1", "n2"], &[]).await;
    let n2 = &nodes[1];
    let known_on_n2 = |max_attempts: u64| async move {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let (status, view) = n2.get("/policies/deploys").await;
            if status == 200 && view["policy"]["max_attempts"] == max_attempts {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "n2 did not learn of the change within 1 s: {view}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let body = json!({ "name": "deploys", "policy": { "max_attempts": 7 } });
    let (status, created) = nodes[0].post("/policies", body).await;
    assert_eq!(status, 201, "{created}");
    known_on_n2(7).await;
    let changed = nodes[0]
        .http
        .patch(nodes[0].api("/policies/deploys"))
        .json(&json!({ "max_attempts": 9 }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    known_on_n2(9).await;
}
