//! Issue 7, must-shows 5 and 6: circuit breaking and retry budgets per target, on SQLite and
//! on PostgreSQL (the budget shared by two nodes), against a real HTTP target on loopback.

use crate::helpers::*;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A target that answers 503 until it is healthy, counting every request and noting when
/// it came.
struct Target {
    url: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

async fn target() -> Target {
    let healthy = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(AtomicU64::new(0));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let (h, n, a) = (healthy.clone(), hits.clone(), arrivals.clone());
    let app = Router::new().route(
        "/rpc",
        get(move || {
            let (h, n, a) = (h.clone(), n.clone(), a.clone());
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                a.lock().unwrap().push(Instant::now());
                if h.load(Ordering::SeqCst) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Target {
        url: format!("http://{address}/rpc"),
        healthy,
        hits,
        arrivals,
    }
}

fn write_config(text: &str) -> PathBuf {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let path = dir.join("retryd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A policy that retries fast and long, so that only the limits slow it down.
const HAMMER: &str = r#"
[policies.hammer]
max_attempts = 100
initial_delay = "100ms"
max_delay = "200ms"
jitter = "none"
"#;

async fn submit_against(server: &Server, url: &str, target: &str, n: usize) -> Vec<String> {
    let body =
        json!({ "action": { "type": "http", "url": url }, "target": target, "policy": "hammer" });
    futures::stream::iter(0..n)
        .map(|_| async {
            let (status, job) = server.post("/jobs", body.clone()).await;
            assert_eq!(status, 201, "{job}");
            job["id"].as_str().unwrap().to_owned()
        })
        .buffer_unordered(8)
        .collect()
        .await
}

async fn jobs_of(server: &Server, target: &str) -> Vec<Value> {
    let (status, page) = server
        .get(&format!("/jobs?target={target}&limit=500"))
        .await;
    assert_eq!(status, 200, "{page}");
    page["jobs"].as_array().unwrap().clone()
}

async fn circuits(server: &Server) -> Vec<Value> {
    let (status, list) = server.get("/circuits").await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn circuit_opens_and_closes(server: &Server, target: &Target) {
    let ids = submit_against(server, &target.url, "flaky-rpc", 50).await;
    wait_until("the circuit to open", Duration::from_secs(30), || async {
        circuits(server)
            .await
            .iter()
            .any(|c| c["target"] == "flaky-rpc")
    })
    .await;
    let open = circuits(server).await;
    assert!(
        open[0]["failures"].as_u64().unwrap() * 2 >= open[0]["attempts"].as_u64().unwrap(),
        "opened at the threshold: {open:?}"
    );
    // Attempts started before it opened finish; then only probes reach the target, one per
    // cool-down (2 s): without the circuit, 50 jobs retrying every 200 ms would make ~1500
    // requests in these 6 s.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = target.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let during = target.hits.load(Ordering::SeqCst) - before;
    eprintln!(
        "circuit open: {during} requests reached the target in 6 s ({before} before it opened)"
    );
    assert!(
        during <= 5,
        "{during} requests reached the target in 6 s while its circuit was open (probe rate: one per 2 s)"
    );
    assert!(during >= 2, "half-open probes go through ({during})");
    let waiting = jobs_of(server, "flaky-rpc").await;
    let held = waiting
        .iter()
        .filter(|j| {
            j["waiting_reason"].as_str().is_some_and(|r| {
                r.starts_with("circuit open for target flaky-rpc until")
                    || r.starts_with("circuit half-open for target flaky-rpc")
            })
        })
        .count();
    assert!(
        held >= 45,
        "jobs say why they wait: {held} of 50; e.g. {}",
        waiting[0]
    );
    assert!(waiting.iter().all(|j| j["state"] != "failed"));
    let cli = server.cli(&["circuits"]);
    assert!(cli.status.success(), "{}", stderr(&cli));
    assert!(stdout(&cli).contains("flaky-rpc"), "{}", stdout(&cli));
    let cli = server.cli(&["circuits", "--json"]);
    let listed: Vec<Value> = serde_json::from_slice(&cli.stdout).expect("JSON");
    assert_eq!(listed[0]["target"], "flaky-rpc");
    let metrics = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("retryd_circuit_open{target=\"flaky-rpc\""),
        "{metrics}"
    );
    // The target recovers: the next probe closes the circuit and the held jobs run.
    target.healthy.store(true, Ordering::SeqCst);
    for id in &ids {
        let job = server.wait_terminal(id, Duration::from_secs(30)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    assert!(circuits(server).await.is_empty(), "closed after recovery");
    // The outage stays in the history, and the CLI shows it.
    let (status, history) = server.get("/circuits/history").await;
    assert_eq!(status, 200, "{history}");
    let outage = &history[0];
    assert_eq!(outage["target"], "flaky-rpc", "{history}");
    assert_eq!(outage["closed_by"], "its probe succeeded", "{outage}");
    assert!(outage["closed_at"].as_str() > outage["opened_at"].as_str());
    assert!(outage["reopened"].as_u64().is_some());
    let cli = server.cli(&["circuits", "--history"]);
    assert!(cli.status.success(), "{}", stderr(&cli));
    let text = stdout(&cli);
    assert!(
        text.contains("flaky-rpc") && text.contains("its probe succeeded"),
        "{text}"
    );
    let (status, body) = server.get("/circuits/history?limit=0").await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["details"]["field"], "limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_target_opens_its_circuit_and_it_closes_after_recovery() {
    let target = target().await;
    let config = write_config(&format!(
        "{HAMMER}\n[circuits]\nfailure_threshold = 0.5\nmin_attempts = 10\nwindow = \"10s\"\ncool_down = \"2s\"\n"
    ));
    let server = Server::start(&["--config", &config.display().to_string()]).await;
    circuit_opens_and_closes(&server, &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn circuits_work_on_postgres() {
    let target = target().await;
    let config = write_config(&format!(
        "{HAMMER}\n[circuits]\nfailure_threshold = 0.5\nmin_attempts = 10\nwindow = \"10s\"\ncool_down = \"2s\"\n"
    ));
    let database = retryd_store_postgres::testing::fresh_database().await;
    let server = Server::start_node(&database, &["--config", &config.display().to_string()]).await;
    circuit_opens_and_closes(&server, &target).await;
}

/// The most instants within any `window` (sorted instants, a sliding window).
fn busiest(sorted: &[DateTime<Utc>], window: chrono::Duration) -> usize {
    let mut most = 0;
    let mut first = 0;
    for (last, at) in sorted.iter().enumerate() {
        while *at - sorted[first] >= window {
            first += 1;
        }
        most = most.max(last - first + 1);
    }
    most
}

/// When each retry (attempt 2 and later) of the target's jobs started, by the server's
/// record, sorted.
async fn retry_starts(server: &Server, target: &str) -> Vec<DateTime<Utc>> {
    let mut starts = Vec::new();
    for job in jobs_of(server, target).await {
        if job["attempt"].as_u64().unwrap() < 2 {
            continue;
        }
        for attempt in server.attempts(job["id"].as_str().unwrap()).await {
            if attempt["number"].as_u64().unwrap() >= 2 {
                starts.push(attempt["started_at"].as_str().unwrap().parse().unwrap());
            }
        }
    }
    starts.sort();
    starts
}

/// 500 failing jobs against a budget of 5 retries per 5 s (60/min, in a window short enough
/// for a test): once every first attempt is done, each request the target gets is a retry,
/// and no 5 s hold more than the budget, on every node together.
async fn budget_holds(nodes: &[Server], target: &Target) {
    let first = &nodes[0];
    submit_against(first, &target.url, "pay-api", 500).await;
    wait_until("every first attempt", Duration::from_secs(90), || async {
        jobs_of(first, "pay-api")
            .await
            .iter()
            .all(|j| j["attempt"].as_u64().unwrap() >= 1 && j["state"] != "running")
    })
    .await;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let retries: Vec<Instant> = target
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|at| *at >= start)
        .collect();
    let took = start.elapsed().as_secs_f64();
    let per_minute = retries.len() as f64 * 60.0 / took;
    let starts = retry_starts(first, "pay-api").await;
    let most = busiest(&starts, chrono::Duration::seconds(5));
    eprintln!(
        "budget: the target got {} retries in {took:.1} s ({per_minute:.0}/min); \
         of {} retries started, at most {most} within any 5 s; {} node(s)",
        retries.len(),
        starts.len(),
        nodes.len()
    );
    assert!(
        most <= 5,
        "{most} retries started within 5 s against a budget of 5 per 5 s"
    );
    // Over 15 s, three windows' worth at most (plus one burst that straddles the edge).
    assert!(
        retries.len() <= 20,
        "{} retries reached the target in {took:.1} s ({per_minute:.0}/min)",
        retries.len()
    );
    assert!(
        retries.len() >= 10,
        "the budget lets retries through: {} in {took:.1} s",
        retries.len()
    );
    // Every job that waits says why: the budget (a job just back from its retry is backing
    // off for 100 ms first).
    let budget = "retry budget of target pay-api exhausted (5 per 5s), next slot at";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let jobs = jobs_of(first, "pay-api").await;
        let said = jobs
            .iter()
            .filter(|j| {
                j["waiting_reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(budget))
            })
            .count();
        if said >= 490 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "waiting jobs say the budget holds them: {said} of 500; e.g. {}",
            jobs[0]["waiting_reason"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const BUDGET: &str = "\n[budgets]\nper_target = 5\nwindow = \"5s\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_budget_caps_retries_against_a_failing_target() {
    let target = target().await;
    let config = write_config(&format!("{HAMMER}{BUDGET}"));
    let server = Server::start(&[
        "--config",
        &config.display().to_string(),
        "--synchronous",
        "normal",
    ])
    .await;
    budget_holds(std::slice::from_ref(&server), &target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_budget_holds_across_two_postgres_nodes() {
    let target = target().await;
    let config = write_config(&format!("{HAMMER}{BUDGET}"));
    let config = config.display().to_string();
    let database = retryd_store_postgres::testing::fresh_database().await;
    let (args1, args2) = (
        ["--node", "n1", "--config", config.as_str()],
        ["--node", "n2", "--config", config.as_str()],
    );
    let (a, b) = tokio::join!(
        Server::start_node(&database, &args1),
        Server::start_node(&database, &args2),
    );
    let nodes = [a, b];
    budget_holds(&nodes, &target).await;
    // Both nodes did the work that the one budget capped.
    let mut used = std::collections::BTreeSet::new();
    for job in jobs_of(&nodes[0], "pay-api").await.iter().take(200) {
        for attempt in nodes[0].attempts(job["id"].as_str().unwrap()).await {
            used.insert(attempt["node"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(used.len(), 2, "attempts ran on {used:?}");
}
