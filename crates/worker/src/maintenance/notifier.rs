//! Delivers due notifications: claims a batch under a lease, delivers it concurrently, then
//! sleeps until the next is due or a result enqueues one.

use crate::Engine;
use crate::engine::SAFETY_RECHECK;
use crate::notify;
use retryd_store::{ClaimedDelivery, DeliveryNext, DeliveryResult};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a node holds a notification delivery before another may take it over.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(120);
/// Deliveries claimed (and made concurrently) at once.
pub const DELIVERY_BATCH: usize = 16;

pub(crate) struct Notifier {
    pub engine: Engine,
    pub lease: Duration,
    pub batch: usize,
}

impl Notifier {
    /// Delivers due notifications: claims a batch under a lease, delivers it concurrently,
    /// then sleeps until the next is due or a result enqueues one.
    pub async fn run(self, stop: CancellationToken) {
        let engine = &self.engine;
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        loop {
            let now = engine.now();
            match engine
                .inner
                .store
                .claim_deliveries(&engine.inner.config.node, now, now + lease, self.batch)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    let mut deliveries = JoinSet::new();
                    for claimed in batch {
                        deliveries.spawn(deliver_one(engine.clone(), claimed, stop.clone()));
                    }
                    while deliveries.join_next().await.is_some() {}
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "could not claim notification deliveries; will try again")
                }
            }
            let next = match engine.inner.store.next_delivery().await {
                Ok(next) => next,
                Err(e) => {
                    warn!(error = %e, "could not read the next notification delivery");
                    Some(engine.now() + chrono::Duration::seconds(1))
                }
            };
            let pause = notify::pause_until(next, engine.now(), SAFETY_RECHECK);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = engine.deliveries().notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

async fn deliver_one(engine: Engine, claimed: ClaimedDelivery, stop: CancellationToken) {
    let notification = &claimed.notification;
    let sink = engine.sink(&notification.sink);
    let (ok, status, error, next) = notify::deliver(&engine, sink.as_ref(), &claimed, stop).await;
    let outcome = match (&next, ok) {
        (_, true) => "delivered",
        (DeliveryNext::Retry { .. }, _) => "retrying",
        _ => "failed",
    };
    engine
        .inner
        .metrics
        .delivery_tried(&notification.sink, outcome);
    let result = DeliveryResult {
        notification_id: notification.id,
        attempt_id: claimed.attempt_id,
        node: engine.inner.config.node.clone(),
        now: engine.now(),
        ok,
        status,
        error: error.clone(),
        next,
    };
    match engine.inner.store.finish_delivery(&result).await {
        Ok(()) => info!(
            notification = notification.id, job_id = %notification.job_id, sink = %notification.sink,
            event = %notification.event, try_number = claimed.number, outcome, error = error.as_deref().unwrap_or(""),
            "notification delivery"
        ),
        Err(e) => {
            warn!(notification = notification.id, error = %e, "could not record a notification delivery")
        }
    }
}
