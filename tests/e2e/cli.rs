//! The CLI as a person and a script use it: `run` without a server, `--json`, `NO_COLOR`,
//! structured logs, and the defaults of a bare `retryd serve`.

use crate::helpers::*;
use std::time::Duration;

#[test]
fn run_retries_a_flaky_command_and_prints_each_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let script = flaky(
        &dir.path().join("count"),
        2,
        "dial tcp 10.1.2.3:8545: connect: connection refused",
    );
    let policy = r#"{"max_attempts":3,"initial_delay":"50ms","jitter":"none"}"#;
    let out = cli(&["run", "--policy", policy, "--", "sh", "-c", &script], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("attempt 1 of 3") && err.contains("attempt 3 of 3"),
        "{err}"
    );
    assert!(
        err.contains(
            "transient (output: connection refused or reset); next attempt in 50ms (backoff)"
        ),
        "{err}"
    );
    assert!(err.contains("next attempt in 100ms"), "{err}");
    assert!(err.contains("attempt 3 succeeded"), "{err}");
    assert_eq!(
        stdout(&out).trim(),
        "deployed",
        "the command's stdout passes through"
    );
    assert!(!err.contains('\x1b'), "NO_COLOR: no escape codes");
}

#[test]
fn run_stops_at_a_permanent_error_and_exits_with_the_command_code() {
    let out = cli(
        &[
            "run",
            "--",
            "sh",
            "-c",
            "echo 'Error: pull access denied for private/image' >&2; exit 125",
        ],
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains("permanent (output: image or repository not found)"),
        "{err}"
    );
    assert!(!err.contains("attempt 2"), "{err}");

    let out = cli(
        &[
            "run",
            "--json",
            "--policy",
            r#"{"max_attempts":2,"initial_delay":"10ms"}"#,
            "--",
            "sh",
            "-c",
            "exit 75",
        ],
        &[],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["outcome"], "failed");
    assert_eq!(report["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(report["attempts"][0]["rule"], "exit code 75 (EX_TEMPFAIL)");
    assert_eq!(out.status.code(), Some(75));
}

/// `retryd run ARGS` with its output piped, no config file, in the temp directory.
fn spawn_run(args: &[&str]) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new(BIN)
        .arg("run")
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RETRYD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(std::env::temp_dir())
        .spawn()
        .expect("start retryd run")
}

#[test]
fn run_stops_the_command_and_exits_130_on_ctrl_c() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use std::io::{BufRead, BufReader};

    let mut retryd = spawn_run(&["--", "sh", "-c", "echo $$; exec sleep 30"]);
    // The command's first line came through: it is running.
    let mut first_line = String::new();
    BufReader::new(retryd.stdout.as_mut().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let command = Pid::from_raw(first_line.trim().parse().expect("the command's pid"));

    kill(Pid::from_raw(retryd.id() as i32), Signal::SIGINT).unwrap();
    let out = retryd.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted during attempt 1"), "{err}");
    assert_eq!(
        kill(command, None),
        Err(nix::errno::Errno::ESRCH),
        "the command was stopped and reaped"
    );
}

/// Issue #8 moved `run` onto one runtime thread: writing the command's output must not be
/// able to block it, or a reader that stops reading would hold the attempt past its timeout.
#[test]
fn run_stops_an_attempt_at_its_timeout_while_nobody_reads_its_output() {
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    use std::io::Read;
    use std::time::Instant;

    // The pid goes to a file, not to stderr: retryd reads the command's stdout first while
    // both have bytes, and nobody here reads stdout, so a line on stderr may never arrive.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let policy = r#"{"max_attempts":1,"attempt_timeout":"1s"}"#;
    let script = format!("echo $$ > '{}'; exec yes", pid_file.display());
    let mut retryd = spawn_run(&["--policy", policy, "--", "sh", "-c", &script]);
    let started = Instant::now();
    let command = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            break Pid::from_raw(pid);
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };

    // `yes` fills every buffer between it and this test, which reads none of its output.
    let deadline = Instant::now() + Duration::from_secs(15);
    while kill(command, None).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the command outlived its 1s timeout by 14s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut output = Vec::new();
    retryd
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut output)
        .unwrap();
    let mut rest = String::new();
    retryd
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut rest)
        .unwrap();
    let status = retryd.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("attempt timed out"), "{rest}");
    assert!(
        output.starts_with(b"y\ny\n"),
        "the output read so far still arrives"
    );
}

#[tokio::test]
async fn policy_commands_list_show_and_simulate() {
    let server = Server::start(&[]).await;
    let list = stdout(&server.cli(&["policy", "list"]));
    for name in [
        "default",
        "aggressive",
        "conservative",
        "high_priority",
        "connection",
        "upload",
    ] {
        assert!(list.contains(name), "{list}");
    }
    let sim = stdout(&server.cli(&["policy", "simulate", "default"]));
    assert!(
        sim.contains("1 → 2")
            && sim.contains("0s – 2s")
            && sim.contains("2 → 3")
            && sim.contains("0s – 4s"),
        "{sim}"
    );
    let local = cli(
        &[
            "policy",
            "simulate",
            "--inline",
            r#"{"max_attempts":4,"initial_delay":"1s","jitter":"none"}"#,
            "--json",
        ],
        &[],
    );
    let rows: serde_json::Value = serde_json::from_slice(&local.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[2]["delay_max"], "4s");
    assert_eq!(rows[2]["cumulative_max"], "7s");
    let missing = server.cli(&["policy", "show", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test]
async fn jobs_filters_paginate_and_logs_follow() {
    let server = Server::start(&[]).await;
    for i in 0..3 {
        server
            .submit(
                &["sh", "-c", &format!("echo line-{i}")],
                serde_json::json!({ "queue": "deploy", "labels": { "release": "v2" } }),
            )
            .await;
    }
    let id = server
        .submit(
            &[
                "sh",
                "-c",
                "for i in 1 2 3; do echo tick $i; sleep 0.1; done",
            ],
            serde_json::json!({}),
        )
        .await;
    let follow = server.cli(&["logs", &id, "--follow"]);
    let text = stdout(&follow);
    assert_eq!(follow.status.code(), Some(0), "{}", stderr(&follow));
    assert!(text.contains("tick 1") && text.contains("tick 3"), "{text}");
    server.wait_terminal(&id, Duration::from_secs(10)).await;
    let page = server.cli(&[
        "jobs",
        "--queue",
        "deploy",
        "--label",
        "release=v2",
        "--limit",
        "2",
    ]);
    let text = stdout(&page);
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("deploy") && !l.starts_with("more:"))
            .count(),
        2,
        "{text}"
    );
    // The hint keeps the filters (issue 15).
    assert!(
        text.contains("more: retryd jobs --queue deploy --label release=v2 --limit 2 --cursor"),
        "{text}"
    );
    let json = server.cli(&["jobs", "--json", "--state", "succeeded,pending,running"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(!value["jobs"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn server_log_lines_about_a_job_carry_its_fields() {
    let server = Server::start(&[]).await;
    let id = server.submit(&["true"], serde_json::json!({ "kind": "wordpress-deploy", "target": "sftp.example", "queue": "deploy" })).await;
    server.wait_terminal(&id, Duration::from_secs(10)).await;
    // The line is written just after the result commits, so a reader may see the state first.
    let finished = |log: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "attempt finished")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let line = loop {
        let log = server.log();
        match finished(&log) {
            Some(line) => break line,
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            None => panic!("no 'attempt finished' line:\n{log}"),
        }
    };
    let span = &line["span"];
    assert_eq!(span["job_id"], id);
    assert_eq!(span["queue"], "deploy");
    assert_eq!(span["kind"], "wordpress-deploy");
    assert_eq!(span["target"], "sftp.example");
    assert_eq!(span["attempt"], 1);
    assert!(
        span["step"].is_string() && span["state"].is_string(),
        "{line}"
    );
}

/// Issue 3, must-show 10: `retryd serve` with no configuration at all serves on
/// 127.0.0.1:7878 with `retryd.db` in the current folder (the README's first command).
#[tokio::test]
async fn bare_serve_uses_the_documented_defaults() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .env_remove("RETRYD_CONFIG")
        .env_remove("RETRYD_LISTEN")
        .env_remove("RETRYD_DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // First start: the admin token and a login link come once, before the address.
    let mut printed = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    while !printed.contains("listening on") {
        assert!(stdout.read_line(&mut printed).unwrap() > 0, "{printed}");
    }
    assert!(
        printed.contains("listening on http://127.0.0.1:7878 (database retryd.db)"),
        "{printed:?} (is another process on port 7878?)"
    );
    let token = printed
        .split("export RETRYD_TOKEN=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("first start prints the admin token")
        .to_owned();
    assert!(
        printed.contains(&format!("http://127.0.0.1:7878/login#token={token}")),
        "{printed}"
    );
    let jobs = reqwest::Client::new()
        .get("http://127.0.0.1:7878/api/v1/jobs")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), 200);
    let health: serde_json::Value = reqwest::get("http://127.0.0.1:7878/healthz")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready = reqwest::get("http://127.0.0.1:7878/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert!(dir.path().join("retryd.db").exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The documented example configuration is a working one.
#[tokio::test]
async fn the_example_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/retryd.example.toml");
    let server = Server::start(&["--config", example]).await;
    let list = stdout(&server.cli(&["policy", "list"]));
    assert!(
        list.contains("wordpress") && list.contains("configured"),
        "{list}"
    );
}

#[tokio::test]
async fn metrics_count_jobs_attempts_and_retry_lateness() {
    let server = Server::start(&[]).await;
    let script = flaky(&server.dir.join("count"), 1, "connection refused");
    let flaky_job = server
        .submit(
            &["sh", "-c", &script],
            serde_json::json!({ "policy": fast_policy(3), "queue": "deploy" }),
        )
        .await;
    let dead = server
        .submit(
            &["sh", "-c", "echo 'permission denied' >&2; exit 1"],
            serde_json::json!({}),
        )
        .await;
    let later = (chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339();
    server
        .submit(
            &["true"],
            serde_json::json!({ "queue": "mail", "run_at": later }),
        )
        .await;
    server
        .wait_terminal(&flaky_job, Duration::from_secs(10))
        .await;
    server.wait_terminal(&dead, Duration::from_secs(10)).await;
    let response = server
        .http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    for line in [
        "retryd_jobs{state=\"succeeded\"} 1",
        "retryd_jobs{state=\"failed\"} 1",
        "retryd_jobs{state=\"pending\"} 1",
        "retryd_queue_depth{queue=\"mail\"} 1",
        "retryd_attempts_total{outcome=\"failed\",class=\"transient\"} 1",
        "retryd_attempts_total{outcome=\"failed\",class=\"permanent\"} 1",
        "retryd_attempts_total{outcome=\"succeeded\",class=\"none\"} 1",
        "retryd_retry_lateness_seconds_count 1",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(
        text.contains("retryd_claim_duration_seconds_count"),
        "{text}"
    );
}

#[tokio::test]
async fn a_paused_queue_keeps_its_jobs_waiting_until_resumed() {
    let server = Server::start(&[]).await;
    let out = server.cli(&["queue", "pause", "deploy"]);
    assert!(
        stdout(&out).contains("paused"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let id = server
        .submit(&["true"], serde_json::json!({ "queue": "deploy" }))
        .await;
    let other = server
        .submit(&["true"], serde_json::json!({ "queue": "mail" }))
        .await;
    server.wait_terminal(&other, Duration::from_secs(10)).await;
    let job = server.job(&id).await;
    assert_eq!(job["state"], "pending");
    assert_eq!(job["waiting_reason"], "queue deploy paused");
    let list = stdout(&server.cli(&["queue", "list"]));
    assert!(
        list.contains("deploy") && list.contains("paused") && list.contains('1'),
        "{list}"
    );
    let (status, body) = server
        .post("/queues/bad%20name/pause", serde_json::json!({}))
        .await;
    assert_eq!(status, 422, "{body}");
    server.cli(&["queue", "resume", "deploy"]);
    let job = server.wait_terminal(&id, Duration::from_secs(10)).await;
    assert_eq!(job["state"], "succeeded");
}

/// Issue 18: completions load in bash and complete subcommands and their flags; the man page
/// renders.
#[test]
fn completions_load_in_bash_and_list_subcommands_and_flags() {
    let complete = |words: &str| {
        let script = format!(
            "source <({BIN} completions bash) && COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) \
             && _retryd retryd \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\" && printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let subcommands = complete("retryd ''");
    for name in [
        "serve",
        "submit",
        "jobs",
        "show",
        "dlq",
        "completions",
        "man",
    ] {
        assert!(
            subcommands.lines().any(|l| l == name),
            "{name} missing: {subcommands}"
        );
    }
    let flags = complete("retryd submit --");
    for flag in ["--queue", "--wait", "--file", "--idempotency-key"] {
        assert!(flags.lines().any(|l| l == flag), "{flag} missing: {flags}");
    }
    for shell in ["zsh", "fish", "powershell"] {
        let out = cli(&["completions", shell], &[]);
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }
    let man = cli(&["man"], &[]);
    assert!(stdout(&man).contains(".TH retryd 1"));
    let refused = cli(&["completions", "tcsh"], &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("bash"), "{}", stderr(&refused));
}
