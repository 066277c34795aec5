//! Recurring jobs: when a schedule fires, across daylight-saving changes, and what happens to
//! fire times missed while no node could fire them.
//!
//! Cron expressions are parsed and evaluated by `croner` (five fields, or six with seconds
//! first), in an IANA time zone from `chrono-tz`. Daylight saving follows Vixie cron, as
//! croner implements it: a fixed time that falls in a spring-forward gap fires at the first
//! valid time after the gap, once; a fixed time that occurs twice when clocks go back fires
//! once, at its first occurrence. Interval patterns (`*/10 * * * *`) keep their rhythm in
//! real time.

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A fire time later than this is missed (the nodes were down), not merely late: the
/// schedule's misfire rule decides about it.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);
/// At most this many fire times are enqueued at once, however many were missed.
pub const MAX_CATCH_UP: usize = 100;

/// What a fire time does while the schedule's previous run is still live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip the fire time (recorded on the schedule with its reason).
    #[default]
    Skip,
    /// Enqueue anyway.
    Allow,
}

/// What happens to fire times missed by more than [`MISFIRE_GRACE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Misfire {
    /// Run none of them; go on with the next fire time.
    Skip,
    /// Run once for all of them (dated at the latest).
    #[default]
    Once,
    /// Run each of them (the latest [`MAX_CATCH_UP`]).
    All,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "skip" => Overlap::Skip,
            "allow" => Overlap::Allow,
            _ => return None,
        })
    }
}

impl Misfire {
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::Skip => "skip",
            Misfire::Once => "once",
            Misfire::All => "all",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "skip" => Misfire::Skip,
            "once" => Misfire::Once,
            "all" => Misfire::All,
            _ => return None,
        })
    }
}

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    cron: croner::Cron,
    tz: Tz,
}

/// Why an expression or a zone was refused; `field` names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScheduleError {
    pub field: &'static str,
    pub message: String,
}

impl Cron {
    /// Parses `expr` (five fields, or six with seconds first) in the IANA zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let tz: Tz = tz.parse().map_err(|_| ScheduleError {
            field: "tz",
            message: format!(
                "unknown time zone {tz:?}: use an IANA name such as UTC or Europe/Berlin"
            ),
        })?;
        if expr.trim().is_empty() || expr.len() > 200 {
            return Err(ScheduleError {
                field: "cron",
                message: "must be a cron expression of 5 fields (minute hour day month weekday) or 6 with seconds first".into(),
            });
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError {
                field: "cron",
                message: format!(
                    "{e}; expected 5 fields (minute hour day month weekday) or 6 with seconds first, e.g. '*/5 * * * *' or '*/2 * * * * *'"
                ),
            })?;
        // Whether it ever fires again is the caller's to ask, with its clock (`next_after`):
        // this crate reads no clock of its own.
        Ok(Cron { cron, tz })
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Fire times are whole seconds: from 10:00:01.500 the next of `* * * * * *` is
        // 10:00:02, not 10:00:02.500.
        let t = t.trunc_subsecs(0);
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }

    /// The next `n` fire times after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}

/// What a schedule does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The fire times to enqueue, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Fire times passed over: missed and skipped by the misfire rule, or beyond the bound.
    pub passed_over: usize,
    /// The schedule's next fire time after now.
    pub next: Option<DateTime<Utc>>,
}

/// The fire times due by `now`, starting at the stored `next_fire`. When the earliest is
/// within [`MISFIRE_GRACE`], every due time fires (a late leader, a handover between nodes);
/// when it is older, the nodes were down and `misfire` decides.
pub fn due(cron: &Cron, next_fire: DateTime<Utc>, now: DateTime<Utc>, misfire: Misfire) -> Due {
    let mut due = Vec::new();
    let mut passed_over = 0;
    let mut at = Some(next_fire);
    while let Some(t) = at.filter(|t| *t <= now) {
        due.push(t);
        if due.len() > MAX_CATCH_UP {
            due.remove(0);
            passed_over += 1;
        }
        at = cron.next_after(t);
    }
    let next = at.or_else(|| cron.next_after(now));
    let grace = chrono::Duration::from_std(MISFIRE_GRACE).expect("a minute");
    let missed = next_fire <= now && now - next_fire > grace;
    let fire = match (missed, misfire) {
        (false, _) | (true, Misfire::All) => due,
        (true, Misfire::Once) => {
            passed_over += due.len().saturating_sub(1);
            due.pop().into_iter().collect()
        }
        (true, Misfire::Skip) => {
            passed_over += due.len();
            Vec::new()
        }
    };
    Due {
        fire,
        passed_over,
        next,
    }
}

/// The idempotency key of a schedule's run at a fire time: the same on every node and after
/// restarts, so that a fire time is enqueued at most once.
pub fn run_key(schedule_id: &str, fire: DateTime<Utc>) -> String {
    format!("schedule:{schedule_id}:{}", fire.timestamp_millis())
}

/// What each run of a schedule is: a submit without its per-run fields (run time,
/// deadline, idempotency key), which each fire time fills in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobTemplate {
    pub queue: String,
    pub kind: String,
    pub target: Option<String>,
    pub action: crate::Action,
    pub policy_name: String,
    pub policy: crate::Policy,
    pub priority: u8,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Each run's deadline, after its fire time, in milliseconds.
    pub deadline_after_ms: Option<u64>,
}

/// The label every run of a schedule carries: its name.
pub const SCHEDULE_LABEL: &str = "schedule";

impl JobTemplate {
    /// The template of a validated submit (its run time, deadline and key are dropped).
    pub fn from_job(job: crate::job::NewJob, deadline_after: Option<Duration>) -> Self {
        JobTemplate {
            queue: job.queue,
            kind: job.kind,
            target: job.target,
            action: job.action,
            policy_name: job.policy_name,
            policy: job.policy,
            priority: job.priority,
            labels: job.labels,
            deadline_after_ms: deadline_after.map(|d| d.as_millis() as u64),
        }
    }

    /// The run of `schedule` (of organization `org`) at `fire`.
    pub fn run(
        &self,
        org: &str,
        schedule: &str,
        fire: DateTime<Utc>,
        key: Option<String>,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> crate::job::NewJob {
        let mut labels = self.labels.clone();
        labels.insert(SCHEDULE_LABEL.into(), schedule.into());
        crate::job::NewJob {
            id: crate::JobId::new(),
            org: org.to_owned(),
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            target: self.target.clone(),
            action: self.action.clone(),
            policy_name: self.policy_name.clone(),
            policy: self.policy.clone(),
            priority: self.priority,
            run_at: fire,
            deadline: self
                .deadline_after_ms
                .map(|ms| fire + chrono::Duration::milliseconds(ms as i64)),
            labels,
            idempotency_key: key,
            created_by: Some(created_by.into()),
            created_at: now,
        }
    }
}

/// How a schedule fires and what it enqueues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    pub cron: String,
    pub tz: String,
    pub overlap: Overlap,
    pub misfire: Misfire,
    pub job: JobTemplate,
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: String,
    pub org: String,
    pub name: String,
    pub definition: Definition,
    pub paused: bool,
    /// The next fire time not yet handled; `None` while paused or when it never fires again.
    pub next_fire: Option<DateTime<Utc>>,
    pub last_fire: Option<DateTime<Utc>>,
    pub last_job_id: Option<crate::JobId>,
    /// Why the last fire times were skipped (overlap or misfire), and when.
    pub last_skip: Option<String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

/// What firing changed on a schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub next_fire: Option<DateTime<Utc>>,
    pub last_fire: Option<DateTime<Utc>>,
    pub last_job_id: Option<crate::JobId>,
    pub last_skip: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn berlin(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Berlin
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_seconds_field_is_optional_and_bad_input_names_the_field() {
        let every_two = Cron::parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_two.next_after(utc("2026-01-01T00:00:01Z")),
            Some(utc("2026-01-01T00:00:02Z"))
        );
        assert_eq!(
            every_two.next_after(utc("2026-01-01T00:00:02.687Z")),
            Some(utc("2026-01-01T00:00:04Z")),
            "fire times are whole seconds"
        );
        let minutely = Cron::parse("* * * * *", "UTC").unwrap();
        assert_eq!(
            minutely.next_after(utc("2026-01-01T00:00:01Z")),
            Some(utc("2026-01-01T00:01:00Z"))
        );
        assert_eq!(Cron::parse("61 * * * *", "UTC").unwrap_err().field, "cron");
        assert_eq!(Cron::parse("", "UTC").unwrap_err().field, "cron");
        let zone = Cron::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(zone.field, "tz");
        assert!(zone.message.contains("IANA"), "{zone}");
    }

    #[test]
    fn a_daily_0230_in_berlin_fires_once_a_day_across_both_dst_changes() {
        let cron = Cron::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // Spring forward (2026-03-29, 02:00 → 03:00): 02:30 does not exist; it fires once,
        // at 03:00 CEST, the first valid time after the gap.
        let fires = cron.upcoming(berlin(2026, 3, 27, 12, 0), 4);
        assert_eq!(
            fires,
            vec![
                berlin(2026, 3, 28, 2, 30),
                utc("2026-03-29T01:00:00Z"),
                berlin(2026, 3, 30, 2, 30),
                berlin(2026, 3, 31, 2, 30),
            ]
        );
        // Fall back (2026-10-25, 03:00 → 02:00): 02:30 occurs twice; it fires once, at the
        // first (CEST, 00:30 UTC).
        let fires = cron.upcoming(berlin(2026, 10, 23, 12, 0), 3);
        assert_eq!(
            fires,
            vec![
                utc("2026-10-24T00:30:00Z"),
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-26T01:30:00Z"),
            ]
        );
    }

    #[test]
    fn after_five_minutes_down_each_misfire_rule_does_what_it_says() {
        let cron = Cron::parse("* * * * *", "UTC").unwrap();
        let next_fire = utc("2026-05-01T10:00:00Z");
        let now = utc("2026-05-01T10:05:10Z");
        let skip = due(&cron, next_fire, now, Misfire::Skip);
        assert!(skip.fire.is_empty());
        assert_eq!(skip.passed_over, 6);
        assert_eq!(skip.next, Some(utc("2026-05-01T10:06:00Z")));
        let once = due(&cron, next_fire, now, Misfire::Once);
        assert_eq!(once.fire, vec![utc("2026-05-01T10:05:00Z")]);
        assert_eq!(once.passed_over, 5);
        let all = due(&cron, next_fire, now, Misfire::All);
        assert_eq!(all.fire.len(), 6);
        assert_eq!(all.fire[0], next_fire);
        assert_eq!(all.next, Some(utc("2026-05-01T10:06:00Z")));
    }

    #[test]
    fn a_late_fire_within_the_grace_is_not_a_misfire_and_nothing_is_skipped() {
        let cron = Cron::parse("*/2 * * * * *", "UTC").unwrap();
        // A leader died; another took over 7 s later: every fire time since runs, whatever
        // the misfire rule.
        let d = due(
            &cron,
            utc("2026-05-01T10:00:00Z"),
            utc("2026-05-01T10:00:07Z"),
            Misfire::Skip,
        );
        assert_eq!(d.fire.len(), 4);
        assert_eq!(d.passed_over, 0);
        assert_eq!(d.next, Some(utc("2026-05-01T10:00:08Z")));
        let early = due(
            &cron,
            utc("2026-05-01T10:00:08Z"),
            utc("2026-05-01T10:00:07Z"),
            Misfire::Once,
        );
        assert!(early.fire.is_empty());
        assert_eq!(early.next, Some(utc("2026-05-01T10:00:08Z")));
    }

    #[test]
    fn catching_up_is_bounded() {
        let cron = Cron::parse("* * * * * *", "UTC").unwrap();
        let d = due(
            &cron,
            utc("2026-05-01T10:00:00Z"),
            utc("2026-05-01T11:00:00Z"),
            Misfire::All,
        );
        assert_eq!(d.fire.len(), MAX_CATCH_UP);
        assert_eq!(d.fire.last(), Some(&utc("2026-05-01T11:00:00Z")));
        assert_eq!(d.passed_over, 3_601 - MAX_CATCH_UP);
    }
}
