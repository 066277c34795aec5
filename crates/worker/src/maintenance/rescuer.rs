//! The rescuer: attempts whose lease expired (their node died, froze or lost the database)
//! are recorded `lost` and their jobs scheduled by policy, after their commands are stopped
//! when they run on this host. Lost attempts count apart from failed ones (see
//! [`crate::attempt::after_lost`]).

use crate::Engine;
use crate::attempt::{self, LOST_RULE};
use crate::engine::record::{WhenDown, record};
use chrono::{DateTime, Utc};
use retryd_core::{AttemptOutcome, Class, JobState};
use retryd_store::{AttemptResult, Fence, Next};
use std::time::Duration;
use tracing::{Instrument, info_span, warn};

/// Which expired leases a rescue takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Those expired by now.
    Expired,
    /// Every `running` job: at start on a store this process owns.
    Everything,
    /// Those held under this node's name: at start, they are the previous process's.
    Own,
}

/// Whether the rescuer may take expired leases now. A lease that expired while the database
/// was unreachable proves nothing (its node could not renew it either): rescue waits until
/// this node has reached the database for a whole lease, time enough for every live node
/// to renew. A store one process owns has no other nodes to wait for.
pub fn may_rescue(
    exclusive: bool,
    reachable_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    lease: Duration,
) -> bool {
    exclusive
        || reachable_since.is_some_and(|since| {
            now - since >= chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
        })
}

/// Records attempts whose lease expired as `lost` and schedules their jobs by policy,
/// after stopping their commands when they run on this host.
pub(crate) async fn rescue(engine: &Engine, scope: Scope) {
    let now = engine.now();
    let exclusive = engine.inner.store.is_exclusive();
    if scope == Scope::Expired
        && !may_rescue(
            exclusive,
            engine.reachable_since(),
            now,
            engine.inner.config.lease,
        )
    {
        return;
    }
    let cutoff = match scope {
        Scope::Expired => now,
        Scope::Everything | Scope::Own => DateTime::<Utc>::MAX_UTC,
    };
    let expired = match engine.inner.store.expired_leases(cutoff).await {
        Ok(jobs) => jobs,
        Err(e) => {
            warn!(error = %e, "rescue: cannot list expired leases");
            return;
        }
    };
    let node = &engine.inner.config.node;
    for job in expired {
        if scope == Scope::Own && job.lease_owner.as_ref() != Some(node) {
            continue;
        }
        let Some(attempt_id) = job.attempt_id else {
            continue;
        };
        if engine.inner.running.contains(job.id) {
            continue;
        }
        let owner = job.lease_owner.clone().unwrap_or_else(|| "unknown".into());
        // Its command may still run (the node died or froze): on this host, it is stopped
        // before the job can run again.
        match engine.inner.store.attempt_process(attempt_id).await {
            Ok(Some(process))
                if crate::process::is_local(&process, exclusive)
                    && crate::process::kill_leftover_group(&process).await =>
            {
                warn!(job_id = %job.id, pid = process.pid, owner = %owner, "stopped the command of a lost attempt");
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "rescue: cannot read the attempt's process; will try again");
                continue;
            }
        }
        let rule = format!("{LOST_RULE}: node {owner} stopped renewing it");
        // A pipeline's lost attempt counts against its current step's policy.
        let (policy_name, snapshot) = job.effective_policy();
        let policy = engine
            .policies(&job.org)
            .current(policy_name, snapshot)
            .clone();
        let (next, reason) = if job.cancel_requested {
            (
                Next::Cancelled,
                format!("cancelled; attempt {} lost with node {owner}", job.attempt),
            )
        } else {
            let lost_before = match engine.inner.store.list_attempts(job.id).await {
                Ok(attempts) => attempts
                    .iter()
                    .filter(|a| {
                        a.outcome == Some(AttemptOutcome::Lost)
                            && a.rule.as_deref().is_some_and(|r| r.starts_with(LOST_RULE))
                    })
                    .count() as u32,
                Err(e) => {
                    warn!(error = %e, "rescue: cannot count the job's lost attempts; will try again");
                    continue;
                }
            };
            attempt::after_lost(
                &policy,
                lost_before + 1,
                job.deadline,
                now,
                &format!("attempt {} lost ({rule})", job.effective_attempt()),
            )
        };
        let mut result = AttemptResult {
            lease: retryd_store::Lease {
                job_id: job.id,
                attempt_id,
                attempt: job.attempt,
                node: owner.clone(),
            },
            fence: Fence::Rescue {
                expired_before: cutoff,
            },
            now,
            outcome: AttemptOutcome::Lost,
            exit_code: None,
            error: Some(format!(
                "attempt lost: node {owner} stopped renewing its lease"
            )),
            class: Some(Class::Transient),
            rule: Some(rule),
            output_dropped_bytes: 0,
            next,
            reason,
            actor: format!("rescuer on {}", engine.inner.config.node),
            step: None,
            circuit: None,
            notify: Vec::new(),
            log: Default::default(),
        };
        engine.complete_result(&job, &mut result);
        let span = info_span!("rescue", job_id = %job.id, queue = %job.queue, kind = %job.kind,
            target = job.target.as_deref().unwrap_or("-"), attempt = job.attempt,
            step = job.current_step().map_or("-", |(_, s)| s.name.as_str()), state = %JobState::Running);
        async {
            if let Some(job) = record(engine, &result, WhenDown::GiveUp).await {
                warn!(to = %job.state, "rescued a lost attempt");
            }
        }
        .instrument(span)
        .await;
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use retryd_store::Next;

    #[test]
    fn issue_14_leases_are_judged_only_after_the_database_was_up_a_whole_lease() {
        let lease = Duration::from_secs(30);
        let back = Utc::now();
        let later = |s: i64| back + chrono::Duration::seconds(s);
        assert!(
            !may_rescue(false, None, later(100), lease),
            "unreachable now"
        );
        assert!(
            !may_rescue(false, Some(back), later(29), lease),
            "the owners may not have renewed yet"
        );
        assert!(may_rescue(false, Some(back), later(30), lease));
        assert!(
            may_rescue(true, None, later(0), lease),
            "a store one process owns has no other node to wait for"
        );
    }

    #[test]
    fn issue_14_lost_attempts_do_not_count_until_the_poison_limit() {
        let policy = retryd_core::Policy::default();
        let now = Utc::now();
        let (next, reason) = attempt::after_lost(&policy, 2, None, now, "attempt 1 lost");
        assert_eq!(
            next,
            Next::Lost {
                at: now + chrono::Duration::seconds(2),
                delay: Duration::from_secs(2)
            }
        );
        assert!(
            reason.contains("does not count (2 of 3 lost attempts allowed)"),
            "{reason}"
        );
        let (next, reason) = attempt::after_lost(&policy, 3, None, now, "attempt 1 lost");
        assert_eq!(next, Next::Failed);
        assert_eq!(
            reason,
            "lost 3 attempts (the node running it died each time): attempt 1 lost"
        );
        let (next, _) = attempt::after_lost(&policy, 1, Some(now), now, "attempt 1 lost");
        assert_eq!(next, Next::Expired, "a passed deadline still ends the job");
    }
}
