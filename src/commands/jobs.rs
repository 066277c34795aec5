//! `jobs`, `show`, `logs`, `cancel`, `retry`.

use crate::cli::JobsArgs;
use crate::client::{Client, JobView};
use crate::output::{self, bold, dim, table, truncate};
use anyhow::Result;
use chrono::Utc;
use retryd_core::JobId;
use retryd_core::job::{Attempt, Event, LogLine, Stream};
use retryd_core::pipeline::StepStatus;
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize, serde::Serialize)]
struct JobPage {
    jobs: Vec<JobView>,
    next_cursor: Option<JobId>,
}

#[derive(Debug, Deserialize)]
struct LogPage {
    lines: Vec<LogLine>,
    next_after: i64,
    complete: bool,
}

fn attempts_text(view: &JobView) -> String {
    match &view.job.action {
        // Each step has its own policy: the total across steps has no single maximum.
        retryd_core::Action::Pipeline(p) => format!(
            "{} (step {}/{})",
            view.job.attempt,
            (view.job.steps.len() + 1).min(p.steps.len()),
            p.steps.len()
        ),
        _ => format!("{}/{}", view.job.attempt, view.job.policy.max_attempts),
    }
}

pub async fn list(client: &Client, args: JobsArgs, json: bool) -> Result<u8> {
    let query: Vec<(&str, String)> = [
        ("state", args.state),
        ("queue", args.queue),
        ("kind", args.kind),
        ("target", args.target),
        ("label", args.label),
        ("cursor", args.cursor),
        ("limit", Some(args.limit.to_string())),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let page: JobPage = client.get_query("/jobs", &query).await?;
    if json {
        output::json(&page);
        return Ok(crate::exit::OK);
    }
    if page.jobs.is_empty() {
        println!("no jobs match");
        return Ok(crate::exit::OK);
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = page
        .jobs
        .iter()
        .map(|v| {
            let job = &v.job;
            let status = match (&v.waiting_reason, job.state) {
                // A pipeline says which step runs: "running: confirm, attempt 2/3".
                (None, retryd_core::JobState::Running) if v.step_status.is_some() => {
                    v.step_status.clone().unwrap_or_default()
                }
                (Some(reason), _) => reason.clone(),
                (None, retryd_core::JobState::Succeeded) => format!(
                    "done after {} attempt{}",
                    job.attempt,
                    if job.attempt == 1 { "" } else { "s" }
                ),
                (None, _) => format!(
                    "attempt {} running on {}",
                    job.attempt,
                    job.lease_owner.as_deref().unwrap_or("?")
                ),
            };
            vec![
                job.id.to_string(),
                output::state(job.state.as_str()),
                job.queue.clone(),
                job.kind.clone(),
                job.target.clone().unwrap_or_else(|| "-".into()),
                attempts_text(v),
                output::relative(job.updated_at, now),
                truncate(&status, 70),
            ]
        })
        .collect();
    table(
        "",
        &[
            "ID", "STATE", "QUEUE", "KIND", "TARGET", "ATTEMPTS", "UPDATED", "STATUS",
        ],
        &rows,
    );
    if let Some(cursor) = page.next_cursor {
        println!("{}", dim(&format!("more: retryd jobs --cursor {cursor}")));
    }
    Ok(crate::exit::OK)
}

/// Reads a job's whole stored output, page by page.
async fn each_log_line(client: &Client, id: &str, mut each: impl FnMut(LogLine)) -> Result<()> {
    let mut after = 0;
    loop {
        let page: LogPage = client
            .get(&format!("/jobs/{id}/log?after={after}&limit=5000"))
            .await?;
        let done = page.lines.is_empty() || page.complete;
        after = page.next_after;
        page.lines.into_iter().for_each(&mut each);
        if done {
            return Ok(());
        }
    }
}

async fn tail_of_last_attempt(client: &Client, id: &str, attempt: u32) -> Result<Vec<LogLine>> {
    let mut lines = Vec::new();
    each_log_line(client, id, |line| {
        if line.attempt == attempt {
            lines.push(line);
        }
    })
    .await?;
    let skip = lines.len().saturating_sub(20);
    Ok(lines.split_off(skip))
}

fn print_line(line: &LogLine) {
    let stream = match line.stream {
        Stream::Stdout => dim("out"),
        Stream::Stderr => output::yellow("err"),
        Stream::System => output::paint("36", "sys"),
    };
    println!("  {} {stream} {}", dim(&output::time(line.at)), line.line);
}

pub async fn show(client: &Client, id: &str, json: bool) -> Result<u8> {
    let view: JobView = client.get(&format!("/jobs/{id}")).await?;
    let attempts: Vec<Attempt> = client.get(&format!("/jobs/{id}/attempts")).await?;
    let events: Vec<Event> = client.get(&format!("/jobs/{id}/events")).await?;
    let last = attempts.last().map_or(0, |a| a.number);
    let output_lines = if last > 0 {
        tail_of_last_attempt(client, id, last).await?
    } else {
        Vec::new()
    };
    if json {
        output::json(
            &json!({ "job": view, "attempts": attempts, "events": events, "last_output": output_lines }),
        );
        return Ok(crate::exit::OK);
    }
    let job = &view.job;
    let policy = &job.policy;
    println!(
        "{} {}  {}",
        bold("Job"),
        bold(&job.id.to_string()),
        output::state(job.state.as_str())
    );
    let field = |name: &str, value: String| println!("  {:<10}{value}", dim(name));
    field("action", job.action.summary());
    field(
        "queue",
        format!(
            "{}   kind {}   target {}   priority {}",
            job.queue,
            job.kind,
            job.target.as_deref().unwrap_or("-"),
            job.priority
        ),
    );
    field(
        "policy",
        format!(
            "{} ({} attempts, {} ×{}, cap {}, jitter {:?})",
            job.policy_name,
            policy.max_attempts,
            retryd_core::duration::format(policy.initial_delay),
            policy.multiplier,
            retryd_core::duration::format(policy.max_delay),
            policy.jitter
        )
        .to_lowercase(),
    );
    field("attempts", attempts_text(&view));
    if let retryd_core::Action::Pipeline(pipeline) = &job.action {
        if let Some(status) = &view.step_status {
            field("step", status.clone());
        }
        for (index, step) in pipeline.steps.iter().enumerate() {
            let done = job.steps.get(index);
            let state = match done {
                Some(record) => {
                    let outputs: Vec<String> = record
                        .outputs
                        .iter()
                        .map(|(k, v)| format!("{k}={}", truncate(v, 40)))
                        .collect();
                    let mut text = format!(
                        "{} after {} attempt(s)",
                        match record.status {
                            StepStatus::Succeeded => output::green("succeeded"),
                            StepStatus::Failed => output::yellow("failed (non-blocking)"),
                        },
                        record.attempts
                    );
                    if let Some(error) = &record.error {
                        text.push_str(&format!(": {}", truncate(error, 80)));
                    }
                    if !outputs.is_empty() {
                        text.push_str(&format!("  → {}", outputs.join(" ")));
                    }
                    text
                }
                None if index == job.steps.len() => format!("{} (current)", job.state),
                None => dim("not run yet"),
            };
            println!("    {}. {:<16}{state}", index + 1, step.name);
        }
    }
    field(
        "created",
        format!(
            "{} by {}",
            output::datetime(job.created_at),
            job.created_by.as_deref().unwrap_or("-")
        ),
    );
    if let Some(deadline) = job.deadline {
        field("deadline", output::datetime(deadline));
    }
    if !job.labels.is_empty() {
        field(
            "labels",
            job.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if let Some(reason) = &view.waiting_reason {
        field("status", reason.clone());
    }
    if let Some(diagnosis) = &view.diagnosis {
        println!("\n{}", bold("Diagnosis"));
        println!("  {}", output::red(&diagnosis.summary));
        for step in &diagnosis.next_steps {
            println!("  → {step}");
        }
    }
    if !attempts.is_empty() {
        println!("\n{}", bold("Attempts"));
        let rows: Vec<Vec<String>> = attempts
            .iter()
            .map(|a| {
                let took = a.finished_at.map_or("running".to_owned(), |f| {
                    format!(
                        "{:.2}s",
                        (f - a.started_at).num_milliseconds() as f64 / 1000.0
                    )
                });
                let then = match (a.next_delay_ms, &a.delay_reason) {
                    (Some(ms), Some(why)) => format!(
                        "retry in {} ({why})",
                        retryd_core::duration::format(std::time::Duration::from_millis(ms))
                    ),
                    _ => String::new(),
                };
                vec![
                    a.number.to_string(),
                    a.step.clone().unwrap_or_else(|| "-".into()),
                    output::time(a.started_at),
                    took,
                    a.outcome.map_or("running", |o| o.as_str()).to_owned(),
                    a.exit_code.map_or("-".to_owned(), |c| c.to_string()),
                    a.class.map_or("-", |c| c.as_str()).to_owned(),
                    a.rule.clone().unwrap_or_else(|| "-".into()),
                    then,
                ]
            })
            .collect();
        let mut headers = vec![
            "#", "STEP", "STARTED", "TOOK", "OUTCOME", "EXIT", "CLASS", "RULE", "THEN",
        ];
        let mut rows = rows;
        // The STEP column only for pipelines.
        if attempts.iter().all(|a| a.step.is_none()) {
            headers.remove(1);
            rows.iter_mut().for_each(|row| {
                row.remove(1);
            });
        }
        table("  ", &headers, &rows);
    }
    println!("\n{}", bold("Timeline"));
    for event in &events {
        let from = event.from.map_or("·".to_owned(), |f| f.to_string());
        // The actor is shown unless the reason already names it.
        let actor = if event.reason.contains(&event.actor) {
            String::new()
        } else {
            format!(" {}", dim(&format!("({})", event.actor)))
        };
        println!(
            "  {}  {from} → {}  {}{actor}",
            dim(&output::time(event.at)),
            output::state(event.to.as_str()),
            event.reason
        );
    }
    if !output_lines.is_empty() {
        println!("\n{}", bold(&format!("Last output (attempt {last})")));
        for line in &output_lines {
            print_line(line);
        }
    }
    Ok(crate::exit::OK)
}

pub async fn logs(client: &Client, id: &str, follow: bool, json: bool) -> Result<u8> {
    let print = |line: LogLine| {
        if json {
            println!("{}", serde_json::to_string(&line).unwrap_or_default());
        } else {
            let prefix = dim(&format!("{} #{}", output::time(line.at), line.attempt));
            println!(
                "{prefix} {}{}",
                if line.stream == Stream::Stderr {
                    output::yellow("! ")
                } else {
                    String::new()
                },
                line.line
            );
        }
    };
    if follow {
        client
            .follow_ndjson(&format!("/jobs/{id}/log?follow=true"), print)
            .await?;
        let view: JobView = client.get(&format!("/jobs/{id}")).await?;
        return Ok(crate::commands::submit::exit_code(view.job.state));
    }
    each_log_line(client, id, print).await?;
    Ok(crate::exit::OK)
}

pub async fn cancel(client: &Client, id: &str, json: bool) -> Result<u8> {
    let mut view: JobView = client
        .post(&format!("/jobs/{id}/cancel"), &json!({}))
        .await?;
    // A running attempt stops within moments; wait briefly so that the answer is final.
    for _ in 0..40 {
        if view.job.state.is_terminal() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = client.get(&format!("/jobs/{id}")).await?;
    }
    if json {
        output::json(&view);
    } else {
        println!(
            "job {} {}",
            view.job.id,
            output::state(view.job.state.as_str())
        );
    }
    Ok(crate::exit::OK)
}

/// Retry now or requeue; with `--arg`, `--env`, `--policy`… the job is requeued with those
/// changes (recorded in its events).
pub async fn retry(client: &Client, args: crate::cli::RetryArgs, json: bool) -> Result<u8> {
    let (id, reset) = (&args.id, args.reset);
    let mut body = json!({ "reset": reset });
    if !args.args.is_empty() {
        body["args"] = json!(args.args);
    }
    let mut env = serde_json::Map::new();
    for pair in &args.env {
        let (key, value) = super::submit::key_value("--env", pair)?;
        env.insert(key, json!(value));
    }
    for pair in &args.secret_env {
        let (key, value) = super::submit::secret_env(pair)?;
        env.insert(key, json!({ "value": value, "secret": true }));
    }
    for key in &args.unset_env {
        env.insert(key.clone(), serde_json::Value::Null);
    }
    if !env.is_empty() {
        body["env"] = serde_json::Value::Object(env);
    }
    if let Some(policy) = &args.policy {
        body["policy"] = super::submit::policy_value(policy)?;
    }
    let view: JobView = client.post(&format!("/jobs/{id}/retry"), &body).await?;
    if json {
        output::json(&view);
    } else {
        let reset_note = if reset { " with attempts reset" } else { "" };
        println!(
            "job {} requeued{reset_note}: {}",
            view.job.id,
            output::state(view.job.state.as_str())
        );
        if let Some(reason) = &view.waiting_reason {
            println!("  {}", dim(reason));
        }
    }
    Ok(crate::exit::OK)
}
