//! Job states and the one transition table every component consults.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a job stands. Each variant says who moves a job out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its `run_at` or for a free worker. A worker's claim moves it to
    /// `running`; a client's cancel to `cancelled`; the deadline sweep to `expired`.
    Pending,
    /// An attempt holds a lease on some node. The attempt's result moves it to
    /// `succeeded`, `retrying` or `failed`; a cancel to `cancelled`; its deadline to
    /// `expired`; the rescuer (lease expired) to `retrying` or `failed`.
    Running,
    /// The last attempt failed transiently; the next is due at `next_attempt_at`. A worker's
    /// claim moves it back to `running`; cancel and the deadline sweep end it.
    Retrying,
    /// Done. Terminal.
    Succeeded,
    /// Gave up: a permanent error, attempts or time budget exhausted. This is the
    /// dead-letter queue; only a manual requeue moves it (back to `pending`).
    Failed,
    /// Cancelled by a person or client. Only a manual requeue moves it.
    Cancelled,
    /// Its deadline passed before it could succeed. Only a manual requeue moves it.
    Expired,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    /// No attempt will start on its own again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Expired
        )
    }

    /// Waiting to be claimed by a worker.
    pub fn is_waiting(self) -> bool {
        matches!(self, JobState::Pending | JobState::Retrying)
    }

    /// The transition table of SPEC §1. Everything not listed is refused.
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Pending, Running | Cancelled | Expired)
                | (Running, Succeeded | Retrying | Failed | Cancelled | Expired)
                | (Retrying, Running | Cancelled | Expired)
                | (Failed | Cancelled | Expired, Pending)
        )
    }

    /// Checks a transition against the table.
    pub fn transition(self, to: JobState) -> Result<JobState, TransitionError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown state '{0}' (allowed: pending, running, retrying, succeeded, failed, cancelled, expired)"
)]
pub struct UnknownState(pub String);

/// A state change outside the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} job cannot become {to}")]
pub struct TransitionError {
    pub from: JobState,
    pub to: JobState,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_state() -> impl Strategy<Value = JobState> {
        prop::sample::select(JobState::ALL.to_vec())
    }

    #[test]
    fn terminal_states_only_leave_through_requeue() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in JobState::ALL {
                let allowed = from != JobState::Succeeded && to == JobState::Pending;
                assert_eq!(from.can_become(to), allowed, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), state);
        }
        assert!("done".parse::<JobState>().is_err());
    }

    proptest! {
        #[test]
        fn no_transition_outside_the_table_is_accepted(from in any_state(), to in any_state()) {
            let table: &[(JobState, JobState)] = &[
                (JobState::Pending, JobState::Running),
                (JobState::Pending, JobState::Cancelled),
                (JobState::Pending, JobState::Expired),
                (JobState::Running, JobState::Succeeded),
                (JobState::Running, JobState::Retrying),
                (JobState::Running, JobState::Failed),
                (JobState::Running, JobState::Cancelled),
                (JobState::Running, JobState::Expired),
                (JobState::Retrying, JobState::Running),
                (JobState::Retrying, JobState::Cancelled),
                (JobState::Retrying, JobState::Expired),
                (JobState::Failed, JobState::Pending),
                (JobState::Cancelled, JobState::Pending),
                (JobState::Expired, JobState::Pending),
            ];
            let listed = table.contains(&(from, to));
            prop_assert_eq!(from.transition(to).is_ok(), listed);
        }
    }
}
