//! `retryd dlq list|requeue|purge`.

use crate::cli::{DlqAction, DlqCommand, DlqFilter};
use crate::client::{Client, JobView};
use crate::output::{self, bold, dim, table};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Serialize, Deserialize)]
struct Group {
    fingerprint: String,
    class: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    advice: Vec<String>,
    message: String,
    count: u64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    queues: Vec<String>,
    kinds: Vec<String>,
    targets: Vec<String>,
    sample_job_ids: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Dlq {
    total: u64,
    groups: Vec<Group>,
    jobs: Vec<JobView>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Bulk {
    count: u64,
    job_ids: Vec<String>,
}

fn filter_query(filter: &DlqFilter) -> Vec<(&'static str, String)> {
    [
        ("queue", &filter.queue),
        ("kind", &filter.kind),
        ("target", &filter.target),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
    .collect()
}

fn selection(action: &DlqAction) -> Value {
    json!({
        "ids": action.ids,
        "fingerprint": action.fingerprint,
        "queue": action.filter.queue,
        "kind": action.filter.kind,
        "target": action.filter.target,
        "all": action.all,
    })
}

pub async fn dlq(client: &Client, command: DlqCommand, json: bool) -> Result<u8> {
    match command {
        DlqCommand::List(filter) => list(client, &filter, json).await,
        DlqCommand::Requeue(action) => {
            let mut body = selection(&action);
            body["reset"] = json!(action.reset);
            let result: Bulk = client.post("/dlq/requeue", &body).await?;
            report(&result, "requeued", json);
            Ok(crate::exit::OK)
        }
        DlqCommand::Purge(action) => {
            if action.reset {
                anyhow::bail!("--reset: applies to requeue only");
            }
            let result: Bulk = client.post("/dlq/purge", &selection(&action)).await?;
            report(&result, "purged", json);
            Ok(crate::exit::OK)
        }
    }
}

fn report(result: &Bulk, verb: &str, json: bool) {
    if json {
        output::json(result);
    } else {
        println!(
            "{verb} {} dead job{}",
            result.count,
            if result.count == 1 { "" } else { "s" }
        );
    }
}

async fn list(client: &Client, filter: &DlqFilter, json: bool) -> Result<u8> {
    let dlq: Dlq = client.get_query("/dlq", &filter_query(filter)).await?;
    if json {
        output::json(&dlq);
        return Ok(crate::exit::OK);
    }
    if dlq.total == 0 {
        println!("the dead-letter queue is empty");
        return Ok(crate::exit::OK);
    }
    println!(
        "{}",
        bold(&format!(
            "{} dead job{} in {} group{}",
            dlq.total,
            if dlq.total == 1 { "" } else { "s" },
            dlq.groups.len(),
            if dlq.groups.len() == 1 { "" } else { "s" }
        ))
    );
    for group in &dlq.groups {
        println!(
            "\n  {} {}  {}",
            output::red(&format!("{} ×", group.count)),
            output::cut_at_word(&group.message, 100),
            dim(&format!(
                "(since {}, last {})",
                output::datetime(group.first_seen),
                output::datetime(group.last_seen)
            ))
        );
        println!("    {} {}", dim("fingerprint"), group.fingerprint);
        println!(
            "    {} {}   {} {}   {} {}",
            dim("queue"),
            group.queues.join(","),
            dim("kind"),
            group.kinds.join(","),
            dim("target"),
            if group.targets.is_empty() {
                "-".to_owned()
            } else {
                group.targets.join(",")
            }
        );
        if let Some(rule) = &group.rule {
            println!(
                "    {} {} ({})",
                dim("rule"),
                rule,
                group.class.as_deref().unwrap_or("unclassified")
            );
        }
        for (i, step) in group.advice.iter().enumerate() {
            // The first step is what to do now; the rest follow from it.
            let step = if i == 0 { bold(step) } else { dim(step) };
            println!("    → {step}");
        }
    }
    println!("\n{}", bold("Newest dead jobs"));
    let rows: Vec<Vec<String>> = dlq
        .jobs
        .iter()
        .map(|v| {
            vec![
                v.job.id.to_string(),
                v.job.kind.clone(),
                format!("{}/{}", v.job.attempt, v.job.policy.max_attempts),
                v.job.last_rule.clone().unwrap_or_else(|| "-".into()),
                output::cut_at_word(
                    v.job
                        .last_error
                        .as_deref()
                        .or(v.job.finish_reason.as_deref())
                        .unwrap_or("-"),
                    70,
                ),
            ]
        })
        .collect();
    table("  ", &["ID", "KIND", "ATTEMPTS", "RULE", "ERROR"], &rows);
    Ok(crate::exit::OK)
}
