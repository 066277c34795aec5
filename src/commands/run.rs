//! `retryd run`: a command under a retry policy, here and now, without a server — the same
//! executor, classification and decisions as the engine, printed as they happen.

use crate::cli::RunArgs;
use crate::commands::submit::{command_action, policy_value};
use crate::config::load_file;
use crate::output::{self, bold, dim, green, red};
use anyhow::{Context, Result, bail};
use chrono::Utc;
use retryd_core::decide::{Decision, FailedAttempt, decide};
use retryd_core::job::Stream;
use retryd_core::{Class, Policy};
use retryd_store::Policies;
use retryd_worker::attempt::classify_failure;
use retryd_worker::executor::OutputLine;
use retryd_worker::executor::command::{self, Limits};
use retryd_worker::tail::Tail;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const KILL_GRACE: Duration = Duration::from_secs(10);
/// The most output written in one go when lines queue up faster than they can be written.
const OUTPUT_BATCH_BYTES: usize = 64 * 1024;
/// Exit code after Ctrl-C, as shells report it.
const INTERRUPTED: u8 = 130;

fn resolve_policy(args: &RunArgs) -> Result<(String, Policy)> {
    let (file, _) = load_file(args.config.as_deref())?;
    let policies = Policies::new(
        file.policies,
        file.kinds,
        file.priority_rule.unwrap_or_default(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.message))?;
    match args
        .options
        .policy
        .as_deref()
        .map(policy_value)
        .transpose()?
    {
        None => Ok((
            "default".into(),
            policies.get("default").cloned().unwrap_or_default(),
        )),
        Some(serde_json::Value::String(name)) => match policies.get(&name) {
            Some(policy) => Ok((name, policy.clone())),
            None => bail!(
                "--policy: unknown policy '{name}' (known: {})",
                policies.names().join(", ")
            ),
        },
        Some(inline) => {
            let policy: Policy =
                serde_json::from_value(inline).map_err(|e| anyhow::anyhow!("--policy: {e}"))?;
            policy
                .validate()
                .map_err(|e| anyhow::anyhow!("--policy.{e}"))?;
            Ok(("inline".into(), policy))
        }
    }
}

pub async fn run(args: RunArgs, json: bool) -> Result<u8> {
    let (policy_name, policy) = resolve_policy(&args)?;
    let action = command_action(&args.options, &args.command)?;
    let interrupted = CancellationToken::new();
    let on_interrupt = interrupted.clone();
    // Listen from here on, not from when the task first runs: on `run`'s one runtime thread
    // that is only once the command has started, and a Ctrl-C in between would end retryd
    // and leave the command (in its own process group) running.
    let mut ctrl_c = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for Ctrl-C")?;
    tokio::spawn(async move {
        if ctrl_c.recv().await.is_some() {
            on_interrupt.cancel();
        }
    });
    let first_started = Utc::now();
    let mut previous_delay = None;
    let mut report = Vec::new();
    let mut attempt = 1;
    loop {
        if !json {
            eprintln!(
                "{} attempt {attempt} of {} {}",
                bold("retryd:"),
                policy.max_attempts,
                dim(&format!("(policy {policy_name}): {}", action.display()))
            );
        }
        let (lines_tx, lines_rx) = mpsc::channel::<OutputLine>(1024);
        let printer = tokio::spawn(print_output(lines_rx, json));
        let started = Instant::now();
        let limits = Limits {
            timeout: action.timeout_under(&policy),
            kill_grace: KILL_GRACE,
        };
        let stops = command::Stops {
            stop: interrupted.clone(),
            ..command::Stops::default()
        };
        // Run here and now, by no node: there is no process to record.
        let outcome = command::run(
            &action,
            limits,
            stops,
            lines_tx,
            command::Start::Now,
            |_| async { Ok(()) },
        )
        .await;
        let tail = printer
            .await?
            .context("cannot pass on the command's output")?;
        let took = format!("{:.2}s", started.elapsed().as_secs_f64());
        if outcome.ok {
            report.push(json!({ "attempt": attempt, "outcome": "succeeded", "took": took }));
            if json {
                output::json(&json!({ "outcome": "succeeded", "attempts": report }));
            } else {
                eprintln!("{} attempt {attempt} succeeded in {took}", green("✓"));
            }
            return Ok(crate::exit::OK);
        }
        if interrupted.is_cancelled() {
            eprintln!("{} interrupted during attempt {attempt}", red("✗"));
            return Ok(INTERRUPTED);
        }
        let (classification, error) = classify_failure(&policy, &outcome, &tail);
        let failure = FailedAttempt {
            attempt,
            class: classification.class,
            now: Utc::now(),
            first_started_at: Some(first_started),
            deadline: None,
            previous_delay,
            retry_after: None,
        };
        let decision = decide(&policy, &failure, &mut rand::rng());
        report.push(json!({
            "attempt": attempt, "outcome": "failed", "took": took, "error": error,
            "class": classification.class, "rule": classification.rule,
        }));
        let verdict = format!("{} ({})", classification.class, classification.rule);
        match decision {
            Decision::Retry { delay, why, .. } => {
                if !json {
                    eprintln!(
                        "{} attempt {attempt} failed: {} → {verdict}; next attempt in {} ({})",
                        output::yellow("↻"),
                        outcome.describe(),
                        retryd_core::duration::format(delay),
                        why.as_str()
                    );
                }
                previous_delay = Some(delay);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = interrupted.cancelled() => {
                        eprintln!("{} interrupted while waiting", red("✗"));
                        return Ok(INTERRUPTED);
                    }
                }
                attempt += 1;
            }
            Decision::Fail { reason } | Decision::Expire { reason } => {
                if json {
                    output::json(
                        &json!({ "outcome": "failed", "reason": reason, "attempts": report }),
                    );
                } else {
                    eprintln!(
                        "{} attempt {attempt} failed: {} → {verdict}",
                        red("✗"),
                        outcome.describe()
                    );
                    eprintln!("{} {reason}", bold("gave up:"));
                    if classification.class == Class::Permanent {
                        eprintln!(
                            "{}",
                            dim(
                                "a permanent error is not retried: fix the cause, or add a rule to the policy if it is in fact passing"
                            )
                        );
                    }
                }
                let code = outcome
                    .exit_code
                    .filter(|c| (1..=255).contains(c))
                    .unwrap_or(1);
                return Ok(code as u8);
            }
        }
    }
}

/// Passes a command's output on as it comes (its stderr to stderr, the rest to stdout, which
/// `--json` keeps for the report) and keeps the tail that classification reads.
///
/// `run` has one runtime thread (`main::runtime`), so the writes go through tokio's stdout and
/// stderr, which do the blocking write on the blocking pool: a reader of our output that
/// stops reading (a stalled pipe, a paused terminal) never stops the thread that fires the
/// attempt's timeout and Ctrl-C. No thread is started for a command that prints nothing. The
/// lines already queued are written together, in their order, one stream at a time.
async fn print_output(mut lines: mpsc::Receiver<OutputLine>, json: bool) -> std::io::Result<Tail> {
    let mut tail = Tail::new(retryd_worker::engine::DEFAULT_LOG_TAIL_BYTES);
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let mut batch = String::new();
    let mut next = None;
    loop {
        let Some(mut line) = (match next.take() {
            Some(line) => Some(line),
            None => lines.recv().await,
        }) else {
            return Ok(tail);
        };
        let to_stderr = line.stream == Stream::Stderr;
        batch.clear();
        loop {
            batch.push_str(&line.line);
            batch.push('\n');
            tail.push(line);
            if batch.len() >= OUTPUT_BATCH_BYTES {
                break;
            }
            match lines.try_recv() {
                Ok(queued) if (queued.stream == Stream::Stderr) == to_stderr => line = queued,
                Ok(queued) => {
                    next = Some(queued);
                    break;
                }
                Err(_) => break,
            }
        }
        if to_stderr {
            stderr.write_all(batch.as_bytes()).await?;
            stderr.flush().await?;
        } else if !json {
            stdout.write_all(batch.as_bytes()).await?;
            stdout.flush().await?;
        }
    }
}
