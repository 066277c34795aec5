//! Named policies: the built-in ones, those from the configuration, which policy each `kind`
//! gets, and the priority rule.

use retryd_core::Policy;
use retryd_core::policy::{BUILTIN_NAMES, PolicyError, PriorityRule, select_name};
use std::collections::BTreeMap;

/// The name recorded on jobs that carry their own inline policy.
pub const INLINE: &str = "inline";

#[derive(Debug, Clone)]
pub struct Policies {
    named: BTreeMap<String, Policy>,
    by_kind: BTreeMap<String, String>,
    priority_rule: PriorityRule,
}

impl Default for Policies {
    fn default() -> Self {
        let named = BUILTIN_NAMES
            .iter()
            .map(|name| {
                (
                    name.to_string(),
                    Policy::builtin(name).expect("built-in exists"),
                )
            })
            .collect();
        Policies {
            named,
            by_kind: BTreeMap::new(),
            priority_rule: PriorityRule::default(),
        }
    }
}

impl Policies {
    /// Built-ins overlaid with the configured policies, kinds and priority rule.
    pub fn new(
        configured: BTreeMap<String, Policy>,
        by_kind: BTreeMap<String, String>,
        priority_rule: PriorityRule,
    ) -> Result<Self, PolicyError> {
        let mut policies = Policies::default();
        if priority_rule.high_at > 100 || priority_rule.low_at >= priority_rule.high_at {
            return Err(PolicyError {
                field: "priority_rule".into(),
                message: format!(
                    "need 0 <= low_at < high_at <= 100, got low_at {} and high_at {}",
                    priority_rule.low_at, priority_rule.high_at
                ),
            });
        }
        for (name, policy) in configured {
            retryd_core::job::validate_name("name", &name).map_err(|message| PolicyError {
                field: format!("policies.{name}"),
                message,
            })?;
            policy.validate().map_err(|e| PolicyError {
                field: format!("policies.{name}.{}", e.field),
                message: e.message,
            })?;
            if name == INLINE {
                return Err(PolicyError {
                    field: format!("policies.{name}"),
                    message: "the name 'inline' is reserved".into(),
                });
            }
            policies.named.insert(name, policy);
        }
        for (kind, name) in &by_kind {
            retryd_core::job::validate_name("kind", kind).map_err(|message| PolicyError {
                field: format!("kinds.{kind}"),
                message,
            })?;
            if !policies.named.contains_key(name) {
                return Err(PolicyError {
                    field: format!("kinds.{kind}"),
                    message: format!(
                        "unknown policy '{name}' (known: {})",
                        policies.names().join(", ")
                    ),
                });
            }
        }
        for (field, name) in [
            ("priority_rule.high_policy", &priority_rule.high_policy),
            ("priority_rule.low_policy", &priority_rule.low_policy),
        ] {
            if !policies.named.contains_key(name) {
                return Err(PolicyError {
                    field: field.into(),
                    message: format!("unknown policy '{name}'"),
                });
            }
        }
        policies.by_kind = by_kind;
        policies.priority_rule = priority_rule;
        Ok(policies)
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.named.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.named.keys().cloned().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Policy)> {
        self.named.iter()
    }

    /// The policy name a new job gets (SPEC §2 selection order).
    pub fn select(&self, job_policy: Option<&str>, kind: &str, priority: u8) -> String {
        select_name(
            job_policy,
            self.by_kind.get(kind).map(String::as_str),
            priority,
            &self.priority_rule,
        )
        .to_owned()
    }

    /// The policy that governs a job's next attempt: the current version of its named policy
    /// (so that a change applies to attempts scheduled after it), else its snapshot.
    pub fn current<'a>(&'a self, name: &str, snapshot: &'a Policy) -> &'a Policy {
        self.named.get(name).unwrap_or(snapshot)
    }
}
