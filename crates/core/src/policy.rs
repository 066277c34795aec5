//! Retry policies: how many attempts, how long to wait between them, and which failures
//! deserve another try.
//!
//! The delay before attempt `n + 1` (after attempt `n` failed), before jitter, is
//! `min(initial_delay × multiplier^(n-1), max_delay)`. Jitter follows the AWS architecture
//! blog's definitions ("Exponential Backoff And Jitter"):
//!
//! ```
//! use retryd_core::{Jitter, Policy};
//! use std::time::Duration;
//!
//! let policy = Policy { jitter: Jitter::None, ..Policy::builtin("default").unwrap() };
//! assert_eq!(policy.base_delay(1), Duration::from_secs(2));
//! assert_eq!(policy.base_delay(3), Duration::from_secs(8));
//! assert_eq!(policy.base_delay(10), Duration::from_secs(60)); // capped
//! ```

use crate::classify::Rule;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest wait a policy may ask for between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(86_400);
/// The longest total time budget or attempt timeout a policy may set.
pub const MAX_BUDGET: Duration = Duration::from_secs(30 * 86_400);
pub const MAX_ATTEMPTS: u32 = 100;
pub const MAX_MULTIPLIER: f64 = 100.0;

/// How randomness spreads the computed delay, so that many jobs failing together do not
/// retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Exactly the computed delay.
    None,
    /// Uniform in `[0, delay]`.
    #[default]
    Full,
    /// `delay / 2` plus uniform in `[0, delay / 2]`.
    Equal,
    /// Uniform in `[initial_delay, previous × 3]`, capped; ignores `multiplier`.
    Decorrelated,
}

impl Jitter {
    pub const NAMES: &'static str = "none, full, equal, decorrelated";
}

/// A retry policy. Every field has the `default` policy's value when omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Attempts in all, counting the first (1–100).
    pub max_attempts: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    #[serde(with = "crate::duration")]
    pub initial_delay: Duration,
    /// Growth factor per attempt (≥ 1).
    pub multiplier: f64,
    /// Cap on any single wait.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    #[serde(with = "crate::duration")]
    pub max_delay: Duration,
    pub jitter: Jitter,
    /// Total time budget from the first attempt's start; past it the job fails.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    #[serde(
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_elapsed: Option<Duration>,
    /// Kill an attempt that runs longer (its failure is transient).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    #[serde(
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub attempt_timeout: Option<Duration>,
    /// Let a server's `Retry-After` exceed `max_delay`.
    pub respect_retry_after_beyond_cap: bool,
    /// Whether a failure no rule recognised is retried (it is marked `unknown` either way).
    pub retry_unknown: bool,
    /// Rules tried before the built-in ones; the first match wins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Attempts lost with their node (it died or froze past its lease) before the job fails
    /// (1–100). Lost attempts do not use up `max_attempts`: a crash is not the job's
    /// failure, but a job that takes its node down every time must still end. Written only
    /// when not the default, so that nodes of an earlier version still read the policy.
    #[serde(skip_serializing_if = "is_default_lost_attempts")]
    pub max_lost_attempts: u32,
}

/// The default of [`Policy::max_lost_attempts`].
pub const DEFAULT_MAX_LOST_ATTEMPTS: u32 = 3;

fn is_default_lost_attempts(n: &u32) -> bool {
    *n == DEFAULT_MAX_LOST_ATTEMPTS
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 3,
            initial_delay: Duration::from_secs(2),
            multiplier: 2.0,
            max_delay: Duration::from_secs(60),
            jitter: Jitter::Full,
            max_elapsed: None,
            attempt_timeout: None,
            respect_retry_after_beyond_cap: false,
            retry_unknown: true,
            rules: Vec::new(),
            max_lost_attempts: DEFAULT_MAX_LOST_ATTEMPTS,
        }
    }
}

/// A policy value outside its allowed range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct PolicyError {
    pub field: String,
    pub message: String,
}

impl PolicyError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        PolicyError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// The built-in named policies, from the users' requests.
pub const BUILTIN_NAMES: [&str; 6] = [
    "default",
    "aggressive",
    "conservative",
    "high_priority",
    "connection",
    "upload",
];

impl Policy {
    /// A built-in named policy.
    pub fn builtin(name: &str) -> Option<Policy> {
        let (max_attempts, initial_ms, cap_s) = match name {
            "default" => (3, 2_000, 60),
            "aggressive" => (5, 1_000, 30),
            "conservative" => (2, 5_000, 300),
            "high_priority" => (5, 500, 15),
            "connection" => (5, 2_000, 30),
            "upload" => (3, 1_000, 10),
            _ => return None,
        };
        Some(Policy {
            max_attempts,
            initial_delay: Duration::from_millis(initial_ms),
            max_delay: Duration::from_secs(cap_s),
            ..Policy::default()
        })
    }

    /// Checks every field against its allowed range; the error names the field.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (field, value) in [
            ("max_attempts", self.max_attempts),
            ("max_lost_attempts", self.max_lost_attempts),
        ] {
            if !(1..=MAX_ATTEMPTS).contains(&value) {
                return Err(PolicyError::new(
                    field,
                    format!("must be between 1 and {MAX_ATTEMPTS}, got {value}"),
                ));
            }
        }
        if !self.multiplier.is_finite() || !(1.0..=MAX_MULTIPLIER).contains(&self.multiplier) {
            return Err(PolicyError::new(
                "multiplier",
                format!(
                    "must be between 1 and {MAX_MULTIPLIER}, got {}",
                    self.multiplier
                ),
            ));
        }
        for (field, value) in [
            ("initial_delay", self.initial_delay),
            ("max_delay", self.max_delay),
        ] {
            if value > MAX_DELAY {
                return Err(PolicyError::new(
                    field,
                    format!(
                        "must be between 0s and {}, got {}",
                        crate::duration::format(MAX_DELAY),
                        crate::duration::format(value)
                    ),
                ));
            }
        }
        if self.initial_delay > self.max_delay {
            return Err(PolicyError::new(
                "initial_delay",
                format!(
                    "must not exceed max_delay ({}), got {}",
                    crate::duration::format(self.max_delay),
                    crate::duration::format(self.initial_delay)
                ),
            ));
        }
        for (field, value) in [
            ("max_elapsed", self.max_elapsed),
            ("attempt_timeout", self.attempt_timeout),
        ] {
            if let Some(value) = value
                && (value.is_zero() || value > MAX_BUDGET)
            {
                return Err(PolicyError::new(
                    field,
                    format!(
                        "must be more than 0s and at most {}, got {}",
                        crate::duration::format(MAX_BUDGET),
                        crate::duration::format(value)
                    ),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate()
                .map_err(|message| PolicyError::new(&format!("rules[{i}]"), message))?;
        }
        Ok(())
    }

    /// The wait after attempt `failed_attempt` (1-based) before jitter.
    pub fn base_delay(&self, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.saturating_sub(1) as i32;
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        clamp_secs(secs, self.max_delay)
    }

    /// The smallest and largest wait jitter may pick after `failed_attempt`. `previous` is
    /// the wait chosen before it (only decorrelated jitter looks at it).
    pub fn delay_bounds(
        &self,
        failed_attempt: u32,
        previous: Option<Duration>,
    ) -> (Duration, Duration) {
        let base = self.base_delay(failed_attempt);
        match self.jitter {
            Jitter::None => (base, base),
            Jitter::Full => (Duration::ZERO, base),
            Jitter::Equal => (base / 2, base),
            Jitter::Decorrelated => {
                let low = self.initial_delay.min(self.max_delay);
                let prev = previous
                    .unwrap_or(self.initial_delay)
                    .max(self.initial_delay);
                let high = clamp_secs(prev.as_secs_f64() * 3.0, self.max_delay).max(low);
                (low, high)
            }
        }
    }

    /// The wait after `failed_attempt`, jitter applied.
    pub fn next_delay(
        &self,
        failed_attempt: u32,
        previous: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let (low, high) = self.delay_bounds(failed_attempt, previous);
        if low >= high {
            return low;
        }
        Duration::from_nanos(rng.random_range(low.as_nanos() as u64..=high.as_nanos() as u64))
    }

    /// The schedule this policy gives: one row per wait between attempts.
    pub fn simulate(&self) -> Vec<ScheduleRow> {
        let mut rows = Vec::new();
        let (mut total_min, mut total_max) = (Duration::ZERO, Duration::ZERO);
        let mut widest_previous = None;
        for failed in 1..self.max_attempts {
            let (low, high) = self.delay_bounds(failed, widest_previous);
            widest_previous = Some(high);
            total_min += low;
            total_max += high;
            rows.push(ScheduleRow {
                after_attempt: failed,
                delay_min: low,
                delay_max: high,
                cumulative_min: total_min,
                cumulative_max: total_max,
            });
        }
        rows
    }
}

/// One wait of a simulated schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRow {
    /// The wait follows this attempt's failure and precedes attempt `after_attempt + 1`.
    pub after_attempt: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    #[serde(with = "crate::duration")]
    pub delay_min: Duration,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    #[serde(with = "crate::duration")]
    pub delay_max: Duration,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    #[serde(with = "crate::duration")]
    pub cumulative_min: Duration,
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "30s"))]
    #[serde(with = "crate::duration")]
    pub cumulative_max: Duration,
}

fn clamp_secs(secs: f64, cap: Duration) -> Duration {
    if !secs.is_finite() || secs >= cap.as_secs_f64() {
        cap
    } else {
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// Which named policy a job gets when it names none, by priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityRule {
    /// Jobs at or above this priority get `high_policy`.
    pub high_at: u8,
    pub high_policy: String,
    /// Jobs at or below this priority get `low_policy`.
    pub low_at: u8,
    pub low_policy: String,
}

impl Default for PriorityRule {
    fn default() -> Self {
        PriorityRule {
            high_at: 80,
            high_policy: "high_priority".into(),
            low_at: 20,
            low_policy: "conservative".into(),
        }
    }
}

/// Policy selection (SPEC §2): the job's own policy > the policy configured for its kind >
/// the priority rule > `default`. Returns the name of the policy to use.
pub fn select_name<'a>(
    job_policy: Option<&'a str>,
    kind_policy: Option<&'a str>,
    priority: u8,
    rule: &'a PriorityRule,
) -> &'a str {
    if let Some(name) = job_policy.or(kind_policy) {
        return name;
    }
    if priority >= rule.high_at {
        &rule.high_policy
    } else if priority <= rule.low_at {
        &rule.low_policy
    } else {
        "default"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn issue_14_max_lost_attempts_is_written_only_when_set_and_checked() {
        let default = serde_json::to_value(Policy::default()).unwrap();
        assert!(
            default.get("max_lost_attempts").is_none(),
            "a policy an earlier version reads as it is: {default}"
        );
        let tolerant = Policy {
            max_lost_attempts: 5,
            ..Policy::default()
        };
        let written = serde_json::to_value(&tolerant).unwrap();
        assert_eq!(written["max_lost_attempts"], 5);
        assert_eq!(serde_json::from_value::<Policy>(written).unwrap(), tolerant);
        let none = Policy {
            max_lost_attempts: 0,
            ..Policy::default()
        };
        assert_eq!(none.validate().unwrap_err().field, "max_lost_attempts");
    }

    fn any_policy() -> impl Strategy<Value = Policy> {
        (
            1u32..=100,
            0u64..=600_000,
            1.0f64..=100.0,
            0u64..=86_400_000,
            prop::sample::select(vec![
                Jitter::None,
                Jitter::Full,
                Jitter::Equal,
                Jitter::Decorrelated,
            ]),
        )
            .prop_map(|(max_attempts, initial, multiplier, cap, jitter)| Policy {
                max_attempts,
                initial_delay: Duration::from_millis(initial.min(cap)),
                multiplier,
                max_delay: Duration::from_millis(cap),
                jitter,
                ..Policy::default()
            })
    }

    proptest! {
        #[test]
        fn delays_stay_within_jitter_bounds_and_never_exceed_the_cap(policy in any_policy(), seed: u64) {
            prop_assert!(policy.validate().is_ok());
            let mut rng = StdRng::seed_from_u64(seed);
            let mut previous = None;
            for failed in 1..policy.max_attempts {
                let (low, high) = policy.delay_bounds(failed, previous);
                let delay = policy.next_delay(failed, previous, &mut rng);
                prop_assert!(low <= delay && delay <= high, "{delay:?} outside [{low:?}, {high:?}]");
                prop_assert!(delay <= policy.max_delay);
                let base = policy.base_delay(failed);
                match policy.jitter {
                    Jitter::None => prop_assert_eq!(delay, base),
                    Jitter::Full => prop_assert!(delay <= base),
                    Jitter::Equal => prop_assert!(delay >= base / 2 && delay <= base),
                    Jitter::Decorrelated => prop_assert!(delay >= policy.initial_delay.min(policy.max_delay)),
                }
                previous = Some(delay);
            }
        }

        #[test]
        fn simulation_has_one_row_per_wait(policy in any_policy()) {
            let rows = policy.simulate();
            prop_assert_eq!(rows.len() as u32, policy.max_attempts - 1);
            for row in rows {
                prop_assert!(row.delay_min <= row.delay_max && row.delay_max <= policy.max_delay);
            }
        }
    }

    #[test]
    fn builtins_validate_and_match_the_spec() {
        for name in BUILTIN_NAMES {
            Policy::builtin(name).unwrap().validate().unwrap();
        }
        let conservative = Policy::builtin("conservative").unwrap();
        assert_eq!(conservative.max_attempts, 2);
        assert_eq!(conservative.max_delay, Duration::from_secs(300));
    }

    #[test]
    fn validation_names_the_field() {
        let zero = Policy {
            max_attempts: 0,
            ..Policy::default()
        };
        assert_eq!(zero.validate().unwrap_err().field, "max_attempts");
        let many = Policy {
            max_attempts: 1000,
            ..Policy::default()
        };
        assert_eq!(many.validate().unwrap_err().field, "max_attempts");
        let shrink = Policy {
            multiplier: 0.5,
            ..Policy::default()
        };
        assert_eq!(shrink.validate().unwrap_err().field, "multiplier");
        let huge = Policy {
            max_delay: Duration::from_secs(10 * 86_400),
            ..Policy::default()
        };
        assert_eq!(huge.validate().unwrap_err().field, "max_delay");
    }

    #[test]
    fn selection_prefers_job_then_kind_then_priority() {
        let rule = PriorityRule::default();
        assert_eq!(
            select_name(Some("upload"), Some("connection"), 90, &rule),
            "upload"
        );
        assert_eq!(
            select_name(None, Some("connection"), 90, &rule),
            "connection"
        );
        assert_eq!(select_name(None, None, 90, &rule), "high_priority");
        assert_eq!(select_name(None, None, 10, &rule), "conservative");
        assert_eq!(select_name(None, None, 50, &rule), "default");
    }
}
