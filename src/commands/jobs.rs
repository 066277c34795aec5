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

/// A word for the shell: quoted when it holds anything but plain characters.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,=:/@".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The command that lists the next page: the same filters, from the cursor (issue 15: the
/// hint dropped `--state failed,retrying` and listed every job from there on).
fn next_page_hint(args: &JobsArgs, cursor: &str) -> String {
    let mut hint = "retryd jobs".to_owned();
    for (flag, value) in [
        ("--state", &args.state),
        ("--queue", &args.queue),
        ("--kind", &args.kind),
        ("--target", &args.target),
        ("--label", &args.label),
    ] {
        if let Some(value) = value {
            hint.push_str(&format!(" {flag} {}", shell_word(value)));
        }
    }
    if args.limit != crate::cli::DEFAULT_JOBS_LIMIT {
        hint.push_str(&format!(" --limit {}", args.limit));
    }
    if args.oldest {
        hint.push_str(" --oldest");
    }
    if args.wide {
        hint.push_str(" --wide");
    }
    hint.push_str(&format!(" --cursor {cursor}"));
    hint
}

/// One line of why a job is where it is. A finished job says how it ended and the rule
/// that decided it; its error has a column of its own.
fn status_text(view: &JobView) -> String {
    let job = &view.job;
    match (&view.waiting_reason, job.state) {
        // A pipeline says which step runs: "running: confirm, attempt 2/3".
        (None, retryd_core::JobState::Running) if view.step_status.is_some() => {
            view.step_status.clone().unwrap_or_default()
        }
        (Some(_), state) if state.is_terminal() => {
            let reason = job.finish_reason.as_deref().unwrap_or("no reason recorded");
            // "attempts exhausted (3 of 3): attempt 3 failed (…)": the head says it.
            let head = reason.split(": attempt").next().unwrap_or(reason);
            match &job.last_rule {
                Some(rule) if state == retryd_core::JobState::Failed => {
                    format!("{state}: {head} ({rule})")
                }
                _ => format!("{state}: {head}"),
            }
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
    }
}

pub async fn list(client: &Client, args: JobsArgs, json: bool) -> Result<u8> {
    let query: Vec<(&str, String)> = [
        ("state", args.state.clone()),
        ("queue", args.queue.clone()),
        ("kind", args.kind.clone()),
        ("target", args.target.clone()),
        ("label", args.label.clone()),
        ("cursor", args.cursor.clone()),
        ("order", args.oldest.then(|| "oldest".to_owned())),
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
    let cut = |text: &str, max: usize| {
        if args.wide {
            text.to_owned()
        } else {
            output::cut_at_word(text, max)
        }
    };
    let rows: Vec<Vec<String>> = page
        .jobs
        .iter()
        .map(|v| {
            let job = &v.job;
            let error = match job.state {
                retryd_core::JobState::Succeeded => String::new(),
                _ => job.last_error.clone().unwrap_or_default(),
            };
            vec![
                job.id.to_string(),
                output::state(job.state.as_str()),
                job.queue.clone(),
                job.kind.clone(),
                job.target.clone().unwrap_or_else(|| "-".into()),
                attempts_text(v),
                output::relative(job.updated_at, now),
                cut(&status_text(v), 90),
                cut(&error, 60),
            ]
        })
        .collect();
    table(
        "",
        &[
            "ID", "STATE", "QUEUE", "KIND", "TARGET", "ATTEMPTS", "UPDATED", "STATUS", "ERROR",
        ],
        &rows,
    );
    if let Some(cursor) = page.next_cursor {
        println!(
            "{}",
            dim(&format!(
                "more: {}",
                next_page_hint(&args, &cursor.to_string())
            ))
        );
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
    let field = |name: &str, value: String| println!("  {}{value}", output::label(name, 10));
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
                    a.node.clone(),
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
        // NODE: where a full disk or memory shortage that failed the attempt is.
        let mut headers = vec![
            "#", "STEP", "NODE", "STARTED", "TOOK", "OUTCOME", "EXIT", "CLASS", "RULE", "THEN",
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

/// The note printed before an attempt's lines when its bounded tail dropped older output.
fn dropped_note(attempt: &Attempt) -> Option<String> {
    (attempt.output_dropped_bytes > 0).then(|| {
        format!(
            "[attempt {}: {} bytes of earlier output dropped; only the last part of its output is kept]",
            attempt.number, attempt.output_dropped_bytes
        )
    })
}

pub async fn logs(client: &Client, id: &str, follow: bool, json: bool) -> Result<u8> {
    // Which attempts lost output to the bounded tail (issue 15: `logs` did not say).
    let attempts: Vec<Attempt> = client.get(&format!("/jobs/{id}/attempts")).await?;
    let mut noted = std::collections::BTreeSet::new();
    let mut print = |line: LogLine| {
        if json {
            println!("{}", serde_json::to_string(&line).unwrap_or_default());
            return;
        }
        if noted.insert(line.attempt)
            && let Some(note) = attempts
                .iter()
                .find(|a| a.number == line.attempt)
                .and_then(dropped_note)
        {
            println!("{}", output::yellow(&note));
        }
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
    };
    if follow {
        client
            .follow_ndjson(&format!("/jobs/{id}/log?follow=true"), &mut print)
            .await?;
        let view: JobView = client.get(&format!("/jobs/{id}")).await?;
        if !json {
            // Attempts that ran while following: their counts are known once they end.
            let after: Vec<Attempt> = client.get(&format!("/jobs/{id}/attempts")).await?;
            let known = |a: &Attempt| {
                attempts
                    .iter()
                    .any(|b| b.number == a.number && b.output_dropped_bytes > 0)
            };
            for note in after.iter().filter(|a| !known(a)).filter_map(dropped_note) {
                eprintln!("{}", output::yellow(&note));
            }
        }
        return Ok(crate::commands::submit::exit_code(view.job.state));
    }
    each_log_line(client, id, print).await?;
    Ok(crate::exit::OK)
}

/// Longest wait for a running attempt to stop: the node's SIGTERM-to-SIGKILL grace is at most
/// 10 minutes.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10 * 60 + 30);

pub async fn cancel(client: &Client, id: &str, json: bool) -> Result<u8> {
    let mut view: JobView = client
        .post(&format!("/jobs/{id}/cancel"), &json!({}))
        .await?;
    // A running attempt gets SIGTERM, and SIGKILL after the node's grace period if it
    // ignores it: wait for the final state rather than answer `running` (issue 15).
    let started = std::time::Instant::now();
    let mut status = output::StatusLine::new();
    while !view.job.state.is_terminal() && started.elapsed() < CANCEL_WAIT {
        status.update(&format!(
            "waiting for attempt {} to stop ({}s): SIGTERM sent, SIGKILL follows after the node's grace period",
            view.job.attempt,
            started.elapsed().as_secs()
        ));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = client.get(&format!("/jobs/{id}")).await?;
    }
    status.clear();
    if json {
        output::json(&view);
        return Ok(crate::exit::OK);
    }
    let events: Vec<Event> = client.get(&format!("/jobs/{id}/events")).await?;
    let how = events
        .last()
        .filter(|e| e.to == view.job.state)
        .map(|e| format!(": {}", e.reason))
        .unwrap_or_default();
    println!(
        "job {} {}{how}",
        view.job.id,
        output::state(view.job.state.as_str())
    );
    if !view.job.state.is_terminal() {
        println!(
            "  {}",
            dim("the attempt has not stopped yet; `retryd show` tells when it has")
        );
        return Ok(crate::exit::ERROR);
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
    if let Some(deadline) = &args.deadline {
        body["deadline"] = json!(super::submit::instant("--deadline", deadline)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: the pagination hint of `jobs --state failed,retrying` dropped the filters.
    #[test]
    fn issue_15_the_next_page_hint_keeps_the_filters() {
        let args = JobsArgs {
            state: Some("failed,retrying".into()),
            queue: None,
            kind: Some("wordpress deploy".into()),
            target: None,
            label: Some("env=prod".into()),
            limit: 20,
            cursor: Some("01a2".into()),
            oldest: true,
            wide: false,
        };
        assert_eq!(
            next_page_hint(&args, "01a3"),
            "retryd jobs --state failed,retrying --kind 'wordpress deploy' --label env=prod --limit 20 --oldest --cursor 01a3"
        );
    }
}
