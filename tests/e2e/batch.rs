//! Issue 13: bulk enqueue. `POST /api/v1/jobs/batch` takes up to 10,000 jobs in one request
//! and one transaction: all are stored or, when any item is invalid, none (each invalid item
//! named by index and field); idempotency keys are honoured within and across batches;
//! `retryd submit --file` sends NDJSON in such batches. A SIGKILL during group commits
//! loses no acknowledged submit and no acknowledged result.

use crate::helpers::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const QUEUES: [&str; 3] = ["alpha", "beta", "gamma"];

fn command_job(i: usize) -> Value {
    let queue = QUEUES[i % 3];
    json!({
        "action": { "type": "command", "program": "true", "args": [i.to_string()] },
        "queue": queue,
        "kind": "bulk",
        "labels": { "n": i.to_string() },
    })
}

async fn totals(server: &Server) -> BTreeMap<String, u64> {
    let (status, stats) = server.get("/stats").await;
    assert_eq!(status, 200, "{stats}");
    serde_json::from_value(stats["totals"].clone()).expect("totals per state")
}

#[tokio::test]
async fn ten_thousand_jobs_in_one_request_are_stored_in_order() {
    // An API-only node: the jobs stay pending, so that the count is exact.
    let server = Server::start(&["--concurrency", "0"]).await;
    let jobs: Vec<Value> = (0..10_000).map(command_job).collect();
    let (status, answer) = server.post("/jobs/batch", json!({ "jobs": jobs })).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["created"], 10_000);
    let items = answer["jobs"].as_array().expect("items");
    assert_eq!(items.len(), 10_000);
    let ids: BTreeSet<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10_000, "every item has its own job");
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["queue"], QUEUES[i % 3], "item {i}");
        assert_eq!(
            (&item["state"], &item["created"]),
            (&json!("pending"), &json!(true))
        );
    }
    assert_eq!(totals(&server).await.get("pending"), Some(&10_000));
    // The stored job is the one sent at that position.
    let sample = server.job(items[4321]["id"].as_str().unwrap()).await;
    assert_eq!(sample["labels"]["n"], "4321");
    assert_eq!(sample["action"]["args"][0], "4321");
    // Past the limit: refused whole, naming the field and the bound.
    let too_many: Vec<Value> = (0..10_001).map(command_job).collect();
    let (status, error) = server
        .post("/jobs/batch", json!({ "jobs": too_many }))
        .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["details"]["field"], "jobs");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10000")
    );
}

#[tokio::test]
async fn a_batch_with_invalid_items_stores_nothing_and_names_each_item() {
    let server = Server::start(&["--concurrency", "0"]).await;
    let batch = json!({ "jobs": [
        command_job(0),
        { "action": { "type": "command", "program": "true" }, "queue": "no spaces allowed" },
        command_job(2),
        { "action": { "type": "command", "program": "true" }, "priority": 500 },
        { "action": { "type": "teleport" } },
        { "action": { "type": "command", "program": "true" }, "colour": "red" },
    ]});
    let (status, error) = server.post("/jobs/batch", batch).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "invalid_items");
    let items = error["error"]["details"]["items"]
        .as_array()
        .expect("items");
    let named: Vec<(u64, &str)> = items
        .iter()
        .map(|i| (i["index"].as_u64().unwrap(), i["field"].as_str().unwrap()))
        .collect();
    assert_eq!(named.len(), 4, "{error}");
    assert_eq!(named[0], (1, "jobs[1].queue"));
    assert_eq!(named[1], (3, "jobs[3].priority"));
    assert_eq!(named[2].0, 4);
    assert!(named[2].1.starts_with("jobs[4].action"), "{error}");
    assert_eq!(named[3].0, 5);
    for item in items {
        assert!(!item["message"].as_str().unwrap().is_empty());
    }
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing was stored")
    );
    assert!(
        totals(&server).await.values().all(|n| *n == 0),
        "nothing stored"
    );
    // Not a batch at all.
    for (body, field) in [
        (json!({ "jobs": [] }), "jobs"),
        (json!({ "jobs": "many" }), "jobs"),
        (json!({ "work": [] }), "work"),
    ] {
        let (status, error) = server.post("/jobs/batch", body).await;
        assert_eq!(status, 422, "{error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(field)
                || error["error"]["details"]["field"] == field,
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_repeated_batch_with_idempotency_keys_creates_nothing_twice() {
    let server = Server::start(&["--concurrency", "0"]).await;
    let keyed: Vec<Value> = (0..200)
        .map(|i| {
            let mut job = command_job(i);
            job["idempotency_key"] = json!(format!("release-{}", i % 150));
            job
        })
        .collect();
    let (status, first) = server.post("/jobs/batch", json!({ "jobs": keyed })).await;
    assert_eq!(status, 201, "{first}");
    // Keys repeat within the batch from item 150 on, but only in the same queue.
    let created = first["created"].as_u64().unwrap();
    let expected = (0..200)
        .map(|i| (QUEUES[i % 3], i % 150))
        .collect::<BTreeSet<_>>()
        .len() as u64;
    assert_eq!(created, expected);
    let (status, again) = server.post("/jobs/batch", json!({ "jobs": keyed })).await;
    assert_eq!(status, 200, "every job existed: {again}");
    assert_eq!(again["created"], 0);
    assert_eq!(first["jobs"].as_array().unwrap().len(), 200);
    for (a, b) in first["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(again["jobs"].as_array().unwrap())
    {
        assert_eq!(a["id"], b["id"], "the same key answers the same job");
    }
    assert_eq!(totals(&server).await.get("pending"), Some(&expected));
}

#[tokio::test]
async fn submit_file_sends_ndjson_in_batches_and_names_bad_lines() {
    let server = Server::start(&["--concurrency", "0"]).await;
    let file = server.dir.join("jobs.ndjson");
    let mut text = String::new();
    for i in 0..25 {
        text.push_str(&json!({ "action": { "type": "command", "program": "true" }, "labels": { "n": i.to_string() } }).to_string());
        text.push('\n');
        if i == 10 {
            text.push('\n'); // blank lines are skipped
        }
    }
    std::fs::write(&file, &text).unwrap();
    let file = file.display().to_string();
    let out = server.cli(&[
        "submit",
        "--file",
        &file,
        "--queue",
        "imports",
        "--label",
        "source=file",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let items: Vec<Value> = serde_json::from_str(&stdout(&out)).expect("JSON items");
    assert_eq!(items.len(), 25);
    let job = server.job(items[24]["id"].as_str().unwrap()).await;
    assert_eq!(job["queue"], "imports", "flags fill what a line leaves out");
    assert_eq!(job["labels"]["n"], "24");
    assert_eq!(job["labels"]["source"], "file");
    // Human output, from stdin.
    let out = std::process::Command::new(BIN)
        .args(["submit", "--file", "-"])
        .envs(server.cli_env())
        .env("NO_COLOR", "1")
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("submitted 25 job(s): 25 created"),
        "{}",
        stdout(&out)
    );
    // A bad line: named by its line number, nothing of its batch stored.
    let bad = server.dir.join("bad.ndjson");
    std::fs::write(
        &bad,
        format!(
            "{}\n{}\n{}\n",
            json!({ "action": { "type": "command", "program": "true" } }),
            json!({ "action": { "type": "command", "program": "true" }, "priority": -1 }),
            "not json",
        ),
    )
    .unwrap();
    let out = server.cli(&["submit", "--file", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("line 3 is not valid JSON"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        &bad,
        format!(
            "{}\n\n{}\n",
            json!({ "action": { "type": "command", "program": "true" } }),
            json!({ "action": { "type": "command", "program": "true" }, "priority": -1 }),
        ),
    )
    .unwrap();
    let before = totals(&server).await;
    let out = server.cli(&["submit", "--file", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 3: priority"),
        "{}",
        stderr(&out)
    );
    assert_eq!(totals(&server).await, before, "nothing of the batch stored");
}

/// Submits single jobs and batches from several clients and follows the event stream while
/// the server commits results in groups; SIGKILLs it three times mid-flight. Every submit the
/// server acknowledged is still there after the restart, every terminal event a client saw
/// still holds, and every job finishes.
#[tokio::test]
async fn a_sigkill_during_group_commits_loses_no_acknowledged_submit_or_result() {
    let mut server = Server::start(&["--concurrency", "16"]).await;
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..3 {
        let stream = follow(&server, "", None).await;
        let events = tokio::spawn(read_sse(stream, Duration::from_secs(30), |_| false));
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..4 {
            let (http, url) = (server.http.clone(), server.api("/jobs/batch"));
            clients.spawn(async move {
                let mut ids = Vec::new();
                // Until the kill cuts the connection.
                for n in 0.. {
                    let jobs: Vec<Value> = (0..1 + (n + client) % 40)
                        .map(|i| command_job(i + round))
                        .collect();
                    let Ok(response) = http.post(&url).json(&json!({ "jobs": jobs })).send().await
                    else {
                        break;
                    };
                    if response.status() != 201 {
                        break;
                    }
                    let Ok(answer) = response.json::<Value>().await else {
                        break;
                    };
                    ids.extend(
                        answer["jobs"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|i| i["id"].as_str().unwrap().to_owned()),
                    );
                }
                ids
            });
        }
        tokio::time::sleep(Duration::from_millis(1500 + 400 * round as u64)).await;
        server.kill9();
        while let Some(ids) = clients.join_next().await {
            acknowledged.extend(ids.unwrap());
        }
        // The stream ends with the server; what it delivered was committed.
        for event in events.await.unwrap() {
            let to = event["to"].as_str().unwrap();
            if matches!(to, "succeeded" | "failed" | "cancelled" | "expired") {
                finished.insert(event["job_id"].as_str().unwrap().to_owned(), to.to_owned());
            }
        }
        server.restart().await;
    }
    assert!(
        acknowledged.len() > 100,
        "only {} submits",
        acknowledged.len()
    );
    assert!(finished.len() > 50, "only {} results seen", finished.len());
    // Every stored job, page by page (one request per job would meet the rate limit).
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("/jobs?limit=500&cursor={c}"),
            None => "/jobs?limit=500".to_owned(),
        };
        let (status, page) = server.get(&query).await;
        assert_eq!(status, 200, "{page}");
        for job in page["jobs"].as_array().unwrap() {
            stored.insert(
                job["id"].as_str().unwrap().to_owned(),
                job["state"].as_str().unwrap().to_owned(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    for id in &acknowledged {
        assert!(stored.contains_key(id), "acknowledged job {id} lost");
    }
    for (id, state) in &finished {
        assert_eq!(stored.get(id), Some(state), "job {id}: its result was lost");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let totals = totals(&server).await;
        let live: u64 = ["pending", "running", "retrying"]
            .iter()
            .filter_map(|s| totals.get(*s))
            .sum();
        if live == 0 {
            assert_eq!(
                totals.get("succeeded").copied().unwrap_or(0),
                totals.values().sum::<u64>()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still live: {totals:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
