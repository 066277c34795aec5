//! Issue 8: the embedded engine (`examples/embedded.rs`, a real program of its own) runs
//! typed handler jobs durably: a SIGKILL mid-run loses nothing, `retryd serve` on the same
//! database shows the jobs but never claims them.

use crate::helpers::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The example's binary: cargo builds examples beside the test binaries' `deps` folder.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder")
        .join("examples/embedded");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --examples` (cargo test builds it)",
        path.display()
    );
    path
}

fn spawn_example(database: &str, args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(example())
        .arg(database)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the embedded example");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    (child, stdout)
}

/// Reads lines until one matches; panics at end of output.
fn read_until(
    stdout: &mut BufReader<ChildStdout>,
    seen: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    let mut line = String::new();
    while !done(seen) {
        line.clear();
        let n = stdout
            .read_line(&mut line)
            .expect("read the example's output");
        assert!(
            n > 0,
            "the example ended early; it printed:\n{}",
            seen.join("\n")
        );
        seen.push(line.trim_end().to_owned());
    }
}

/// Runs the example to its end; returns its output.
fn finish(mut child: Child, mut stdout: BufReader<ChildStdout>, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut all).ok();
        all
    });
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let output = reader.join().expect("reader");
            assert!(status.success(), "the example failed ({status}):\n{output}");
            return output;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the example did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_finishes_every_embedded_job() {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let database = dir.join("retryd.db").display().to_string();
    let (mut child, mut stdout) = spawn_example(
        &database,
        &["--enqueue", "30", "--work-ms", "300", "--concurrency", "4"],
    );
    let mut seen = Vec::new();
    // Killed once a few jobs are done and another is mid-attempt (4 at a time, 300 ms each):
    // an attempt that started after the fourth success and has not finished.
    read_until(&mut stdout, &mut seen, |lines| {
        let Some(fourth) = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("succeeded "))
            .nth(3)
            .map(|(i, _)| i)
        else {
            return false;
        };
        lines[fourth..].iter().any(|l| {
            l.strip_prefix("running ").is_some_and(|id| {
                !lines[fourth..]
                    .iter()
                    .any(|later| later.ends_with(id) && !later.starts_with("running "))
            })
        })
    });
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let (child, stdout) = spawn_example(&database, &[]);
    let output = finish(child, stdout, Duration::from_secs(60));
    assert!(
        output.contains("done: 30 succeeded, 0 failed"),
        "after the restart:\n{output}"
    );

    // The server on the same file shows what happened, attempt by attempt.
    let server = Server::start_in(&dir, &[]).await;
    let (status, page) = server.get("/jobs?kind=thumbnail&limit=100").await;
    assert_eq!(status, 200, "{page}");
    let jobs = page["jobs"].as_array().expect("jobs").clone();
    assert_eq!(jobs.len(), 30, "{page}");
    let mut lost = 0;
    let mut classified = 0;
    for job in &jobs {
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["action"]["type"], "handler", "{job}");
        assert_eq!(job["policy_name"], "thumbnails", "{job}");
        let attempts = server.attempts(job["id"].as_str().unwrap()).await;
        for attempt in &attempts {
            if attempt["outcome"] == "lost" {
                assert_eq!(attempt["class"], "transient", "{attempt}");
                lost += 1;
            }
        }
        // Every fifth image fails its first attempt by its error's own class, unless the
        // kill took that attempt.
        if job["action"]["payload"]["image"]
            .as_u64()
            .unwrap()
            .is_multiple_of(5)
            && attempts[0]["outcome"] != "lost"
        {
            let first = &attempts[0];
            assert_eq!(first["outcome"], "failed", "{first}");
            assert_eq!(first["rule"], "the handler's error is transient", "{first}");
            assert_eq!(first["error"], "object storage busy (503)", "{first}");
            // Its retry may itself have been taken by the kill: the last attempt succeeded.
            assert_eq!(
                attempts.last().unwrap()["outcome"],
                "succeeded",
                "{attempts:?}"
            );
            classified += 1;
        }
    }
    assert!(
        lost >= 1,
        "the killed process's attempts were rescued as lost"
    );
    assert!(classified >= 1, "no transient failure was seen");
    let first = jobs[0]["id"].as_str().unwrap();
    let logs = server.cli(&["logs", first]);
    assert!(
        stdout_of(&logs).contains("resizing image"),
        "the handler's log lines are the job's log: {}",
        stdout_of(&logs)
    );
}

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shows_but_never_claims_handler_jobs_on_postgres() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let server = Server::start_node(&database, &["--node", "server-a"]).await;

    // A handler job needs a kind: the API says so and names the field.
    let (status, body) = server
        .post(
            "/jobs",
            json!({ "action": { "type": "handler", "payload": {} } }),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["details"]["field"], "kind", "{body}");

    let (status, handler_job) = server
        .post(
            "/jobs",
            json!({
                "kind": "thumbnail",
                "action": { "type": "handler", "payload": { "image": 1, "work_ms": 10 } },
            }),
        )
        .await;
    assert_eq!(status, 201, "{handler_job}");
    let handler_id = handler_job["id"].as_str().unwrap().to_owned();
    // Submitted after the handler job with the same priority: once it ran, the server has
    // passed over the handler job rather than not yet reached it.
    let command = server.submit(&["true"], json!({})).await;
    let done = server
        .wait_terminal(&command, Duration::from_secs(20))
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(server.job(&handler_id).await["state"], "pending");
    assert!(server.attempts(&handler_id).await.is_empty());

    // The embedding program on the same database runs it, and its own jobs, while the
    // server keeps running beside it.
    let (child, stdout) = spawn_example(&database, &["--enqueue", "3", "--work-ms", "10"]);
    let output = finish(child, stdout, Duration::from_secs(60));
    assert!(output.contains("done: 5 succeeded, 0 failed"), "{output}");
    let job = server
        .wait_terminal(&handler_id, Duration::from_secs(5))
        .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (_, page) = server.get("/jobs?kind=thumbnail").await;
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4, "{page}");
    for job in jobs {
        let attempts = server.attempts(job["id"].as_str().unwrap()).await;
        assert!(!attempts.is_empty());
        for attempt in attempts {
            assert_ne!(
                attempt["node"], "server-a",
                "the server ran a handler job: {attempt}"
            );
        }
    }
}

/// Runs the benchmark harness (`bench/retryd_bench.rs`) and returns its RESULT.
fn bench_harness(mode: &str, database: &str, jobs: usize, extra: &[&str]) -> serde_json::Value {
    let output = bench_command(mode, database, jobs, extra)
        .output()
        .expect("run the harness");
    bench_result(mode, &output)
}

fn bench_command(mode: &str, database: &str, jobs: usize, extra: &[&str]) -> Command {
    let mut command = Command::new(example().with_file_name("retryd-bench"));
    command
        .args([
            mode,
            database,
            "--jobs",
            &jobs.to_string(),
            "--concurrency",
            "4",
        ])
        .args(extra);
    command
}

fn bench_result(mode: &str, output: &std::process::Output) -> serde_json::Value {
    let text = stdout_of(output);
    assert!(output.status.success(), "{mode}: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_else(|| panic!("no RESULT line: {text}"))
}

/// The retryd side of `bench/run.sh` with tiny N, so that the harness cannot rot: every mode
/// on both backends, enqueueing in bulk and one job at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_harness_runs_on_both_backends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = |name: &str| dir.path().join(name).display().to_string();
    let postgres = retryd_store_postgres::testing::fresh_database().await;
    let runs = [
        ("throughput", sqlite("t.db"), 30, &["--batch-size", "7"][..]),
        ("throughput", sqlite("o.db"), 30, &["--one-at-a-time"][..]),
        ("lateness", sqlite("l.db"), 10, &[][..]),
        ("throughput", postgres, 30, &[][..]),
    ];
    for (mode, database, jobs, extra) in runs {
        let result = bench_harness(mode, &database, jobs, extra);
        assert_eq!(result["jobs"], jobs, "{result}");
        assert_eq!(result["completed"], jobs, "{result}");
        assert!(result["jobs_per_s"].as_f64().unwrap() > 0.0, "{result}");
        if mode == "lateness" {
            assert_eq!(result["retried"], jobs, "every job ran its retry: {result}");
            assert!(result["p99_ms"].as_f64().unwrap() >= 0.0, "{result}");
        }
    }
}

/// Issue 13: the bulk enqueue rows and the several-node row. `enqueue` stores the jobs and
/// runs none; `drain` processes on one database share them and each stops once the database
/// has them all finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_harness_enqueues_then_several_nodes_drain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = dir.path().join("e.db").display().to_string();
    let postgres = retryd_store_postgres::testing::fresh_database().await;
    for (database, extra) in [
        (&sqlite, &["--batch-size", "7"][..]),
        (&postgres, &["--one-at-a-time"][..]),
    ] {
        let result = bench_harness("enqueue", database, 30, extra);
        assert!(result["enqueue_per_s"].as_f64().unwrap() > 0.0, "{result}");
    }

    let alone = bench_harness("drain", &sqlite, 30, &["--node", "only"]);
    assert_eq!(alone["completed"], 30, "{alone}");
    assert_eq!(alone["completed_here"], 30, "{alone}");
    assert_eq!(alone["node"], "only", "{alone}");

    let nodes: Vec<_> = ["a", "b"]
        .map(|node| {
            bench_command("drain", &postgres, 30, &["--node", node])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a drain node")
        })
        .into_iter()
        .collect();
    let results: Vec<_> = nodes
        .into_iter()
        .map(|node| bench_result("drain", &node.wait_with_output().expect("wait")))
        .collect();
    let mut here = 0;
    for result in &results {
        assert_eq!(
            result["completed"], 30,
            "every node waits for all: {result}"
        );
        here += result["completed_here"].as_u64().unwrap();
    }
    assert_eq!(here, 30, "each job ran on one node once: {results:?}");
}
