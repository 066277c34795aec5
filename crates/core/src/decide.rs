//! What happens after a failed attempt: retry at an instant, give up, or expire.

use crate::classify::Class;
use crate::policy::Policy;
use chrono::{DateTime, Utc};
use rand::Rng;
use std::time::Duration;

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt {
    /// The number of the attempt that failed (1-based).
    pub attempt: u32,
    pub class: Class,
    pub now: DateTime<Utc>,
    /// When the job's first attempt started, for `max_elapsed`.
    pub first_started_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    /// The wait chosen before this attempt (decorrelated jitter grows from it).
    pub previous_delay: Option<Duration>,
    /// A server's `Retry-After`.
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayReason {
    Backoff,
    RetryAfter,
}

impl DelayReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DelayReason::Backoff => "backoff",
            DelayReason::RetryAfter => "retry-after",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Retry {
        at: DateTime<Utc>,
        delay: Duration,
        why: DelayReason,
    },
    /// Give up: the job goes to the dead-letter queue. The reason reads as a sentence.
    Fail { reason: String },
    /// The deadline would pass before the next attempt.
    Expire { reason: String },
}

/// Decides the fate of a job whose attempt failed with the given class.
pub fn decide(policy: &Policy, failed: &FailedAttempt, rng: &mut impl Rng) -> Decision {
    match failed.class {
        Class::Permanent => {
            return Decision::Fail {
                reason: "permanent error".to_owned(),
            };
        }
        Class::Unknown if !policy.retry_unknown => {
            return Decision::Fail {
                reason: "unclassified error, and the policy does not retry unknown errors"
                    .to_owned(),
            };
        }
        _ => {}
    }
    if failed.attempt >= policy.max_attempts {
        return Decision::Fail {
            reason: format!(
                "attempts exhausted ({} of {})",
                failed.attempt, policy.max_attempts
            ),
        };
    }
    let (delay, why) = match failed.retry_after {
        Some(hint) if policy.respect_retry_after_beyond_cap => (hint, DelayReason::RetryAfter),
        Some(hint) => (hint.min(policy.max_delay), DelayReason::RetryAfter),
        None => (
            policy.next_delay(failed.attempt, failed.previous_delay, rng),
            DelayReason::Backoff,
        ),
    };
    let at = failed.now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    if let Some(deadline) = failed.deadline
        && at >= deadline
    {
        return Decision::Expire {
            reason: format!(
                "deadline {} passes before attempt {} could start",
                deadline.format("%Y-%m-%d %H:%M:%S UTC"),
                failed.attempt + 1
            ),
        };
    }
    if let (Some(budget), Some(first)) = (policy.max_elapsed, failed.first_started_at) {
        let budget_end =
            first + chrono::Duration::from_std(budget).unwrap_or(chrono::Duration::MAX);
        if at > budget_end {
            return Decision::Fail {
                reason: format!(
                    "time budget exhausted (max_elapsed {})",
                    crate::duration::format(budget)
                ),
            };
        }
    }
    Decision::Retry { at, delay, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Jitter;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn failed(attempt: u32, class: Class) -> FailedAttempt {
        FailedAttempt {
            attempt,
            class,
            now: DateTime::UNIX_EPOCH,
            first_started_at: Some(DateTime::UNIX_EPOCH),
            deadline: None,
            previous_delay: None,
            retry_after: None,
        }
    }

    #[test]
    fn permanent_errors_stop_at_once() {
        let d = decide(
            &Policy::default(),
            &failed(1, Class::Permanent),
            &mut rand::rng(),
        );
        assert!(matches!(d, Decision::Fail { .. }));
    }

    #[test]
    fn retry_after_is_capped_unless_allowed() {
        let policy = Policy {
            jitter: Jitter::None,
            ..Policy::default()
        };
        let hinted = FailedAttempt {
            retry_after: Some(Duration::from_secs(600)),
            ..failed(1, Class::Transient)
        };
        let Decision::Retry { delay, why, .. } = decide(&policy, &hinted, &mut rand::rng()) else {
            panic!()
        };
        assert_eq!((delay, why), (policy.max_delay, DelayReason::RetryAfter));
        let lenient = Policy {
            respect_retry_after_beyond_cap: true,
            ..policy
        };
        let Decision::Retry { delay, .. } = decide(&lenient, &hinted, &mut rand::rng()) else {
            panic!()
        };
        assert_eq!(delay, Duration::from_secs(600));
    }

    #[test]
    fn a_retry_past_the_deadline_expires_instead() {
        let policy = Policy {
            jitter: Jitter::None,
            ..Policy::default()
        };
        let f = FailedAttempt {
            deadline: Some(DateTime::UNIX_EPOCH + chrono::Duration::seconds(1)),
            ..failed(1, Class::Transient)
        };
        assert!(matches!(
            decide(&policy, &f, &mut rand::rng()),
            Decision::Expire { .. }
        ));
    }

    proptest! {
        #[test]
        fn attempts_never_exceed_the_maximum(max in 1u32..=100, seed: u64) {
            let policy = Policy { max_attempts: max, ..Policy::default() };
            let mut rng = StdRng::seed_from_u64(seed);
            let mut attempt = 1;
            while let Decision::Retry { .. } = decide(&policy, &failed(attempt, Class::Transient), &mut rng) {
                attempt += 1;
                prop_assert!(attempt <= max);
            }
            prop_assert_eq!(attempt, max);
        }
    }
}
