//! Issue 7, must-show 4: a failed job is notified to a JSON webhook that fails twice (one
//! delivery in the end, three tries in the log), to a Slack-compatible webhook and by e-mail
//! through a minimal SMTP server the test runs.

use crate::helpers::*;
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Default)]
struct Received {
    /// Every request to /hook: (status answered, body, X-Token header).
    hook: Vec<(u16, Value, String)>,
    slack: Vec<Value>,
}

/// /hook answers 500 twice, then 200; /slack always 200.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let (a, b) = (received.clone(), received.clone());
    let app = Router::new()
        .route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let received = a.clone();
                async move {
                    let mut r = received.lock().unwrap();
                    let status = if r.hook.len() < 2 { 500 } else { 200 };
                    let token = headers
                        .get("x-token")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    r.hook.push((
                        status,
                        serde_json::from_str(&body).unwrap_or(Value::Null),
                        token,
                    ));
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        )
        .route(
            "/slack",
            post(move |body: String| {
                let received = b.clone();
                async move {
                    received
                        .lock()
                        .unwrap()
                        .slack
                        .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                    "ok"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

/// Just enough SMTP to take messages: greets, says 250 to every command, takes DATA up to
/// the lone dot, and keeps each message's text.
async fn smtp_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let kept = messages.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test SMTP ready\r\n").await.ok();
                while let Ok(Some(line)) = lines.next_line().await {
                    let command = line.to_ascii_uppercase();
                    let reply: &[u8] = if command.starts_with("DATA") {
                        write.write_all(b"354 go ahead\r\n").await.ok();
                        let mut message = String::new();
                        while let Ok(Some(l)) = lines.next_line().await {
                            if l == "." {
                                break;
                            }
                            message.push_str(&l);
                            message.push('\n');
                        }
                        kept.lock().unwrap().push(message);
                        b"250 queued\r\n"
                    } else if command.starts_with("QUIT") {
                        write.write_all(b"221 bye\r\n").await.ok();
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    write.write_all(reply).await.ok();
                }
            });
        }
    });
    (port, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_job_is_notified_once_after_the_webhook_fails_twice() {
    let (url, received) = receiver().await;
    let (smtp, mails) = smtp_server().await;
    let dir = tempfile::tempdir().unwrap().keep();
    let config = dir.join("retryd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[policies.notify]
max_attempts = 5
initial_delay = "200ms"
max_delay = "400ms"
jitter = "none"

[[notifications]]
name = "ops-webhook"
kind = "webhook"
url = "{url}/hook"
headers = {{ X-Token = "s3cret-token" }}
policy = "notify"

[[notifications]]
name = "ops-slack"
kind = "slack"
url = "{url}/slack"
policy = "notify"

[[notifications]]
name = "ops-mail"
kind = "email"
smtp = "127.0.0.1:{smtp}"
from = "retryd@example.com"
to = ["oncall@example.com"]
"#
        ),
    )
    .unwrap();
    let server = Server::start(&["--config", &config.display().to_string()]).await;
    // Exit code 64 (EX_USAGE) is permanent: failed after one attempt.
    let id = server
        .submit(
            &[
                "sh",
                "-c",
                "echo 'invalid configuration: bad key' >&2; exit 64",
            ],
            serde_json::json!({ "kind": "wordpress-deploy", "target": "sftp.example" }),
        )
        .await;
    let job = server.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "failed", "{job}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let (status, log) = server.get(&format!("/jobs/{id}/notifications")).await;
        assert_eq!(status, 200, "{log}");
        let log = log.as_array().unwrap().clone();
        if log.len() == 3 && log.iter().all(|n| n["state"] == "delivered") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries did not finish: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hook = log.iter().find(|n| n["sink"] == "ops-webhook").unwrap();
    assert_eq!(hook["event"], "failed");
    let tries: Vec<(Value, Value)> = hook["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["ok"].clone(), t["status"].clone()))
        .collect();
    assert_eq!(
        tries,
        vec![
            (Value::Bool(false), Value::from(500)),
            (Value::Bool(false), Value::from(500)),
            (Value::Bool(true), Value::from(200)),
        ],
        "the log shows all three tries: {hook}"
    );
    // Nothing more arrives: one accepted delivery.
    tokio::time::sleep(Duration::from_millis(800)).await;
    {
        let r = received.lock().unwrap();
        assert_eq!(
            r.hook.len(),
            3,
            "three requests, no duplicate after success"
        );
        let accepted: Vec<&Value> = r
            .hook
            .iter()
            .filter(|(s, ..)| *s == 200)
            .map(|(_, b, _)| b)
            .collect();
        assert_eq!(accepted.len(), 1);
        let body = accepted[0];
        assert_eq!(body["event"], "failed");
        assert_eq!(body["job_id"], id.as_str());
        assert_eq!(body["target"], "sftp.example");
        assert_eq!(body["class"], "permanent");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("invalid configuration"),
            "{body}"
        );
        assert!(r.hook.iter().all(|(.., token)| token == "s3cret-token"));
        assert_eq!(r.slack.len(), 1);
        assert!(
            r.slack[0]["text"].as_str().unwrap().contains(&id),
            "{}",
            r.slack[0]
        );
        assert_eq!(r.slack[0]["blocks"][0]["type"], "section");
    }
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].contains("To: oncall@example.com"), "{}", mails[0]);
    assert!(mails[0].contains(&id), "{}", mails[0]);
    // The header's value is a secret: never in the server's log.
    assert!(!server.log().contains("s3cret-token"));

    let (status, all) = server.get("/notifications?limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(all.as_array().unwrap().len(), 3);
    let (status, _) = server
        .get("/jobs/01a21a14-c7af-74a3-a2df-59d6b5473f85/notifications")
        .await;
    assert_eq!(status, 404, "an unknown job has no log");
    for path in ["/notifications", "/circuits"] {
        let anonymous = client_with(None)
            .get(server.api(path))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401, "{path} needs a token");
    }
    let viewer = client_with(Some(&server.create_token("watcher", "viewer").await));
    for path in ["/notifications", "/circuits"] {
        let read = viewer.get(server.api(path)).send().await.unwrap();
        assert_eq!(read.status(), 200, "a viewer reads {path}");
    }
    let (status, bad) = server.get("/notifications?limit=0").await;
    assert_eq!(status, 422, "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("limit"));

    let cli = server.cli(&["notifications", &id]);
    assert!(cli.status.success(), "{}", stderr(&cli));
    let text = stdout(&cli);
    assert!(
        text.contains("ops-webhook") && text.contains("try 3") && text.contains("delivered"),
        "{text}"
    );
    assert!(text.contains("failed (500)"), "{text}");
    let cli = server.cli(&["notifications", "--json"]);
    let listed: Vec<Value> = serde_json::from_slice(&cli.stdout).expect("JSON");
    assert_eq!(listed.len(), 3);
}

#[tokio::test]
async fn bad_notification_and_limit_settings_are_refused_by_name() {
    for (config, expected) in [
        (
            "[[notifications]]\nname = \"x\"\nkind = \"webhook\"\n",
            "notifications[0].url: required",
        ),
        (
            "[[notifications]]\nname = \"x\"\nkind = \"pager\"\nurl = \"http://a\"\n",
            "unknown variant `pager`",
        ),
        (
            "[[notifications]]\nname = \"x\"\nkind = \"slack\"\nurl = \"http://a.example\"\non = [\"done\"]\n",
            "notifications[0].on: \"done\" is not one of failed, succeeded, retrying",
        ),
        (
            "[[notifications]]\nname = \"x\"\nkind = \"email\"\nsmtp = \"nohost\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n",
            "notifications[0].smtp",
        ),
        (
            "[[notifications]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://a.example\"\npolicy = \"nope\"\n",
            "notifications[0].policy: no policy named \"nope\"",
        ),
        (
            "[circuits]\nfailure_threshold = 1.5\n",
            "circuits.failure_threshold: must be above 0 and at most 1",
        ),
        (
            "[circuits]\ncool_down = \"5h\"\n",
            "circuits.cool_down: must be between",
        ),
        (
            "[budgets]\nper_target = 0\n",
            "budgets.per_target: must be between 1 and 1000000",
        ),
        ("[budgets]\nwindow = \"10s\"\n", "budgets: set per_target"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retryd.toml");
        std::fs::write(&path, config).unwrap();
        let out = cli(
            &[
                "serve",
                "--config",
                &path.display().to_string(),
                "--database",
                &dir.path().join("db").display().to_string(),
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        );
        assert!(!out.status.success(), "{config} was accepted");
        assert!(
            stderr(&out).contains(expected),
            "{config}: {}",
            stderr(&out)
        );
    }
}
