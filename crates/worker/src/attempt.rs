//! One attempt, from claim to recorded result: run the action, capture its output into the
//! bounded tail and the store, classify a failure, decide, and record it under the lease.

use crate::engine::Engine;
use crate::engine::gate::Ticket;
use crate::engine::record::{WhenDown, record};
use crate::engine::running::Handles;
use crate::executor::OutputLine;
use crate::executor::command::{self, Limits};
use crate::executor::{Outcome, Stopped, handler, http};
use crate::tail::Tail;
use chrono::{DateTime, Utc};
use retryd_core::JobState;
use retryd_core::classify::{Classification, classify};
use retryd_core::decide::{Decision, FailedAttempt, decide};
use retryd_core::job::{Action, Job, Stream};
use retryd_core::pipeline::{Step, StepRecord, StepStatus, export_from_json, parse_set_output};
use retryd_core::{AttemptOutcome, Class, Jitter, Policy};
use retryd_store::{AttemptResult, Claimed, Fence, Lease, LogAppend, NewLogLine, Next, Store};
use std::collections::BTreeMap;
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

/// The rule a rescue records on a lost attempt, and how lost attempts are told apart from
/// attempts released at shutdown (also recorded `lost`).
pub const LOST_RULE: &str = "lease expired";

/// The rule recorded on an attempt released at shutdown.
const RELEASED_RULE: &str = "released at shutdown";

/// Where an attempt lost with its node (the `lost`-th of its job) leaves the job: due again
/// after the policy's initial delay and not counted against `max_attempts`, unless the job
/// has now lost `max_lost_attempts` (it fails: something in it may take its node down) or
/// its deadline has passed.
pub fn after_lost(
    policy: &Policy,
    lost: u32,
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    what_happened: &str,
) -> (Next, String) {
    if deadline.is_some_and(|d| d <= now) {
        return (Next::Expired, format!("deadline passed: {what_happened}"));
    }
    if lost >= policy.max_lost_attempts {
        return (
            Next::Failed,
            format!("lost {lost} attempts (the node running it died each time): {what_happened}"),
        );
    }
    let delay = policy.initial_delay;
    let at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
    (
        Next::Lost { at, delay },
        format!(
            "{what_happened}; it runs again in {} and does not count ({lost} of {} lost attempts allowed)",
            retryd_core::duration::format(delay),
            policy.max_lost_attempts
        ),
    )
}

pub(crate) async fn run(engine: Engine, claimed: Claimed, ticket: Ticket) {
    let job = &claimed.job;
    let span = info_span!("attempt", job_id = %job.id, queue = %job.queue, kind = %job.kind,
        target = job.target.as_deref().unwrap_or("-"), attempt = claimed.lease.attempt,
        step = job.current_step().map_or("-", |(_, s)| s.name.as_str()), state = "running");
    let last = run_inner(&engine, &claimed, ticket).instrument(span).await;
    engine.unregister(&last);
}

/// What one run of the action (or of one pipeline step) gave.
struct Executed {
    outcome: Outcome,
    tail: Tail,
    /// `::set-output` values a command printed, or values exported from an HTTP reply.
    outputs: BTreeMap<String, String>,
    /// Output lines not stored yet: they go with the result.
    unsaved: LogAppend,
}

/// Runs the claimed attempt; for a pipeline, step after step under the same lease until one
/// fails or the last one ends. Returns the lease of the last attempt it ran.
async fn run_inner(engine: &Engine, claimed: &Claimed, ticket: Ticket) -> Lease {
    let inner = &engine.inner;
    let mut job = claimed.job.clone();
    let mut lease = claimed.lease.clone();
    let Some(handles) = engine.inner.running.handles(&lease) else {
        // Cannot happen: the loop registers an attempt before spawning it. Its lease is not
        // renewed, so the rescuer reschedules the job.
        warn!("attempt was not registered; leaving it to the rescuer");
        return lease;
    };
    // Claimed up to CLAIM_LEAD ahead of its due time: the action starts at that time.
    if let Ok(early) = (claimed.due_at - inner.clock.now()).to_std() {
        tokio::time::sleep(early).await;
    }
    // Claimed ahead of a free slot, perhaps (see `engine::gate`): the action waits for one.
    let slot = tokio::select! {
        biased;
        _ = handles.lease_lost.cancelled() => {
            warn!("attempt dropped before it started: this node no longer holds its lease");
            return lease;
        }
        _ = handles.stop.cancelled() => return unstarted(engine, &job, lease, &handles).await,
        _ = inner.draining.cancelled() => return unstarted(engine, &job, lease, &handles).await,
        slot = ticket.wait() => slot,
    };
    inner.running.started(&lease);
    let mut slot = Some(slot);
    if claimed.event.from == Some(JobState::Retrying) {
        let late = (inner.clock.now() - claimed.due_at)
            .num_microseconds()
            .unwrap_or(0);
        inner.metrics.retry_started_late(late.max(0) as f64 / 1e6);
    }
    loop {
        let (policy_name, snapshot) = job.effective_policy();
        let policy = engine
            .policies(&job.org)
            .current(policy_name, snapshot)
            .clone();
        let policy_name = policy_name.to_owned();
        let step = job
            .current_step()
            .map(|(index, step)| (index, step.clone()));
        if let Some((_, step)) = &step {
            tracing::Span::current().record("step", step.name.as_str());
            tracing::Span::current().record("attempt", lease.attempt);
        }
        let started = inner.clock.now();
        info!(policy = %policy_name, "attempt started");

        // The attempt's own timeout, shortened to the job's deadline when that comes first.
        let until_deadline = job
            .deadline
            .map(|d| (d - started).to_std().unwrap_or(Duration::ZERO));
        let own_timeout = match &step {
            Some((_, step)) => step.timeout_under(&policy),
            None => job.action.timeout_under(&policy),
        };
        let (timeout, deadline_bound) = match (own_timeout, until_deadline) {
            (Some(t), Some(d)) if d < t => (Some(d), true),
            (None, Some(d)) => (Some(d), true),
            (t, _) => (t, false),
        };
        let number = job.effective_attempt();
        let header = match &step {
            Some((index, step)) => format!(
                "step {} ({} of {}): attempt {number} of {} started on {} (policy {policy_name})",
                step.name,
                index + 1,
                steps_total(&job),
                policy.max_attempts,
                lease.node
            ),
            None => format!(
                "attempt {number} of {} started on {} (policy {policy_name})",
                policy.max_attempts, lease.node
            ),
        };
        let limits = Limits {
            timeout,
            kill_grace: inner.config.kill_grace,
        };
        let executed = execute(
            engine,
            &job,
            &lease,
            step.as_ref().map(|(_, s)| s),
            header,
            limits,
            &handles,
        )
        .await;
        if handles.lease_lost.is_cancelled() {
            // Another node holds the job now: a result from here would be refused.
            warn!("attempt stopped: this node no longer holds its lease");
            return lease;
        }
        let Executed {
            outcome,
            tail,
            outputs,
            unsaved,
        } = executed;

        let now = inner.clock.now();
        let user_cancelled = handles.cancelled.load(Ordering::SeqCst);
        let released = !user_cancelled && outcome.stopped == Some(Stopped::Requested);
        let mut result = AttemptResult {
            exit_code: outcome.exit_code,
            output_dropped_bytes: tail.dropped_bytes(),
            log: unsaved,
            ..succeeded(&lease, now)
        };
        let attempt = lease.attempt;
        // A pipeline step that is over, and the pipeline with it unless it continues.
        let mut step_over = None;
        if outcome.ok {
            if let Some((_, step)) = &step {
                step_over = Some(StepRecord {
                    name: step.name.clone(),
                    status: StepStatus::Succeeded,
                    attempts: number,
                    outputs,
                    error: None,
                    class: None,
                    rule: None,
                    finished_at: now,
                });
            }
        } else if user_cancelled {
            mark_cancelled(
                &mut result,
                format!("cancelled while running{}", outcome.escalation()),
                format!("cancelled during attempt {attempt}{}", outcome.escalation()),
            );
        } else if released {
            mark_released(
                &mut result,
                format!("attempt {attempt} stopped: node {} shut down", lease.node),
                format!("attempt {attempt} released at shutdown; it runs again and does not count"),
            );
        } else if outcome.stopped == Some(Stopped::Timeout) && deadline_bound {
            result.outcome = AttemptOutcome::TimedOut;
            result.next = Next::Expired;
            result.error = Some("killed: the job's deadline passed".into());
            result.reason = format!("deadline passed during attempt {attempt}");
        } else {
            failed(
                engine,
                &job,
                number,
                &policy,
                &outcome,
                &tail,
                now,
                &mut result,
            )
            .await;
            if let Some((_, step)) = &step
                && step.continue_on_failure
                && result.next == Next::Failed
            {
                // A non-blocking step that gave up: recorded, and the pipeline goes on.
                result.next = Next::Succeeded;
                step_over = Some(StepRecord {
                    name: step.name.clone(),
                    status: StepStatus::Failed,
                    attempts: number,
                    outputs: BTreeMap::new(),
                    error: result.error.clone(),
                    class: result.class,
                    rule: result.rule.clone(),
                    finished_at: now,
                });
            } else if let Some((_, step)) = &step {
                result.reason = format!("step {}: {}", step.name, result.reason);
            }
        }

        let next_step = step_over.as_ref().and_then(|_| match &job.action {
            Action::Pipeline(p) => p.steps.get(job.steps.len() + 1).map(|s| s.name.clone()),
            _ => None,
        });
        if let Some(record) = &step_over {
            result.reason = match &next_step {
                Some(next) => format!(
                    "step {} {}; step {next} next",
                    record.name,
                    step_status(record)
                ),
                None => pipeline_done(&job, record),
            };
        }
        result.step = step_over;
        close_log(&tail, &outcome, &mut result, now);
        match next_step {
            Some(next) => match advance(engine, &result, &next).await {
                Some((advanced, new_lease)) => {
                    info!(step = %next, "step started");
                    job = advanced;
                    lease = new_lease;
                }
                None => return lease,
            },
            None => {
                engine.complete_result(&job, &mut result);
                if let Some(slot) = slot.take() {
                    inner.gate.leave(slot);
                }
                engine.action_ended(&lease);
                record(engine, &result, WhenDown::Retry).await;
                return lease;
            }
        }
    }
}

/// The result of an attempt that succeeded, as a start for every other.
fn succeeded(lease: &Lease, now: DateTime<Utc>) -> AttemptResult {
    AttemptResult {
        lease: lease.clone(),
        fence: Fence::Owner,
        now,
        outcome: AttemptOutcome::Succeeded,
        exit_code: None,
        error: None,
        class: None,
        rule: None,
        output_dropped_bytes: 0,
        next: Next::Succeeded,
        reason: format!("attempt {} succeeded", lease.attempt),
        actor: lease.node.clone(),
        step: None,
        circuit: None,
        notify: Vec::new(),
        log: LogAppend::default(),
    }
}

/// Makes `result` a client's cancel.
fn mark_cancelled(result: &mut AttemptResult, error: String, reason: String) {
    result.outcome = AttemptOutcome::Cancelled;
    result.next = Next::Cancelled;
    result.error = Some(error);
    result.reason = reason;
}

/// Makes `result` a release at shutdown: due again at once, and it does not count.
fn mark_released(result: &mut AttemptResult, error: String, reason: String) {
    result.outcome = AttemptOutcome::Lost;
    result.class = Some(Class::Transient);
    result.rule = Some(RELEASED_RULE.into());
    result.error = Some(error);
    result.next = Next::Released { at: result.now };
    result.reason = reason;
}

/// Records an attempt stopped while it waited for a slot: cancelled by a client, or
/// released at shutdown (it runs again and does not count). Its action never started.
async fn unstarted(engine: &Engine, job: &Job, lease: Lease, handles: &Handles) -> Lease {
    let now = engine.now();
    let attempt = lease.attempt;
    let mut result = succeeded(&lease, now);
    if handles.cancelled.load(Ordering::SeqCst) {
        mark_cancelled(
            &mut result,
            "cancelled before it started".into(),
            format!("cancelled before attempt {attempt} started"),
        );
    } else {
        mark_released(
            &mut result,
            format!(
                "attempt {attempt} did not start: node {} shut down",
                lease.node
            ),
            format!(
                "attempt {attempt} released at shutdown before it started; it runs again and does not count"
            ),
        );
    }
    result.log.lines.push(NewLogLine {
        at: now,
        stream: Stream::System,
        line: format!(
            "attempt {attempt} → {}: {}",
            result.next.state(),
            result.reason
        ),
    });
    engine.complete_result(job, &mut result);
    engine.action_ended(&lease);
    record(engine, &result, WhenDown::Retry).await;
    lease
}

fn steps_total(job: &Job) -> usize {
    match &job.action {
        Action::Pipeline(p) => p.steps.len(),
        _ => 1,
    }
}

fn step_status(record: &StepRecord) -> String {
    match record.status {
        StepStatus::Succeeded => format!("succeeded after {} attempt(s)", record.attempts),
        StepStatus::Failed => format!(
            "failed (non-blocking, {}): {}",
            record.class.map_or("unclassified", Class::as_str),
            record.error.as_deref().unwrap_or("no error")
        ),
    }
}

/// The reason a pipeline succeeded, naming the non-blocking steps that failed.
fn pipeline_done(job: &Job, last: &StepRecord) -> String {
    let failed: Vec<&str> = job
        .steps
        .iter()
        .chain(std::iter::once(last))
        .filter(|s| s.status == StepStatus::Failed)
        .map(|s| s.name.as_str())
        .collect();
    let total = steps_total(job);
    if failed.is_empty() {
        format!("pipeline succeeded: {total} steps done")
    } else {
        format!(
            "pipeline succeeded: {total} steps done; non-blocking step(s) failed: {}",
            failed.join(", ")
        )
    }
}

/// Runs the job's action, or one pipeline step with its templates filled, capturing its
/// output.
async fn execute(
    engine: &Engine,
    job: &Job,
    lease: &Lease,
    step: Option<&Step>,
    header: String,
    limits: Limits,
    handles: &Handles,
) -> Executed {
    let stop = &handles.stop;
    let inner = &engine.inner;
    let (lines_tx, lines_rx) = mpsc::channel(1024);
    let pump = tokio::spawn(pump_log(
        engine.clone(),
        lease.clone(),
        lines_rx,
        inner.config.log_tail_bytes,
    ));
    let _ = lines_tx
        .send(OutputLine {
            at: inner.clock.now(),
            stream: Stream::System,
            line: header,
        })
        .await;
    let remember = |pid: u32| record_process(engine, lease, pid);
    let (action, export) = match step {
        None => (Ok(job.action.clone()), None),
        Some(step) => match (
            step.command_to_run(&job.steps),
            step.http_to_run(&job.steps),
        ) {
            (Some(command), _) => (command.map(Action::Command), None),
            (_, Some(http)) => (http.map(Action::Http), Some(&step.export)),
            _ => (Err("the step has no action".to_owned()), None),
        },
    };
    // Secrets are stored sealed: opened here, for this run only.
    let action = action.and_then(|mut action| {
        retryd_store::sealing::open(inner.config.secret_keys.as_deref(), &mut action)
            .map(|()| action)
    });
    let mut outcome = match &action {
        Ok(Action::Command(action)) => {
            let stops = command::Stops {
                stop: stop.clone(),
                fenced: handles.lease_lost.clone(),
            };
            command::run(
                action,
                limits,
                stops,
                lines_tx,
                command::Start::Recorded,
                remember,
            )
            .await
        }
        Ok(Action::Http(action)) => {
            let keep_body = export.is_some_and(|e| !e.is_empty());
            http::run(
                &inner.http,
                action,
                limits.timeout,
                stop.clone(),
                lines_tx,
                keep_body,
            )
            .await
        }
        Ok(Action::Pipeline(_)) | Err(_) => {
            drop(lines_tx);
            Outcome {
                start_error: Some(match &action {
                    Err(message) => message.clone(),
                    _ => "a pipeline cannot be a step of a pipeline".to_owned(),
                }),
                invalid_action: true,
                ..Outcome::default()
            }
        }
        Ok(Action::Handler(action)) => {
            let call = handler::Call {
                handlers: &inner.handlers,
                id: job.id,
                kind: &job.kind,
                attempt: lease.attempt,
                clock: inner.clock.clone(),
            };
            handler::run(call, action, limits.timeout, stop.clone(), lines_tx).await
        }
    };
    let (tail, mut outputs, unsaved) = pump
        .await
        .unwrap_or_else(|_| (Tail::new(1), BTreeMap::new(), LogAppend::default()));
    if step.is_none() {
        outputs.clear();
    }
    if let Some(export) = export
        && outcome.ok
    {
        match export_from_json(export, outcome.body.as_deref().unwrap_or("")) {
            Ok(values) => outputs = values,
            Err(message) => {
                // The reply succeeded but lacks what later steps need: that does not pass.
                outcome.ok = false;
                outcome.start_error = Some(message);
                outcome.invalid_action = true;
            }
        }
    }
    Executed {
        outcome,
        tail,
        outputs,
        unsaved,
    }
}

/// Records the command's process before it may start, retrying while the database is
/// unavailable, for at most a lease: by then the attempt is another node's to rescue.
async fn record_process(engine: &Engine, lease: &Lease, pid: u32) -> Result<(), String> {
    let process = crate::process::identify(pid)
        .ok_or("its process ended before it could be recorded".to_owned())?;
    let until = tokio::time::Instant::now() + engine.inner.config.lease;
    let mut wait = Duration::from_millis(50);
    loop {
        match engine.inner.store.record_process(lease, &process).await {
            Ok(()) => return Ok(()),
            Err(retryd_store::Error::Backend(message)) if tokio::time::Instant::now() < until => {
                warn!(error = %message, retry_in = ?wait, "could not record the command's process; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(retryd_store::Error::LeaseLost { .. }) => {
                return Err("this node no longer holds the attempt's lease".to_owned());
            }
            Err(e) => return Err(format!("could not record its process: {e}")),
        }
    }
}

/// Adds the attempt's closing log line to the lines its result writes.
fn close_log(tail: &Tail, outcome: &Outcome, result: &mut AttemptResult, now: DateTime<Utc>) {
    let summary = match &result.next {
        Next::Retry { delay, .. } => format!(
            "{} → {} ({}); next attempt in {}",
            outcome_text(outcome),
            result.class.map_or("", Class::as_str),
            result.rule.as_deref().unwrap_or(""),
            retryd_core::duration::format(*delay)
        ),
        next => format!(
            "{} → {}: {}",
            outcome_text(outcome),
            if result.step.is_some() && outcome.ok {
                "step done".to_owned()
            } else {
                next.state().to_string()
            },
            result.reason
        ),
    };
    if result.log.lines.is_empty() {
        result.log.first_index = tail.next_index();
    }
    result.log.lines.push(NewLogLine {
        at: now,
        stream: Stream::System,
        line: summary,
    });
}

/// Moves a pipeline to its next step under the same lease, retrying while the database is
/// unavailable. `None` when the lease was lost (the rescuer or a cancel took over).
async fn advance(engine: &Engine, result: &AttemptResult, next: &str) -> Option<(Job, Lease)> {
    let mut wait = Duration::from_millis(100);
    engine
        .inner
        .running
        .switch_attempt(&result.lease, true, None);
    for _ in 0..40 {
        match engine.inner.store.advance_step(result, next).await {
            Ok((job, lease, event)) => {
                engine
                    .inner
                    .running
                    .switch_attempt(&result.lease, false, Some(&lease));
                engine
                    .metrics()
                    .attempt_finished(result.outcome.as_str(), result.class.map(Class::as_str));
                engine.publish(event);
                return Some((job, lease));
            }
            Err(retryd_store::Error::Backend(message)) => {
                warn!(error = %message, retry_in = ?wait, "could not record the step's result; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                engine
                    .inner
                    .running
                    .switch_attempt(&result.lease, false, None);
                warn!(error = %e, "step result refused");
                return None;
            }
        }
    }
    engine
        .inner
        .running
        .switch_attempt(&result.lease, false, None);
    warn!(
        "gave up recording the step's result; the rescuer will reschedule the job when its lease expires"
    );
    None
}

fn outcome_text(outcome: &Outcome) -> String {
    match (outcome.ok, outcome.http_status) {
        (true, Some(status)) => format!("HTTP {status}"),
        (true, None) if outcome.exit_code.is_none() => "returned Ok".to_owned(),
        (true, None) => "exit code 0".to_owned(),
        (false, _) => outcome.describe(),
    }
}

/// Classifies a failed attempt. Returns the classification and a one-line error: the
/// attempt's headline line (see [`retryd_core::classify::headline`]) with how it ended.
pub fn classify_failure(
    policy: &Policy,
    outcome: &Outcome,
    tail: &Tail,
) -> (Classification, String) {
    // An action that cannot start is classified on its error message; commands carry the
    // exit codes 126/127 a shell would give for the permanent cases.
    let output = match (&outcome.start_error, &outcome.summary) {
        (Some(message), _) => message.clone(),
        // A handler's error message is what its rules should see last.
        (None, Some(summary)) if outcome.class.is_some() => format!("{}\n{summary}", tail.text()),
        (None, _) => tail.text(),
    };
    let classification = match outcome.class {
        Some(class @ (Class::Transient | Class::Permanent)) => Classification {
            class,
            rule: format!("the handler's error is {class}"),
            line: None,
        },
        _ => classify(&policy.rules, &outcome.failure(&output)),
    };
    let lines = tail
        .lines()
        .filter(|l| l.stream != Stream::System)
        .map(|l| (l.stream == Stream::Stderr, l.line.as_str()));
    let headline = retryd_core::classify::headline(&classification, lines);
    let described = outcome.describe();
    // The line that decided the class (else the last error line) says more than the exit
    // code; an HTTP status line or a handler's error says more than the last line logged.
    let error = match (&outcome.start_error, outcome.http_status, headline) {
        (None, None, Some(line)) if outcome.class.is_none() => {
            format!("{} ({described})", crate::truncate(line, 300))
        }
        _ => described,
    };
    (classification, error)
}

/// Classifies a failed attempt and decides what comes next.
#[allow(clippy::too_many_arguments)]
async fn failed(
    engine: &Engine,
    job: &Job,
    number: u32,
    policy: &Policy,
    outcome: &Outcome,
    tail: &Tail,
    now: DateTime<Utc>,
    result: &mut AttemptResult,
) {
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
        attempt: number,
        class: classification.class,
        now,
        first_started_at: job.started_at,
        deadline: job.deadline,
        previous_delay,
        retry_after: outcome.retry_after,
    };
    let what = format!(
        "attempt {number} failed ({}, {})",
        classification.class, classification.rule
    );
    (result.next, result.reason) =
        next_from(decide(policy, &failure, &mut rand::rng()), number, &what);
}

async fn previous_delay(store: &dyn Store, id: retryd_core::JobId) -> Option<Duration> {
    let attempts = store.list_attempts(id).await.ok()?;
    attempts
        .iter()
        .rev()
        .find_map(|a| a.next_delay_ms)
        .map(Duration::from_millis)
}

/// Moves output lines into the bounded tail and, every flush period, into the store. The
/// lines still unsaved at the end are returned: they are written with the result, so that an
/// attempt shorter than the flush period writes its log in the result's transaction.
async fn pump_log(
    engine: Engine,
    lease: Lease,
    mut lines: mpsc::Receiver<OutputLine>,
    cap: usize,
) -> (Tail, BTreeMap<String, String>, LogAppend) {
    let store = engine.store().clone();
    let mut tail = Tail::new(cap);
    let mut outputs = BTreeMap::new();
    let mut pending: Vec<(u64, NewLogLine)> = Vec::new();
    let mut trimmed_to = 0;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + LOG_FLUSH_EVERY,
        LOG_FLUSH_EVERY,
    );
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    if line.stream == Stream::Stdout
                        && let Some((name, value)) = parse_set_output(&line.line)
                    {
                        outputs.insert(name, value);
                    }
                    let entry = NewLogLine { at: line.at, stream: line.stream, line: line.line.clone() };
                    pending.push((tail.push(line), entry));
                    if pending.len() >= 512 {
                        flush(store.as_ref(), &lease, &tail, &mut pending, &mut trimmed_to).await;
                        engine.log_written(lease.job_id);
                    }
                }
                None => break,
            },
            _ = tick.tick() => if !pending.is_empty() {
                flush(store.as_ref(), &lease, &tail, &mut pending, &mut trimmed_to).await;
                engine.log_written(lease.job_id);
            },
        }
    }
    pending.retain(|(index, _)| *index >= tail.first_index());
    trim(store.as_ref(), &lease, &tail, &mut trimmed_to).await;
    let unsaved = LogAppend {
        first_index: pending
            .first()
            .map_or(tail.next_index(), |(index, _)| *index),
        lines: pending.into_iter().map(|(_, line)| line).collect(),
    };
    (tail, outputs, unsaved)
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
    trim(store, lease, tail, trimmed_to).await;
}

/// Drops stored lines the bounded tail no longer holds.
async fn trim(store: &dyn Store, lease: &Lease, tail: &Tail, trimmed_to: &mut u64) {
    let first_kept = tail.first_index();
    if first_kept > *trimmed_to {
        if let Err(e) = store.trim_log(lease, first_kept).await {
            warn!(error = %e, "could not trim the stored output");
        } else {
            *trimmed_to = first_kept;
        }
    }
}
