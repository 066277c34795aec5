//! One attempt, from claim to recorded result: run the action, capture its output into the
//! bounded tail and the store, classify a failure, decide, and record it under the lease.

use crate::engine::Engine;
use crate::executor::OutputLine;
use crate::executor::command::{self, Limits};
use crate::executor::{Outcome, Stopped, http};
use crate::tail::Tail;
use chrono::{DateTime, Utc};
use retryd_core::classify::{Classification, classify};
use retryd_core::decide::{Decision, FailedAttempt, decide};
use retryd_core::job::{Action, Stream};
use retryd_core::{AttemptOutcome, Class, Jitter, Policy};
use retryd_store::{AttemptResult, Claimed, Fence, Lease, NewLogLine, Next, Store};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

/// How often captured output is written to the store while an attempt runs.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Turns a decision into the job's next state and the event's reason.
pub fn next_from(decision: Decision, attempt: u32, what_happened: &str) -> (Next, String) {
    match decision {
        Decision::Retry { at, delay, why } => (
            Next::Retry {
                at,
                delay,
                delay_reason: why.as_str().to_owned(),
            },
            format!(
                "{what_happened}; attempt {} in {} ({})",
                attempt + 1,
                retryd_core::duration::format(delay),
                why.as_str()
            ),
        ),
        Decision::Fail { reason } => (Next::Failed, format!("{reason}: {what_happened}")),
        Decision::Expire { reason } => (Next::Expired, format!("{reason}: {what_happened}")),
    }
}

pub async fn run(engine: Engine, claimed: Claimed) {
    let job = &claimed.job;
    let span = info_span!("attempt", job_id = %job.id, queue = %job.queue, kind = %job.kind,
        target = job.target.as_deref().unwrap_or("-"), attempt = claimed.lease.attempt, step = "-", state = "running");
    run_inner(&engine, &claimed).instrument(span).await;
    engine.unregister(&claimed.lease);
}

async fn run_inner(engine: &Engine, claimed: &Claimed) {
    let inner = &engine.inner;
    let (job, lease) = (&claimed.job, &claimed.lease);
    let policy = engine
        .policies()
        .current(&job.policy_name, &job.policy)
        .clone();
    let Some((stop, cancelled)) = engine.running_handles(lease) else {
        // Cannot happen: the loop registers an attempt before spawning it. Its lease is not
        // renewed, so the rescuer reschedules the job.
        warn!("attempt was not registered; leaving it to the rescuer");
        return;
    };
    let started = inner.clock.now();
    info!(policy = %job.policy_name, "attempt started");

    // The attempt's own timeout, shortened to the job's deadline when that comes first.
    let until_deadline = job
        .deadline
        .map(|d| (d - started).to_std().unwrap_or(Duration::ZERO));
    let own_timeout = job.action.timeout_under(&policy);
    let (timeout, deadline_bound) = match (own_timeout, until_deadline) {
        (Some(t), Some(d)) if d < t => (Some(d), true),
        (None, Some(d)) => (Some(d), true),
        (t, _) => (t, false),
    };

    let (lines_tx, lines_rx) = mpsc::channel(1024);
    let pump = tokio::spawn(pump_log(
        inner.store.clone(),
        lease.clone(),
        lines_rx,
        inner.config.log_tail_bytes,
    ));
    let header = format!(
        "attempt {} of {} started on {} (policy {})",
        lease.attempt, policy.max_attempts, lease.node, job.policy_name
    );
    let _ = lines_tx
        .send(OutputLine {
            at: started,
            stream: Stream::System,
            line: header,
        })
        .await;
    let limits = Limits {
        timeout,
        kill_grace: inner.config.kill_grace,
    };
    let store = inner.store.clone();
    let owner = lease.clone();
    let remember = move |pid: u32| {
        if let Some(process) = crate::process::identify(pid) {
            tokio::spawn(async move {
                if let Err(e) = store.record_process(&owner, process).await {
                    warn!(error = %e, "could not record the attempt's process");
                }
            });
        }
    };
    let outcome = match &job.action {
        Action::Command(action) => {
            command::run(action, limits, stop.clone(), lines_tx, remember).await
        }
        Action::Http(action) => {
            http::run(&inner.http, action, timeout, stop.clone(), lines_tx).await
        }
    };
    let tail = pump.await.unwrap_or_else(|_| Tail::new(1));

    let now = inner.clock.now();
    let user_cancelled = cancelled.load(Ordering::SeqCst);
    let released = !user_cancelled && outcome.stopped == Some(Stopped::Requested);
    let mut result = AttemptResult {
        lease: lease.clone(),
        fence: Fence::Owner,
        now,
        outcome: AttemptOutcome::Succeeded,
        exit_code: outcome.exit_code,
        error: None,
        class: None,
        rule: None,
        output_dropped_bytes: tail.dropped_bytes(),
        next: Next::Succeeded,
        reason: format!("attempt {} succeeded", lease.attempt),
        actor: lease.node.clone(),
    };
    let attempt = lease.attempt;
    if outcome.ok {
        // The defaults above describe a success.
    } else if user_cancelled {
        result.outcome = AttemptOutcome::Cancelled;
        result.next = Next::Cancelled;
        result.error = Some("cancelled while running".into());
        result.reason = format!("cancelled during attempt {attempt}");
    } else if released {
        result.outcome = AttemptOutcome::Lost;
        result.class = Some(Class::Transient);
        result.rule = Some("released at shutdown".into());
        result.error = Some(format!(
            "attempt {attempt} stopped: node {} shut down",
            lease.node
        ));
        result.next = Next::Released { at: now };
        result.reason =
            format!("attempt {attempt} released at shutdown; it runs again and does not count");
    } else if outcome.stopped == Some(Stopped::Timeout) && deadline_bound {
        result.outcome = AttemptOutcome::TimedOut;
        result.next = Next::Expired;
        result.error = Some("killed: the job's deadline passed".into());
        result.reason = format!("deadline passed during attempt {attempt}");
    } else {
        failed(engine, claimed, &policy, &outcome, &tail, now, &mut result).await;
    }

    let summary = match &result.next {
        Next::Retry { delay, .. } => format!(
            "{} → {} ({}); next attempt in {}",
            outcome_text(&outcome),
            result.class.map_or("", Class::as_str),
            result.rule.as_deref().unwrap_or(""),
            retryd_core::duration::format(*delay)
        ),
        next => format!(
            "{} → {}: {}",
            outcome_text(&outcome),
            next.state(),
            result.reason
        ),
    };
    let closing = NewLogLine {
        at: now,
        stream: Stream::System,
        line: summary,
    };
    if let Err(e) = inner
        .store
        .append_log(lease, tail.next_index(), &[closing])
        .await
    {
        warn!(error = %e, "could not write the attempt's closing log line");
    }
    record(engine, &result).await;
}

fn outcome_text(outcome: &Outcome) -> String {
    match (outcome.ok, outcome.http_status) {
        (true, Some(status)) => format!("HTTP {status}"),
        (true, None) => "exit code 0".to_owned(),
        (false, _) => outcome.describe(),
    }
}

/// Classifies a failed attempt. Returns the classification and a one-line error: the last
/// line of output with how the attempt ended.
pub fn classify_failure(
    policy: &Policy,
    outcome: &Outcome,
    tail: &Tail,
) -> (Classification, String) {
    // An action that cannot start is classified on its error message; commands carry the
    // exit codes 126/127 a shell would give for the permanent cases.
    let output = match &outcome.start_error {
        Some(message) => message.clone(),
        None => tail.text(),
    };
    let classification = classify(&policy.rules, &outcome.failure(&output));
    let last_line = tail
        .last_lines(8)
        .into_iter()
        .rev()
        .find(|l| l.stream != Stream::System && !l.line.trim().is_empty())
        .map(|l| l.line.trim().to_owned());
    let described = outcome.describe();
    // A command's last output line says more than its exit code; an HTTP status line says
    // more than the body's last line.
    let error = match (&outcome.start_error, outcome.http_status, last_line) {
        (None, None, Some(line)) => format!("{} ({described})", crate::truncate(&line, 300)),
        _ => described,
    };
    (classification, error)
}

/// Classifies a failed attempt and decides what comes next.
async fn failed(
    engine: &Engine,
    claimed: &Claimed,
    policy: &Policy,
    outcome: &Outcome,
    tail: &Tail,
    now: DateTime<Utc>,
    result: &mut AttemptResult,
) {
    let (job, lease) = (&claimed.job, &claimed.lease);
    let timed_out = outcome.stopped == Some(Stopped::Timeout);
    let (classification, error) = classify_failure(policy, outcome, tail);
    result.error = Some(error);
    result.outcome = if timed_out {
        AttemptOutcome::TimedOut
    } else {
        AttemptOutcome::Failed
    };
    result.class = Some(classification.class);
    result.rule = Some(classification.rule.clone());
    let previous_delay = if policy.jitter == Jitter::Decorrelated {
        previous_delay(engine.inner.store.as_ref(), job.id).await
    } else {
        None
    };
    let failure = FailedAttempt {
        attempt: lease.attempt,
        class: classification.class,
        now,
        first_started_at: job.started_at,
        deadline: job.deadline,
        previous_delay,
        retry_after: outcome.retry_after,
    };
    let what = format!(
        "attempt {} failed ({}, {})",
        lease.attempt, classification.class, classification.rule
    );
    (result.next, result.reason) = next_from(
        decide(policy, &failure, &mut rand::rng()),
        lease.attempt,
        &what,
    );
}

async fn previous_delay(store: &dyn Store, id: retryd_core::JobId) -> Option<Duration> {
    let attempts = store.list_attempts(id).await.ok()?;
    attempts
        .iter()
        .rev()
        .find_map(|a| a.next_delay_ms)
        .map(Duration::from_millis)
}

/// Records the result, retrying while the database is unavailable: a result is never
/// dropped because of a passing error. A refused result (lease lost) is final.
async fn record(engine: &Engine, result: &AttemptResult) {
    let mut wait = Duration::from_millis(100);
    for _ in 0..40 {
        match engine.inner.store.finish_attempt(result).await {
            Ok((job, event)) => {
                info!(to = %job.state, reason = %event.reason, "attempt finished");
                engine
                    .metrics()
                    .attempt_finished(result.outcome.as_str(), result.class.map(Class::as_str));
                engine.publish(event);
                return;
            }
            Err(retryd_store::Error::LeaseLost { .. }) => {
                warn!(
                    "result refused: this attempt no longer holds its lease (it was rescued or cancelled elsewhere)"
                );
                return;
            }
            Err(retryd_store::Error::Backend(message)) => {
                warn!(error = %message, retry_in = ?wait, "could not record the attempt's result; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                warn!(error = %e, "could not record the attempt's result");
                return;
            }
        }
    }
    warn!(
        "gave up recording the attempt's result; the rescuer will reschedule the job when its lease expires"
    );
}

/// Moves output lines into the bounded tail and, every flush period, into the store.
async fn pump_log(
    store: Arc<dyn Store>,
    lease: Lease,
    mut lines: mpsc::Receiver<OutputLine>,
    cap: usize,
) -> Tail {
    let mut tail = Tail::new(cap);
    let mut pending: Vec<(u64, NewLogLine)> = Vec::new();
    let mut trimmed_to = 0;
    let mut tick = tokio::time::interval(LOG_FLUSH_EVERY);
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    let entry = NewLogLine { at: line.at, stream: line.stream, line: line.line.clone() };
                    pending.push((tail.push(line), entry));
                    if pending.len() >= 512 {
                        flush(store.as_ref(), &lease, &tail, &mut pending, &mut trimmed_to).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(store.as_ref(), &lease, &tail, &mut pending, &mut trimmed_to).await,
        }
    }
    flush(store.as_ref(), &lease, &tail, &mut pending, &mut trimmed_to).await;
    tail
}

async fn flush(
    store: &dyn Store,
    lease: &Lease,
    tail: &Tail,
    pending: &mut Vec<(u64, NewLogLine)>,
    trimmed_to: &mut u64,
) {
    let first_kept = tail.first_index();
    pending.retain(|(index, _)| *index >= first_kept);
    if let Some((first, _)) = pending.first() {
        let lines: Vec<NewLogLine> = pending.iter().map(|(_, l)| l.clone()).collect();
        if let Err(e) = store.append_log(lease, *first, &lines).await {
            warn!(error = %e, "could not store output lines; they stay in the in-memory tail");
        }
        pending.clear();
    }
    if first_kept > *trimmed_to {
        if let Err(e) = store.trim_log(lease, first_kept).await {
            warn!(error = %e, "could not trim the stored output");
        } else {
            *trimmed_to = first_kept;
        }
    }
}
