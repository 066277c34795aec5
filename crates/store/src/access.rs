//! What the API's administration keeps in the database: organizations, API tokens (hashed),
//! and the policies and notification channels managed through the API.

use super::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use retryd_core::org::Org;
use retryd_core::{Policy, Role};

/// An API token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public part of the token, also its primary key.
    pub id: String,
    /// The organization it acts in (unless a request names another, for an instance token).
    pub org: String,
    /// An instance token acts in any organization and manages organizations; any other
    /// sees and changes its own organization only.
    pub instance: bool,
    /// Unique among the organization's tokens, for people: "ci", "alice".
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the secret part.
    pub secret_hash: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A policy created through the API. Inactive policies are kept for the jobs that used them
/// but cannot be chosen by new jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    pub org: String,
    pub name: String,
    pub policy: Policy,
    pub active: bool,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new token. `Conflict` when its name or id is taken.
    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    /// Marks the organization's token with this id or name revoked; `None` when it has none.
    async fn revoke_token(
        &self,
        org: &str,
        id_or_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>>;
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// Every token of every organization, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Creates or replaces the organization's managed policy of that name.
    async fn put_policy(&self, policy: &StoredPolicy) -> Result<()>;
    /// Every managed policy of every organization, inactive ones included, by organization
    /// and name.
    async fn list_policies(&self) -> Result<Vec<StoredPolicy>>;

    /// Stores a new organization. `Conflict` when the name is taken.
    async fn insert_org(&self, org: &Org) -> Result<()>;
    /// Replaces the organization's default policy and limit. `false` when there is none.
    async fn update_org(&self, org: &Org) -> Result<bool>;
    /// Every organization, by name.
    async fn list_orgs(&self) -> Result<Vec<Org>>;

    /// Creates or replaces the organization's channel of that name.
    async fn put_channel(&self, channel: &StoredChannel) -> Result<()>;
    /// `false` when the organization has no channel of that name.
    async fn delete_channel(&self, org: &str, name: &str) -> Result<bool>;
    /// Every channel of every organization, by organization and name.
    async fn list_channels(&self) -> Result<Vec<StoredChannel>>;
}

/// A notification channel an organization's admins manage through the API: where its jobs'
/// notifications go, besides the instance's configured sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChannel {
    pub org: String,
    pub name: String,
    /// The channel's definition (kind, address, secrets, events), validated by the API.
    pub config: serde_json::Value,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}
