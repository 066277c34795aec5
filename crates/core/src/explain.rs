//! Sentences for people: why a job is waiting, and why a finished job stopped.

use crate::classify::Class;
use crate::job::Job;
use crate::state::JobState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S").to_string()
}

/// What is known around a waiting job, beyond the job itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Around {
    /// Due jobs before it in its queue, when known.
    pub ahead: Option<u64>,
    /// An operator paused its queue.
    pub queue_paused: bool,
    /// Its organization runs as many attempts as its limit allows: the limit.
    pub org_full: Option<u32>,
}

/// The one-line reason a job is not running (SPEC §5).
pub fn waiting_reason(job: &Job, now: DateTime<Utc>, around: Around) -> Option<String> {
    let Around {
        ahead,
        queue_paused,
        org_full,
    } = around;
    if queue_paused && job.state.is_waiting() {
        return Some(format!("queue {} paused", job.queue));
    }
    if let Some(limit) = org_full
        && job.state.is_waiting()
        && job.next_attempt_at.unwrap_or(job.run_at) <= now
    {
        return Some(format!(
            "waiting for its organization's share: {} runs {limit} attempts at once, its limit",
            job.org
        ));
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

/// What a permanent error asks a person to fix, by the rule that decided it, and whether the
/// fix is in the job's command (then `retry --arg/--env` carries it) or elsewhere.
fn permanent_fix(rule: &str) -> (&'static str, bool) {
    let table: &[(&str, &str, bool)] = &[
        (
            "output: image or repository not found",
            "the image or tag the command names does not exist, or the registry needs a login",
            true,
        ),
        (
            "output: invalid image reference",
            "the image reference in the command is malformed",
            true,
        ),
        (
            "output: container name already in use",
            "a container with that name exists: remove it or give the command another name",
            true,
        ),
        (
            "output: command not found",
            "the program is missing on the node or misspelt in the command",
            true,
        ),
        (
            "exit code 127",
            "the program is missing on the node or misspelt in the command",
            true,
        ),
        (
            "exit code 126",
            "the program is not executable: fix its mode or the path in the command",
            true,
        ),
        (
            "exit code 64",
            "the command's arguments or configuration were refused (a usage error)",
            true,
        ),
        (
            "output: invalid configuration",
            "the configuration the command reads is invalid",
            true,
        ),
        (
            "the action cannot start",
            "the action itself is malformed (see the error)",
            true,
        ),
        (
            "output: TLS certificate",
            "the TLS certificate is expired or not trusted: renew it on the target, or install its CA on the node",
            false,
        ),
        (
            "output: insufficient funds",
            "the account the action spends from lacks funds: top it up",
            false,
        ),
        (
            "output: authentication",
            "the credentials were refused: renew the token or key (retry --secret-env KEY=VALUE passes a new one)",
            false,
        ),
        (
            "output: permission denied",
            "the job lacks a permission on a file or resource: grant it, or point the command elsewhere",
            false,
        ),
        (
            "output: access denied",
            "the job lacks a permission on a file or resource: grant it, or point the command elsewhere",
            false,
        ),
        (
            "HTTP 4xx",
            "the request was refused as wrong or unauthorised: fix the URL, headers, body or credentials",
            false,
        ),
    ];
    table
        .iter()
        .find(|(prefix, ..)| rule.starts_with(prefix))
        .map_or(
            (
                "the cause shown in the error and the last output lines",
                true,
            ),
            |(_, what, in_command)| (*what, *in_command),
        )
}

/// What a transient error that ran out of attempts points at: the node that ran it (a full
/// disk, memory, file handles, a held package lock) rather than the target.
fn node_fault(rule: &str) -> Option<&'static str> {
    let table: &[(&str, &str)] = &[
        ("output: no space left on device", "free disk space"),
        (
            "output: out of memory",
            "free memory (or give the job a node with more)",
        ),
        ("output: too many open files", "raise the open-file limit"),
        (
            "output: package manager lock held",
            "let the other apt/dpkg run finish",
        ),
    ];
    table
        .iter()
        .find(|(prefix, _)| rule.starts_with(prefix))
        .map(|(_, what)| *what)
}

/// A regular expression for a rule that would match `error`: its words up to the first
/// variable part (a number, a quote), escaped, so that a person can paste it into a rule.
pub fn rule_pattern(error: &str) -> String {
    let error = error
        .rsplit_once(" (exited with code")
        .map_or(error, |(line, _)| line);
    let end = error
        .find(|c: char| c.is_ascii_digit() || c == '"' || c == '\'')
        .unwrap_or(error.len());
    let mut words: Vec<&str> = error[..end].split_whitespace().collect();
    while words.len() > 8 {
        words.pop();
    }
    let phrase = words.join(" ");
    let phrase = phrase.trim_end_matches(|c: char| !c.is_alphanumeric());
    let mut out = String::with_capacity(phrase.len());
    for c in phrase.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The diagnosis of a job that did not succeed (`None` for any other): why it stopped, and
/// advice that fits the case — a permanent error is fixed first; a transient one that ran
/// out of attempts points at the target or at the node, whichever the rule names; an
/// unclassified one asks for a rule.
pub fn diagnose(job: &Job) -> Option<Diagnosis> {
    let reason = job.finish_reason.as_deref().unwrap_or("no reason recorded");
    let id = job.id;
    let rule = job.last_rule.as_deref().unwrap_or("no rule");
    let error = job.last_error.as_deref().unwrap_or("no error message");
    let is_command = matches!(job.action, crate::job::Action::Command(_));
    let (summary, next_steps) = match (job.state, job.last_error_class) {
        (JobState::Failed, Some(Class::Permanent)) => {
            let (what, in_command) = permanent_fix(rule);
            let then = if in_command && is_command {
                format!(
                    "Then requeue it with the corrected command: retryd retry {id} --reset --arg ARG … (the new arguments, in order) or --env KEY=VALUE"
                )
            } else {
                format!("Then run it again from the start: retryd retry {id} --reset")
            };
            (
                format!(
                    "Stopped after attempt {} on a permanent error ({rule}): {error}",
                    job.effective_attempt()
                ),
                vec![
                    format!("Fix first: {what}. Another attempt without a fix fails the same way."),
                    then,
                    format!(
                        "If this error in fact passes by itself, add a policy rule that classifies it transient (rule matched: {rule})."
                    ),
                ],
            )
        }
        (JobState::Failed, Some(Class::Unknown) | None) => {
            let pattern = rule_pattern(error);
            (
                format!("Gave up: {reason}. No rule classified the last error: {error}"),
                vec![
                    "Nothing classified this error, so nothing says whether another attempt can help: read the last output lines for the cause.".to_owned(),
                    format!(
                        "Add a rule so that the next one is classified (and stops at once if permanent), in the rules of policy {}: {{\"class\": \"permanent\", \"output\": \"{}\"}} (retryd.toml [[policies.{}.rules]], or retryd policy update {} --json-policy '{{\"rules\": [...]}}' for a policy made with `policy create`).",
                        job.policy_name, pattern.replace('\\', "\\\\"), job.policy_name, job.policy_name
                    ),
                    format!("Once the cause is fixed, requeue with fresh attempts: retryd retry {id} --reset"),
                ],
            )
        }
        (JobState::Failed, Some(Class::Transient)) => {
            let summary = format!("Gave up: {reason}. Last error (transient, {rule}): {error}");
            let more = format!(
                "If it needs longer, use a policy with more attempts or a larger max_delay (now: {} attempts, cap {}).",
                job.policy.max_attempts,
                crate::duration::format(job.policy.max_delay)
            );
            match node_fault(rule) {
                Some(what) => (
                    summary,
                    vec![
                        format!(
                            "The error is on the node that ran the attempt, not the target: {what} there (its name is in the NODE column of the attempts)."
                        ),
                        format!("Then requeue with fresh attempts: retryd retry {id} --reset"),
                    ],
                ),
                None => (
                    summary,
                    vec![
                        match &job.target {
                            Some(target) => format!(
                                "Check whether the target {target} is healthy: every attempt failed transiently ({rule})."
                            ),
                            None => format!(
                                "Check whether the service the command talks to is healthy: every attempt failed transiently ({rule})."
                            ),
                        },
                        format!(
                            "Once it is, requeue with fresh attempts: retryd retry {id} --reset"
                        ),
                        more,
                    ],
                ),
            }
        }
        (JobState::Expired, _) => (
            format!("Expired: {reason}."),
            vec![format!(
                "Requeue it with a later deadline if it is still wanted: retryd retry {id} --reset --deadline 1h"
            )],
        ),
        (JobState::Cancelled, _) => (
            format!("Cancelled: {reason}."),
            vec![format!(
                "Requeue it if it is still wanted: retryd retry {id}"
            )],
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

/// What to do about one dead-letter group, first thing first: a permanent error is fixed
/// before anything is requeued (requeuing it as is fails the same way); a transient one
/// points at the node or the target; an unclassified one asks for a rule.
pub fn dlq_advice(class: Option<Class>, rule: Option<&str>, fingerprint: &str) -> Vec<String> {
    let rule = rule.unwrap_or("no rule");
    let requeue = format!(
        "retryd dlq requeue --fingerprint '{}' --reset",
        fingerprint.replace('\'', r"'\''")
    );
    match class {
        Some(Class::Permanent) => vec![
            format!(
                "Fix first: {}. Requeuing them as they are fails the same way.",
                permanent_fix(rule).0
            ),
            format!("After the fix, requeue all: {requeue} (or one by one with retryd retry ID --reset --arg/--env)"),
        ],
        Some(Class::Transient) => vec![
            match node_fault(rule) {
                Some(what) => format!("The error is on the node that ran them ({rule}): {what} there."),
                None => format!("Check the target they share: every attempt failed transiently ({rule})."),
            },
            format!("Once it is healthy, requeue all: {requeue}"),
        ],
        Some(Class::Unknown) | None => vec![
            "No rule classified this error: read one job's output (retryd show ID) and add a policy rule for it.".to_owned(),
            format!("Once the cause is fixed, requeue all: {requeue}"),
        ],
    }
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

    fn failed_job(class: Class, rule: &str, error: &str) -> Job {
        let now = Utc::now();
        Job {
            org: crate::org::default_org(),
            id: crate::JobId::new(),
            queue: "deploy".into(),
            kind: "deploy".into(),
            target: Some("metis-rpc".into()),
            action: crate::job::Action::Command(crate::job::CommandAction {
                program: "deploy.sh".into(),
                args: vec![],
                cwd: None,
                env: Default::default(),
                stdin: None,
                timeout: None,
            }),
            policy_name: "default".into(),
            policy: crate::Policy::default(),
            priority: 50,
            run_at: now,
            deadline: None,
            labels: Default::default(),
            idempotency_key: None,
            created_by: None,
            state: JobState::Failed,
            attempt: 3,
            next_attempt_at: None,
            last_error: Some(error.into()),
            last_error_class: Some(class),
            last_rule: Some(rule.into()),
            finish_reason: Some("attempts exhausted (3 of 3)".into()),
            lease_owner: None,
            lease_expires_at: None,
            attempt_id: None,
            cancel_requested: false,
            steps: vec![],
            step_attempt_base: 0,
            hold_reason: None,
            created_at: now,
            started_at: Some(now),
            finished_at: Some(now),
            updated_at: now,
        }
    }

    #[test]
    fn a_due_job_of_a_full_organization_waits_for_its_share() {
        let now = Utc::now();
        let job = Job {
            state: JobState::Pending,
            org: "acme".into(),
            next_attempt_at: Some(now),
            run_at: now,
            ..failed_job(Class::Transient, "r", "e")
        };
        let full = Around {
            org_full: Some(4),
            ..Around::default()
        };
        assert_eq!(
            waiting_reason(&job, now, full).as_deref(),
            Some("waiting for its organization's share: acme runs 4 attempts at once, its limit")
        );
        assert!(
            waiting_reason(&job, now, Around::default())
                .unwrap()
                .starts_with("waiting for a free worker"),
        );
        let paused = Around {
            queue_paused: true,
            ..full
        };
        assert!(
            waiting_reason(&job, now, paused)
                .unwrap()
                .contains("paused")
        );
    }

    fn advice(job: &Job) -> String {
        diagnose(job)
            .expect("a failed job has a diagnosis")
            .next_steps
            .join("\n")
    }

    /// Issue 15: a permanent error whose fix is in the command says to fix it first and how
    /// to requeue with the fix (`--arg/--env`).
    #[test]
    fn issue_15_a_permanent_error_is_fixed_first_then_requeued_with_the_fix() {
        let job = failed_job(
            Class::Permanent,
            "output: image or repository not found",
            "docker: Error response from daemon: manifest for acme/api:9.9 not found (exited with code 125)",
        );
        let steps = diagnose(&job).unwrap().next_steps;
        assert!(
            steps[0].starts_with("Fix first: the image or tag"),
            "{steps:?}"
        );
        assert!(
            steps[1].contains("--reset --arg") && steps[1].contains("--env KEY=VALUE"),
            "{steps:?}"
        );
        let funds = failed_job(
            Class::Permanent,
            "output: insufficient funds",
            "insufficient funds",
        );
        let steps = advice(&funds);
        assert!(steps.starts_with("Fix first: the account"), "{steps}");
        assert!(
            !steps.contains("--arg"),
            "the fix is not in the command: {steps}"
        );
        assert!(!steps.contains("healthy"), "{steps}");
    }

    /// Issue 15: ENOSPC during a build was blamed on the target; the full disk is the node's.
    #[test]
    fn issue_15_a_transient_error_points_at_the_node_or_the_target_by_its_evidence() {
        let disk = failed_job(
            Class::Transient,
            "output: no space left on device",
            "npm ERR! code ENOSPC (exited with code 1)",
        );
        let steps = advice(&disk);
        assert!(
            steps.contains("on the node that ran the attempt, not the target"),
            "{steps}"
        );
        assert!(steps.contains("free disk space"), "{steps}");
        assert!(!steps.contains("metis-rpc"), "{steps}");
        let refused = failed_job(
            Class::Transient,
            "output: connection refused or reset",
            "dial tcp 10.0.0.1:8545: connect: connection refused (exited with code 1)",
        );
        let steps = advice(&refused);
        assert!(
            steps.starts_with("Check whether the target metis-rpc is healthy"),
            "{steps}"
        );
    }

    /// Issue 15: `unknown` runs were told that "the failures were transient" and got no hint
    /// to write a rule.
    #[test]
    fn issue_15_an_unclassified_error_says_so_and_shows_the_rule_to_add() {
        let job = failed_job(
            Class::Unknown,
            "no rule matched",
            "Error: vault.deploy(): nonce 17 already used (exited with code 1)",
        );
        let diagnosis = diagnose(&job).unwrap();
        assert!(
            diagnosis.summary.contains("No rule classified"),
            "{diagnosis:?}"
        );
        let steps = diagnosis.next_steps.join("\n");
        assert!(
            steps.starts_with("Nothing classified this error"),
            "{steps}"
        );
        assert!(
            steps.contains(
                r#"{"class": "permanent", "output": "Error: vault\\.deploy\\(\\): nonce"}"#
            ),
            "{steps}"
        );
        assert!(!steps.contains("transient"), "{steps}");
    }

    /// Issue 15: every dead-letter group, permanent ones included, led with "requeue all".
    #[test]
    fn issue_15_a_permanent_dlq_group_leads_with_fix_first() {
        let permanent = dlq_advice(
            Some(Class::Permanent),
            Some("output: image or repository not found"),
            "permanent: docker: manifest for acme/api:# not found",
        );
        assert!(permanent[0].starts_with("Fix first:"), "{permanent:?}");
        assert!(
            permanent[1]
                .starts_with("After the fix, requeue all: retryd dlq requeue --fingerprint")
        );
        let transient = dlq_advice(
            Some(Class::Transient),
            Some("output: timeout"),
            "transient: x",
        );
        assert!(
            transient[0].starts_with("Check the target"),
            "{transient:?}"
        );
        let unknown = dlq_advice(Some(Class::Unknown), Some("no rule matched"), "it's odd");
        assert!(unknown[0].starts_with("No rule classified"), "{unknown:?}");
        assert!(
            unknown[1].contains(r"--fingerprint 'it'\''s odd'"),
            "{unknown:?}"
        );
    }

    #[test]
    fn rule_patterns_match_the_error_they_came_from() {
        let error = "Error: vault.deploy(): nonce 17 already used (exited with code 1)";
        let pattern = rule_pattern(error);
        assert_eq!(pattern, r"Error: vault\.deploy\(\): nonce");
        let rule = crate::classify::Rule {
            name: None,
            class: Class::Permanent,
            exit_codes: None,
            output: Some(pattern),
            http_status: None,
        };
        rule.validate().unwrap();
        let c = crate::classify::classify(
            &[rule],
            &crate::classify::Failure {
                exit_code: Some(1),
                output: "Error: vault.deploy(): nonce 18 already used\n",
                ..Default::default()
            },
        );
        assert_eq!(c.class, Class::Permanent);
    }
}
