//! Renews this node's leases and learns from the answer which attempts were cancelled or
//! taken from it; both are stopped at once.

use crate::Engine;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub(crate) struct Heartbeat {
    pub engine: Engine,
    /// Between renewals: a third of the lease, so two may fail before it expires.
    pub every: Duration,
    pub lease: Duration,
}

impl Heartbeat {
    pub async fn run(self, stop: CancellationToken) {
        let engine = &self.engine;
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let running = &engine.inner.running;
            match engine
                .inner
                .store
                .renew_leases(
                    &engine.inner.config.node,
                    &running.attempt_ids(),
                    engine.now() + lease,
                )
                .await
            {
                Ok(renewal) => {
                    engine.note_reachable(true);
                    for id in renewal.cancelled {
                        running.stop_cancelled(id);
                    }
                    running.stop_lost(&renewal.lost);
                }
                Err(e) => {
                    engine.note_reachable(false);
                    warn!(error = %e, "could not renew leases; will try again");
                }
            }
        }
    }
}
