//! `retryd notifications [JOB]`: the notification log.

use crate::cli::NotificationsArgs;
use crate::client::Client;
use crate::output::{self, table};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Try {
    number: u32,
    node: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    ok: Option<bool>,
    status: Option<i32>,
    error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Delivery {
    id: i64,
    job_id: String,
    event: String,
    sink: String,
    payload: serde_json::Value,
    state: String,
    attempts: u32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    log: Vec<Try>,
}

pub async fn list(client: &Client, args: NotificationsArgs, json: bool) -> Result<u8> {
    let path = match &args.job {
        Some(job) => format!("/jobs/{job}/notifications"),
        None => "/notifications".to_owned(),
    };
    let deliveries: Vec<Delivery> = client.get_query(&path, &[("limit", args.limit)]).await?;
    if json {
        output::json(&deliveries);
        return Ok(crate::exit::OK);
    }
    if deliveries.is_empty() {
        println!("no notifications");
        return Ok(crate::exit::OK);
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for d in &deliveries {
        let state = match d.state.as_str() {
            "delivered" => output::green("delivered"),
            "failed" => output::red("failed"),
            other => output::yellow(other),
        };
        rows.push(vec![
            d.id.to_string(),
            d.job_id.clone(),
            d.event.clone(),
            d.sink.clone(),
            state,
            String::new(),
        ]);
        for t in &d.log {
            let result = match (t.ok, &t.error) {
                (Some(true), _) => format!("ok{}", status(t.status)),
                (Some(false), Some(error)) => format!("failed{}: {error}", status(t.status)),
                (Some(false), None) => format!("failed{}", status(t.status)),
                (None, _) => "no result (running, or its node stopped)".to_owned(),
            };
            rows.push(vec![
                String::new(),
                format!("  try {} on {}", t.number, t.node),
                output::time(t.started_at),
                String::new(),
                String::new(),
                result,
            ]);
        }
    }
    table(
        "",
        &["ID", "JOB", "EVENT", "SINK", "STATE", "RESULT"],
        &rows,
    );
    Ok(crate::exit::OK)
}

fn status(status: Option<i32>) -> String {
    status.map(|s| format!(" ({s})")).unwrap_or_default()
}
