//! `retryd policy list|show|simulate`.

use crate::cli::PolicyCommand;
use crate::client::Client;
use crate::output::{self, bold, dim, table};
use anyhow::Result;
use retryd_core::Policy;
use retryd_core::duration::format as fmt;
use retryd_core::policy::ScheduleRow;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct PolicyView {
    name: String,
    builtin: bool,
    policy: Policy,
    schedule: Vec<ScheduleRow>,
}

fn summary(policy: &Policy) -> String {
    format!(
        "{} attempts, {} ×{}, cap {}, jitter {}{}",
        policy.max_attempts,
        fmt(policy.initial_delay),
        policy.multiplier,
        fmt(policy.max_delay),
        format!("{:?}", policy.jitter).to_lowercase(),
        policy
            .attempt_timeout
            .map(|t| format!(", attempt timeout {}", fmt(t)))
            .unwrap_or_default()
    )
}

fn print_schedule(schedule: &[ScheduleRow]) {
    if schedule.is_empty() {
        println!("  one attempt, no retry");
        return;
    }
    let rows: Vec<Vec<String>> = schedule
        .iter()
        .map(|r| {
            let range = |a, b| {
                if a == b {
                    fmt(a)
                } else {
                    format!("{} – {}", fmt(a), fmt(b))
                }
            };
            vec![
                format!("{} → {}", r.after_attempt, r.after_attempt + 1),
                range(r.delay_min, r.delay_max),
                range(r.cumulative_min, r.cumulative_max),
            ]
        })
        .collect();
    table("  ", &["ATTEMPT", "WAIT", "CUMULATIVE WAIT"], &rows);
}

pub async fn policy(client: &Client, command: PolicyCommand, json: bool) -> Result<u8> {
    match command {
        PolicyCommand::List => {
            let policies: Vec<PolicyView> = client.get("/policies").await?;
            if json {
                output::json(&policies);
            } else {
                let rows: Vec<Vec<String>> = policies
                    .iter()
                    .map(|p| {
                        vec![
                            p.name.clone(),
                            if p.builtin {
                                "built-in".into()
                            } else {
                                "configured".into()
                            },
                            summary(&p.policy),
                        ]
                    })
                    .collect();
                table("", &["NAME", "SOURCE", "SCHEDULE"], &rows);
            }
        }
        PolicyCommand::Show { name }
        | PolicyCommand::Simulate {
            name: Some(name),
            inline: None,
        } => {
            let view: PolicyView = client.get(&format!("/policies/{name}")).await?;
            if json {
                output::json(&view);
            } else {
                println!("{} {}", bold("Policy"), bold(&view.name));
                println!("  {}", summary(&view.policy));
                if !view.policy.rules.is_empty() {
                    println!(
                        "  {} {} own classification rules before the built-in ones",
                        dim("rules"),
                        view.policy.rules.len()
                    );
                }
                println!();
                print_schedule(&view.schedule);
            }
        }
        PolicyCommand::Simulate {
            inline: Some(text), ..
        } => {
            let policy: Policy =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--inline: {e}"))?;
            policy
                .validate()
                .map_err(|e| anyhow::anyhow!("--inline: {e}"))?;
            let schedule = policy.simulate();
            if json {
                output::json(&schedule);
            } else {
                println!("  {}\n", summary(&policy));
                print_schedule(&schedule);
            }
        }
        PolicyCommand::Simulate {
            name: None,
            inline: None,
        } => {
            anyhow::bail!("policy simulate: give a policy NAME or --inline JSON");
        }
    }
    Ok(crate::exit::OK)
}
