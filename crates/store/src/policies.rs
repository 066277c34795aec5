//! Named policies: the built-in ones, those from the configuration, which policy each `kind`
//! gets, and the priority rule.

use retryd_core::Policy;
use retryd_core::policy::{BUILTIN_NAMES, PolicyError, PriorityRule, select_name};
use std::collections::BTreeMap;

/// The name recorded on jobs that carry their own inline policy.
pub const INLINE: &str = "inline";

/// Where a named policy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Builtin,
    /// The configuration file: changed by editing it.
    Config,
    /// Created through the API: changed and deactivated there.
    Api,
}

#[derive(Debug, Clone)]
pub struct Policies {
    /// Policies new jobs may choose.
    named: BTreeMap<String, Policy>,
    /// Deactivated API policies: kept for the jobs that use them, chosen by no new job.
    inactive: BTreeMap<String, Policy>,
    sources: BTreeMap<String, Source>,
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
            sources: BUILTIN_NAMES
                .iter()
                .map(|name| (name.to_string(), Source::Builtin))
                .collect(),
            named,
            inactive: BTreeMap::new(),
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
            policies.sources.insert(name.clone(), Source::Config);
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

    /// A policy new jobs may choose (not a deactivated one).
    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.named.get(name)
    }

    /// Any known policy, deactivated ones included, with whether it is active.
    pub fn definition(&self, name: &str) -> Option<(&Policy, bool)> {
        self.named
            .get(name)
            .map(|p| (p, true))
            .or_else(|| self.inactive.get(name).map(|p| (p, false)))
    }

    pub fn source(&self, name: &str) -> Option<Source> {
        self.sources.get(name).copied()
    }

    /// These policies with the API-managed ones laid over them. Names taken by a built-in or
    /// configured policy are refused when created, so a managed one never shadows them.
    pub fn with_managed(&self, managed: &[crate::StoredPolicy]) -> Policies {
        let mut policies = self.clone();
        for stored in managed {
            if matches!(
                policies.source(&stored.name),
                Some(Source::Builtin | Source::Config)
            ) {
                continue;
            }
            policies.sources.insert(stored.name.clone(), Source::Api);
            let (into, other) = if stored.active {
                (&mut policies.named, &mut policies.inactive)
            } else {
                (&mut policies.inactive, &mut policies.named)
            };
            other.remove(&stored.name);
            into.insert(stored.name.clone(), stored.policy.clone());
        }
        policies
    }

    pub fn names(&self) -> Vec<String> {
        self.named.keys().cloned().collect()
    }

    /// Every policy with whether it is active, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Policy, bool)> {
        let mut all: Vec<_> = self
            .named
            .iter()
            .map(|(n, p)| (n, p, true))
            .chain(self.inactive.iter().map(|(n, p)| (n, p, false)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
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
        self.definition(name).map_or(snapshot, |(policy, _)| policy)
    }
}

/// The live policy book of a process: the built-in and configured policies with the
/// API-managed ones, as last read from the store. The API and the engine share one, so a
/// change made through this process is seen by both at once; other nodes' changes arrive as
/// notices.
#[derive(Debug)]
pub struct PolicyBook {
    base: Policies,
    // A std RwLock: the Arc is cloned out, never held across .await.
    current: std::sync::RwLock<std::sync::Arc<Policies>>,
}

impl PolicyBook {
    pub fn new(base: Policies) -> Self {
        PolicyBook {
            current: std::sync::RwLock::new(std::sync::Arc::new(base.clone())),
            base,
        }
    }

    /// The policies as of now.
    pub fn current(&self) -> std::sync::Arc<Policies> {
        self.current.read().expect("policy book").clone()
    }

    /// Re-reads the API-managed policies.
    pub async fn reload(&self, store: &dyn crate::AccessStore) -> crate::Result<()> {
        let managed = store.list_policies().await?;
        let policies = std::sync::Arc::new(self.base.with_managed(&managed));
        *self.current.write().expect("policy book") = policies;
        Ok(())
    }
}
