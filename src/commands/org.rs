//! `retryd org create|list|show|update`.

use crate::cli::OrgCommand;
use crate::client::Client;
use crate::output::{self, bold, dim, table};
use anyhow::Result;
use retryd_core::org::Org;
use serde_json::json;

fn limit(org: &Org) -> String {
    let running = org
        .max_running
        .map_or_else(|| dim("fair share"), |n| format!("{n} running"));
    match org.retry_budget {
        Some(n) => format!("{running}, {n} retries/min"),
        None => running,
    }
}

fn print(org: &Org, json: bool, what: &str) {
    if json {
        output::json(org);
        return;
    }
    println!("{what}organization {}", bold(&org.name));
    println!(
        "  {}  {}",
        dim("default policy"),
        org.default_policy
            .as_deref()
            .unwrap_or("— (the instance's rules)")
    );
    println!("  {}          {}", dim("limits"), limit(org));
    println!(
        "  {}         {} by {}",
        dim("created"),
        output::datetime(org.created_at),
        org.created_by
    );
}

pub async fn org(client: &Client, command: OrgCommand, json: bool) -> Result<u8> {
    match command {
        OrgCommand::Create {
            name,
            max_running,
            retry_budget,
        } => {
            let body =
                json!({ "name": name, "max_running": max_running, "retry_budget": retry_budget });
            let org: Org = client.post("/orgs", &body).await?;
            print(&org, json, "created ");
        }
        OrgCommand::List => {
            let orgs: Vec<Org> = client.get("/orgs").await?;
            if json {
                output::json(&orgs);
            } else {
                let rows: Vec<Vec<String>> = orgs
                    .iter()
                    .map(|o| {
                        vec![
                            o.name.clone(),
                            o.default_policy.clone().unwrap_or_else(|| dim("—")),
                            limit(o),
                            output::datetime(o.created_at),
                        ]
                    })
                    .collect();
                table("", &["NAME", "DEFAULT POLICY", "LIMIT", "CREATED"], &rows);
            }
        }
        OrgCommand::Show { name } => {
            let org: Org = client.get(&format!("/orgs/{name}")).await?;
            print(&org, json, "");
        }
        OrgCommand::Update {
            name,
            max_running,
            no_limit,
            retry_budget,
            no_retry_budget,
        } => {
            // PUT sets both limits: the one not named keeps its value.
            let current: Org = client.get(&format!("/orgs/{name}")).await?;
            let pick = |new: Option<u32>, lift: bool, old: Option<u32>| {
                if lift { None } else { new.or(old) }
            };
            let body = json!({
                "max_running": pick(max_running, no_limit, current.max_running),
                "retry_budget": pick(retry_budget, no_retry_budget, current.retry_budget),
            });
            let org: Org = client.put(&format!("/orgs/{name}"), &body).await?;
            print(&org, json, "updated ");
        }
    }
    Ok(crate::exit::OK)
}
