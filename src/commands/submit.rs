//! `retryd submit`: build a job from flags, send it, optionally follow it to its end.

use crate::cli::{HttpOptions, JobOptions, SubmitArgs};
use crate::client::{Client, JobView};
use crate::output::{self, StatusLine};
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use retryd_core::Action;
use retryd_core::JobState;
use retryd_core::job::{CommandAction, EnvValue, Event, HttpAction};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Splits `KEY=VALUE`, naming the flag on error.
pub fn key_value(flag: &str, pair: &str) -> Result<(String, String)> {
    match pair.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => bail!("{flag}: expected KEY=VALUE, got {pair:?}"),
    }
}

/// `--secret-env K` (the value of `K` in this environment) or `K=@FILE` (the file's
/// contents, without the final newline). A value written on the command line would show in
/// `ps` and in shell history, so `K=VALUE` is refused.
pub fn secret_env(pair: &str) -> Result<(String, String)> {
    match pair.split_once('=') {
        None if !pair.is_empty() => match std::env::var(pair) {
            Ok(value) => Ok((pair.to_owned(), value)),
            Err(_) => bail!(
                "--secret-env {pair}: {pair} is not set in the environment; export it first, or write {pair}=@FILE"
            ),
        },
        Some((key, file)) if !key.is_empty() && file.starts_with('@') => {
            let path = &file[1..];
            let value = std::fs::read_to_string(path)
                .with_context(|| format!("--secret-env {key}: cannot read {path}"))?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            Ok((
                key.to_owned(),
                value.strip_suffix('\r').unwrap_or(value).to_owned(),
            ))
        }
        Some((key, _)) if !key.is_empty() => bail!(
            "--secret-env {key}=…: a secret on the command line shows in `ps` and shell history; \
             export {key} and write --secret-env {key}, or write --secret-env {key}=@FILE"
        ),
        _ => bail!("--secret-env: expected KEY (from the environment) or KEY=@FILE, got {pair:?}"),
    }
}

/// The command action the flags describe.
pub fn command_action(options: &JobOptions, command: &[String]) -> Result<CommandAction> {
    let (program, args) = command
        .split_first()
        .context("COMMAND: give the command to run after --")?;
    let mut env = BTreeMap::new();
    for pair in &options.env {
        let (k, v) = key_value("--env", pair)?;
        env.insert(k, EnvValue::Plain(v));
    }
    for pair in &options.secret_env {
        let (k, v) = secret_env(pair)?;
        env.insert(
            k,
            EnvValue::Marked {
                value: v,
                secret: true,
            },
        );
    }
    let timeout = timeout(options)?;
    let action = CommandAction {
        program: program.clone(),
        args: args.to_vec(),
        cwd: options.cwd.as_ref().map(|p| p.display().to_string()),
        env,
        stdin: None,
        timeout,
    };
    action.validate().map_err(|e| anyhow::anyhow!(e))?;
    Ok(action)
}

/// An instant given as RFC 3339 or as a duration from now.
pub fn instant(flag: &str, text: &str) -> Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let after = retryd_core::duration::parse(text)
        .map_err(|_| anyhow::anyhow!("{flag}: {text:?} is neither an RFC 3339 instant (2026-01-15T12:00:00Z) nor a duration (10m)"))?;
    Ok(Utc::now() + chrono::Duration::from_std(after).context("duration too large")?)
}

/// A policy flag: a name, or inline JSON.
pub fn policy_value(text: &str) -> Result<Value> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("--policy: invalid JSON: {e}"))
    } else {
        Ok(Value::String(text.to_owned()))
    }
}

/// The HTTP action the flags describe.
fn http_action(http: &HttpOptions, url: &str, options: &JobOptions) -> Result<HttpAction> {
    let mut headers = BTreeMap::new();
    for (flag, list, secret) in [
        ("--header", &http.headers, false),
        ("--secret-header", &http.secret_headers, true),
    ] {
        for pair in list {
            let (name, value) = pair
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("{flag}: expected \"Name: value\", got {pair:?}"))?;
            let value = value.trim().to_owned();
            let value = if secret {
                EnvValue::Marked {
                    value,
                    secret: true,
                }
            } else {
                EnvValue::Plain(value)
            };
            headers.insert(name.trim().to_owned(), value);
        }
    }
    let action = HttpAction {
        method: http
            .method
            .clone()
            .unwrap_or_else(|| "GET".to_owned())
            .to_uppercase(),
        url: url.to_owned(),
        headers,
        body: http.body.clone(),
        timeout: timeout(options)?,
        success_statuses: Vec::new(),
    };
    action.validate().map_err(|e| anyhow::anyhow!(e))?;
    Ok(action)
}

fn timeout(options: &JobOptions) -> Result<Option<std::time::Duration>> {
    options
        .timeout
        .as_deref()
        .map(|t| retryd_core::duration::parse(t).map_err(|e| anyhow::anyhow!("--timeout: {e}")))
        .transpose()
}

/// The body of `POST /jobs` the flags describe, without the fields of one submit (key,
/// deadline, run time): `schedule create` sends it as its job template.
pub fn job_body(args: &SubmitArgs) -> Result<Value> {
    let action = match (&args.http.http, &args.pipeline) {
        (Some(url), _) => Action::Http(http_action(&args.http, url, &args.options)?),
        (None, Some(file)) => {
            let options = &args.options;
            if options.timeout.is_some()
                || options.cwd.is_some()
                || !options.env.is_empty()
                || !options.secret_env.is_empty()
            {
                bail!(
                    "--timeout, --cwd, --env and --secret-env describe one command; give them per step in the pipeline file"
                );
            }
            Action::Pipeline(crate::pipeline_file::load(file)?)
        }
        (None, None) => Action::Command(command_action(&args.options, &args.command)?),
    };
    // The fields `submit --file` also takes, then the action.
    let mut body = Value::Object(line_defaults(args)?);
    body["action"] = serde_json::to_value(action)?;
    Ok(body)
}

pub async fn submit(client: &Client, args: SubmitArgs, json: bool) -> Result<u8> {
    if let Some(file) = &args.file {
        return submit_file(client, file, &args, json).await;
    }
    let mut body = job_body(&args)?;
    let fields: [(&str, Option<Value>); 3] = [
        ("idempotency_key", args.idempotency_key.map(Value::from)),
        (
            "deadline",
            args.deadline
                .as_deref()
                .map(|d| instant("--deadline", d))
                .transpose()?
                .map(|d| Value::from(d.to_rfc3339())),
        ),
        (
            "run_at",
            args.run_at
                .as_deref()
                .map(|d| instant("--run-at", d))
                .transpose()?
                .map(|d| Value::from(d.to_rfc3339())),
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    let view: JobView = client.post("/jobs", &body).await?;
    let id = view.job.id;
    if !args.wait {
        if json {
            output::json(&view);
        } else {
            let verb = if view.created == Some(false) {
                "already submitted"
            } else {
                "submitted"
            };
            println!(
                "{verb} job {} ({}, queue {}, policy {})",
                output::bold(&id.to_string()),
                output::state(view.job.state.as_str()),
                view.job.queue,
                view.job.policy_name
            );
            if let Some(reason) = &view.waiting_reason {
                println!("  {}", output::dim(reason));
            }
        }
        return Ok(crate::exit::OK);
    }
    follow(client, &id.to_string(), json).await
}

/// The exit code a finished job maps to.
pub fn exit_code(state: JobState) -> u8 {
    match state {
        JobState::Succeeded => crate::exit::OK,
        JobState::Cancelled => crate::exit::CANCELLED,
        JobState::Expired => crate::exit::EXPIRED,
        _ => crate::exit::FAILED,
    }
}

/// Follows a job live, printing each state change, until it finishes.
pub async fn follow(client: &Client, id: &str, json: bool) -> Result<u8> {
    let mut status = StatusLine::new();
    let mut seen = 0;
    loop {
        let view: JobView = client.get(&format!("/jobs/{id}")).await?;
        let events: Vec<Event> = client.get(&format!("/jobs/{id}/events")).await?;
        if !json {
            for event in events.iter().skip(seen) {
                status.clear();
                let from = event.from.map_or("·".to_owned(), |f| f.to_string());
                println!(
                    "{}  {} → {}  {}",
                    output::dim(&output::time(event.at)),
                    from,
                    output::state(event.to.as_str()),
                    event.reason
                );
            }
        }
        seen = events.len();
        let job = &view.job;
        if job.state.is_terminal() {
            status.clear();
            if json {
                output::json(&view);
            } else if let Some(diagnosis) = &view.diagnosis {
                println!("\n{}", output::bold(&diagnosis.summary));
                for step in &diagnosis.next_steps {
                    println!("  → {step}");
                }
                println!("{}", output::dim(&format!("details: retryd show {id}")));
            }
            return Ok(exit_code(job.state));
        }
        let line = match &view.waiting_reason {
            Some(reason) => format!("{}: {reason}", job.state),
            None => format!(
                "{}: attempt {} of {}",
                job.state, job.attempt, job.policy.max_attempts
            ),
        };
        status.update(&line);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Jobs per request of `submit --file`: the API's largest batch.
const BATCH: usize = 10_000;

/// One stored item of a batch, as the API answers it.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct BatchItem {
    id: retryd_core::JobId,
    state: JobState,
    queue: String,
    kind: String,
    created: bool,
}

#[derive(Debug, serde::Deserialize)]
struct BatchSubmitted {
    jobs: Vec<BatchItem>,
}

/// The job fields given by flags that `submit --file` lays under each line's own fields (and
/// a single `submit` sends as they are).
fn line_defaults(args: &SubmitArgs) -> Result<serde_json::Map<String, Value>> {
    let mut defaults = serde_json::Map::new();
    let fields: [(&str, Option<Value>); 5] = [
        ("queue", args.queue.clone().map(Value::from)),
        ("kind", args.kind.clone().map(Value::from)),
        ("target", args.target.clone().map(Value::from)),
        ("priority", args.priority.map(Value::from)),
        (
            "policy",
            args.options
                .policy
                .as_deref()
                .map(policy_value)
                .transpose()?,
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            defaults.insert(name.to_owned(), value);
        }
    }
    let mut labels = serde_json::Map::new();
    for pair in &args.labels {
        let (k, v) = key_value("--label", pair)?;
        labels.insert(k, Value::from(v));
    }
    if !labels.is_empty() {
        defaults.insert("labels".to_owned(), Value::Object(labels));
    }
    Ok(defaults)
}

/// `submit --file`: reads NDJSON jobs and sends them in batches. Each batch is stored whole
/// or not at all; on a refused batch the earlier ones stay stored and the errors name the
/// file's lines.
async fn submit_file(
    client: &Client,
    file: &std::path::Path,
    args: &SubmitArgs,
    json: bool,
) -> Result<u8> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("--file -: cannot read stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("--file: cannot read {}", file.display()))?
    };
    let defaults = line_defaults(args)?;
    // (line number, job) for every non-blank line.
    let mut jobs: Vec<(usize, Value)> = Vec::new();
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        if line.trim().is_empty() {
            continue;
        }
        let mut job: Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("--file: line {number} is not valid JSON: {e}"))?;
        let Some(fields) = job.as_object_mut() else {
            bail!("--file: line {number} must be a JSON object (a job), got {line:.60}");
        };
        for (name, value) in &defaults {
            match (fields.get_mut(name), value) {
                (Some(Value::Object(own)), Value::Object(default)) if name == "labels" => {
                    for (k, v) in default {
                        own.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                (Some(_), _) => {}
                (None, _) => {
                    fields.insert(name.clone(), value.clone());
                }
            }
        }
        jobs.push((number, job));
    }
    if jobs.is_empty() {
        bail!(
            "--file: {} holds no job (one JSON object per line)",
            file.display()
        );
    }
    let mut stored: Vec<BatchItem> = Vec::with_capacity(jobs.len());
    let mut status = StatusLine::new();
    for (batch_index, batch) in jobs.chunks(BATCH).enumerate() {
        status.update(&format!(
            "submitting jobs {}–{} of {}",
            batch_index * BATCH + 1,
            batch_index * BATCH + batch.len(),
            jobs.len()
        ));
        let body = json!({ "jobs": batch.iter().map(|(_, job)| job).collect::<Vec<_>>() });
        match client.post::<BatchSubmitted, _>("/jobs/batch", &body).await {
            Ok(answer) => stored.extend(answer.jobs),
            Err(crate::client::ClientError::Api {
                code,
                details,
                message,
                ..
            }) if code == "invalid_items" => {
                status.clear();
                let items = details
                    .as_ref()
                    .and_then(|d| d.get("items"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for item in &items {
                    let index = item["index"].as_u64().unwrap_or(0) as usize;
                    let line = batch.get(index).map_or(0, |(n, _)| *n);
                    let field = item["field"].as_str().unwrap_or("");
                    // The item's own path, without the batch's `jobs[i].` prefix.
                    let field = field.split_once("].").map_or(field, |(_, f)| f);
                    eprintln!(
                        "line {line}: {field}: {}",
                        item["message"].as_str().unwrap_or("")
                    );
                }
                if items.is_empty() {
                    eprintln!("{message}");
                }
                eprintln!(
                    "{} job(s) of lines {}–{} refused; nothing of that batch was stored ({} job(s) of earlier batches were)",
                    items.len(),
                    batch.first().map_or(0, |(n, _)| *n),
                    batch.last().map_or(0, |(n, _)| *n),
                    stored.len()
                );
                return Ok(crate::exit::ERROR);
            }
            Err(e) => {
                status.clear();
                return Err(e.into());
            }
        }
    }
    status.clear();
    let created = stored.iter().filter(|i| i.created).count();
    if json {
        output::json(&stored);
    } else {
        println!(
            "submitted {} job(s): {created} created, {} already existed (idempotency key)",
            stored.len(),
            stored.len() - created
        );
    }
    Ok(crate::exit::OK)
}
