//! Deletes finished jobs past their retention, at start and then periodically.

use crate::Engine;
use chrono::{DateTime, Utc};
use retryd_core::JobState;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the retention purge runs (and once at start).
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

pub(crate) struct Pruner {
    pub engine: Engine,
    pub every: Duration,
    /// How long finished jobs are kept, per terminal state.
    pub retention: BTreeMap<JobState, Duration>,
}

impl Pruner {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let cutoffs = cutoffs(&self.retention, self.engine.now());
            match self.engine.inner.store.prune_jobs(&cutoffs).await {
                Ok(0) => {}
                Ok(n) => info!(pruned = n, "deleted finished jobs past their retention"),
                Err(e) => warn!(error = %e, "retention purge failed; will try again"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

/// Per terminal state, the instant before which its jobs finished long enough ago.
fn cutoffs(
    retention: &BTreeMap<JobState, Duration>,
    now: DateTime<Utc>,
) -> BTreeMap<JobState, DateTime<Utc>> {
    retention
        .iter()
        .map(|(state, keep)| {
            let keep = chrono::Duration::from_std(*keep).unwrap_or(chrono::Duration::MAX);
            (
                *state,
                now.checked_sub_signed(keep)
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_is_kept_for_its_own_retention() {
        let now = Utc::now();
        let retention = BTreeMap::from([
            (JobState::Succeeded, Duration::from_secs(60)),
            (JobState::Failed, Duration::from_secs(u64::MAX / 4)),
        ]);
        let cutoffs = cutoffs(&retention, now);
        assert_eq!(
            cutoffs[&JobState::Succeeded],
            now - chrono::Duration::seconds(60)
        );
        assert_eq!(
            cutoffs[&JobState::Failed],
            DateTime::<Utc>::MIN_UTC,
            "a retention too long to compute keeps everything"
        );
    }
}
