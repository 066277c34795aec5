//! Notification deliveries (SPEC §6): each is a durable row, enqueued in the transaction that
//! records the job's change, claimed under a lease by one node like a job, retried under its
//! sink's policy, and every try is kept in its log.

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use retryd_core::JobId;
use serde::Serialize;

/// A delivery to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// The configured sink's name.
    pub sink: String,
    /// What happened: `failed`, `succeeded` or `retrying`.
    pub event: String,
    /// What the sink receives, as built when the job changed.
    pub payload: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its (next) try at `next_attempt_at`.
    Pending,
    /// A node is delivering it under a lease.
    Delivering,
    Delivered,
    /// Gave up: a permanent refusal or its policy's attempts exhausted.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivering => "delivering",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => DeliveryState::Pending,
            "delivering" => DeliveryState::Delivering,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => return None,
        })
    }
}

/// One try of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryAttempt {
    pub number: u32,
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `None` while it runs (or when its node died during it).
    pub ok: Option<bool>,
    /// The HTTP status or SMTP reply code, when there was one.
    pub status: Option<i32>,
    pub error: Option<String>,
}

/// A delivery and its log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    pub id: i64,
    pub job_id: JobId,
    pub event: String,
    pub sink: String,
    /// What the sink was sent (a webhook receives it as is).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: serde_json::Value,
    pub state: DeliveryState,
    /// Tries so far.
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every try, oldest first (empty where a listing leaves it out).
    pub log: Vec<DeliveryAttempt>,
}

/// A delivery this node now holds.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub notification: Notification,
    /// The try's row: the fence of its result.
    pub attempt_id: i64,
    pub number: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryNext {
    Delivered,
    Retry { at: DateTime<Utc> },
    Failed,
}

/// The result of one try.
#[derive(Debug, Clone)]
pub struct DeliveryResult {
    pub notification_id: i64,
    pub attempt_id: i64,
    pub node: String,
    pub now: DateTime<Utc>,
    pub ok: bool,
    pub status: Option<i32>,
    pub error: Option<String>,
    pub next: DeliveryNext,
}

impl DeliveryNext {
    pub fn state(&self) -> DeliveryState {
        match self {
            DeliveryNext::Delivered => DeliveryState::Delivered,
            DeliveryNext::Retry { .. } => DeliveryState::Pending,
            DeliveryNext::Failed => DeliveryState::Failed,
        }
    }
}

/// Deliveries, beside the jobs.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Claims due deliveries (and those whose node's lease expired) for `node`: each gets a
    /// new try row and a lease until `lease_until`.
    async fn claim_deliveries(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>>;

    /// Records a try, if `node` still holds the delivery with this try; otherwise
    /// `Error::Conflict` and nothing changes.
    async fn finish_delivery(&self, result: &DeliveryResult) -> Result<()>;

    /// Deliveries, newest first, of one job or of all (of one organization, or all), with
    /// their logs.
    async fn list_notifications(
        &self,
        job: Option<JobId>,
        org: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Notification>>;

    /// When a delivery is next due (or a delivering one's lease expires).
    async fn next_delivery(&self) -> Result<Option<DateTime<Utc>>>;
}

/// The message of a refused result.
pub fn lost_delivery(id: i64) -> crate::Error {
    crate::Error::Conflict(format!(
        "notification {id} is no longer held by this node (its lease expired and another node took it)"
    ))
}
