//! Organizations: the unit that owns jobs, queues, policies, schedules, channels and tokens.
//! Names of those are unique per organization; another organization's are invisible.

use serde::{Deserialize, Serialize};

/// Where everything from before organizations lives, and where a request that names no
/// organization acts: a single team never has to know organizations exist.
pub const DEFAULT_ORG: &str = "default";

pub fn default_org() -> String {
    DEFAULT_ORG.to_owned()
}

/// An organization's name: lowercase letters, digits and `-`, starting with a letter (it
/// appears in URLs, headers and labels).
pub fn validate_org(field: &str, value: &str) -> Result<(), String> {
    let ok = value.len() <= 40
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field}: must be 1–40 characters of lowercase letters, digits and -, starting with a letter, got {value:?}"
        ))
    }
}

/// An organization as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Org {
    pub name: String,
    /// The policy of the organization's jobs that name none (`None`: the instance's rules).
    pub default_policy: Option<String>,
    /// Attempts of the organization's jobs running at once on all nodes (`None`: no limit
    /// beyond the fair share).
    pub max_running: Option<u32>,
    /// Retries (attempts after a job's first) of the organization's jobs that may start per
    /// minute on all nodes (`None`: no limit beyond the targets' budgets).
    #[serde(default)]
    pub retry_budget: Option<u32>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub created_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_names_are_url_safe_slugs() {
        for good in ["default", "acme", "team-7", "a"] {
            assert!(validate_org("org", good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "7up", "a b", "a/b", "-x", &"x".repeat(41)] {
            let err = validate_org("org", bad).unwrap_err();
            assert!(err.starts_with("org: must be"), "{err}");
        }
    }
}
