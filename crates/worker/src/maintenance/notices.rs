//! Reacts to what clients of this process and other nodes did, as the store's signals say:
//! new or rescheduled work wakes the claim loop and the notifier, a cancel stops the attempt
//! if it runs here, a resumed queue wakes the claim loop, a policy change refreshes the book, and a
//! schedule change wakes the scheduler.

use crate::Engine;
use retryd_store::Notice;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub(crate) struct Notices {
    pub engine: Engine,
}

impl Notices {
    pub async fn run(self, mut notices: broadcast::Receiver<Notice>, stop: CancellationToken) {
        let engine = &self.engine;
        loop {
            let notice = tokio::select! {
                _ = stop.cancelled() => return,
                notice = notices.recv() => notice,
            };
            match notice {
                Ok(Notice::Wake) => {
                    engine.wake();
                    engine.deliveries_enqueued();
                }
                Ok(Notice::Cancel(id)) => {
                    engine.inner.running.stop_cancelled(id);
                }
                // The claim reads the paused queues itself: a resume may have made work due.
                Ok(Notice::Queues) => engine.wake(),
                Ok(Notice::Policies) => engine.reload_policies_or_warn().await,
                Ok(Notice::Schedules) => engine.schedules_changed().notify_one(),
                // Missed some: looking again covers whatever they were, except a cancel,
                // which the next lease renewal delivers.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    engine.reload_policies_or_warn().await;
                    engine.schedules_changed().notify_one();
                    engine.wake();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
