//! Named policies: the built-in ones, those from the configuration, which policy each `kind`
//! gets, and the priority rule.

use retryd_core::Policy;
use retryd_core::policy::{BUILTIN_NAMES, PolicyError, PriorityRule, select_name};
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// The organization's active default: the policy of its jobs that name none.
    org_default: Option<String>,
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
            org_default: None,
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

    /// The organization's active default policy, if it has one.
    pub fn org_default(&self) -> Option<&str> {
        self.org_default.as_deref()
    }

    /// The policy name a new job gets (SPEC §2 selection order, with the organization's
    /// default first among those a job does not name).
    pub fn select(&self, job_policy: Option<&str>, kind: &str, priority: u8) -> String {
        select_name(
            job_policy.or(self.org_default.as_deref()),
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

/// The live policy book of a process: for each organization, the built-in and configured
/// policies (shared, read-only) with its API-managed ones and its default, as last read from
/// the store. The API and the engine share one, so a change made through this process is
/// seen by both at once; other nodes' changes arrive as notices.
#[derive(Debug)]
pub struct PolicyBook {
    base: Arc<Policies>,
    // A std RwLock: the Arc is cloned out, never held across .await.
    by_org: std::sync::RwLock<Arc<BTreeMap<String, Arc<Policies>>>>,
}

impl PolicyBook {
    pub fn new(base: Policies) -> Self {
        PolicyBook {
            base: Arc::new(base),
            by_org: Default::default(),
        }
    }

    /// An organization's policies as of now (an unknown one has the shared ones only).
    pub fn of(&self, org: &str) -> Arc<Policies> {
        let by_org = self.by_org.read().expect("policy book").clone();
        by_org
            .get(org)
            .cloned()
            .unwrap_or_else(|| self.base.clone())
    }

    /// Re-reads the API-managed policies and the organizations' defaults.
    pub async fn reload(&self, store: &dyn crate::AccessStore) -> crate::Result<()> {
        let managed = store.list_policies().await?;
        let mut by_org = BTreeMap::new();
        for org in store.list_orgs().await? {
            let own: Vec<_> = managed
                .iter()
                .filter(|p| p.org == org.name)
                .cloned()
                .collect();
            let mut policies = self.base.with_managed(&own);
            // A default that was deactivated since is not chosen for new jobs.
            policies.org_default = org.default_policy.filter(|n| policies.get(n).is_some());
            by_org.insert(org.name, Arc::new(policies));
        }
        *self.by_org.write().expect("policy book") = Arc::new(by_org);
        Ok(())
    }
}
