//! Pipelines (issue 7, must-show 3): the contract-deployment example from `examples/` run for
//! real against its stand-in JSON-RPC node, on SQLite and on PostgreSQL. "confirm" fails
//! twice (not yet mined), "verify" always fails (non-blocking), outputs flow between steps,
//! and a retry after a permanent failure at "submit" resumes there without compiling again.

use crate::helpers::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The node's recorded calls to `method`, as their params.
fn calls(state: &Path, method: &str) -> Vec<Value> {
    std::fs::read_to_string(state.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|c| c["method"] == method)
        .map(|c| c["params"].clone())
        .collect()
}

fn compile_runs(state: &Path) -> String {
    std::fs::read_to_string(state.join("compile.count")).unwrap_or_default()
}

fn submit_pipeline(server: &Server, file: &Path) -> String {
    let out = server.cli(&[
        "--json",
        "submit",
        "--kind",
        "contract-deploy",
        "--target",
        "metis-rpc",
        "--pipeline",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job: Value = serde_json::from_str(&stdout(&out)).unwrap();
    job["id"].as_str().unwrap().to_owned()
}

async fn contract_deployment_pipeline(server: Server) {
    let state = tempfile::tempdir().unwrap();
    let node = StandIn::start(
        "contract-deploy/fake_rpc_node.py",
        &["--pending", "2", "--state", state.path().to_str().unwrap()],
    );
    let file = example_copy(
        "contract-deploy/pipeline.toml",
        &[
            ("127.0.0.1:8545", &node.address),
            ("/tmp/retryd-contract-demo", state.path().to_str().unwrap()),
        ],
        &server.dir,
    );
    let id = submit_pipeline(&server, &file);

    // The current step shows in the job view while "confirm" runs its second attempt.
    let running = server
        .wait_for(&id, Duration::from_secs(30), |j| {
            j["state"] == "running" && j["step"] == "confirm" && j["step_attempt"] == 2
        })
        .await;
    assert_eq!(
        running["step_status"], "running: confirm, attempt 2/5",
        "{running}"
    );
    assert_eq!(
        (
            &running["step_index"],
            &running["steps_total"],
            &running["step_max_attempts"]
        ),
        (&Value::from(3), &Value::from(5), &Value::from(5))
    );
    let job = server.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let steps = job["steps"].as_array().unwrap();
    let summary: Vec<(&str, &str, u64)> = steps
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
                s["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("compile", "succeeded", 1),
            ("estimate-gas", "succeeded", 1),
            ("submit", "succeeded", 1),
            ("confirm", "succeeded", 3),
            ("verify", "failed", 2),
        ]
    );
    assert!(
        steps[4]["error"].as_str().unwrap().contains("503"),
        "verify's failure is recorded: {}",
        steps[4]
    );
    assert!(
        job["finish_reason"]
            .as_str()
            .unwrap()
            .contains("non-blocking step(s) failed: verify"),
        "{job}"
    );

    // Outputs reached later steps: the tx hash from "submit" (a JSON field of the reply) went
    // to "confirm" (a command argument) and "verify" (an HTTP body); "confirm"'s
    // `::set-output` contract address went to "verify"; "estimate-gas"'s gas to "submit".
    let tx_hash = steps[2]["outputs"]["tx_hash"].as_str().unwrap();
    assert!(
        tx_hash.starts_with("0x") && tx_hash.len() == 66,
        "{tx_hash}"
    );
    let receipts = calls(state.path(), "eth_getTransactionReceipt");
    assert_eq!(receipts.len(), 3);
    assert!(receipts.iter().all(|p| p[0] == tx_hash), "{receipts:?}");
    let verify = calls(state.path(), "verify");
    assert_eq!(verify[0]["tx"], tx_hash);
    assert_eq!(
        verify[0]["address"],
        steps[3]["outputs"]["contract_address"]
    );
    assert_eq!(steps[1]["outputs"]["gas"], "0x5208");
    let attempts = server.attempts(&id).await;
    let per_step: Vec<&str> = attempts
        .iter()
        .map(|a| a["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        per_step,
        [
            "compile",
            "estimate-gas",
            "submit",
            "confirm",
            "confirm",
            "confirm",
            "verify",
            "verify"
        ]
    );
    assert_eq!(attempts[3]["rule"], "exit code 75 (EX_TEMPFAIL)");
    let events = server.events(&id).await;
    let reasons: Vec<String> = events
        .iter()
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    let steps: Vec<&str> = events.iter().map(|e| e["step"].as_str().unwrap()).collect();
    // Each step that starts after another succeeded has its event (issue 15).
    assert_eq!(
        steps,
        [
            "compile",
            "compile",
            "estimate-gas",
            "submit",
            "confirm",
            "confirm",
            "confirm",
            "confirm",
            "confirm",
            "verify",
            "verify",
            "verify",
            "verify"
        ],
        "every event names its step: {reasons:?}"
    );
    assert!(
        reasons.contains(&"step submit succeeded after 1 attempt(s); step confirm next".to_owned()),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("step confirm: attempt 2 of 5 started on ")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("step confirm: attempt 1 failed (transient, exit code 75")),
        "{reasons:?}"
    );
    let show = stdout(&server.cli(&["show", &id]));
    assert!(
        show.contains("confirm         succeeded after 3 attempt(s)")
            && show.contains("verify          failed (non-blocking) after 2 attempt(s)")
            && show.contains(&format!("tx_hash={}", &tx_hash[..20])),
        "{show}"
    );
    assert!(
        server.log().contains("\"step\":\"confirm\""),
        "the server's log lines carry the step"
    );

    // A permanent failure at "submit" stops the pipeline there...
    std::fs::remove_file(state.path().join("compile.count")).unwrap();
    std::fs::write(state.path().join("reject-submit"), "").unwrap();
    let id = submit_pipeline(&server, &file);
    let job = server.wait_terminal(&id, Duration::from_secs(30)).await;
    assert_eq!(
        (job["state"].as_str(), job["step"].as_str()),
        (Some("failed"), Some("submit")),
        "{job}"
    );
    let diagnosis = job["diagnosis"].to_string();
    assert!(
        diagnosis.contains("Step submit (3 of 5)") && diagnosis.contains("insufficient funds"),
        "{diagnosis}"
    );
    assert_eq!(compile_runs(state.path()), "1");
    // ...and a retry resumes at "submit": "compile" does not run again.
    std::fs::remove_file(state.path().join("reject-submit")).unwrap();
    let out = server.cli(&["retry", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = server.wait_terminal(&id, Duration::from_secs(60)).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(compile_runs(state.path()), "1", "compile ran again");
    let per_step: Vec<String> = server
        .attempts(&id)
        .await
        .iter()
        .map(|a| a["step"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        per_step.iter().filter(|s| *s == "compile").count(),
        1,
        "{per_step:?}"
    );
    assert_eq!(&per_step[2..4], ["submit", "submit"], "{per_step:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_contract_deployment_on_sqlite() {
    contract_deployment_pipeline(Server::start(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_contract_deployment_on_postgres() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    contract_deployment_pipeline(Server::start_node(&database, &[]).await).await;
}

/// Bad pipelines are refused before they run, naming the step and the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_bodies_and_files_are_validated_naming_the_step() {
    let server = Server::start(&[]).await;
    let cases = [
        (
            serde_json::json!([{ "name": "submit", "http": { "url": "ftp://node" } }]),
            "action.steps.submit.http.url",
        ),
        (
            serde_json::json!([{ "name": "confirm", "command": { "program": "confirm" }, "policy": "nightly" }]),
            "action.steps.confirm.policy",
        ),
        (
            serde_json::json!([{ "name": "a", "command": { "program": "x", "args": ["{{ steps.later.outputs.x }}"] } },
                               { "name": "later", "command": { "program": "y" } }]),
            "action.steps.a.command.args",
        ),
    ];
    for (steps, field) in cases {
        let (status, body) = server
            .post(
                "/jobs",
                serde_json::json!({ "action": { "type": "pipeline", "steps": steps } }),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["details"]["field"], field, "{body}");
    }
    let (status, body) = server
        .post(
            "/jobs",
            serde_json::json!({ "action": { "type": "pipeline", "steps": [{ "name": "a", "command": { "program": "x" }, "retries": 3 }] } }),
        )
        .await;
    assert_eq!(status, 422, "unknown keys are refused: {body}");
    assert!(body.to_string().contains("retries"), "{body}");

    let file = server.dir.join("bad.yaml");
    std::fs::write(
        &file,
        "steps:\n  - name: upload\n    command: { program: sftp }\n    continue_on_falure: true\n",
    )
    .unwrap();
    let out = server.cli(&["submit", "--pipeline", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("steps.upload.continue_on_falure: unknown field `continue_on_falure`"),
        "{}",
        stderr(&out)
    );
    let file = server.dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[steps]]\nname = \"connect\"\npolicy = { max_attempts = 500 }\ncommand = { program = \"ssh\" }\n",
    )
    .unwrap();
    let out = server.cli(&["submit", "--pipeline", file.to_str().unwrap()]);
    assert!(
        stderr(&out).contains("steps.connect.policy.max_attempts: must be between 1 and 100"),
        "{}",
        stderr(&out)
    );
}
