//! The engine's background services. Each has its own config and a `run(self, stop)` that
//! [`crate::Engine::run`] starts and joins at shutdown, except the two sweeps the claim loop
//! runs when their instants come: one query plans the loop's wake-up and both sweeps.
//!
//! - [`heartbeat`]: renews this node's leases; stops attempts it no longer holds.
//! - [`rescuer`]: records attempts whose node stopped renewing as `lost` (a sweep).
//! - [`deadlines`]: expires waiting jobs past their deadline (a sweep).
//! - [`pruner`]: deletes finished jobs past their retention.
//! - [`notices`]: reacts to clients and other nodes: wakes, cancels, paused queues, and the
//!   policy refresh.
//! - [`notifier`]: delivers notifications under a lease.
//! - [`scheduler`]: fires recurring jobs.

pub(crate) mod deadlines;
pub(crate) mod heartbeat;
pub(crate) mod notices;
pub(crate) mod notifier;
pub(crate) mod pruner;
pub(crate) mod rescuer;
pub(crate) mod scheduler;
