//! Issue 18: recurring jobs. A schedule fires each fire time once, on SQLite and on three
//! PostgreSQL nodes (a killed node hands over without a double or a gap); the overlap rule
//! keeps runs apart; the misfire rules decide what a downtime's fire times do; the CLI.

use crate::helpers::*;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn schedule(name: &str, cron: &str, job: Value) -> Value {
    json!({ "name": name, "cron": cron, "job": job })
}

fn command(program: &str, args: &[&str]) -> Value {
    json!({ "action": { "type": "command", "program": program, "args": args } })
}

/// The runs of `name`, oldest first.
async fn runs(server: &Server, name: &str) -> Vec<Value> {
    let (status, page) = server
        .get(&format!("/jobs?label=schedule={name}&limit=500"))
        .await;
    assert_eq!(status, 200, "{page}");
    let mut jobs = page["jobs"].as_array().cloned().unwrap_or_default();
    jobs.sort_by_key(|j| j["run_at"].as_str().unwrap_or("").to_owned());
    jobs
}

fn fire_times(runs: &[Value]) -> Vec<DateTime<Utc>> {
    runs.iter()
        .map(|j| j["run_at"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// Each fire time once, every 2 s without a gap, on whole even seconds.
fn assert_every_two_seconds(fires: &[DateTime<Utc>]) {
    assert!(fires.len() >= 3, "too few fires: {fires:?}");
    for pair in fires.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_milliseconds(),
            2_000,
            "a double or a gap: {fires:?}"
        );
    }
    for fire in fires {
        assert_eq!(fire.timestamp_subsec_millis(), 0, "{fire}");
        assert_eq!(fire.timestamp() % 2, 0, "{fire}");
    }
}

async fn create(server: &Server, body: Value) -> Value {
    let (status, created) = server.post("/schedules", body).await;
    assert_eq!(status, 201, "{created}");
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_every_two_seconds_fires_each_time_once_on_sqlite() {
    let server = Server::start(&[]).await;
    let created = create(
        &server,
        schedule("ticker", "*/2 * * * * *", command("true", &[])),
    )
    .await;
    assert_eq!(created["next_fires"].as_array().unwrap().len(), 5);
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let (status, _) = server.post("/schedules/ticker/pause", json!({})).await;
    assert_eq!(status, 200);
    let fired = runs(&server, "ticker").await;
    assert_every_two_seconds(&fire_times(&fired));
    for run in &fired {
        server
            .wait_terminal(run["id"].as_str().unwrap(), Duration::from_secs(10))
            .await;
    }
    let (_, shown) = server.get("/schedules/ticker").await;
    assert_eq!(shown["paused"], true);
    assert!(
        shown["next_fires"].as_array().unwrap().is_empty(),
        "{shown}"
    );
    assert_eq!(shown["runs"][0]["state"], "succeeded", "{shown}");
    // Paused: nothing more fires.
    let before = fired.len();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(runs(&server, "ticker").await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_postgres_nodes_fire_each_time_once_and_a_killed_node_hands_over() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let mut nodes = Vec::new();
    for name in ["s1", "s2", "s3"] {
        nodes.push(Server::start_node(&database, &["--node", name]).await);
    }
    // Overlap `allow`: the dying leader may hold the last run when it is killed, and this
    // test is about fire times, not overlap (which has its own test).
    let mut body = schedule("ticker", "*/2 * * * * *", command("true", &[]));
    body["overlap"] = json!("allow");
    create(&nodes[0], body).await;
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    // One node leads; it dies mid-run, and another takes the next fire times over.
    let (client, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let leader: String = client
        .query_one("SELECT node FROM schedule_leader", &[])
        .await
        .unwrap()
        .get(0);
    let index = ["s1", "s2", "s3"]
        .iter()
        .position(|n| *n == leader)
        .unwrap();
    nodes[index].kill9();
    tokio::time::sleep(Duration::from_millis(7_000)).await;
    let next: String = client
        .query_one("SELECT node FROM schedule_leader", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(next, leader, "another node leads now");
    let alive = &nodes[(index + 1) % 3];
    let (status, _) = alive.post("/schedules/ticker/pause", json!({})).await;
    assert_eq!(status, 200);
    let runs = runs(alive, "ticker").await;
    let fires = fire_times(&runs);
    assert!(fires.len() >= 5, "{fires:?}");
    assert_every_two_seconds(&fires);
    eprintln!(
        "three nodes, leader {leader} killed, {next} took over: {} fire times, each once, 2 s apart",
        fires.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_never_has_two_live_runs() {
    let server = Server::start(&[]).await;
    let mut body = schedule("slow", "* * * * * *", command("sleep", &["3"]));
    body["overlap"] = json!("skip");
    create(&server, body).await;
    tokio::time::sleep(Duration::from_millis(8_000)).await;
    server.post("/schedules/slow/pause", json!({})).await;
    let runs = runs(&server, "slow").await;
    assert!(runs.len() >= 2, "{runs:?}");
    let mut intervals = Vec::new();
    for run in &runs {
        let id = run["id"].as_str().unwrap();
        server.wait_terminal(id, Duration::from_secs(15)).await;
        for attempt in server.attempts(id).await {
            let start: DateTime<Utc> = attempt["started_at"].as_str().unwrap().parse().unwrap();
            let end: DateTime<Utc> = attempt["finished_at"].as_str().unwrap().parse().unwrap();
            intervals.push((start, end));
        }
    }
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two live runs at once: {intervals:?}"
        );
    }
    let (_, shown) = server.get("/schedules/slow").await;
    assert!(
        shown["last_skip"]
            .as_str()
            .unwrap_or("")
            .contains("overlap: skip"),
        "{shown}"
    );
}

/// The misfire rules after five minutes without a node: the schedules' next fire time is
/// moved five minutes back in the database while the node is down, as a downtime leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_five_minutes_down_each_misfire_rule_does_what_it_says() {
    let database = retryd_store_postgres::testing::fresh_database().await;
    let mut node = Server::start_node(&database, &["--node", "m1"]).await;
    for rule in ["skip", "once", "all"] {
        let mut body = schedule(
            &format!("every-minute-{rule}"),
            "* * * * *",
            command("true", &[]),
        );
        body["misfire"] = json!(rule);
        // With `skip`, the first catch-up run would still be live when the next is due.
        body["overlap"] = json!("allow");
        create(&node, body).await;
    }
    node.kill9();
    let (client, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE schedules SET next_fire = date_trunc('minute', now()) - interval '5 minutes'",
            &[],
        )
        .await
        .unwrap();
    node.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = node.get("/schedules").await;
        let moved = list
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["last_fire"].is_string() || s["last_skip"].is_string());
        if moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the schedules never fired: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let skip = runs(&node, "every-minute-skip").await.len();
    let once = runs(&node, "every-minute-once").await.len();
    let all = runs(&node, "every-minute-all").await.len();
    assert_eq!(skip, 0, "skip runs none of the missed times");
    assert_eq!(once, 1, "once runs one for all of them");
    assert!((5..=7).contains(&all), "all runs each missed time: {all}");
    let (_, shown) = node.get("/schedules/every-minute-skip").await;
    assert!(
        shown["last_skip"]
            .as_str()
            .unwrap_or("")
            .contains("misfire: skip"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_shows_pauses_triggers_and_deletes_schedules() {
    let server = Server::start(&[]).await;
    let env = server.cli_env();
    let created = cli(
        &[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Berlin",
            "--misfire",
            "skip",
            "--deadline",
            "1h",
            "--label",
            "team=ops",
            "--",
            "sh",
            "-c",
            "echo backup",
        ],
        &env,
    );
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let text = stdout(&created);
    assert!(
        text.contains("nightly") && text.contains("Europe/Berlin"),
        "{text}"
    );
    assert!(text.contains("deadline  1h after each fire time"), "{text}");
    let listed = cli(&["schedule", "list", "--json"], &env);
    let list: Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(list[0]["name"], "nightly");
    assert_eq!(list[0]["misfire"], "skip");
    let next: DateTime<Utc> = list[0]["next_fires"][0].as_str().unwrap().parse().unwrap();
    let berlin = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(berlin.format("%H:%M").to_string(), "02:30");

    let triggered = cli(&["schedule", "trigger", "nightly", "--json"], &env);
    assert_eq!(triggered.status.code(), Some(0), "{}", stderr(&triggered));
    let job: Value = serde_json::from_str(&stdout(&triggered)).unwrap();
    let done = server
        .wait_terminal(job["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["labels"]["schedule"], "nightly");
    assert_eq!(done["labels"]["team"], "ops");
    let shown = stdout(&cli(&["schedule", "show", "nightly"], &env));
    assert!(shown.contains("succeeded"), "{shown}");

    let paused = cli(&["schedule", "pause", "nightly"], &env);
    assert!(stdout(&paused).contains("paused"), "{}", stdout(&paused));
    let resumed = cli(&["schedule", "resume", "nightly"], &env);
    assert!(stdout(&resumed).contains("active"), "{}", stdout(&resumed));

    let bad = cli(
        &["schedule", "create", "x", "--cron", "* * *", "--", "true"],
        &env,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("cron"), "{}", stderr(&bad));
    let twin = cli(
        &[
            "schedule",
            "create",
            "nightly",
            "--cron",
            "* * * * *",
            "--",
            "true",
        ],
        &env,
    );
    assert_ne!(twin.status.code(), Some(0));
    assert!(
        stderr(&twin).contains("already exists"),
        "{}",
        stderr(&twin)
    );
    let keyed = cli(
        &[
            "schedule",
            "create",
            "k",
            "--cron",
            "* * * * *",
            "--idempotency-key",
            "a",
            "--",
            "true",
        ],
        &env,
    );
    assert!(
        stderr(&keyed).contains("--idempotency-key"),
        "{}",
        stderr(&keyed)
    );

    let deleted = cli(&["schedule", "delete", "nightly"], &env);
    assert_eq!(deleted.status.code(), Some(0));
    let missing = cli(&["schedule", "show", "nightly"], &env);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        stderr(&missing).contains("no schedule named 'nightly'"),
        "{}",
        stderr(&missing)
    );
}
