//! Issue 16: hardening found by an outside attack — secrets across cuts, cross-site
//! requests, terminal escapes, the SSRF guard, bounded answers, input and secrets at rest.

use crate::helpers::*;
use axum::response::IntoResponse;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Issue 16, item 1: a secret that falls across the 16 KiB cut of a long line, written in two
/// separate writes, shows in no piece of the log, the job or the CLI.
#[tokio::test]
async fn issue_16_a_secret_across_a_long_line_cut_is_hidden_in_every_piece() {
    let server = Server::start(&[]).await;
    // 16,380 bytes of padding, then the secret from a second process: it crosses 16,384.
    let script = "head -c 16380 /dev/zero | tr '\\0' a; printf %s \"$DEPLOY_KEY\"; echo; exit 1";
    let body = json!({ "action": {
        "type": "command", "program": "sh", "args": ["-c", script],
        "env": { "DEPLOY_KEY": { "value": "dk-41e9-7c22-secret", "secret": true } },
    }, "policy": fast_policy(1) });
    let (status, job) = server.post("/jobs", body).await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    server.wait_terminal(&id, Duration::from_secs(20)).await;
    let (_, log) = server.get(&format!("/jobs/{id}/log")).await;
    let lines: Vec<String> = log["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["line"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(lines.len() >= 2, "the long line was cut: {lines:?}");
    let joined = lines.concat();
    assert!(joined.contains("[REDACTED]"), "{joined}");
    for place in [
        joined,
        server.job(&id).await.to_string(),
        stdout(&server.cli(&["logs", &id])),
    ] {
        for part in ["dk-41e9", "7c22-secret"] {
            assert!(!place.contains(part), "{part} shown: …{}", tail(&place));
        }
    }
}

fn tail(text: &str) -> &str {
    let from = text.len().saturating_sub(300);
    text.get(from..).unwrap_or(text)
}

/// Issue 16, item 2: with authentication off, what a page on another site can send — a
/// plain-text POST, a JSON POST from another origin, a rebound DNS name, a WebSocket from
/// another origin — changes nothing and reads nothing; the same request from the server's
/// own origin works.
#[tokio::test]
async fn issue_16_cross_site_requests_are_refused_with_auth_off() {
    let server = Server::start(&["--auth", "false"]).await;
    let pause = server.api("/queues/default/pause");
    let own_origin = server.url.clone();

    let plain = server
        .http
        .post(&pause)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415, "a text/plain POST is refused");

    let foreign = server
        .http
        .post(&pause)
        .header("origin", "http://127.0.0.1:1")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403, "another origin's POST is refused");
    let body: serde_json::Value = foreign.json().await.unwrap();
    assert_eq!(body["error"]["code"], "cross_site", "{body}");

    let rebound = server
        .http
        .get(server.api("/jobs"))
        .header("host", "rebind.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403, "a DNS-rebound Host is refused");

    let (_, queues) = server.get("/queues").await;
    assert!(
        !queues.to_string().contains("\"paused\":true"),
        "nothing was paused: {queues}"
    );

    let ws_url = server.url.replace("http://", "ws://") + "/api/v1/ws";
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "http://127.0.0.1:1".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(refused.is_err(), "another origin cannot open the WebSocket");
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            ws_url.as_str(),
        )
        .unwrap();
    request
        .headers_mut()
        .insert("origin", own_origin.parse().unwrap());
    assert!(
        tokio_tungstenite::connect_async(request).await.is_ok(),
        "the server's own page opens it"
    );

    let same = server
        .http
        .post(&pause)
        .header("origin", own_origin.as_str())
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        same.status(),
        200,
        "the server's own origin may change things"
    );
}

/// What a hostile job or server could send a terminal: a title change (OSC 0), a clipboard
/// write (OSC 52), a screen clear (CSI 2J), a bell and an 8-bit CSI.
const HOSTILE: &str = "\x1b]0;pwned\x07\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\u{9b}31m";

fn assert_no_control_sequences(place: &str, text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
        .collect();
    assert!(
        raw.is_empty(),
        "{place} printed raw control characters {raw:?}: {text}"
    );
    assert!(
        text.contains("\\x1b]52"),
        "{place} shows the escape visibly: {text}"
    );
}

/// Issue 16, item 3: `logs`, `show`, `jobs`, `dlq list` and `submit --wait` print a job's
/// escape sequences (in its output, label and arguments) as visible text, never raw.
#[tokio::test]
async fn issue_16_cli_output_never_passes_terminal_escapes_through() {
    let server = Server::start(&[]).await;
    let script = format!("printf '%s\\n' '{HOSTILE}'; printf '{HOSTILE}' >&2; exit 2");
    let waited = server.cli(&[
        "submit",
        "--wait",
        "--policy",
        r#"{"max_attempts": 1}"#,
        "--label",
        &format!("note={HOSTILE}"),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let id = server.get("/jobs").await.1["jobs"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job: {}", stderr(&waited)))
        .to_owned();
    server.wait_terminal(&id, Duration::from_secs(20)).await;
    let outputs = [
        (
            "submit --wait",
            format!("{}{}", stdout(&waited), stderr(&waited)),
        ),
        ("logs", stdout(&server.cli(&["logs", &id]))),
        ("show", stdout(&server.cli(&["show", &id]))),
        ("jobs", stdout(&server.cli(&["jobs", "--state", "failed"]))),
        ("dlq list", stdout(&server.cli(&["dlq", "list"]))),
    ];
    for (place, text) in &outputs {
        if *place == "jobs" || *place == "dlq list" {
            // Lists show the last error, a line of the output.
            assert!(
                !text.chars().any(|c| c == '\x1b' || c == '\u{9b}'),
                "{place}: {text}"
            );
        } else {
            assert_no_control_sequences(place, text);
        }
    }
}

/// A loopback target that counts its calls; `/hop` redirects to `to`.
async fn counted_target(bind: &str, to: String) -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let counter = counter.clone();
        let to = to.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            if uri.path() == "/hop" {
                (axum::http::StatusCode::FOUND, [("location", to)], "").into_response()
            } else {
                "reached".into_response()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), calls)
}

async fn run_http(server: &Server, url: &str) -> serde_json::Value {
    let (status, job) = server
        .post(
            "/jobs",
            json!({ "action": { "type": "http", "method": "GET", "url": url }, "policy": fast_policy(1) }),
        )
        .await;
    assert_eq!(status, 201, "{job}");
    server
        .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(20))
        .await
}

/// Issue 16, item 4: with no configuration the SSRF guard refuses loopback, private,
/// link-local and metadata addresses in every notation, checks each redirect hop, and an
/// `HTTP_PROXY` in the environment does not carry requests around it; a host listed in
/// `http.allow_internal` is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_ssrf_guard_is_on_by_default_in_every_notation_hop_and_proxy() {
    // What is "inside": a loopback target and a loopback proxy that count what reaches them.
    let (inside, inside_calls) = counted_target("127.0.0.2:0", String::new()).await;
    let inside_port = inside.rsplit(':').next().unwrap().to_owned();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let proxied = Arc::new(AtomicU32::new(0));
    let proxied_count = proxied.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = proxy.accept().await {
            proxied_count.fetch_add(1, Ordering::SeqCst);
        }
    });
    // The only opted-out host is a second target that redirects inside.
    let (allowed, allowed_calls) =
        counted_target("127.0.0.1:0", format!("http://127.0.0.2:{inside_port}/")).await;
    let server = Server::start_with_env(
        &["--http-allow-internal", "127.0.0.1"],
        &[
            ("HTTP_PROXY", &proxy_url),
            ("http_proxy", &proxy_url),
            ("ALL_PROXY", &proxy_url),
        ],
    )
    .await;

    for url in [
        format!("http://127.0.0.2:{inside_port}/"),
        format!("http://2130706434:{inside_port}/"),
        format!("http://0x7f.0.0.2:{inside_port}/"),
        format!("http://0177.0.0.2:{inside_port}/"),
        format!("http://[::ffff:127.0.0.2]:{inside_port}/"),
        format!("http://0.0.0.0:{inside_port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fd00:ec2::254]/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        format!("{allowed}/hop"),
    ] {
        let job = run_http(&server, &url).await;
        assert_eq!(job["state"], "failed", "{url}: {job}");
        assert_eq!(job["last_error_class"], "permanent", "{url}: {job}");
        let error = job["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("SSRF guard"), "{url}: {error}");
    }
    assert_eq!(
        inside_calls.load(Ordering::SeqCst),
        0,
        "nothing reached inside"
    );
    assert_eq!(
        allowed_calls.load(Ordering::SeqCst),
        1,
        "only the redirecting hop was called"
    );

    // A name goes direct, never through the environment's proxy.
    run_http(&server, "http://retryd-issue-16.invalid/").await;
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "the proxy saw no request"
    );

    let job = run_http(&server, &format!("{allowed}/")).await;
    assert_eq!(
        job["state"], "succeeded",
        "an opted-out host is reachable: {job}"
    );
}
