//! `retryd circuits [--history]`.

use crate::client::Client;
use crate::output::{self, table};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct CircuitView {
    target: String,
    state: String,
    opened_at: DateTime<Utc>,
    open_until: DateTime<Utc>,
    probing: bool,
    failures: u32,
    attempts: u32,
}

pub async fn list(client: &Client, json: bool) -> Result<u8> {
    let circuits: Vec<CircuitView> = client.get("/circuits").await?;
    if json {
        output::json(&circuits);
        return Ok(crate::exit::OK);
    }
    if circuits.is_empty() {
        println!("every circuit is closed");
        return Ok(crate::exit::OK);
    }
    let rows: Vec<Vec<String>> = circuits
        .iter()
        .map(|c| {
            let state = match (c.state.as_str(), c.probing) {
                ("open", _) => output::red("open"),
                (_, true) => output::yellow("half-open, probing"),
                _ => output::yellow("half-open"),
            };
            vec![
                c.target.clone(),
                state,
                output::time(c.opened_at),
                output::time(c.open_until),
                format!("{}/{}", c.failures, c.attempts),
            ]
        })
        .collect();
    table(
        "",
        &["TARGET", "STATE", "OPENED", "OPEN UNTIL", "FAILED/ATTEMPTS"],
        &rows,
    );
    Ok(crate::exit::OK)
}

#[derive(Debug, Serialize, Deserialize)]
struct Outage {
    target: String,
    opened_at: DateTime<Utc>,
    closed_at: Option<DateTime<Utc>>,
    failures: u32,
    attempts: u32,
    reopened: u32,
    closed_by: Option<String>,
}

pub async fn history(client: &Client, json: bool) -> Result<u8> {
    let outages: Vec<Outage> = client.get("/circuits/history?limit=200").await?;
    if json {
        output::json(&outages);
        return Ok(crate::exit::OK);
    }
    if outages.is_empty() {
        println!("no circuit opened in the last 90 days");
        return Ok(crate::exit::OK);
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = outages
        .iter()
        .map(|o| {
            let lasted = (o.closed_at.unwrap_or(now) - o.opened_at)
                .to_std()
                .unwrap_or_default();
            // Whole seconds: "4m 10s", not "4m 10s 312ms".
            let lasted = retryd_core::duration::format(std::time::Duration::from_secs(
                lasted.as_secs().max(1),
            ));
            let closed = match (&o.closed_at, &o.closed_by) {
                (Some(at), Some(by)) => format!("{}: {by}", output::time(*at)),
                (Some(at), None) => output::time(*at),
                (None, _) => output::red("still open"),
            };
            vec![
                o.target.clone(),
                output::time(o.opened_at),
                lasted,
                format!("{}/{}", o.failures, o.attempts),
                o.reopened.to_string(),
                closed,
            ]
        })
        .collect();
    table(
        "",
        &[
            "TARGET",
            "OPENED",
            "LASTED",
            "FAILED/ATTEMPTS",
            "PROBES FAILED",
            "CLOSED",
        ],
        &rows,
    );
    Ok(crate::exit::OK)
}
