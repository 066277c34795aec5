//! `retryd token create|list|revoke` (admin).

use crate::cli::TokenCommand;
use crate::client::Client;
use crate::output::{self, table};
use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct TokenView {
    id: String,
    org: String,
    instance: bool,
    name: String,
    role: String,
    created_at: DateTime<Utc>,
    created_by: String,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Created {
    token: String,
    #[serde(flatten)]
    info: TokenView,
}

pub async fn token(client: &Client, command: TokenCommand, json: bool) -> Result<u8> {
    match command {
        TokenCommand::Create {
            name,
            role,
            instance,
        } => {
            let created: Created = client
                .post(
                    "/tokens",
                    &json!({ "name": name, "role": role, "instance": instance }),
                )
                .await?;
            if json {
                output::json(&created);
            } else {
                let scope = if created.info.instance {
                    "instance".to_owned()
                } else {
                    format!("organization '{}'", created.info.org)
                };
                println!(
                    "created {} token '{}' ({}) of {scope}. It is shown only now:\n\n  {}\n",
                    created.info.role, created.info.name, created.info.id, created.token
                );
            }
        }
        TokenCommand::List => {
            let tokens: Vec<TokenView> = client.get("/tokens").await?;
            if json {
                output::json(&tokens);
                return Ok(crate::exit::OK);
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.name.clone(),
                        if t.instance {
                            format!("{} (instance)", t.role)
                        } else {
                            t.role.clone()
                        },
                        t.org.clone(),
                        output::datetime(t.created_at),
                        t.created_by.clone(),
                        match t.revoked_at {
                            Some(at) => output::red(&format!("revoked {}", output::datetime(at))),
                            None => output::green("active"),
                        },
                    ]
                })
                .collect();
            table(
                "",
                &["ID", "NAME", "ROLE", "ORG", "CREATED", "BY", "STATUS"],
                &rows,
            );
        }
        TokenCommand::Revoke { id_or_name } => {
            let revoked: TokenView = client.delete(&format!("/tokens/{id_or_name}")).await?;
            if json {
                output::json(&revoked);
            } else {
                println!("revoked token '{}' ({})", revoked.name, revoked.id);
            }
        }
    }
    Ok(crate::exit::OK)
}
