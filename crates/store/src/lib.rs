//! The storage seam: what the engine asks of a database, named as verbs on jobs.
//!
//! The write side ([`JobWriter`]) changes jobs, always in one transaction per call and always
//! checking the transition against [`retryd_core::JobState::transition`]: a backend never
//! decides a transition by itself. The read side ([`JobReader`]) only reads. Every backend
//! runs the same [`conformance`] suite, so that they cannot drift apart.
//!
//! # Layout
//!
//! - this file: the traits, their inputs and outputs, and [`Error`].
//! - [`access`]: API tokens and managed policies ([`AccessStore`]).
//! - [`stats`]: the grouped rows a backend reads for stats, and the rates computed from them.
//! - [`limits`]: circuit breaking and retry budgets per target, the types the claim and the
//!   result of an attempt carry; [`notify`]: durable notification deliveries.
//! - [`conformance`]: the behaviour every backend must show, as async test functions, and the
//!   [`conformance_tests!`] macro that turns them into `#[tokio::test]`s for a backend.

pub mod access;
pub mod channels;
pub mod conformance;
pub mod control;
pub mod group;
pub mod policies;
pub mod rows;
pub mod schedules;
pub mod sealing;
pub mod signals;
pub mod stats;

pub use control::Control;
pub use policies::{Policies, PolicyBook};
pub use schedules::ScheduleStore;
pub use signals::Signals;

pub use access::{AccessStore, StoredChannel, StoredPolicy, TokenRecord};
pub use stats::{Stats, StatsQuery, StatsRows};
pub mod limits;
pub mod notify;

pub use limits::{
    BudgetConfig, Circuit, CircuitConfig, CircuitOutage, CircuitState, OUTAGE_RETENTION,
    TargetLimits, closed_by,
};
pub use notify::{
    ClaimedDelivery, DeliveryAttempt, DeliveryNext, DeliveryResult, DeliveryState, NewNotification,
    Notification, NotificationStore,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use retryd_core::job::{Attempt, Event, Job, LogLine, NewJob, Stream};
use retryd_core::pipeline::StepRecord;
use retryd_core::{AttemptOutcome, Class, JobId, JobState, TransitionError};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// A result from an attempt that no longer holds its lease (rescued, cancelled or
    /// finished elsewhere): refused so that no attempt is applied twice.
    #[error("attempt {attempt_id} of job {job_id} no longer holds its lease")]
    LeaseLost { job_id: JobId, attempt_id: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Backend(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A job as inserted; `created` is false when an idempotency key returned an existing one.
#[derive(Debug, Clone)]
pub struct Inserted {
    pub job: Job,
    pub created: bool,
    pub event: Option<Event>,
}

/// How many more attempts a node may start, in all and per queue.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub node: String,
    pub now: DateTime<Utc>,
    /// Jobs due by this instant are claimed: at or a little after `now`, so that a claim's
    /// round trips are over by the time its jobs are due (the attempt waits for that time).
    pub due_by: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    /// At most this many jobs in all.
    pub limit: usize,
    /// Free slots for queues with fewer than `default_queue_free`.
    pub queue_free: HashMap<String, usize>,
    /// Free slots for any queue not in `queue_free`.
    pub default_queue_free: usize,
    /// Circuit breaking and retry budgets per target: jobs they hold are not started but
    /// rescheduled, with the reason.
    pub limits: std::sync::Arc<TargetLimits>,
    /// The jobs this node can run; it never claims another.
    pub runnable: Runnable,
}

/// Which jobs a node can run: `command` and `http` actions (the built-in executors), and
/// `handler` jobs of the kinds its embedding program registered. `retryd serve` runs the
/// built-in ones only, so a handler job waits for a program that has its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runnable {
    pub builtin: bool,
    pub handler_kinds: Vec<String>,
}

impl Default for Runnable {
    /// What `retryd serve` runs.
    fn default() -> Self {
        Runnable {
            builtin: true,
            handler_kinds: Vec::new(),
        }
    }
}

impl ClaimRequest {
    pub fn free_in(&self, queue: &str) -> usize {
        self.queue_free
            .get(queue)
            .copied()
            .unwrap_or(self.default_queue_free)
    }
}

/// A claimed job: now `running`, its attempt row created and counted.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    /// When it was due (possibly after the claim's `now`): the action does not start before.
    pub due_at: DateTime<Utc>,
    pub lease: Lease,
    pub event: Event,
}

/// What fences an attempt's writes: only the holder of the current attempt may finish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: JobId,
    pub attempt_id: i64,
    /// The attempt's number (1-based) within the job.
    pub attempt: u32,
    pub node: String,
}

/// Who finishes an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// The node running it; refused unless it still holds the lease.
    Owner,
    /// The rescuer; refused unless the lease expired before this instant.
    Rescue { expired_before: DateTime<Utc> },
}

/// Where a finished attempt leaves the job.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Succeeded,
    Retry {
        at: DateTime<Utc>,
        delay: Duration,
        delay_reason: String,
    },
    /// Stopped by a graceful shutdown: due again at `at`, and the attempt is not counted
    /// (a shutdown is not the job's failure). A crash still counts, so that a job that
    /// kills its node cannot loop.
    Released {
        at: DateTime<Utc>,
    },
    /// Lost with its node (it died or froze past its lease): due again at `at`, and not
    /// counted against `max_attempts` either; lost attempts have their own limit.
    Lost {
        at: DateTime<Utc>,
        delay: Duration,
    },
    Failed,
    Cancelled,
    Expired,
}

impl Next {
    pub fn state(&self) -> JobState {
        match self {
            Next::Succeeded => JobState::Succeeded,
            Next::Retry { .. } | Next::Released { .. } | Next::Lost { .. } => JobState::Retrying,
            Next::Failed => JobState::Failed,
            Next::Cancelled => JobState::Cancelled,
            Next::Expired => JobState::Expired,
        }
    }
}

/// The result of an attempt, to record.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub lease: Lease,
    pub fence: Fence,
    pub now: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub class: Option<Class>,
    pub rule: Option<String>,
    pub output_dropped_bytes: u64,
    pub next: Next,
    /// The event's reason; for a terminal state also the job's `finish_reason`.
    pub reason: String,
    pub actor: String,
    /// A pipeline step this attempt completed (its last step, or a failed non-blocking one):
    /// appended to the job's completed steps.
    pub step: Option<StepRecord>,
    /// When set, the outcome counts towards the circuit of the job's target.
    pub circuit: Option<CircuitConfig>,
    /// Deliveries to enqueue with the result, in the same transaction.
    pub notify: Vec<NewNotification>,
    /// Output lines not stored yet (all of a short attempt's, and the closing line): written
    /// in the result's transaction, so that a short attempt costs one write, not three.
    pub log: LogAppend,
}

/// What a lease renewal found out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Jobs among the renewed whose cancellation was requested.
    pub cancelled: Vec<JobId>,
    /// Named attempts the node no longer holds (rescued, finished, taken over): their
    /// commands must stop at once, another may be running the job.
    pub lost: Vec<i64>,
}

/// Lines to append to an attempt's log, numbered from `first_index`.
#[derive(Debug, Clone, Default)]
pub struct LogAppend {
    pub first_index: u64,
    pub lines: Vec<NewLogLine>,
}

/// A process, named so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub started: u64,
    /// The host the pid belongs to (boot and pid namespace): a node elsewhere must not
    /// take it for one of its own processes. `None` on records made before hosts were kept.
    pub host: Option<String>,
}

/// A log line to append.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    pub at: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}

/// Filters for listing jobs. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this organization's jobs (`None`: every organization's, for the instance).
    pub org: Option<String>,
    pub states: Vec<JobState>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub target: Option<String>,
    pub label: Option<(String, String)>,
    /// Text found (ignoring case) in the id, kind, queue, target, last error or labels: a
    /// search (it reads every job it passes over, so it is for people, not the hot path).
    pub text: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Oldest first (the cursor then continues toward newer jobs); newest first otherwise.
    pub oldest_first: bool,
}

impl JobFilter {
    /// The listing statement `sql` in this filter's order: its `{ORDER}` becomes the id's
    /// sort direction and `{AFTER}` the comparison with the cursor. Both backends' statements
    /// are written with them so that each order walks the same index, forward or backward.
    pub fn in_order(&self, sql: &str) -> String {
        let (order, after) = if self.oldest_first {
            ("ASC", ">")
        } else {
            ("DESC", "<")
        };
        sql.replace("{ORDER}", order).replace("{AFTER}", after)
    }
}

/// A page of jobs in the filter's order; `next_cursor` fetches the following page.
#[derive(Debug, Clone)]
pub struct Page {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<JobId>,
}

impl Page {
    /// A page of `limit` jobs from a listing that asked for one more: that one only tells
    /// whether a next page exists, and the cursor is the last job shown.
    pub fn of_one_more(mut jobs: Vec<Job>, limit: usize) -> Page {
        let next_cursor = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id)
        } else {
            None
        };
        Page { jobs, next_cursor }
    }
}

/// What a manual requeue may change.
#[derive(Debug, Clone, Default)]
pub struct Requeue {
    /// Start the attempt count again from zero.
    pub reset: bool,
    pub actor: String,
    pub now: DateTime<Utc>,
    /// A new action or policy, after a fix (finished jobs only).
    pub changes: Option<JobChanges>,
}

/// The edited action and policy a requeue applies, and what changed, for the event.
#[derive(Debug, Clone)]
pub struct JobChanges {
    pub action: retryd_core::Action,
    pub policy_name: String,
    pub policy: retryd_core::Policy,
    /// The job's deadline from now on: a later one lets an expired job run again.
    pub deadline: Option<DateTime<Utc>>,
    /// E.g. "args, env; policy default → upload".
    pub summary: String,
}

/// Writes. Each call is one transaction.
#[async_trait]
pub trait JobWriter: Send + Sync {
    /// Inserts a job, or returns the existing one with the same idempotency key in its queue.
    async fn insert_job(&self, job: NewJob) -> Result<Inserted> {
        let mut inserted = self.insert_jobs(vec![job]).await?;
        inserted
            .pop()
            .ok_or_else(|| Error::Corrupt("an insert answered nothing".into()))
    }

    /// Inserts a batch of jobs in one transaction: all of them or, on error, none. Answers
    /// each in order as [`JobWriter::insert_job`] would; a key taken by an earlier job of the
    /// same batch returns that job.
    async fn insert_jobs(&self, jobs: Vec<NewJob>) -> Result<Vec<Inserted>>;

    /// Claims due jobs by priority then due time, respecting the request's slots; each
    /// claimed job is `running` with a new counted attempt under a lease.
    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<Claimed>>;

    /// Extends the leases of the given attempts, if `node` still holds them; returns the jobs
    /// among them whose cancellation was requested and the attempts `node` no longer holds.
    /// Only attempts a node really runs are named, so a lease whose attempt vanished expires
    /// and is rescued.
    async fn renew_leases(
        &self,
        node: &str,
        attempt_ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> Result<Renewal>;

    /// Records an attempt's result and moves the job on, if the fence allows it.
    async fn finish_attempt(&self, result: &AttemptResult) -> Result<(Job, Event)>;

    /// A pipeline step is done and the next one starts under the same lease: records the
    /// attempt's result and `result.step` as completed, then opens the next step's attempt
    /// (counted, named `next_step`). The job stays `running`; the event (running → running,
    /// `result.reason`, on the next step) puts the step change on the timeline and the live
    /// stream. `result.next` is not used. Returns the job, the new attempt's lease and the
    /// event.
    async fn advance_step(
        &self,
        result: &AttemptResult,
        next_step: &str,
    ) -> Result<(Job, Lease, Event)>;

    /// Cancels a waiting job at once; for a running one, records the request (the node
    /// running it ends the attempt) with an event (running → running) naming who asked, the
    /// first time it is asked. Returns the event, if any.
    async fn cancel_job(
        &self,
        id: JobId,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(Job, Option<Event>)>;

    /// Manual requeue: a failed, cancelled or expired job becomes `pending` again; a
    /// `retrying` job becomes due now (no state change, so no event).
    async fn requeue_job(&self, id: JobId, requeue: &Requeue) -> Result<(Job, Option<Event>)>;

    /// Moves waiting jobs whose deadline has passed to `expired`.
    async fn expire_jobs(&self, now: DateTime<Utc>) -> Result<Vec<(Job, Event)>>;

    /// Deletes terminal jobs (with attempts, events and logs) that finished before the
    /// given instant for their state. Never touches a live job. Returns how many.
    async fn prune_jobs(&self, finished_before: &BTreeMap<JobState, DateTime<Utc>>) -> Result<u64>;

    /// Deletes the given terminal jobs; live ones are skipped. Returns how many went.
    async fn purge_jobs(&self, ids: &[JobId]) -> Result<u64>;

    /// Closes a target's circuit by hand (the target was fixed): the jobs it held may start
    /// at once; its outage records `actor` as who closed it. `false` when it was not open or
    /// half-open.
    async fn close_circuit(&self, target: &str, actor: &str, now: DateTime<Utc>) -> Result<bool>;

    /// Pauses or resumes an organization's queue: a paused queue's jobs are not claimed.
    async fn set_queue_paused(
        &self,
        org: &str,
        queue: &str,
        paused: bool,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<()>;

    /// Records the process group leader of a running command attempt, before the command
    /// starts; refused with [`Error::LeaseLost`] unless the lease's node still holds the
    /// attempt, so that a command never starts for an attempt already taken over. The record
    /// only matters while the process lives, so it need not survive power loss.
    async fn record_process(&self, lease: &Lease, process: &Process) -> Result<()>;

    /// Appends output lines to an attempt's log.
    async fn append_log(&self, lease: &Lease, first_index: u64, lines: &[NewLogLine])
    -> Result<()>;

    /// Drops an attempt's log lines before `index` (the bounded tail moved on).
    async fn trim_log(&self, lease: &Lease, before_index: u64) -> Result<()>;
}

/// Reads.
#[async_trait]
pub trait JobReader: Send + Sync {
    async fn get_job(&self, id: JobId) -> Result<Job>;
    async fn list_jobs(
        &self,
        filter: &JobFilter,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<Page>;
    async fn list_attempts(&self, id: JobId) -> Result<Vec<Attempt>>;
    async fn list_events(&self, id: JobId) -> Result<Vec<Event>>;
    /// Events of all jobs after the given event in stream order, which is commit order: an
    /// event is delivered only once no event before it can still appear, so a reader that
    /// resumes from the last event it got misses none. Ids increase along the stream where
    /// one writer commits at a time (SQLite); where several do (PostgreSQL) they need not,
    /// but each job's events keep their order.
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>>;
    /// The last event in stream order (0 when there is none): where a live stream starts.
    async fn last_event_id(&self) -> Result<i64>;
    /// Log lines of a job with `seq > after`, oldest first.
    async fn read_log(&self, id: JobId, after: i64, limit: usize) -> Result<Vec<LogLine>>;
    /// The last `limit` log lines of a job (with `containing`, the last that contain it,
    /// ignoring case; with `attempt`, of that attempt only), oldest first: a long log's end,
    /// or a search, without reading it all.
    async fn read_log_tail(
        &self,
        id: JobId,
        limit: usize,
        containing: Option<&str>,
        attempt: Option<u32>,
    ) -> Result<Vec<LogLine>>;
    /// Due waiting jobs ahead of this one in its queue.
    async fn count_ahead(&self, job: &Job, now: DateTime<Utc>) -> Result<u64>;
    /// Jobs per state, of one organization or (`None`) all.
    async fn count_by_state(&self, org: Option<&str>) -> Result<BTreeMap<JobState, u64>>;
    /// Attempts of the organization's jobs running now, on every node.
    async fn count_running(&self, org: &str) -> Result<u64>;
    /// The organization's queues that are paused.
    async fn paused_queues(&self, org: &str) -> Result<Vec<String>>;
    /// Waiting jobs (pending or retrying) per queue, of one organization or (`None`) all.
    async fn queue_depths(&self, org: Option<&str>) -> Result<BTreeMap<String, u64>>;
    /// Running jobs whose lease expired before `cutoff`.
    async fn expired_leases(&self, cutoff: DateTime<Utc>) -> Result<Vec<Job>>;
    /// When something is next due: a waiting job this node can run outside the skipped
    /// and paused queues, a deadline or a lease expiry.
    async fn next_wakeup(&self, skipped: &[String], runnable: &Runnable) -> Result<Wakeups>;
    /// Circuits that are open or half-open, by target; with `org`, only those of targets
    /// the organization's jobs name.
    async fn list_circuits(&self, org: Option<&str>) -> Result<Vec<Circuit>>;
    /// The latest outages (open ones too), newest first; with `org`, only of targets the
    /// organization's jobs name.
    async fn circuit_history(&self, org: Option<&str>, limit: usize) -> Result<Vec<CircuitOutage>>;
    /// The organization's waiting jobs a circuit holds, per target.
    async fn held_by_circuits(&self, org: &str) -> Result<BTreeMap<String, u64>>;
    /// The process recorded for an attempt, if any.
    async fn attempt_process(&self, attempt_id: i64) -> Result<Option<Process>>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<()>;
    /// The grouped rows behind [`Stats`].
    async fn stats_rows(&self, query: &StatsQuery) -> Result<StatsRows>;
}

/// The next instants the engine has work, by kind: separate, so that a wake-up for a due job
/// does not also sweep deadlines and leases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wakeups {
    /// The earliest due waiting job outside the skipped queues that the node can run.
    pub due: Option<DateTime<Utc>>,
    /// The earliest deadline of a waiting job.
    pub deadline: Option<DateTime<Utc>>,
    /// The earliest lease expiry of a running attempt.
    pub lease_expiry: Option<DateTime<Utc>>,
}

impl Wakeups {
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        [self.due, self.deadline, self.lease_expiry]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Something a client or another node did that a running engine should react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Work may have become due, or a due time changed: look again.
    Wake,
    /// A client asked to cancel this job; stop its attempt if it runs here.
    Cancel(JobId),
    /// A queue was paused or resumed.
    Queues,
    /// A managed policy was created, changed or deactivated: read them again.
    Policies,
    /// A schedule was created, changed, paused, resumed or deleted.
    Schedules,
}

/// A complete backend.
pub trait Store:
    JobWriter + JobReader + AccessStore + NotificationStore + ScheduleStore + std::fmt::Debug
{
    /// True when one process owns the database (SQLite with its lock file): at start, every
    /// `running` job then belongs to a dead process and is rescued at once.
    fn is_exclusive(&self) -> bool;

    /// This process's signals about this store: notices from its own clients and, on a
    /// backend shared by several nodes, from the others (PostgreSQL's LISTEN/NOTIFY).
    fn signals(&self) -> &Signals;
}

/// Decisions every backend makes the same way, kept here so that backends differ only in
/// their SQL.
pub mod rules {
    use super::*;
    use retryd_core::job::Job;

    /// The distinct targets of the candidates, sorted (the order target locks are taken in).
    pub fn targets_of(candidates: &[Job]) -> Vec<&str> {
        let mut targets: Vec<&str> = candidates
            .iter()
            .filter_map(|j| j.target.as_deref())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        targets
    }

    /// A renewal's findings from the attempts named and the rows the backend renewed, as
    /// `(attempt id, job id, cancel requested)`.
    pub fn renewal(named: &[i64], renewed: &[(i64, JobId, bool)]) -> Renewal {
        Renewal {
            cancelled: renewed
                .iter()
                .filter(|(_, _, cancel)| *cancel)
                .map(|(_, id, _)| *id)
                .collect(),
            lost: named
                .iter()
                .copied()
                .filter(|a| !renewed.iter().any(|(held, _, _)| held == a))
                .collect(),
        }
    }

    /// Whether the attempt named by `lease` may still write its result.
    pub fn fence_holds(job: &Job, lease: &Lease, fence: Fence) -> bool {
        job.state == JobState::Running
            && job.attempt_id == Some(lease.attempt_id)
            && match fence {
                Fence::Owner => job.lease_owner.as_deref() == Some(lease.node.as_str()),
                Fence::Rescue { expired_before } => {
                    job.lease_expires_at.is_some_and(|t| t < expired_before)
                }
            }
    }

    /// Candidates of several organizations, each organization's in its own claim order,
    /// interleaved so that every organization with due work gets its turn: first each one's
    /// first job, then each one's second, and so on (among equals by priority, then due
    /// time). One organization's backlog or retry storm so takes at most its share of the
    /// free slots. With one organization, the order is unchanged.
    pub fn fair_share(candidates: Vec<Job>) -> Vec<Job> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut ranked: Vec<(usize, Job)> = candidates
            .into_iter()
            .map(|job| {
                let rank = seen.entry(job.org.clone()).or_default();
                *rank += 1;
                (*rank, job)
            })
            .collect();
        ranked.sort_by(|(ra, a), (rb, b)| {
            ra.cmp(rb)
                .then(b.priority.cmp(&a.priority))
                .then(due_at(a).cmp(&due_at(b)))
                .then(a.id.cmp(&b.id))
        });
        ranked.into_iter().map(|(_, job)| job).collect()
    }

    /// Picks, from candidates in claim order, the jobs the request's slots allow.
    pub fn within_slots(candidates: Vec<Job>, request: &ClaimRequest) -> Vec<Job> {
        let mut taken: HashMap<String, usize> = HashMap::new();
        let mut chosen = Vec::new();
        for job in candidates {
            if chosen.len() >= request.limit {
                break;
            }
            let used = taken.entry(job.queue.clone()).or_default();
            if *used < request.free_in(&job.queue) {
                *used += 1;
                chosen.push(job);
            }
        }
        chosen
    }

    /// How many candidates to read (and lock) for a claim: the limit, unless some may have
    /// to be passed over (a queue with fewer free slots than the limit, or targets under a
    /// circuit or budget); then more, so that the batch can still fill.
    pub fn candidate_window(request: &ClaimRequest) -> usize {
        let capped = |free: usize| free > 0 && free < request.limit;
        let may_pass_over = capped(request.default_queue_free)
            || request.queue_free.values().any(|free| capped(*free))
            || !request.limits.is_empty();
        if may_pass_over {
            request.limit * 4 + 16
        } else {
            request.limit
        }
    }

    /// Queues a claim must skip: those without a free slot (paused ones are read by the
    /// claim itself, per organization).
    pub fn skipped_queues(request: &ClaimRequest) -> Vec<String> {
        request
            .queue_free
            .iter()
            .filter(|(_, free)| **free == 0)
            .map(|(q, _)| q.clone())
            .collect()
    }

    /// The job's completed steps after a result: with `step` appended when there is one.
    pub fn steps_after(job: &Job, step: Option<&StepRecord>) -> Vec<StepRecord> {
        let mut steps = job.steps.clone();
        steps.extend(step.cloned());
        steps
    }

    /// The checks of an advance to the next step, before anything is written.
    pub fn check_advance(job: &Job, result: &AttemptResult) -> Result<StepRecord> {
        if !fence_holds(job, &result.lease, result.fence) {
            return Err(Error::LeaseLost {
                job_id: job.id,
                attempt_id: result.lease.attempt_id,
            });
        }
        result
            .step
            .clone()
            .ok_or_else(|| Error::Conflict("advance_step needs the completed step".into()))
    }

    /// The name the claimed attempt of `job` runs under: its current pipeline step. Also the
    /// step recorded on an event about `job` (as it was before the change).
    pub fn claimed_step(job: &Job) -> Option<String> {
        job.current_step().map(|(_, step)| step.name.clone())
    }

    /// When a waiting job was due.
    pub fn due_at(job: &Job) -> DateTime<Utc> {
        job.next_attempt_at.unwrap_or(job.run_at)
    }

    /// When the attempt claimed at `now` starts: at its due time if it was claimed ahead of
    /// it (`ClaimRequest::due_by`), the engine waiting until then.
    pub fn attempt_start(job: &Job, now: DateTime<Utc>) -> DateTime<Utc> {
        due_at(job).max(now)
    }

    /// The step a new job starts at: a pipeline's first.
    pub fn first_step(job: &NewJob) -> Option<String> {
        match &job.action {
            retryd_core::Action::Pipeline(p) => p.steps.first().map(|s| s.name.clone()),
            _ => None,
        }
    }

    /// Who a job's `submitted` event names.
    pub fn submitter(job: &NewJob) -> &str {
        job.created_by.as_deref().unwrap_or("api")
    }

    /// The answers of a batch insert, in the batch's order: each job stored under its own
    /// id was created (with its event); any other had its idempotency key taken, and gets
    /// the job that holds the key. A created job is moved into its answer; only a job that
    /// answers several (a key used again in the batch, or already taken) is copied.
    pub fn answer_inserts(
        jobs: &[NewJob],
        stored: Vec<Job>,
        events: Vec<Event>,
    ) -> Result<Vec<Inserted>> {
        // Every job created, stored and evented in the batch's order (a batch without taken
        // keys): the answers are those, as they are.
        let batch = || jobs.iter().map(|new| new.id);
        if stored.iter().map(|j| j.id).eq(batch()) && events.iter().map(|e| e.job_id).eq(batch()) {
            return Ok(stored
                .into_iter()
                .zip(events)
                .map(|(job, event)| Inserted {
                    job,
                    created: true,
                    event: Some(event),
                })
                .collect());
        }
        let mut events: HashMap<JobId, Event> = events.into_iter().map(|e| (e.job_id, e)).collect();
        let mut by_id: HashMap<JobId, Job> = HashMap::with_capacity(stored.len());
        by_id.extend(stored.into_iter().map(|j| (j.id, j)));
        type Key<'a> = (&'a str, &'a str, &'a str);
        let mut answers: Vec<Option<Inserted>> = Vec::with_capacity(jobs.len());
        // The answer that holds each key created in this batch.
        let mut created_keys: HashMap<Key, usize> = HashMap::new();
        for new in jobs {
            let answer = by_id.remove(&new.id).map(|job| Inserted {
                job,
                created: true,
                event: events.remove(&new.id),
            });
            if let (Some(_), Some(key)) = (&answer, new.idempotency_key.as_deref()) {
                created_keys.insert((new.org.as_str(), new.queue.as_str(), key), answers.len());
            }
            answers.push(answer);
        }
        // What is left was stored before the batch and holds a key one of its jobs used.
        let existing: Vec<Job> = by_id.into_values().collect();
        let existing_keys: HashMap<Key, &Job> = existing
            .iter()
            .filter_map(|j| {
                Some((
                    (
                        j.org.as_str(),
                        j.queue.as_str(),
                        j.idempotency_key.as_deref()?,
                    ),
                    j,
                ))
            })
            .collect();
        let mut answered = Vec::with_capacity(jobs.len());
        for (i, new) in jobs.iter().enumerate() {
            if let Some(answer) = answers[i].take() {
                answered.push(answer);
                continue;
            }
            let key = new
                .idempotency_key
                .as_deref()
                .map(|key| (new.org.as_str(), new.queue.as_str(), key));
            let holder = key.and_then(|key| {
                existing_keys
                    .get(&key)
                    .map(|job| (*job).clone())
                    .or_else(|| {
                        created_keys
                            .get(&key)
                            .and_then(|&at| answered.get(at))
                            .map(|a: &Inserted| a.job.clone())
                    })
            });
            let job = holder
                .ok_or_else(|| Error::Corrupt(format!("inserted job {} vanished", new.id)))?;
            answered.push(Inserted {
                job,
                created: false,
                event: None,
            });
        }
        Ok(answered)
    }

    pub fn cancel_reason(actor: &str) -> String {
        format!("cancelled by {actor}")
    }

    /// The event of a cancel asked of a running job (running → running): who asked is on
    /// the timeline, before the node that stops the attempt records the end.
    pub fn cancel_request_reason(actor: &str) -> String {
        format!("cancel requested by {actor}: the running attempt is being stopped")
    }

    pub fn requeue_reason(job: &Job, requeue: &Requeue) -> String {
        let mut reason = if requeue.reset {
            format!("requeued by {} with attempts reset", requeue.actor)
        } else {
            format!(
                "requeued by {} (attempts so far: {})",
                requeue.actor, job.attempt
            )
        };
        if let Some(changes) = &requeue.changes {
            reason.push_str(&format!("; changed: {}", changes.summary));
        }
        reason
    }

    /// Changes apply to a finished job only: a waiting or running one would mix definitions.
    pub fn check_changes(job: &Job, requeue: &Requeue) -> Result<()> {
        if requeue.changes.is_some() && !job.state.is_terminal() {
            return Err(Error::Conflict(format!(
                "job {} is {}: only a finished job can be requeued with changes",
                job.id, job.state
            )));
        }
        Ok(())
    }

    pub fn expire_reason(job: &Job, now: DateTime<Utc>) -> String {
        let deadline = job.deadline.unwrap_or(now);
        format!(
            "deadline {} passed while {}",
            deadline.format("%Y-%m-%d %H:%M:%S UTC"),
            job.state
        )
    }

    /// The actor recorded on deadline expiries.
    pub const SCHEDULER: &str = "scheduler";

    pub use crate::limits::{
        CIRCUIT_HOLD, CircuitChange, Gated, Held, OrgBudget, TargetUsage, circuit_after, gate,
        gate_orgs, probe_targets, retrying_orgs, target_outcome,
    };
}
