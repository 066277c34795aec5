//! Issue 15: a failed deploy is headlined by its real error line, in the order the command
//! wrote its output, with advice that fits its class; and the CLI/API bugs a new user hit.

use crate::helpers::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A server started in a folder whose `retryd.toml` holds `config`.
async fn server_with_config(config: &str) -> Server {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    std::fs::write(dir.join("retryd.toml"), config).expect("config");
    Server::start_in(&dir, &[]).await
}

/// One failing deploy of the scenario: its script, what must headline it, its class, and
/// the first piece of advice that fits it.
struct Failure {
    kind: &'static str,
    script: &'static str,
    headline: &'static str,
    class: &'static str,
    advice: &'static str,
}

/// Scripts write stdout and stderr interleaved, a moment apart as real tools do.
const FAILURES: [Failure; 4] = [
    Failure {
        kind: "contract-deploy",
        script: "echo 'Deploying Vault from 0x52908400098527886e0f7030069857d2e4169ee7'; sleep 0.05; \
                 echo 'Error: insufficient funds for gas * price + value: have 10 want 20' >&2; sleep 0.05; \
                 echo 'Deploying Vault from 0x52908400098527886e0f7030069857d2e4169ee7'; exit 1",
        headline: "Error: insufficient funds for gas * price + value: have 10 want 20",
        class: "permanent",
        advice: "Fix first: the account the action spends from lacks funds",
    },
    Failure {
        kind: "api-container",
        script: "echo 'pulling acme/api:9.9'; sleep 0.05; \
                 echo \"Unable to find image 'acme/api:9.9' locally\" >&2; sleep 0.05; \
                 echo 'docker: Error response from daemon: manifest for acme/api:9.9 not found: manifest unknown.' >&2; sleep 0.05; \
                 echo \"See 'docker run --help'.\" >&2; exit 125",
        headline: "docker: Error response from daemon: manifest for acme/api:9.9 not found: manifest unknown.",
        class: "permanent",
        advice: "Fix first: the image or tag the command names does not exist",
    },
    Failure {
        kind: "site-build",
        script: "echo 'building site'; sleep 0.05; \
                 echo 'npm ERR! nospc ENOSPC: no space left on device, write' >&2; sleep 0.05; \
                 echo 'cleaning up'; exit 1",
        headline: "npm ERR! nospc ENOSPC: no space left on device, write",
        class: "transient",
        advice: "The error is on the node that ran the attempt, not the target",
    },
    Failure {
        kind: "db-migrate",
        script: "echo 'migrating billing'; sleep 0.05; \
                 echo 'Error: migration 0042 checksum mismatch' >&2; sleep 0.05; \
                 echo 'rolled back'; exit 1",
        headline: "Error: migration 0042 checksum mismatch",
        class: "unknown",
        advice: "Nothing classified this error",
    },
];

/// The must-show scenario: 30 deploy jobs, four failed for different reasons written to
/// stdout and stderr in interleaved order. The API, `show`, `jobs` and `dlq list` headline
/// each with its real error line and give advice that fits its class.
#[tokio::test]
async fn issue_15_four_failed_deploys_are_headlined_by_their_real_error_with_fitting_advice() {
    let server = Server::start(&[]).await;
    let policy = json!({ "max_attempts": 2, "initial_delay": "50ms", "max_delay": "100ms", "jitter": "none" });
    let mut ok = Vec::new();
    for i in 0..26 {
        let script = format!("echo 'deploying site-{i}'; echo 'done' >&2");
        let extra =
            json!({ "kind": "site-deploy", "target": format!("web-{i}"), "policy": policy });
        ok.push(server.submit(&["sh", "-c", &script], extra).await);
    }
    let mut failed = Vec::new();
    for failure in &FAILURES {
        let extra = json!({ "kind": failure.kind, "target": "metis-rpc", "policy": policy });
        failed.push(server.submit(&["sh", "-c", failure.script], extra).await);
    }
    for id in &ok {
        let job = server.wait_terminal(id, Duration::from_secs(60)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    for id in &failed {
        server.wait_terminal(id, Duration::from_secs(60)).await;
    }
    let dlq_out = server.cli(&["dlq", "list"]);
    let dlq_text = stdout(&dlq_out);
    assert!(dlq_out.status.success(), "{}", stderr(&dlq_out));
    for (failure, id) in FAILURES.iter().zip(&failed) {
        let job = server.job(id).await;
        // The API: the headline, the fingerprint built from it, advice for the class.
        assert_eq!(job["state"], "failed", "{job}");
        assert_eq!(job["last_error_class"], failure.class, "{job}");
        let error = job["last_error"].as_str().unwrap();
        assert!(
            error.starts_with(failure.headline),
            "{}: {error}",
            failure.kind
        );
        let fingerprint = job["fingerprint"].as_str().unwrap();
        assert!(
            fingerprint.starts_with(&format!("{}: ", failure.class)),
            "{fingerprint}"
        );
        let steps = job["diagnosis"]["next_steps"].as_array().unwrap();
        assert!(
            steps[0].as_str().unwrap().starts_with(failure.advice),
            "{}: {steps:?}",
            failure.kind
        );
        // `show`: the diagnosis names the headline, the advice fits, the output is in order.
        let out = server.cli(&["show", id]);
        let text = stdout(&out);
        assert!(out.status.success(), "{}", stderr(&out));
        let diagnosis = &text[text.find("Diagnosis").expect("a diagnosis")..];
        let summary = diagnosis.lines().nth(1).unwrap();
        assert!(summary.contains(failure.headline), "{summary}");
        assert!(
            diagnosis.contains(&format!("→ {}", failure.advice)),
            "{text}"
        );
        let output = &text[text.find("Last output").expect("last output")..];
        let first = failure.script.split('\'').nth(1).unwrap();
        let (before, error) = (output.find(first), output.find(failure.headline));
        assert!(
            before < error && before.is_some(),
            "out of order:\n{output}"
        );
        // `dlq list`: a group titled by the headline; permanent ones lead with the fix.
        let group = dlq_text
            .split("\n\n")
            .find(|g| g.contains(&format!("fingerprint {fingerprint}")))
            .unwrap_or_else(|| panic!("no group for {fingerprint}:\n{dlq_text}"));
        let title = group.lines().next().unwrap();
        let cut = &failure.headline[..failure.headline.len().min(60)];
        assert!(title.contains(cut), "{title}");
        let first_advice = group.lines().find(|l| l.contains('→')).unwrap();
        match failure.class {
            "permanent" => assert!(first_advice.contains("→ Fix first:"), "{group}"),
            "unknown" => assert!(first_advice.contains("No rule classified"), "{group}"),
            _ => assert!(
                first_advice.contains("on the node that ran them"),
                "{group}"
            ),
        }
        assert!(!first_advice.contains("requeue all"), "{group}");
    }
    assert!(
        dlq_text.starts_with("4 dead jobs in 4 groups"),
        "{dlq_text}"
    );
    // `jobs`: the ERROR column carries the headline.
    let jobs = stdout(&server.cli(&["jobs", "--state", "failed", "--wide"]));
    assert!(jobs.lines().next().unwrap().contains("ERROR"), "{jobs}");
    for failure in &FAILURES {
        assert!(jobs.contains(failure.headline), "{jobs}");
    }
    // Unknown: the diagnosis shows a rule that, added to the policy, classifies it.
    let unknown = server.job(&failed[3]).await;
    let steps = unknown["diagnosis"]["next_steps"].to_string();
    assert!(
        steps.contains(r#"\"output\": \"Error: migration\""#),
        "{steps}"
    );
}

/// A pipe whose reader has already gone: what `| head -1` leaves once it has its line.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    writer
}

/// Issue 15: `retryd show ID | head -1` panicked on the closed pipe (and `logs`, `submit`).
#[tokio::test]
async fn issue_15_commands_end_quietly_on_a_closed_pipe() {
    let server = Server::start(&[]).await;
    let id = server.submit(&["sh", "-c", "seq 1 2000"], json!({})).await;
    server.wait_terminal(&id, Duration::from_secs(20)).await;
    for args in [
        vec!["show", id.as_str()],
        vec!["logs", id.as_str()],
        vec!["jobs"],
        vec!["submit", "--", "true"],
    ] {
        let mut command = Command::new(BIN);
        command
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(closed_pipe())
            .stderr(Stdio::piped());
        for (k, v) in server.cli_env() {
            command.env(k, v);
        }
        let out = command.output().expect("run retryd");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Issue 15: `policy update NAME --max-delay 10m` reset every other field (a full replace).
#[tokio::test]
async fn issue_15_policy_update_changes_only_the_fields_given() {
    let server = Server::start(&[]).await;
    let out = server.cli(&[
        "policy",
        "create",
        "deploys",
        "--max-attempts",
        "7",
        "--initial-delay",
        "3s",
        "--jitter",
        "equal",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.cli(&["policy", "update", "deploys", "--max-delay", "10m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, view) = server.get("/policies/deploys").await;
    let policy = &view["policy"];
    assert_eq!(
        (
            &policy["max_attempts"],
            &policy["initial_delay"],
            &policy["jitter"],
            &policy["max_delay"]
        ),
        (&json!(7), &json!("3s"), &json!("equal"), &json!("10m")),
        "{view}"
    );
    // The API's PATCH names a bad field; nothing changes.
    let r = server
        .http
        .patch(server.api("/policies/deploys"))
        .json(&json!({ "max_dealy": "1m" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"].to_string().contains("max_dealy"),
        "{body}"
    );
    let help = stdout(&server.cli(&["policy", "update", "--help"]));
    assert!(
        help.contains("[create default: 3; update: unchanged]"),
        "{help}"
    );
}

/// Issue 15: an expired job could not be requeued with a later deadline (the API refused
/// the field) and `--reset` alone expired it again at once.
#[tokio::test]
async fn issue_15_an_expired_job_is_requeued_with_a_later_deadline() {
    let server = Server::start(&[]).await;
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let id = server
        .submit(&["sh", "-c", "sleep 1.5"], json!({ "deadline": soon }))
        .await;
    let job = server.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "expired", "{job}");
    assert!(
        job["diagnosis"]["next_steps"][0]
            .as_str()
            .unwrap()
            .contains("--deadline"),
        "{job}"
    );
    let refused = server.cli(&["retry", &id, "--reset"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("deadline"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(server.job(&id).await["state"], "expired", "nothing changed");
    let out = server.cli(&["retry", &id, "--reset", "--deadline", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job = server.wait_terminal(&id, Duration::from_secs(20)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let events = server.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().unwrap().contains("deadline → ")),
        "{events:?}"
    );
}

/// Issue 15: `cancel` of a command that ignores SIGTERM blocked 4 s and reported `running`.
#[tokio::test]
async fn issue_15_cancel_reports_the_escalation_to_sigkill_and_the_final_state() {
    let server = server_with_config("[engine]\nkill_grace = \"1s\"\n").await;
    let id = server
        .submit(
            &["sh", "-c", "trap '' TERM; echo ready; sleep 30"],
            json!({}),
        )
        .await;
    server
        .wait_for(&id, Duration::from_secs(10), |j| j["state"] == "running")
        .await;
    // The log's first output line says the trap is set.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !stdout(&server.cli(&["logs", &id])).contains("ready") {
        assert!(std::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = server.cli(&["cancel", &id]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("cancelled"), "{text}");
    assert!(
        text.contains("it ignored SIGTERM and was killed with SIGKILL after 1s"),
        "{text}"
    );
}

/// Issue 15: `logs` did not say that the bounded tail dropped bytes.
#[tokio::test]
async fn issue_15_logs_say_when_output_was_dropped() {
    let server = server_with_config("[engine]\nlog_tail_bytes = 1024\n").await;
    let id = server.submit(&["sh", "-c", "seq 1 2000"], json!({})).await;
    server.wait_terminal(&id, Duration::from_secs(20)).await;
    let dropped = server.attempts(&id).await[0]["output_dropped_bytes"]
        .as_u64()
        .unwrap();
    assert!(dropped > 0);
    let text = stdout(&server.cli(&["logs", &id]));
    assert!(
        text.lines().next().unwrap().contains(&format!(
            "attempt 1: {dropped} bytes of earlier output dropped"
        )),
        "{text}"
    );
    assert!(text.contains("2000"), "the tail is there");
}

/// Issue 15: `dlq purge` of a job that is not dead said "purged 0" and exited 0.
#[tokio::test]
async fn issue_15_purging_a_job_that_is_not_dead_is_refused() {
    let server = Server::start(&[]).await;
    let id = server.submit(&["true"], json!({})).await;
    server.wait_terminal(&id, Duration::from_secs(10)).await;
    let out = server.cli(&["dlq", "purge", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("is succeeded, not in the dead-letter queue"),
        "{}",
        stderr(&out)
    );
    assert_eq!(server.job(&id).await["state"], "succeeded", "still there");
}
