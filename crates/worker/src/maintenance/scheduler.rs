//! Fires recurring jobs. One node at a time leads, under a lease it renews on every pass;
//! the others try to take over every half lease. The leader sleeps until the earliest next
//! fire time (or a schedule changes, or its lease needs renewing), then enqueues each due run
//! with a key derived from the schedule and the fire time, and moves the schedule on by
//! compare-and-set: should a lease run out mid-fire and two nodes fire together, a fire time
//! is still enqueued once (the key) and moves the schedule on once (the set).

use crate::Engine;
use crate::engine::SAFETY_RECHECK;
use chrono::{DateTime, Utc};
use retryd_core::JobId;
use retryd_core::schedule::{self, Cron, Overlap, Progress, Schedule};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a leader holds the role without renewing it: a dead leader's fire times are
/// taken over within this (they run late, within the misfire grace, not missed).
pub const LEADER_LEASE: Duration = Duration::from_secs(3);

pub(crate) struct Scheduler {
    pub engine: Engine,
    pub lease: Duration,
}

impl Scheduler {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let pause = match self.pass().await {
                Ok(next) => next
                    .and_then(|at| (at - self.engine.now()).to_std().ok())
                    .unwrap_or(SAFETY_RECHECK)
                    .min(self.lease / 2),
                Err(e) => {
                    warn!(error = %e, "scheduler: cannot read or fire schedules; trying again in 1 s");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.engine.schedules_changed().notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Leads or not; the leader fires what is due. Returns the earliest next fire time.
    async fn pass(&self) -> retryd_store::Result<Option<DateTime<Utc>>> {
        let now = self.engine.now();
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        let store = self.engine.store();
        if !store
            .lead_schedules(&self.engine.config().node, now, until)
            .await?
        {
            return Ok(None);
        }
        let mut earliest: Option<DateTime<Utc>> = None;
        for s in self.engine.store().list_schedules().await? {
            let Some(next_fire) = s.next_fire.filter(|_| !s.paused) else {
                continue;
            };
            let next = if next_fire <= now {
                self.fire(&s, next_fire, now).await?
            } else {
                Some(next_fire)
            };
            earliest = match (earliest, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(earliest)
    }

    async fn fire(
        &self,
        s: &Schedule,
        next_fire: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> retryd_store::Result<Option<DateTime<Utc>>> {
        let definition = &s.definition;
        let cron = match Cron::parse(&definition.cron, &definition.tz) {
            Ok(cron) => cron,
            Err(e) => {
                warn!(schedule = %s.name, error = %e, "schedule cannot be evaluated; it stays where it is");
                return Ok(None);
            }
        };
        let due = schedule::due(&cron, next_fire, now, definition.misfire);
        let mut skips = Vec::new();
        if due.passed_over > 0 {
            skips.push(format!(
                "{} fire time(s) up to {} passed over while no node could fire them (misfire: {})",
                due.passed_over,
                now.format("%Y-%m-%d %H:%M:%S UTC"),
                definition.misfire.as_str()
            ));
        }
        let mut live = self.live(s.last_job_id).await?;
        let mut last_job = None;
        let control = self.engine.control();
        for fire in &due.fire {
            if definition.overlap == Overlap::Skip
                && let Some(running) = live
            {
                skips.push(format!(
                    "{} skipped: run {running} is still live (overlap: skip)",
                    fire.format("%Y-%m-%d %H:%M:%S%.3f UTC")
                ));
                continue;
            }
            let run = definition.job.run(
                &s.org,
                &s.name,
                *fire,
                Some(schedule::run_key(&s.id, *fire)),
                &format!("schedule {}", s.name),
                now,
            );
            let inserted = control.submit(run).await?;
            info!(schedule = %s.name, job_id = %inserted.job.id, fire = %fire, created = inserted.created, "schedule fired");
            last_job = Some(inserted.job.id);
            live = (!inserted.job.state.is_terminal()).then_some(inserted.job.id);
        }
        let progress = Progress {
            next_fire: due.next,
            last_fire: due.fire.last().copied(),
            last_job_id: last_job,
            last_skip: (!skips.is_empty()).then(|| skips.join("; ")),
            updated_at: now,
        };
        if !self
            .engine
            .store()
            .advance_schedule(&s.id, Some(next_fire), &progress)
            .await?
        {
            // Another node fired it (its runs carry the same keys), or it was changed.
            return Ok(None);
        }
        Ok(due.next)
    }

    /// The schedule's last run, if it has not finished.
    async fn live(&self, last: Option<JobId>) -> retryd_store::Result<Option<JobId>> {
        let Some(id) = last else {
            return Ok(None);
        };
        match self.engine.store().get_job(id).await {
            Ok(job) => Ok((!job.state.is_terminal()).then_some(id)),
            Err(retryd_store::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
