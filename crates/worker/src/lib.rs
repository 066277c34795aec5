//! retryd's engine: it claims due jobs, runs their attempts, classifies what went wrong,
//! schedules retries on a precise timer, renews leases, rescues attempts whose node died and
//! expires jobs past their deadline.
//!
//! # Layout
//!
//! - [`engine`]: [`Engine`], the service and its cheap `Clone` handle: the claim loop, the
//!   map of running attempts and the one path that records a result. Clients change jobs
//!   through [`retryd_store::Control`]; the engine hears of it through the store's notices.
//! - `maintenance`: the background services (heartbeat, rescuer, deadlines, pruner,
//!   notices, notifier), each with its own config.
//! - [`attempt`]: one attempt from claim to recorded result.
//! - [`executor`]: what runs an action (`command` today).
//! - [`tail`]: the bounded output tail of an attempt.
//! - [`metrics`]: this node's Prometheus metrics.
//! - [`notify`]: notification sinks, the deliveries a result enqueues, and one delivery.
//! - [`process`]: finding a killed node's leftover process groups after a restart.

pub mod attempt;
pub mod engine;
pub mod executor;
pub(crate) mod maintenance;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod tail;

pub use engine::{Engine, EngineConfig};
pub use retryd_store::Policies;

/// Cuts text to `max` characters, marking the cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}
