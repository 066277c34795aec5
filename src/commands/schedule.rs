//! `retryd schedule create|update|list|show|pause|resume|trigger|delete`.

use crate::cli::{ScheduleArgs, ScheduleCommand};
use crate::client::Client;
use crate::commands::submit::job_body;
use crate::output::{self, table};
use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use retryd_core::JobState;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Serialize, Deserialize)]
struct RunView {
    job_id: String,
    state: JobState,
    run_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ScheduleView {
    name: String,
    cron: String,
    tz: String,
    overlap: String,
    misfire: String,
    paused: bool,
    deadline: Option<String>,
    job: Value,
    next_fires: Vec<DateTime<Utc>>,
    last_fire: Option<DateTime<Utc>>,
    last_job_id: Option<String>,
    last_skip: Option<String>,
    #[serde(default)]
    runs: Vec<RunView>,
}

/// The request body `create` and `update` send.
fn body(args: &ScheduleArgs) -> Result<Value> {
    let job = &args.job;
    for (flag, given) in [
        ("--wait", job.wait),
        ("--file", job.file.is_some()),
        ("--run-at", job.run_at.is_some()),
        ("--idempotency-key", job.idempotency_key.is_some()),
    ] {
        if given {
            bail!("{flag}: not for a schedule: each fire time sets a run's start and key");
        }
    }
    let mut body = json!({
        "name": args.name,
        "cron": args.cron,
        "paused": args.paused,
        "job": job_body(job)?,
    });
    for (field, value) in [
        ("tz", &args.tz),
        ("overlap", &args.overlap),
        ("misfire", &args.misfire),
        ("deadline", &job.deadline),
    ] {
        if let Some(value) = value {
            body[field] = Value::from(value.as_str());
        }
    }
    Ok(body)
}

pub async fn schedule(client: &Client, command: ScheduleCommand, json: bool) -> Result<u8> {
    let (views, detail): (Vec<ScheduleView>, bool) = match &command {
        ScheduleCommand::Create(args) => {
            (vec![client.post("/schedules", &body(args)?).await?], true)
        }
        ScheduleCommand::Update(args) => (
            vec![
                client
                    .put(&format!("/schedules/{}", args.name), &body(args)?)
                    .await?,
            ],
            true,
        ),
        ScheduleCommand::List => (client.get("/schedules").await?, false),
        ScheduleCommand::Show { name } => {
            (vec![client.get(&format!("/schedules/{name}")).await?], true)
        }
        ScheduleCommand::Pause { name } => (
            vec![
                client
                    .post(&format!("/schedules/{name}/pause"), &json!({}))
                    .await?,
            ],
            false,
        ),
        ScheduleCommand::Resume { name } => (
            vec![
                client
                    .post(&format!("/schedules/{name}/resume"), &json!({}))
                    .await?,
            ],
            false,
        ),
        ScheduleCommand::Delete { name } => {
            let deleted: ScheduleView = client.delete(&format!("/schedules/{name}")).await?;
            if json {
                output::json(&deleted);
            } else {
                println!(
                    "deleted schedule {} (its runs stay)",
                    output::bold(&deleted.name)
                );
            }
            return Ok(crate::exit::OK);
        }
        ScheduleCommand::Trigger { name } => {
            let job: Value = client
                .post(&format!("/schedules/{name}/trigger"), &json!({}))
                .await?;
            if json {
                output::json(&job);
            } else {
                println!(
                    "triggered schedule {}: job {}",
                    output::bold(name),
                    output::bold(job["id"].as_str().unwrap_or("?"))
                );
            }
            return Ok(crate::exit::OK);
        }
    };
    if json {
        if detail
            || matches!(
                command,
                ScheduleCommand::Pause { .. } | ScheduleCommand::Resume { .. }
            )
        {
            output::json(&views[0]);
        } else {
            output::json(&views);
        }
        return Ok(crate::exit::OK);
    }
    if views.is_empty() {
        println!(
            "no schedules: create one with `retryd schedule create NAME --cron '*/5 * * * *' -- COMMAND`"
        );
        return Ok(crate::exit::OK);
    }
    if detail {
        print_detail(&views[0]);
    } else {
        print_list(&views);
    }
    Ok(crate::exit::OK)
}

fn status(view: &ScheduleView) -> String {
    if view.paused {
        output::yellow("paused")
    } else {
        output::green("active")
    }
}

fn print_list(views: &[ScheduleView]) {
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|s| {
            vec![
                output::clean(&s.name).into_owned(),
                status(s),
                output::clean(&format!("{} ({})", s.cron, s.tz)).into_owned(),
                s.next_fires
                    .first()
                    .map_or("–".into(), |t| output::datetime(*t)),
                s.last_fire.map_or("–".into(), output::datetime),
            ]
        })
        .collect();
    table("", &["SCHEDULE", "STATUS", "CRON", "NEXT", "LAST"], &rows);
}

fn print_detail(s: &ScheduleView) {
    println!("{}  {}", output::bold(&output::clean(&s.name)), status(s));
    println!("  cron      {} ({})", output::clean(&s.cron), s.tz);
    println!("  overlap   {}   misfire {}", s.overlap, s.misfire);
    if let Some(deadline) = &s.deadline {
        println!("  deadline  {deadline} after each fire time");
    }
    let action = &s.job["action"];
    let what = match action["type"].as_str() {
        Some("command") => {
            let mut words = vec![action["program"].as_str().unwrap_or("").to_owned()];
            words.extend(
                action["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_owned)),
            );
            words.join(" ")
        }
        Some("http") => format!(
            "{} {}",
            action["method"].as_str().unwrap_or("GET"),
            action["url"].as_str().unwrap_or("")
        ),
        Some(other) => other.to_owned(),
        None => "?".into(),
    };
    println!(
        "  runs      {} (queue {}, kind {}, policy {})",
        output::clean(&what),
        s.job["queue"].as_str().unwrap_or("default"),
        s.job["kind"].as_str().unwrap_or("-"),
        s.job["policy_name"].as_str().unwrap_or("-")
    );
    if s.next_fires.is_empty() {
        println!("  next      – (paused)");
    } else {
        for (i, at) in s.next_fires.iter().enumerate() {
            let label = if i == 0 { "next" } else { "" };
            println!("  {label:<9} {}", output::datetime(*at));
        }
    }
    if let Some(skip) = &s.last_skip {
        println!("  skipped   {}", output::yellow(&output::clean(skip)));
    }
    if s.runs.is_empty() {
        println!("  no runs yet");
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = s
        .runs
        .iter()
        .map(|r| {
            vec![
                r.job_id.chars().take(12).collect(),
                output::state(r.state.as_str()),
                output::datetime(r.run_at),
                r.finished_at.map_or("–".into(), output::datetime),
                output::clean(r.last_error.as_deref().unwrap_or("")).into_owned(),
            ]
        })
        .collect();
    table("  ", &["JOB", "STATE", "FIRED", "FINISHED", "ERROR"], &rows);
}
