//! Recurring jobs as stored: a schedule's definition (one JSON document: its cron, zone,
//! rules and job template) and its progress. Firing is the engine's (see its `scheduler`):
//! one node at a time leads, under a lease; and should two ever fire together (a lease that
//! ran out mid-fire), a fire time is still enqueued once, because its run carries a key
//! derived from the schedule and the fire time, and the schedule moves on by compare-and-set.

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use retryd_core::schedule::{Progress, Schedule};

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Stores a new schedule. `Conflict` when its name is taken in its organization.
    async fn insert_schedule(&self, schedule: &Schedule) -> Result<()>;
    /// Replaces the definition, paused flag and next fire time of the schedule with that
    /// id. `false` when there is none.
    async fn update_schedule(&self, schedule: &Schedule) -> Result<bool>;
    /// `false` when there is none with that id.
    async fn delete_schedule(&self, id: &str) -> Result<bool>;
    /// Every schedule of every organization, by organization and name.
    async fn list_schedules(&self) -> Result<Vec<Schedule>>;
    /// Takes or renews the scheduler's leadership for `node` until `until`: `true` when
    /// `node` leads (it led already, or the last leader's lease ended before `now`).
    async fn lead_schedules(
        &self,
        node: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;
    /// Records what firing did, if the schedule's next fire time is still `expected` (no
    /// other node fired it meanwhile, nobody changed it). `false` otherwise: nothing changes.
    async fn advance_schedule(
        &self,
        id: &str,
        expected: Option<DateTime<Utc>>,
        progress: &Progress,
    ) -> Result<bool>;
}

/// The name rule for schedules, as for queues: 1–64 of letters, digits and `_ - . :`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}
