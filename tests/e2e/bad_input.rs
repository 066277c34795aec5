//! Issue 3, must-show 8: bad input gets a clear error naming the field, with the right
//! status; the server keeps serving and no stored job changes.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;

async fn post_raw(server: &Server, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let r = server
        .http
        .post(server.api(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Sends a 10 MiB body over a raw socket and reads the answer while still sending: the
/// server answers 413 as soon as the declared length is over the limit and stops reading,
/// which an ordinary client reports as a broken pipe instead of the answer.
async fn post_huge(server: &Server, size: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let auth = server
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.expect("send head");
    let (mut reader, mut writer) = socket.into_split();
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_to_end(&mut answer),
    )
    .await;
    sender.abort();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn job_with(field: &str, value: Value) -> Value {
    let mut body = json!({ "action": { "type": "command", "program": "true" } });
    body[field] = value;
    body
}

/// Asserts the error shape, the status, and that the message or field names `field`.
fn assert_error(status: u16, body: &Value, want_status: u16, field: &str) {
    assert_eq!(status, want_status, "{body}");
    let error = &body["error"];
    assert!(
        error["code"].is_string() && error["message"].is_string(),
        "error shape: {body}"
    );
    let named = error["details"]["field"]
        .as_str()
        .is_some_and(|f| f.contains(field))
        || error["message"].as_str().unwrap().contains(field);
    assert!(named, "the error does not name {field:?}: {body}");
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let server = Server::start(&[]).await;
    let done = server.submit(&["true"], json!({})).await;
    server.wait_terminal(&done, Duration::from_secs(10)).await;
    let (_, before) = server.get("/jobs?limit=500").await;

    let (status, body) = post_raw(
        &server,
        "/jobs",
        "application/json",
        b"{\"action\": ".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "malformed_request");

    let (status, body) = server
        .post("/jobs", job_with("colour", json!("blue")))
        .await;
    assert_error(status, &body, 422, "colour");

    for (field, value, named) in [
        ("policy", json!({ "initial_delay": "-5s" }), "initial_delay"),
        ("policy", json!({ "initial_delay": -5 }), "initial_delay"),
        ("policy", json!({ "max_delay": "3650days" }), "max_delay"),
        ("policy", json!({ "max_attempts": 0 }), "max_attempts"),
        ("policy", json!({ "max_attempts": 1000 }), "max_attempts"),
        ("policy", json!({ "multiplier": 0.5 }), "multiplier"),
        ("policy", json!({ "jitter": "sometimes" }), "jitter"),
        ("policy", json!("no-such-policy"), "policy"),
        ("priority", json!(101), "priority"),
        ("priority", json!(-1), "priority"),
        ("queue", json!("has spaces"), "queue"),
        ("queue", json!(""), "queue"),
        ("deadline", json!("2001-01-01T00:00:00Z"), "deadline"),
        ("deadline", json!("tomorrow"), "deadline"),
        ("labels", json!({ "bad key": "x" }), "labels"),
    ] {
        let (status, body) = server.post("/jobs", job_with(field, value.clone())).await;
        assert_error(status, &body, 422, named);
    }

    let (status, body) = server
        .post(
            "/jobs",
            json!({ "action": { "type": "command", "program": "" } }),
        )
        .await;
    assert_error(status, &body, 422, "program");
    let (status, body) = server
        .post("/jobs", json!({ "action": { "type": "teleport" } }))
        .await;
    assert_error(status, &body, 422, "action");

    let (status, body) = post_huge(&server, 10 * 1024 * 1024).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("body_too_large"), "{body}");

    let (status, body) = post_raw(&server, "/jobs", "text/plain", b"hello".to_vec()).await;
    assert_eq!(status, 415, "{body}");

    let unknown = "01a20c2d-0000-7000-8000-000000000000";
    let (status, body) = server.get(&format!("/jobs/{unknown}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get("/jobs/not-an-id").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a job id")
    );

    let (status, body) = server
        .post(&format!("/jobs/{done}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("succeeded")
    );
    let (status, body) = server
        .post(&format!("/jobs/{done}/retry"), json!({ "reset": "yes" }))
        .await;
    assert_error(status, &body, 422, "reset");

    for query in [
        "limit=0",
        "limit=100000",
        "state=done",
        "label=novalue",
        "cursor=zzz",
        "colour=blue",
    ] {
        let (status, body) = server.get(&format!("/jobs?{query}")).await;
        assert_eq!(status, 422, "{query}: {body}");
    }
    let (status, _) = server.get("/no/such/route").await;
    assert_eq!(status, 404);
    let (status, body) = server.post("/dlq/purge", json!({})).await;
    assert_error(status, &body, 422, "selection");

    let (status, _) = server.get("/../../etc/passwd").await;
    assert_eq!(status, 404);

    // Still serving, and nothing stored changed.
    let (status, after) = server.get("/jobs?limit=500").await;
    assert_eq!(status, 200);
    assert_eq!(before, after, "a refused request changed stored jobs");
    let (status, _) = server.get("/policies").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_config_and_flags_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("retryd.toml");
    std::fs::write(&config, "listen = \"nowhere\"").unwrap();
    let out = cli(&["serve", "--config", config.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("listen"), "{}", stderr(&out));
    for (text, field) in [
        ("[engine]\nconcurrency = 10001", "engine.concurrency"),
        ("[engine]\nlease = \"-1s\"", "lease"),
        ("colour = \"blue\"", "colour"),
        (
            "[policies.mine]\nmax_attempts = 0",
            "policies.mine.max_attempts",
        ),
        ("[kinds]\ndeploy = \"nope\"", "kinds.deploy"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = cli(
            &[
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--database",
                dir.path().join("x.db").to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(stderr(&out).contains(field), "{text}: {}", stderr(&out));
    }
    let out = cli(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--auth",
            "false",
            "--database",
            dir.path().join("x.db").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("with authentication disabled"),
        "{}",
        stderr(&out)
    );

    let out = cli(
        &["submit", "--label", "novalue", "--", "true"],
        &[("RETRYD_SERVER", "http://127.0.0.1:9")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--label"), "{}", stderr(&out));
    let out = cli(&["jobs"], &[("RETRYD_SERVER", "http://127.0.0.1:9")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach retryd"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}
