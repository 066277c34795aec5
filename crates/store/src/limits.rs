//! Circuit breaking and retry budgets per target (SPEC §4): the configuration the engine
//! passes with each claim and result, and the decisions every backend makes the same way.
//!
//! Both live in the database so that every node sharing it sees the same state: a circuit is
//! a row in `circuits` (no row: closed), and a budget is counted over the `attempts` rows
//! started in its window (each attempt row carries its job's target). A backend reads both
//! for the targets among its claim candidates, asks [`gate`] which to start, and reschedules
//! the rest with the reason, so that a held job is not looked at again before it may start.

use crate::Next;
use chrono::{DateTime, Utc};
use retryd_core::job::Job;
use retryd_core::{AttemptOutcome, Class, JobId, JobState};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// When a target's circuit opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitConfig {
    /// Opens when at least this share (0–1] of the counted attempts in the window failed
    /// transiently…
    pub failure_threshold: f64,
    /// …and at least this many attempts finished in the window.
    pub min_attempts: u32,
    pub window: Duration,
    /// How long it stays open before one probe attempt may go through (half-open).
    pub cool_down: Duration,
}

/// Retries (attempts after the first) allowed per target within a sliding window.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// The cap of targets without an override; `None`: no cap.
    pub per_target: Option<u32>,
    pub targets: BTreeMap<String, u32>,
    /// One minute in production; configurable so that tests stay short.
    pub window: Duration,
}

impl BudgetConfig {
    pub fn cap(&self, target: &str) -> Option<u32> {
        self.targets.get(target).copied().or(self.per_target)
    }
}

/// What the claim enforces per target. `Default` enforces nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetLimits {
    pub circuit: Option<CircuitConfig>,
    pub budget: Option<BudgetConfig>,
}

impl TargetLimits {
    pub fn is_empty(&self) -> bool {
        self.circuit.is_none() && self.budget.is_none()
    }
}

/// One outage of a target as its circuit saw it: from opening to closing, however often a
/// failed probe opened it again in between. Kept for [`OUTAGE_RETENTION`] after it closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CircuitOutage {
    pub target: String,
    pub opened_at: DateTime<Utc>,
    /// `None` while the circuit is open or half-open.
    pub closed_at: Option<DateTime<Utc>>,
    /// The counts in the window that opened it.
    pub failures: u32,
    pub attempts: u32,
    /// How many probes failed and opened it again.
    pub reopened: u32,
    /// How it closed: "its probe succeeded" or "closed by NAME".
    pub closed_by: Option<String>,
}

/// How long a closed outage stays in the circuit history.
pub const OUTAGE_RETENTION: chrono::Duration = chrono::Duration::days(90);

/// What a circuit's closing records: a probe's success or the person who closed it.
pub fn closed_by(actor: Option<&str>) -> String {
    match actor {
        Some(actor) => format!("closed by {actor}"),
        None => "its probe succeeded".to_owned(),
    }
}

/// A circuit that is not closed (a closed circuit has no row).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Circuit {
    pub target: String,
    pub opened_at: DateTime<Utc>,
    /// Until then nothing starts against the target; after it, one probe.
    pub open_until: DateTime<Utc>,
    /// The attempt let through while half-open, until its result is in.
    pub probe_attempt_id: Option<i64>,
    /// The counts in the window that opened (or re-opened) it.
    pub failures: u32,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

impl Circuit {
    pub fn state(&self, now: DateTime<Utc>) -> CircuitState {
        if now < self.open_until {
            CircuitState::Open
        } else {
            CircuitState::HalfOpen
        }
    }
}

/// Retries started against a target within the budget's window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetUsage {
    pub retries: u32,
    pub oldest: Option<DateTime<Utc>>,
}

/// A job the gate did not let start: due again at `until`, with the reason shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub id: JobId,
    pub until: DateTime<Utc>,
    pub reason: String,
    /// The job's state, which a hold keeps.
    pub state: JobState,
    /// The job was not held before: the hold starts here and is an event on its timeline
    /// (later re-holds of the same episode are not, so an open circuit does not flood it).
    pub starts: bool,
}

#[derive(Debug, Default)]
pub struct Gated {
    /// In claim order.
    pub admitted: Vec<Job>,
    pub held: Vec<Held>,
}

/// Every hold reason of a circuit starts so, which is how a closing circuit finds the jobs
/// it held.
pub const CIRCUIT_HOLD: &str = "circuit ";

fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S").to_string()
}

fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn rate(cap: u32, window: Duration) -> String {
    if window == Duration::from_secs(60) {
        format!("{cap}/min")
    } else {
        format!("{cap} per {}", retryd_core::duration::format(window))
    }
}

/// A retry held by a budget of `cap` per `window` (of a target or an organization), until
/// the oldest retry counted leaves the window.
fn budget_hold(
    job: &Job,
    what: &str,
    cap: u32,
    window: Duration,
    used: &TargetUsage,
    now: DateTime<Utc>,
) -> Held {
    let slot =
        (used.oldest.unwrap_or(now) + span(window)).max(now + chrono::Duration::milliseconds(1));
    Held {
        id: job.id,
        state: job.state,
        starts: job.hold_reason.is_none(),
        until: slot,
        reason: format!(
            "retry budget of {what} exhausted ({}), next slot at {}",
            rate(cap, window),
            clock(slot)
        ),
    }
}

/// The window of an organization's retry budget.
pub const ORG_BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// An organization's retry budget as a claim reads it: retries per [`ORG_BUDGET_WINDOW`],
/// and those started in the window so far.
#[derive(Debug, Clone, Default)]
pub struct OrgBudget {
    pub cap: u32,
    pub used: TargetUsage,
}

/// The organizations among `candidates` whose retries a claim must count (those with a
/// retry among them), sorted.
pub fn retrying_orgs(candidates: &[Job]) -> Vec<&str> {
    let mut orgs: Vec<&str> = candidates
        .iter()
        .filter(|j| j.attempt > 0)
        .map(|j| j.org.as_str())
        .collect();
    orgs.sort_unstable();
    orgs.dedup();
    orgs
}

/// Holds, in claim order, the retries of organizations over their retry budget: one
/// organization's retry storm is capped as a failing target's is.
pub fn gate_orgs(
    candidates: Vec<Job>,
    budgets: &HashMap<String, OrgBudget>,
    now: DateTime<Utc>,
) -> Gated {
    let mut gated = Gated::default();
    let mut admitted: HashMap<String, u32> = HashMap::new();
    for job in candidates {
        if let Some(budget) = budgets.get(&job.org).filter(|_| job.attempt > 0) {
            let taken = admitted.entry(job.org.clone()).or_default();
            if budget.used.retries + *taken >= budget.cap {
                let what = format!("organization {}", job.org);
                let held = budget_hold(
                    &job,
                    &what,
                    budget.cap,
                    ORG_BUDGET_WINDOW,
                    &budget.used,
                    now,
                );
                gated.held.push(held);
                continue;
            }
            *taken += 1;
        }
        gated.admitted.push(job);
    }
    gated
}

/// Decides, for claim candidates in claim order, which may start: nothing against an open
/// circuit, one probe against a half-open one, and retries within the target's budget.
pub fn gate(
    candidates: Vec<Job>,
    circuits: &HashMap<String, Circuit>,
    usage: &HashMap<String, TargetUsage>,
    limits: &TargetLimits,
    now: DateTime<Utc>,
) -> Gated {
    let mut gated = Gated::default();
    let mut probing: HashSet<String> = HashSet::new();
    let mut retries: HashMap<String, u32> = HashMap::new();
    for job in candidates {
        let Some(target) = job.target.clone() else {
            gated.admitted.push(job);
            continue;
        };
        if let (Some(config), Some(circuit)) = (&limits.circuit, circuits.get(&target)) {
            let hold = match circuit.state(now) {
                CircuitState::Open => Some(Held {
                    id: job.id,
                    state: job.state,
                    starts: job.hold_reason.is_none(),
                    until: circuit.open_until,
                    reason: format!(
                        "circuit open for target {target} until {}",
                        clock(circuit.open_until)
                    ),
                }),
                CircuitState::HalfOpen
                    if circuit.probe_attempt_id.is_some() || probing.contains(&target) =>
                {
                    let until = now + span(config.cool_down);
                    Some(Held {
                        id: job.id,
                        state: job.state,
                        starts: job.hold_reason.is_none(),
                        until,
                        reason: format!(
                            "circuit half-open for target {target}: waiting for its probe attempt (looks again at {})",
                            clock(until)
                        ),
                    })
                }
                CircuitState::HalfOpen => None,
            };
            if let Some(held) = hold {
                gated.held.push(held);
                continue;
            }
        }
        if let Some(budget) = &limits.budget
            && job.attempt > 0
            && let Some(cap) = budget.cap(&target)
        {
            let used = usage.get(&target).cloned().unwrap_or_default();
            let admitted = retries.entry(target.clone()).or_default();
            if used.retries + *admitted >= cap {
                let what = format!("target {target}");
                gated
                    .held
                    .push(budget_hold(&job, &what, cap, budget.window, &used, now));
                continue;
            }
            *admitted += 1;
        }
        if circuits
            .get(&target)
            .is_some_and(|c| c.state(now) == CircuitState::HalfOpen)
        {
            probing.insert(target);
        }
        gated.admitted.push(job);
    }
    gated
}

/// The targets whose half-open circuit the chosen jobs probe (at most one job each, by
/// [`gate`]).
pub fn probe_targets(
    chosen: &[Job],
    circuits: &HashMap<String, Circuit>,
    now: DateTime<Utc>,
) -> Vec<(JobId, String)> {
    chosen
        .iter()
        .filter_map(|job| {
            let target = job.target.as_ref()?;
            let circuit = circuits.get(target)?;
            (circuit.state(now) == CircuitState::HalfOpen && circuit.probe_attempt_id.is_none())
                .then(|| (job.id, target.clone()))
        })
        .collect()
}

/// How an attempt counts for its target's circuit: `Some(true)` a transient failure,
/// `Some(false)` an answer (success or a permanent error: the target is up), `None` not at
/// all (cancelled, released at shutdown, stopped by the deadline).
pub fn target_outcome(next: &Next, outcome: AttemptOutcome, class: Option<Class>) -> Option<bool> {
    match next {
        Next::Cancelled | Next::Released { .. } | Next::Lost { .. } => None,
        _ if outcome == AttemptOutcome::Succeeded => Some(false),
        _ => match class {
            Some(Class::Transient) => Some(true),
            Some(_) => Some(false),
            None => None,
        },
    }
}

/// What a finished attempt does to its target's circuit.
#[derive(Debug, Clone, PartialEq)]
pub enum CircuitChange {
    Keep,
    /// Open (or re-open) until `until`, with the window's counts.
    Open {
        until: DateTime<Utc>,
        failures: u32,
        attempts: u32,
    },
    /// The probe succeeded: delete the circuit and release the jobs it held.
    Close,
    /// The probe ended without a verdict (cancelled, released): let another probe go.
    FreeProbe,
}

/// Decides the circuit's change after an attempt. `window` is (attempts, transient
/// failures) counted in the window, this attempt included.
pub fn circuit_after(
    circuit: Option<&Circuit>,
    attempt_id: i64,
    failed: Option<bool>,
    window: (u32, u32),
    config: &CircuitConfig,
    now: DateTime<Utc>,
) -> CircuitChange {
    let probe = circuit.is_some_and(|c| c.probe_attempt_id == Some(attempt_id));
    let (attempts, failures) = window;
    let open = CircuitChange::Open {
        until: now + span(config.cool_down),
        failures,
        attempts,
    };
    match (failed, circuit) {
        (None, _) if probe => CircuitChange::FreeProbe,
        (Some(true), _) if probe => open,
        (Some(false), _) if probe => CircuitChange::Close,
        // A result of an attempt started before the circuit opened changes nothing.
        (_, Some(_)) | (None, None) | (Some(false), None) => CircuitChange::Keep,
        (Some(true), None) => {
            if attempts >= config.min_attempts.max(1)
                && f64::from(failures) >= config.failure_threshold * f64::from(attempts)
            {
                open
            } else {
                CircuitChange::Keep
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CircuitConfig {
        CircuitConfig {
            failure_threshold: 0.5,
            min_attempts: 10,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_circuit_opens_only_above_the_threshold_with_enough_attempts() {
        let now = Utc::now();
        let c = config();
        assert_eq!(
            circuit_after(None, 1, Some(true), (9, 9), &c, now),
            CircuitChange::Keep
        );
        assert_eq!(
            circuit_after(None, 1, Some(true), (10, 4), &c, now),
            CircuitChange::Keep
        );
        assert!(matches!(
            circuit_after(None, 1, Some(true), (10, 5), &c, now),
            CircuitChange::Open { .. }
        ));
        assert_eq!(
            circuit_after(None, 1, Some(false), (10, 10), &c, now),
            CircuitChange::Keep
        );
    }

    #[test]
    fn the_probe_closes_or_reopens_the_circuit() {
        let now = Utc::now();
        let circuit = Circuit {
            target: "t".into(),
            opened_at: now,
            open_until: now,
            probe_attempt_id: Some(7),
            failures: 10,
            attempts: 10,
        };
        let c = config();
        let after = |id, failed| circuit_after(Some(&circuit), id, failed, (1, 1), &c, now);
        assert_eq!(after(7, Some(false)), CircuitChange::Close);
        assert!(matches!(after(7, Some(true)), CircuitChange::Open { .. }));
        assert_eq!(after(7, None), CircuitChange::FreeProbe);
        assert_eq!(after(8, Some(true)), CircuitChange::Keep);
    }
}
