//! What the API's administration keeps in the database: API tokens (hashed) and the
//! policies managed through the API.

use super::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use retryd_core::{Policy, Role};

/// An API token as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public part of the token, also its primary key.
    pub id: String,
    /// Unique among tokens, for people: "ci", "alice".
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
    /// Marks the token with this id or name revoked; `None` when there is none.
    async fn revoke_token(
        &self,
        id_or_name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>>;
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Creates or replaces the managed policy of that name.
    async fn put_policy(&self, policy: &StoredPolicy) -> Result<()>;
    /// Every managed policy, inactive ones included, by name.
    async fn list_policies(&self) -> Result<Vec<StoredPolicy>>;
}
