//! `retryd policy list|show|create|update|deactivate|simulate`.

use crate::cli::{PolicyCommand, PolicyEdit};
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
    source: String,
    active: bool,
    /// The organization's active default.
    #[serde(default)]
    default: bool,
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

/// The policy object the flags describe; the server validates it and names a bad field.
fn edit_body(edit: &PolicyEdit) -> Result<serde_json::Value> {
    let mut body = match &edit.json_policy {
        Some(text) => {
            serde_json::from_str(text).map_err(|e| anyhow::anyhow!("--json-policy: {e}"))?
        }
        None => serde_json::json!({}),
    };
    let serde_json::Value::Object(fields) = &mut body else {
        anyhow::bail!("--json-policy: must be a JSON object such as {{\"max_attempts\": 5}}");
    };
    let mut set = |key: &str, value: Option<serde_json::Value>| {
        if let Some(value) = value {
            fields.insert(key.to_owned(), value);
        }
    };
    set("max_attempts", edit.max_attempts.map(Into::into));
    set("initial_delay", edit.initial_delay.clone().map(Into::into));
    set("multiplier", edit.multiplier.map(Into::into));
    set("max_delay", edit.max_delay.clone().map(Into::into));
    set("jitter", edit.jitter.clone().map(Into::into));
    set("max_elapsed", edit.max_elapsed.clone().map(Into::into));
    set(
        "attempt_timeout",
        edit.attempt_timeout.clone().map(Into::into),
    );
    Ok(body)
}

fn print_view(view: &PolicyView, json: bool, what: &str) {
    if json {
        output::json(view);
        return;
    }
    println!(
        "{what} policy {}: {}",
        bold(&view.name),
        summary(&view.policy)
    );
    println!();
    print_schedule(&view.schedule);
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
                            match (p.source.as_str(), p.active) {
                                ("builtin", _) => "built-in".into(),
                                ("config", _) => "configured".into(),
                                (_, true) => "api".into(),
                                (_, false) => dim("api (inactive)"),
                            } + if p.default { ", default" } else { "" },
                            summary(&p.policy),
                        ]
                    })
                    .collect();
                table("", &["NAME", "SOURCE", "SCHEDULE"], &rows);
            }
        }
        PolicyCommand::Create(edit) => {
            let body = serde_json::json!({ "name": edit.name, "policy": edit_body(&edit)? });
            let view: PolicyView = client.post("/policies", &body).await?;
            print_view(&view, json, "created");
        }
        PolicyCommand::Update(edit) => {
            // Only the fields given change (issue 15: a full replace reset the others).
            let view: PolicyView = client
                .patch(&format!("/policies/{}", edit.name), &edit_body(&edit)?)
                .await?;
            print_view(&view, json, "updated");
        }
        PolicyCommand::Active { name, clear } => {
            let view: PolicyView = if name.is_some() || clear {
                client
                    .put("/policies/active", &serde_json::json!({ "name": name }))
                    .await?
            } else {
                client.get("/policies/active").await?
            };
            let what = if view.default {
                "the organization's default is"
            } else {
                "no organization default: jobs naming no policy get"
            };
            print_view(&view, json, what);
        }
        PolicyCommand::Deactivate { name } => {
            let view: PolicyView = client.delete(&format!("/policies/{name}")).await?;
            print_view(&view, json, "deactivated");
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
