//! Sentences for people: why a job is waiting, and why a finished job stopped.

use crate::classify::Class;
use crate::job::Job;
use crate::state::JobState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S").to_string()
}

/// The one-line reason a job is not running (SPEC §5). `ahead` is the number of due jobs
/// before it in its queue, when known; `queue_paused` whether an operator paused its queue.
pub fn waiting_reason(
    job: &Job,
    now: DateTime<Utc>,
    ahead: Option<u64>,
    queue_paused: bool,
) -> Option<String> {
    if queue_paused && job.state.is_waiting() {
        return Some(format!("queue {} paused", job.queue));
    }
    // Held by its target's circuit or budget: that reason stands until a claim looks at the
    // job again (even in the moments after the instant it names).
    if let Some(reason) = &job.hold_reason
        && job.state.is_waiting()
    {
        return Some(reason.clone());
    }
    match job.state {
        JobState::Pending => {
            let due = job.next_attempt_at.unwrap_or(job.run_at);
            if due > now {
                Some(format!("waiting for its run_at ({})", clock(due)))
            } else {
                Some(match ahead {
                    Some(n) => format!(
                        "waiting for a free worker in queue {} ({n} ahead)",
                        job.queue
                    ),
                    None => format!("waiting for a free worker in queue {}", job.queue),
                })
            }
        }
        JobState::Retrying => {
            let due = job.next_attempt_at.unwrap_or(now);
            let (policy, max) = {
                let (name, policy) = job.effective_policy();
                (name, policy.max_attempts)
            };
            let next = job.effective_attempt() + 1;
            let step = job
                .current_step()
                .map(|(_, step)| format!("step {}, ", step.name))
                .unwrap_or_default();
            if due > now {
                Some(format!(
                    "backing off until {} ({step}attempt {next} of {max}, policy {policy})",
                    clock(due)
                ))
            } else {
                Some(format!(
                    "due since {}, waiting for a free worker in queue {} ({step}attempt {next} of {max}, policy {policy})",
                    clock(due),
                    job.queue
                ))
            }
        }
        JobState::Running => match (job.lease_expires_at, &job.lease_owner) {
            (Some(expiry), Some(owner)) if expiry < now => Some(format!(
                "lease of node {owner} expired {} s ago, being rescued",
                (now - expiry).num_seconds()
            )),
            _ => None,
        },
        JobState::Succeeded => None,
        JobState::Failed | JobState::Cancelled | JobState::Expired => Some(format!(
            "{}: {}",
            job.state,
            job.finish_reason.as_deref().unwrap_or("no reason recorded")
        )),
    }
}

/// The timeline entry of a claimed attempt. An attempt past the policy's maximum is one a
/// requeue without reset allowed.
pub fn attempt_started(number: u32, max_attempts: u32, node: &str) -> String {
    if number > max_attempts {
        format!(
            "attempt {number} started on {node} (one more after a requeue; the policy allows {max_attempts})"
        )
    } else {
        format!("attempt {number} of {max_attempts} started on {node}")
    }
}

/// The timeline entry of a claimed attempt of `job` (as it was before the claim): for a
/// pipeline, the current step and its attempt count under the step's policy.
pub fn claim_started(job: &Job, number: u32, node: &str) -> String {
    let (_, policy) = job.effective_policy();
    match job.current_step() {
        Some((_, step)) => format!(
            "step {}: {}",
            step.name,
            attempt_started(
                number.saturating_sub(job.step_attempt_base),
                policy.max_attempts,
                node
            )
        ),
        None => attempt_started(number, policy.max_attempts, node),
    }
}

/// Why a finished job stopped and what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Diagnosis {
    /// One sentence: why it stopped.
    pub summary: String,
    /// Concrete next steps.
    pub next_steps: Vec<String>,
}

/// The diagnosis of a job that did not succeed (`None` for any other).
pub fn diagnose(job: &Job) -> Option<Diagnosis> {
    let reason = job.finish_reason.as_deref().unwrap_or("no reason recorded");
    let id = job.id;
    let rule = job.last_rule.as_deref().unwrap_or("no rule");
    let error = job.last_error.as_deref().unwrap_or("no error message");
    let (summary, next_steps) = match job.state {
        JobState::Failed if job.last_error_class == Some(Class::Permanent) => (
            format!("Stopped after attempt {} on a permanent error ({rule}): {error}", job.effective_attempt()),
            vec![
                "Fix the cause shown in the last output lines (credentials, permissions, configuration, missing image).".to_owned(),
                format!("Then run it again from the start: retryd retry {id} --reset"),
                format!("If this error is in fact passing, add a policy rule that classifies it transient (rule matched: {rule})."),
            ],
        ),
        JobState::Failed => (
            format!("Gave up: {reason}. Last error ({}, {rule}): {error}", job.last_error_class.map_or("unclassified", Class::as_str)),
            vec![
                format!("Check whether the target{} is healthy; the failures were transient.", job.target.as_ref().map(|t| format!(" {t}")).unwrap_or_default()),
                format!("Once it is, requeue with fresh attempts: retryd retry {id} --reset"),
                format!("If it needs longer, use a policy with more attempts or a larger max_delay (now: {} attempts, cap {}).", job.policy.max_attempts, crate::duration::format(job.policy.max_delay)),
            ],
        ),
        JobState::Expired => (
            format!("Expired: {reason}."),
            vec![format!("Requeue it with a later deadline if it is still wanted: retryd retry {id} --reset")],
        ),
        JobState::Cancelled => (
            format!("Cancelled: {reason}."),
            vec![format!("Requeue it if it is still wanted: retryd retry {id}")],
        ),
        _ => return None,
    };
    // A pipeline stopped at its current step; a retry resumes there.
    let (summary, next_steps) = match job.current_step() {
        Some((index, step)) => {
            let total = match &job.action {
                crate::job::Action::Pipeline(p) => p.steps.len(),
                _ => 0,
            };
            let done: Vec<&str> = job.steps.iter().map(|s| s.name.as_str()).collect();
            let kept = if done.is_empty() {
                String::new()
            } else {
                format!("; completed steps ({}) do not run again", done.join(", "))
            };
            // A retry of a pipeline resumes; "from the start" would be wrong.
            let mut next_steps: Vec<String> = next_steps
                .into_iter()
                .filter(|s| !s.contains("--reset"))
                .collect();
            next_steps.push(format!(
                "Then resume the pipeline at step {}: retryd retry {id} (--reset also restarts the step's attempt count){kept}.",
                step.name
            ));
            (
                format!("Step {} ({} of {total}): {summary}", step.name, index + 1),
                next_steps,
            )
        }
        None => (summary, next_steps),
    };
    Some(Diagnosis {
        summary,
        next_steps,
    })
}

/// The failure fingerprint that groups the dead-letter queue: the error class and the last
/// error with its variable parts (numbers, ids, hashes, quoted values) masked, so that "41
/// jobs: connection refused to sftp.example" reads as one group.
pub fn fingerprint(class: Option<Class>, message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(200));
    let mut chars = message.chars().peekable();
    let mut last_was_mask = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || (c == '0' && chars.peek() == Some(&'x')) {
            // A run of digits, hex letters and separators that started with a digit.
            while chars
                .peek()
                .is_some_and(|n| n.is_ascii_hexdigit() || *n == 'x' || *n == '-' || *n == '.')
            {
                chars.next();
            }
            if !last_was_mask {
                out.push('#');
            }
            last_was_mask = true;
            continue;
        }
        if c == '"' || c == '\'' {
            let close = c;
            for n in chars.by_ref() {
                if n == close {
                    break;
                }
            }
            out.push_str("\"…\"");
            last_was_mask = true;
            continue;
        }
        last_was_mask = false;
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
        if out.len() >= 160 {
            out.push('…');
            break;
        }
    }
    format!(
        "{}: {}",
        class.map_or("unclassified", Class::as_str),
        out.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_mask_variable_parts() {
        let a = fingerprint(
            Some(Class::Transient),
            "connect to 10.0.0.12:22 failed: Connection refused (exit code 1)",
        );
        let b = fingerprint(
            Some(Class::Transient),
            "connect to 10.0.0.7:22 failed: Connection refused (exit code 1)",
        );
        assert_eq!(a, b);
        assert_eq!(
            a,
            "transient: connect to #:# failed: Connection refused (exit code #)"
        );
        let c = fingerprint(
            Some(Class::Permanent),
            "tx 0xdeadbeef reverted: 'nonce too low'",
        );
        assert_eq!(c, "permanent: tx # reverted: \"…\"");
    }
}
