//! `retryd queue list|pause|resume`.

use crate::cli::QueueCommand;
use crate::client::Client;
use crate::output::{self, table};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct QueueView {
    name: String,
    paused: bool,
    waiting: u64,
}

pub async fn queue(client: &Client, command: QueueCommand, json: bool) -> Result<u8> {
    let views: Vec<QueueView> = match &command {
        QueueCommand::List => client.get("/queues").await?,
        QueueCommand::Pause { name } => vec![
            client
                .post(&format!("/queues/{name}/pause"), &json!({}))
                .await?,
        ],
        QueueCommand::Resume { name } => vec![
            client
                .post(&format!("/queues/{name}/resume"), &json!({}))
                .await?,
        ],
    };
    if json {
        output::json(&views);
        return Ok(crate::exit::OK);
    }
    if views.is_empty() {
        println!("no queue has waiting jobs");
        return Ok(crate::exit::OK);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|q| {
            let status = if q.paused {
                output::yellow("paused")
            } else {
                output::green("active")
            };
            vec![q.name.clone(), status, q.waiting.to_string()]
        })
        .collect();
    table("", &["QUEUE", "STATUS", "WAITING"], &rows);
    Ok(crate::exit::OK)
}
