//! `retryd channel list|set|delete`: the organization's notification channels.

use crate::cli::{ChannelArgs, ChannelCommand};
use crate::client::Client;
use crate::output::{self, table};
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

#[derive(Debug, Serialize, Deserialize)]
struct ChannelView {
    name: String,
    kind: String,
    on: Vec<String>,
    policy: String,
    destination: String,
    updated_at: DateTime<Utc>,
    updated_by: String,
}

/// The request body the flags describe; the server validates it and names a bad field.
fn body(args: &ChannelArgs) -> Result<Value> {
    let mut body = Map::new();
    body.insert("kind".into(), json!(args.kind));
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            body.insert(key.to_owned(), value);
        }
    };
    set("url", args.url.clone().map(Value::from));
    set("policy", args.policy.clone().map(Value::from));
    set("timeout", args.timeout.clone().map(Value::from));
    set("smtp", args.smtp.clone().map(Value::from));
    set("from", args.from.clone().map(Value::from));
    set("on", (!args.on.is_empty()).then(|| json!(args.on)));
    set("to", (!args.to.is_empty()).then(|| json!(args.to)));
    let mut headers = Map::new();
    for pair in &args.headers {
        let Some((name, value)) = pair.split_once('=') else {
            bail!("--header: write NAME=VALUE, got {pair:?}");
        };
        headers.insert(name.to_owned(), Value::from(value));
    }
    set(
        "headers",
        (!headers.is_empty()).then_some(Value::Object(headers)),
    );
    Ok(Value::Object(body))
}

fn describe(c: &ChannelView) -> String {
    format!(
        "{} to {} on {} (policy {})",
        c.kind,
        c.destination,
        c.on.join(", "),
        c.policy
    )
}

pub async fn channel(client: &Client, command: ChannelCommand, json: bool) -> Result<u8> {
    match command {
        ChannelCommand::List => {
            let channels: Vec<ChannelView> = client.get("/channels").await?;
            if json {
                output::json(&channels);
                return Ok(crate::exit::OK);
            }
            if channels.is_empty() {
                println!("no channels: the instance's configured sinks only");
                return Ok(crate::exit::OK);
            }
            let rows: Vec<Vec<String>> = channels
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.kind.clone(),
                        c.destination.clone(),
                        c.on.join(","),
                        c.policy.clone(),
                        output::datetime(c.updated_at),
                    ]
                })
                .collect();
            table(
                "",
                &["NAME", "KIND", "TO", "ON", "POLICY", "UPDATED"],
                &rows,
            );
        }
        ChannelCommand::Set(args) => {
            let view: ChannelView = client
                .put(&format!("/channels/{}", args.name), &body(&args)?)
                .await?;
            if json {
                output::json(&view);
            } else {
                println!("channel '{}': {}", view.name, describe(&view));
            }
        }
        ChannelCommand::Delete { name } => {
            let view: ChannelView = client.delete(&format!("/channels/{name}")).await?;
            if json {
                output::json(&view);
            } else {
                println!("deleted channel '{}' ({})", view.name, describe(&view));
            }
        }
    }
    Ok(crate::exit::OK)
}
