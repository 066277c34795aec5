//! Aggregates over a window, read by each backend in a few grouped queries and summed up
//! here, so that the rates are computed the same way everywhere.

use chrono::{DateTime, Utc};
use retryd_core::{Class, JobState};
use serde::Serialize;
use std::collections::BTreeMap;

/// The success rate after retries the requests set as their goal.
pub const TARGET_RATE: f64 = 0.8;

/// What to aggregate: jobs created (states) or finished (rates) and attempts started in
/// `[since, until)`, optionally narrowed to one queue, kind or target.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// Only this organization's jobs (`None`: every organization's).
    pub org: Option<String>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub target: Option<String>,
    /// Width of one bucket of the attempts-over-time series.
    pub bucket: chrono::Duration,
}

/// Jobs that finished in the window, grouped.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedGroup {
    pub kind: String,
    pub target: Option<String>,
    pub state: JobState,
    /// Whether they finished on their first attempt.
    pub first_attempt: bool,
    pub jobs: u64,
    pub attempts: u64,
}

/// Failed attempts in the window with the same class and message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorGroup {
    pub class: Option<Class>,
    pub message: String,
    /// Jobs that had this error: what the list is ranked by, so that one job retried ten
    /// times does not outrank ten jobs stopped at once by a permanent error.
    pub count: u64,
    /// Failed attempts with this error.
    pub attempts: u64,
}

/// Attempts started in one bucket of the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub attempts: u64,
    pub failures: u64,
}

/// What a backend reads for [`StatsQuery`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsRows {
    /// Jobs created in the window, by current state.
    pub created: BTreeMap<JobState, u64>,
    /// Jobs waiting for a retry now (whatever their age).
    pub pending_retries: u64,
    pub finished: Vec<FinishedGroup>,
    /// The errors of the most jobs first (at most [`TOP_ERRORS`]).
    pub errors: Vec<ErrorGroup>,
    /// Only buckets with attempts, in time order.
    pub series: Vec<Bucket>,
}

pub const TOP_ERRORS: usize = 10;

/// Rates over a set of finished jobs. Cancelled jobs are left out: nobody let them finish.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rates {
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub expired: u64,
    pub first_attempt_success_rate: Option<f64>,
    pub success_rate_after_retries: Option<f64>,
    pub mean_attempts: Option<f64>,
}

impl Rates {
    fn add(&mut self, group: &FinishedGroup, first_ok: &mut u64, attempts: &mut u64) {
        match group.state {
            JobState::Succeeded => {
                self.succeeded += group.jobs;
                if group.first_attempt {
                    *first_ok += group.jobs;
                }
            }
            JobState::Failed => self.failed += group.jobs,
            JobState::Expired => self.expired += group.jobs,
            _ => return,
        }
        self.finished += group.jobs;
        *attempts += group.attempts;
    }

    pub fn of<'a>(groups: impl IntoIterator<Item = &'a FinishedGroup>) -> Rates {
        let (mut rates, mut first_ok, mut attempts) = (Rates::default(), 0, 0);
        for group in groups {
            rates.add(group, &mut first_ok, &mut attempts);
        }
        if rates.finished > 0 {
            let n = rates.finished as f64;
            rates.first_attempt_success_rate = Some(first_ok as f64 / n);
            rates.success_rate_after_retries = Some(rates.succeeded as f64 / n);
            rates.mean_attempts = Some(attempts as f64 / n);
        }
        rates
    }
}

/// One row of a per-kind or per-target breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Breakdown {
    pub name: String,
    #[serde(flatten)]
    pub rates: Rates,
}

/// Counts per state with every state present (0 where none).
pub fn every_state(counts: BTreeMap<JobState, u64>) -> BTreeMap<JobState, u64> {
    let mut all: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
    all.extend(counts);
    all
}

/// The stats of a window, as the API and CLI show them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Jobs created in the window, by current state (every state present).
    pub totals: BTreeMap<JobState, u64>,
    pub pending_retries: u64,
    #[serde(flatten)]
    pub rates: Rates,
    pub target_rate: f64,
    /// Whether the success rate after retries reaches [`TARGET_RATE`]; `None` without data.
    pub meets_target: Option<bool>,
    pub top_errors: Vec<ErrorGroup>,
    pub by_kind: Vec<Breakdown>,
    pub by_target: Vec<Breakdown>,
    /// Width of one point of `series`, in seconds.
    pub bucket_secs: f64,
    pub series: Vec<Bucket>,
}

impl Stats {
    pub fn from_rows(query: &StatsQuery, rows: StatsRows) -> Stats {
        let totals = every_state(rows.created);
        let rates = Rates::of(&rows.finished);
        let breakdown = |key: &dyn Fn(&FinishedGroup) -> String| {
            let mut groups: BTreeMap<String, Vec<&FinishedGroup>> = BTreeMap::new();
            for group in &rows.finished {
                groups.entry(key(group)).or_default().push(group);
            }
            groups
                .into_iter()
                .map(|(name, groups)| Breakdown {
                    name,
                    rates: Rates::of(groups),
                })
                .collect()
        };
        let by_kind = breakdown(&|g| g.kind.clone());
        let by_target = breakdown(&|g| g.target.clone().unwrap_or_else(|| "(none)".into()));
        Stats {
            since: query.since,
            until: query.until,
            totals,
            pending_retries: rows.pending_retries,
            meets_target: rates
                .success_rate_after_retries
                .map(|rate| rate >= TARGET_RATE),
            rates,
            target_rate: TARGET_RATE,
            top_errors: rows.errors,
            by_kind,
            by_target,
            bucket_secs: query.bucket.num_milliseconds() as f64 / 1000.0,
            series: rows.series,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(state: JobState, first_attempt: bool, jobs: u64, attempts: u64) -> FinishedGroup {
        FinishedGroup {
            kind: "deploy".into(),
            target: None,
            state,
            first_attempt,
            jobs,
            attempts,
        }
    }

    #[test]
    fn rates_leave_cancelled_jobs_out() {
        let rates = Rates::of(&[
            group(JobState::Succeeded, true, 6, 6),
            group(JobState::Succeeded, false, 2, 6),
            group(JobState::Failed, false, 2, 10),
            group(JobState::Cancelled, false, 5, 5),
        ]);
        assert_eq!(rates.finished, 10);
        assert_eq!(rates.first_attempt_success_rate, Some(0.6));
        assert_eq!(rates.success_rate_after_retries, Some(0.8));
        assert_eq!(rates.mean_attempts, Some(2.2));
    }

    #[test]
    fn no_finished_job_means_no_rate() {
        let rates = Rates::of(&[]);
        assert_eq!(rates.success_rate_after_retries, None);
    }
}
