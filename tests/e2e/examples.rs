//! The examples in `examples/` run for real against their stand-ins, with the commands of
//! examples/README.md (the pipeline example is in `pipeline.rs`).

use crate::helpers::*;
use serde_json::Value;
use std::time::Duration;

/// The newest job of a kind (what `submit --wait` just ran).
async fn newest(server: &Server, kind: &str) -> String {
    let (_, page) = server.get(&format!("/jobs?kind={kind}&limit=1")).await;
    page["jobs"][0]["id"].as_str().expect("a job").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_wordpress_sftp_deploy() {
    let root = tempfile::tempdir().unwrap();
    let sftp = StandIn::start(
        "wordpress-sftp/sftp_standin.py",
        &[
            "--refuse",
            "2",
            "--fail-uploads",
            "1",
            "--root",
            root.path().to_str().unwrap(),
        ],
    );
    let server = Server::start(&[]).await;
    let file = example_copy(
        "wordpress-sftp/pipeline.yaml",
        &[("127.0.0.1:2222", &sftp.address)],
        &server.dir,
    );
    let out = server.cli(&[
        "--json",
        "submit",
        "--kind",
        "wordpress-deploy",
        "--target",
        "sftp.example",
        "--pipeline",
        file.to_str().unwrap(),
    ]);
    let id = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = server.wait_terminal(&id, Duration::from_secs(40)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let attempts: Vec<(String, String)> = server
        .attempts(&id)
        .await
        .iter()
        .map(|a| {
            (
                a["step"].as_str().unwrap().to_owned(),
                a["rule"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("connect", "output: connection refused or reset"),
        ("connect", "output: connection refused or reset"),
        ("connect", "-"),
        ("upload", "output: connection refused or reset"),
        ("upload", "-"),
    ];
    assert_eq!(
        attempts,
        expected.map(|(s, r)| (s.to_owned(), r.to_owned())),
        "closed and reset connections are transient"
    );
    // Each step ran under its own policy.
    let (_, log) = server.get(&format!("/jobs/{id}/log")).await;
    let log = log.to_string();
    assert!(
        log.contains("step connect (1 of 2): attempt 3 of 5 started")
            && log.contains("(policy connection)")
            && log.contains("step upload (2 of 2): attempt 2 of 3 started")
            && log.contains("(policy upload)"),
        "{log}"
    );
    let uploaded = root.path().join("var/www/html");
    assert_eq!(
        std::fs::read_to_string(uploaded.join("wp-content/themes/blog/style.css")).unwrap(),
        std::fs::read_to_string(
            examples_dir().join("wordpress-sftp/site/wp-content/themes/blog/style.css")
        )
        .unwrap()
    );
    assert!(uploaded.join("index.php").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_container_job_launch() {
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&[]).await;
    let path = format!(
        "PATH={}:{}",
        examples_dir().join("container-job/bin").display(),
        std::env::var("PATH").unwrap()
    );
    let docker_state = format!("FAKE_DOCKER_STATE={}", state.path().display());
    let launch = |image: &str| {
        server.cli(&[
            "submit",
            "--wait",
            "--kind",
            "container-launch",
            "--target",
            "docker-host",
            "--policy",
            "aggressive",
            "--env",
            &path,
            "--env",
            &docker_state,
            "--",
            "docker",
            "run",
            "--rm",
            image,
            "generate-report",
            "--month",
            "2026-10",
        ])
    };
    let out = launch("acme/report-worker:1.4");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let id = newest(&server, "container-launch").await;
    let attempts = server.attempts(&id).await;
    let rules: Vec<&str> = attempts
        .iter()
        .map(|a| a["rule"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        rules,
        [
            "output: container daemon unreachable",
            "output: connection refused or reset",
            "-"
        ]
    );
    assert!(
        attempts[..2]
            .iter()
            .all(|a| a["class"] == "transient" && a["exit_code"] == 125)
    );
    let (_, log) = server.get(&format!("/jobs/{id}/log")).await;
    assert!(
        log.to_string()
            .contains("[acme/report-worker:1.4] generate-report --month 2026-10"),
        "{log}"
    );

    let out = launch("acme/missing-worker:2.0");
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let job = server.job(&newest(&server, "container-launch").await).await;
    assert_eq!(
        (
            job["attempt"].as_u64(),
            job["last_error_class"].as_str(),
            job["last_rule"].as_str()
        ),
        (
            Some(1),
            Some("permanent"),
            Some("output: image or repository not found")
        ),
        "{job}"
    );
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("pull access denied")
            || job["last_error"]
                .as_str()
                .unwrap()
                .contains("docker run --help"),
        "{job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_notification_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let received = dir.path().join("webhook.log");
    let receiver = StandIn::start(
        "notify-webhook/webhook_receiver.py",
        &["--fail", "2", "--log", received.to_str().unwrap()],
    );
    let server = Server::start(&[]).await;
    let url = format!("http://{}/hooks/deploys", receiver.address);
    let message = r#"{"text": "deploy of blog release 42 failed: permission denied"}"#;
    let out = server.cli(&[
        "submit",
        "--wait",
        "--kind",
        "notify",
        "--target",
        "ops-webhook",
        "--policy",
        "aggressive",
        "--http",
        &url,
        "--method",
        "POST",
        "--header",
        "Content-Type: application/json",
        "--body",
        message,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let deliveries: Vec<Value> = std::fs::read_to_string(&received)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<u64> = deliveries
        .iter()
        .map(|d| d["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [503, 503, 200],
        "delivered exactly once, after two refusals"
    );
    assert!(deliveries.iter().all(|d| d["body"] == message));
    let attempts = server.attempts(&newest(&server, "notify").await).await;
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["delay_reason"], "retry-after");
    assert!(attempts[0]["next_delay_ms"].as_u64().unwrap() >= 1000);
}
