//! The one path by which a result is stored: an attempt's, and the rescuer's for an attempt
//! whose node stopped renewing. The store checks the fence; whatever is stored is counted,
//! published and wakes the notifier when it enqueued deliveries.

use super::Engine;
use retryd_core::Class;
use retryd_core::job::Job;
use retryd_store::AttemptResult;
use std::time::Duration;
use tracing::{info, warn};

/// What to do while the database does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenDown {
    /// Try again, however long it takes, until shutdown releases running attempts: a command
    /// that finished during an outage keeps its result.
    Retry,
    /// Give up: the caller's next pass tries again (the rescuer's sweep).
    GiveUp,
}

/// Records `result`. Returns the job as stored, or `None` when the result was refused (the
/// attempt no longer holds its lease: rescued, cancelled or finished elsewhere) or not stored.
pub(crate) async fn record(
    engine: &Engine,
    result: &AttemptResult,
    when_down: WhenDown,
) -> Option<Job> {
    let mut wait = Duration::from_millis(100);
    loop {
        match engine.inner.store.finish_attempt(result).await {
            Ok((job, event)) => {
                engine.note_reachable(true);
                info!(to = %job.state, reason = %event.reason, "attempt finished");
                engine
                    .metrics()
                    .attempt_finished(result.outcome.as_str(), result.class.map(Class::as_str));
                engine.publish(event);
                if !result.notify.is_empty() {
                    engine.deliveries_enqueued();
                }
                return Some(job);
            }
            Err(retryd_store::Error::LeaseLost { .. }) => {
                if when_down == WhenDown::Retry {
                    warn!(
                        "result refused: this attempt no longer holds its lease (it was rescued or cancelled elsewhere)"
                    );
                }
                return None;
            }
            Err(retryd_store::Error::Backend(message)) if when_down == WhenDown::Retry => {
                engine.note_reachable(false);
                warn!(error = %message, retry_in = ?wait, "could not record the attempt's result; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = engine.inner.release.cancelled() => {
                        warn!("shutting down before the database answered: the attempt's result is not recorded; the rescuer will reschedule the job");
                        return None;
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                warn!(error = %e, "could not record the result; will try again on the next pass");
                return None;
            }
        }
    }
}
