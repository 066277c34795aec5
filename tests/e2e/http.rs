//! The `http` action against a real HTTP server on a loopback port (issue 7, must-shows 1
//! and 2): statuses classified per SPEC §2, `Retry-After` honoured.

use crate::helpers::*;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A target that answers 503 twice (the second time with `Retry-After: 1`), then 200.
async fn flaky_target() -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let app = Router::new()
        .route(
            "/deploy",
            get(move |headers: HeaderMap| {
                let counter = counter.clone();
                async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    let token = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    match n {
                        1 => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("x-request-id", "r-1")],
                            format!("busy (auth {token})"),
                        ),
                        2 => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            [("retry-after", "1")],
                            "still busy".to_owned(),
                        ),
                        _ => (
                            StatusCode::OK,
                            [("x-request-id", "r-3")],
                            "{\"tx_hash\": \"0xabc\"}".to_owned(),
                        ),
                    }
                }
            }),
        )
        .route(
            "/missing",
            get(|| async { (StatusCode::NOT_FOUND, "no such contract") }),
        )
        .route(
            "/private",
            get(|| async { (StatusCode::UNAUTHORIZED, "bad token") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), calls)
}

fn http_job(url: &str) -> serde_json::Value {
    json!({
        "action": { "type": "http", "method": "GET", "url": url,
                    "headers": { "Authorization": { "value": "Bearer s3cr3t-t0ken", "secret": true } } },
        "policy": { "max_attempts": 5, "initial_delay": "100ms", "max_delay": "5s", "jitter": "none" },
        "target": "metis-rpc",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503s_are_retried_and_retry_after_is_honoured() {
    let (base, calls) = flaky_target().await;
    let server = Server::start(&[]).await;
    let (status, job) = server
        .post("/jobs", http_job(&format!("{base}/deploy")))
        .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let job = server.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let attempts = server.attempts(&id).await;
    assert_eq!(attempts.len(), 3);
    assert_eq!(
        (attempts[0]["class"].as_str(), attempts[0]["rule"].as_str()),
        (Some("transient"), Some("HTTP 408/425/429/5xx"))
    );
    assert_eq!(
        (attempts[1]["class"].as_str(), attempts[1]["rule"].as_str()),
        (Some("transient"), Some("HTTP 408/425/429/5xx"))
    );
    assert_eq!(attempts[0]["delay_reason"], "backoff");
    assert_eq!(attempts[0]["next_delay_ms"], 100);
    // The second wait is the server's: Retry-After 1 s, where the backoff says 200 ms.
    assert_eq!(attempts[1]["delay_reason"], "retry-after");
    assert!(
        attempts[1]["next_delay_ms"].as_u64().unwrap() >= 1000,
        "{attempts:?}"
    );
    let instant = |a: &serde_json::Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(a[field].as_str().unwrap()).unwrap()
    };
    let waited = instant(&attempts[2], "started_at") - instant(&attempts[1], "finished_at");
    assert!(
        waited >= chrono::Duration::milliseconds(1000),
        "the second wait lasted {waited:?}"
    );
    let (_, log) = server.get(&format!("/jobs/{id}/log")).await;
    let text = log.to_string();
    assert!(
        text.contains("503 Service Unavailable")
            && text.contains("retry-after: 1")
            && text.contains("0xabc"),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t-t0ken") && text.contains("[REDACTED]"),
        "the secret header is redacted: {text}"
    );
    assert!(!server.job(&id).await.to_string().contains("s3cr3t-t0ken"));
}

#[tokio::test]
async fn http_404_and_401_are_permanent_and_a_refused_connection_is_transient() {
    let (base, _) = flaky_target().await;
    let server = Server::start(&[]).await;
    for path in ["/missing", "/private"] {
        let (_, job) = server
            .post("/jobs", http_job(&format!("{base}{path}")))
            .await;
        let job = server
            .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(10))
            .await;
        assert_eq!(
            (job["state"].as_str(), job["attempt"].as_u64()),
            (Some("failed"), Some(1)),
            "{job}"
        );
        assert_eq!(job["last_error_class"], "permanent");
        assert_eq!(job["last_rule"], "HTTP 4xx");
    }
    // A port nothing listens on: bind one, then let it go.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut body = http_job(&format!("http://{closed}/"));
    body["policy"] = json!({ "max_attempts": 2, "initial_delay": "50ms", "jitter": "none" });
    let (_, job) = server.post("/jobs", body).await;
    let job = server
        .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(job["state"], "failed");
    assert_eq!(job["attempt"], 2, "a refused connection is retried");
    assert_eq!(job["last_rule"], "connect error");
    assert!(
        job["finish_reason"]
            .as_str()
            .unwrap()
            .starts_with("attempts exhausted (2 of 2)"),
        "{job}"
    );
}

// Multi-threaded: the CLI call blocks this thread while the target must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_http_from_the_cli() {
    let (base, _) = flaky_target().await;
    let server = Server::start(&[]).await;
    let url = format!("{base}/missing");
    let out = server.cli(&[
        "submit",
        "--wait",
        "--http",
        &url,
        "--secret-header",
        "Authorization: Bearer xyz",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("HTTP 4xx"), "{}", stdout(&out));
    let bad = server.cli(&["submit", "--http", "ftp://example"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("action.url"), "{}", stderr(&bad));
}

/// With `http.allow_hosts` set, requests go only to listed hosts, and a listed name that
/// resolves to an internal address is refused unless it is listed in `http.allow_internal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssrf_guard_refuses_unlisted_and_internal_hosts() {
    let (base, calls) = flaky_target().await;
    let port = base.rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap().keep();
    let config = dir.join("retryd.toml");
    std::fs::write(
        &config,
        "[http]\nallow_hosts = [\"localhost\", \"api.example.com\"]\n",
    )
    .unwrap();
    // Only a documentation address is opted out: loopback is refused.
    let only_docs = ["--http-allow-internal", "192.0.2.1"];
    let server = Server::start_in(
        &dir,
        &[&["--config", config.to_str().unwrap()][..], &only_docs].concat(),
    )
    .await;
    for url in [
        format!("http://127.0.0.1:{port}/missing"),
        format!("http://localhost:{port}/missing"),
        format!("http://169.254.169.254:{port}/"),
    ] {
        let (_, job) = server.post("/jobs", http_job(&url)).await;
        let job = server
            .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(10))
            .await;
        assert_eq!(job["state"], "failed", "{url}: {job}");
        assert_eq!(job["attempt"], 1, "{url}: a refused host is not retried");
        assert_eq!(job["last_error_class"], "permanent", "{url}: {job}");
        let error = job["last_error"].as_str().unwrap();
        assert!(
            error.contains("refused by the SSRF guard"),
            "{url}: the error says why: {error}"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing reached the target"
    );

    std::fs::write(
        &config,
        "[http]\nallow_hosts = [\"localhost\", \"127.0.0.1\", \"::1\"]\nallow_internal = [\"localhost\", \"127.0.0.1\", \"::1\"]\n",
    )
    .unwrap();
    drop(server);
    let server = Server::start_in(
        &dir,
        &[&["--config", config.to_str().unwrap()][..], &only_docs].concat(),
    )
    .await;
    let (_, job) = server
        .post(
            "/jobs",
            http_job(&format!("http://localhost:{port}/missing")),
        )
        .await;
    let job = server
        .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(
        job["last_rule"], "HTTP 4xx",
        "a listed internal address is reachable: {job}"
    );
    let (_, job) = server
        .post(
            "/jobs",
            http_job(&format!("http://127.0.0.1:{port}/missing")),
        )
        .await;
    let job = server
        .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(
        job["last_rule"], "HTTP 4xx",
        "127.0.0.1 is reachable once listed: {job}"
    );
}
