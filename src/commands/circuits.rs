//! `retryd circuits`.

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
