//! retryd's pure core: what a job is, which state changes are allowed, how long to wait
//! before the next attempt and whether a failure deserves one.
//!
//! Nothing here performs I/O: no clock reads except through [`Clock`], no database, no
//! network. That keeps every decision the engine makes a plain function that unit and
//! property tests can pin down, and lets the same policies drive the server, the CLI's
//! one-shot `run` and embedding programs.
//!
//! # Layout
//!
//! - [`state`]: [`JobState`] and the one transition table.
//! - [`policy`]: [`Policy`], backoff with the four jitter modes, built-in named policies and
//!   the selection order.
//! - [`classify`]: ordered classification rules; the first match wins and is recorded.
//! - [`decide`]: turns a classified failure into "retry at", "fail" or "expire".
//! - [`job`]: identifiers, validated newtypes and actions.
//! - [`pipeline`]: pipeline steps, their outputs and templates.
//! - [`explain`]: the one-line waiting reason and the diagnosis of a finished job.
//! - [`auth`]: the API's roles.
//! - [`clock`]: the injected clock.
//! - [`retry`]: the in-process `retry(policy, op)` library API.

pub mod auth;
pub mod classify;
pub mod clock;
pub mod decide;
pub mod duration;
pub mod explain;
pub mod job;
pub mod org;
pub mod pipeline;
pub mod policy;
pub mod redact;
pub mod retry;
pub mod schedule;
pub mod state;

pub use auth::Role;
pub use classify::{Class, Classification, Failure, Rule};
pub use clock::{Clock, ManualClock, SystemClock};
pub use decide::{Decision, decide};
pub use job::{Action, AttemptOutcome, CommandAction, EnvValue, JobId};
pub use policy::{Jitter, Policy, PolicyError};
pub use state::{JobState, TransitionError};
