//! The rows an insert, a claim and a result write, computed once for both backends: each
//! backend binds these named fields to its own statements instead of deriving the values
//! again (and instead of parallel lists or tuples bound by position).

use crate::{AttemptResult, LogAppend, NewLogLine, Next, limits};
use chrono::{DateTime, Utc};
use retryd_core::JobState;
use retryd_core::job::Stream;
use retryd_core::job::{Event, Job, NewJob};
use retryd_core::pipeline::StepRecord;

/// The `submitted` event a new job's insert writes under `id`, as the store reads it back
/// (its instant cut to the store's precision by `stored`).
pub fn submitted_event(
    new: &NewJob,
    id: i64,
    stored: impl Fn(DateTime<Utc>) -> DateTime<Utc>,
) -> Event {
    Event {
        id,
        job_id: new.id,
        at: stored(new.created_at),
        from: None,
        to: JobState::Pending,
        reason: "submitted".to_owned(),
        actor: crate::rules::submitter(new).to_owned(),
        step: crate::rules::first_step(new),
    }
}

/// The job an insert stores for `new`, as the store will read it back: its instants cut to
/// the store's precision by `stored` (microseconds on PostgreSQL, milliseconds on SQLite). An
/// insert answers with it instead of reading every new row back.
pub fn stored_job(new: &NewJob, stored: impl Fn(DateTime<Utc>) -> DateTime<Utc>) -> Job {
    Job {
        id: new.id,
        org: new.org.clone(),
        queue: new.queue.clone(),
        kind: new.kind.clone(),
        target: new.target.clone(),
        action: new.action.clone(),
        policy_name: new.policy_name.clone(),
        policy: new.policy.clone(),
        priority: new.priority,
        run_at: stored(new.run_at),
        deadline: new.deadline.map(&stored),
        labels: new.labels.clone(),
        idempotency_key: new.idempotency_key.clone(),
        created_by: new.created_by.clone(),
        state: JobState::Pending,
        attempt: 0,
        next_attempt_at: Some(stored(new.run_at)),
        last_error: None,
        last_error_class: None,
        last_rule: None,
        finish_reason: None,
        lease_owner: None,
        lease_expires_at: None,
        attempt_id: None,
        cancel_requested: false,
        steps: Vec::new(),
        step_attempt_base: 0,
        hold_reason: None,
        created_at: stored(new.created_at),
        started_at: None,
        finished_at: None,
        updated_at: stored(new.created_at),
    }
}

/// What a result says of the next attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextAttempt {
    /// The wait before it in milliseconds, and why.
    pub delay_ms: Option<i64>,
    pub delay_reason: Option<String>,
    /// When it is due.
    pub at: Option<DateTime<Utc>>,
    /// Attempts to give back: a release or a lost attempt is not counted.
    pub refund: i64,
}

impl NextAttempt {
    pub fn of(next: &Next) -> NextAttempt {
        match next {
            Next::Retry {
                at,
                delay,
                delay_reason,
            } => NextAttempt {
                delay_ms: Some(delay.as_millis() as i64),
                delay_reason: Some(delay_reason.clone()),
                at: Some(*at),
                refund: 0,
            },
            Next::Released { at } => NextAttempt {
                delay_ms: Some(0),
                delay_reason: Some("released at shutdown".to_owned()),
                at: Some(*at),
                refund: 1,
            },
            Next::Lost { at, delay } => NextAttempt {
                delay_ms: Some(delay.as_millis() as i64),
                delay_reason: Some("lost with its node".to_owned()),
                at: Some(*at),
                refund: 1,
            },
            _ => NextAttempt::default(),
        }
    }
}

/// A finished attempt's row.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub id: i64,
    pub finished_at: DateTime<Utc>,
    pub outcome: &'static str,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub class: Option<&'static str>,
    pub rule: Option<String>,
    pub next: NextAttempt,
    pub output_dropped_bytes: i64,
    /// How it counts for its target's circuit: a transient failure, an answer, or (`None`)
    /// not at all.
    pub target_failed: Option<bool>,
    /// The attempt's opening and closing system lines, when its result brings them (see
    /// [`ResultLines`]).
    pub opening: Option<KeptLine>,
    pub closing: Option<KeptLine>,
}

impl AttemptRow {
    /// The row without the lines of its result (see [`AttemptRow::keep`]).
    pub fn of(result: &AttemptResult, target_failed: Option<bool>) -> AttemptRow {
        AttemptRow {
            id: result.lease.attempt_id,
            finished_at: result.now,
            outcome: result.outcome.as_str(),
            exit_code: result.exit_code,
            error: result.error.clone(),
            class: result.class.map(|c| c.as_str()),
            rule: result.rule.clone(),
            next: NextAttempt::of(&result.next),
            output_dropped_bytes: result.output_dropped_bytes as i64,
            target_failed,
            opening: None,
            closing: None,
        }
    }

    /// Takes the system lines its result's lines leave to the row.
    pub fn keep(&mut self, lines: &mut ResultLines<'_>) {
        self.opening = lines.opening.take();
        self.closing = lines.closing.take();
    }
}

/// A log line kept on its attempt's row instead of a row of its own: it reads back as any
/// other line, with its sequence number, as a `system` line of the attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptLine {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub line: String,
}

/// A line of a result's log stored as a row: its sequence number and its index within the
/// attempt's output.
#[derive(Debug, Clone, Copy)]
pub struct LogRow<'a> {
    pub seq: i64,
    pub index: u64,
    pub line: &'a NewLogLine,
}

/// How a result's output lines are stored.
///
/// A short attempt's whole log comes with its result: the opening system line (index 0,
/// "attempt N of M started on …"), what the action printed, and the closing system line
/// ("… → succeeded: …"). An accepted result keeps the opening and the closing line on its
/// attempt's row, which its result updates anyway (a HOT update on PostgreSQL): two rows and
/// four index entries a job fewer. Reads merge them back by sequence number, so a log reads
/// exactly as if every line had a row. A refused result's lines are all rows (its attempt's
/// row is not its to update).
#[derive(Debug, Default)]
pub struct ResultLines<'a> {
    pub opening: Option<KeptLine>,
    pub rows: Vec<LogRow<'a>>,
    pub closing: Option<KeptLine>,
}

impl<'a> ResultLines<'a> {
    /// Numbers `log`'s lines with `seqs` (one each, increasing, reserved by the backend from
    /// the log's sequence). `keep`: whether the attempt's row takes its system lines.
    pub fn of(log: &'a LogAppend, seqs: &[i64], keep: bool) -> ResultLines<'a> {
        debug_assert_eq!(seqs.len(), log.lines.len(), "one sequence number a line");
        let mut rows: Vec<LogRow<'a>> = log
            .lines
            .iter()
            .zip(seqs)
            .enumerate()
            .map(|(i, (line, &seq))| LogRow {
                seq,
                index: log.first_index + i as u64,
                line,
            })
            .collect();
        let kept = |row: LogRow<'_>| KeptLine {
            seq: row.seq,
            at: row.line.at,
            line: row.line.line.clone(),
        };
        let system =
            |row: Option<&LogRow<'_>>| row.is_some_and(|r| r.line.stream == Stream::System);
        let mut lines = ResultLines::default();
        if keep && system(rows.first()) && log.first_index == 0 {
            lines.opening = Some(kept(rows.remove(0)));
        }
        if keep && system(rows.last()) {
            lines.closing = rows.pop().map(kept);
        }
        lines.rows = rows;
        lines
    }
}

/// What an accepted result writes: its attempt's row, its job's row and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishRow {
    pub attempt: AttemptRow,
    pub job_id: retryd_core::JobId,
    pub from: JobState,
    pub to: JobState,
    /// The job's finish reason and instant, when `to` is terminal.
    pub finish_reason: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The job's completed steps after this result.
    pub steps: Vec<StepRecord>,
    /// The event's reason, actor and step.
    pub reason: String,
    pub actor: String,
    pub step: Option<String>,
}

impl FinishRow {
    /// `job` (as locked before this result) as the result's update leaves it, without
    /// reading it back: the backends' job update sets exactly these columns. `stored` cuts
    /// an instant to the backend's precision.
    pub fn finished(&self, mut job: Job, stored: impl Fn(DateTime<Utc>) -> DateTime<Utc>) -> Job {
        let attempt = &self.attempt;
        job.state = self.to;
        job.next_attempt_at = attempt.next.at.map(&stored);
        job.hold_reason = None;
        if attempt.error.is_some() {
            job.last_error = attempt.error.clone();
            job.last_error_class = attempt.class.and_then(retryd_core::Class::parse);
            job.last_rule = attempt.rule.clone();
        }
        job.finish_reason = self.finish_reason.clone();
        job.finished_at = self.finished_at.map(&stored);
        job.lease_owner = None;
        job.lease_expires_at = None;
        job.attempt_id = None;
        job.cancel_requested = false;
        job.updated_at = stored(attempt.finished_at);
        job.attempt = job.attempt.saturating_sub(attempt.next.refund as u32);
        job.steps = self.steps.clone();
        job
    }

    /// The rows of `result` for `job`, which moves to `to` (already checked against the
    /// transition table).
    pub fn of(job: &Job, to: JobState, result: &AttemptResult) -> FinishRow {
        let target_failed = job
            .target
            .as_ref()
            .and_then(|_| limits::target_outcome(&result.next, result.outcome, result.class));
        let terminal = to.is_terminal();
        FinishRow {
            attempt: AttemptRow::of(result, target_failed),
            job_id: job.id,
            from: job.state,
            to,
            finish_reason: terminal.then(|| result.reason.clone()),
            finished_at: terminal.then_some(result.now),
            steps: crate::rules::steps_after(job, result.step.as_ref()),
            reason: result.reason.clone(),
            actor: result.actor.clone(),
            step: crate::rules::claimed_step(job),
        }
    }
}

/// What a claim writes for one job it starts: the attempt's row, the job's row and the event
/// (→ `running`, by the claiming node).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRow {
    pub job_id: retryd_core::JobId,
    pub from: JobState,
    /// The attempt's number, its step, target and start.
    pub number: u32,
    pub step: Option<String>,
    pub target: Option<String>,
    pub started_at: DateTime<Utc>,
    /// The event's reason.
    pub reason: String,
}

impl ClaimRow {
    /// The rows of starting `job` on `request.node`; refused when its state cannot move to
    /// `running`.
    pub fn of(job: &Job, request: &crate::ClaimRequest) -> crate::Result<ClaimRow> {
        job.state.transition(JobState::Running)?;
        let number = job.attempt + 1;
        Ok(ClaimRow {
            job_id: job.id,
            from: job.state,
            number,
            step: crate::rules::claimed_step(job),
            target: job.target.clone(),
            started_at: crate::rules::attempt_start(job, request.now),
            reason: retryd_core::explain::claim_started(job, number, &request.node),
        })
    }

    /// `job` (the candidate as read) as the claim's update leaves it, without reading it
    /// back: `running` under the node's lease, with attempt `attempt_id` open. `stored` cuts
    /// an instant to the backend's precision.
    pub fn started(
        &self,
        mut job: Job,
        attempt_id: i64,
        request: &crate::ClaimRequest,
        stored: impl Fn(DateTime<Utc>) -> DateTime<Utc>,
    ) -> Job {
        job.state = JobState::Running;
        job.attempt = self.number;
        job.lease_owner = Some(request.node.clone());
        job.lease_expires_at = Some(stored(request.lease_until));
        job.attempt_id = Some(attempt_id);
        job.next_attempt_at = None;
        job.hold_reason = None;
        job.started_at = job.started_at.or(Some(stored(self.started_at)));
        job.updated_at = stored(request.now);
        job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(first_index: u64, lines: &[(Stream, &str)]) -> LogAppend {
        LogAppend {
            first_index,
            lines: lines
                .iter()
                .map(|(stream, line)| NewLogLine {
                    at: DateTime::<Utc>::UNIX_EPOCH,
                    stream: *stream,
                    line: (*line).to_owned(),
                })
                .collect(),
        }
    }

    fn shape(lines: &ResultLines<'_>) -> (Option<i64>, Vec<(i64, u64)>, Option<i64>) {
        (
            lines.opening.as_ref().map(|l| l.seq),
            lines.rows.iter().map(|r| (r.seq, r.index)).collect(),
            lines.closing.as_ref().map(|l| l.seq),
        )
    }

    #[test]
    fn an_accepted_results_opening_and_closing_lines_go_to_its_attempt_row() {
        let all = log(
            0,
            &[
                (Stream::System, "attempt 1 of 3 started"),
                (Stream::Stdout, "out"),
                (Stream::System, "exit code 0 → succeeded"),
            ],
        );
        let lines = ResultLines::of(&all, &[7, 8, 9], true);
        assert_eq!(shape(&lines), (Some(7), vec![(8, 1)], Some(9)));
        assert_eq!(lines.opening.unwrap().line, "attempt 1 of 3 started");
        // Refused: every line is a row, numbered and indexed in order.
        let refused = ResultLines::of(&all, &[7, 8, 9], false);
        assert_eq!(shape(&refused), (None, vec![(7, 0), (8, 1), (9, 2)], None));
    }

    #[test]
    fn only_a_first_line_of_the_attempt_opens_it_and_only_a_system_line_closes_it() {
        // The opening line was flushed while the attempt ran: this result starts later.
        let later = log(
            4,
            &[(Stream::System, "GET /deploy"), (Stream::Stdout, "done")],
        );
        assert_eq!(
            shape(&ResultLines::of(&later, &[20, 21], true)),
            (None, vec![(20, 4), (21, 5)], None)
        );
        // One line that opens the attempt is not also its closing line.
        let lone = log(0, &[(Stream::System, "attempt 1 of 3 started")]);
        assert_eq!(
            shape(&ResultLines::of(&lone, &[3], true)),
            (Some(3), vec![], None)
        );
        let empty = log(0, &[]);
        assert_eq!(
            shape(&ResultLines::of(&empty, &[], true)),
            (None, vec![], None)
        );
    }
}
