//! What the API accepts and returns. Requests parse into validated domain values here, at
//! the edge; responses never carry secret values.

use crate::error::Error;
use chrono::{DateTime, Utc};
use retryd_core::explain::{Around, Diagnosis, diagnose, waiting_reason};
use retryd_core::job::{Action, Job, MAX_PRIORITY, NewJob, validate_name};
use retryd_core::pipeline::{PipelineAction, StepPolicy};
use retryd_core::{JobId, JobState, Policy};
use retryd_store::Policies;
use retryd_store::policies::INLINE;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const MAX_LABELS: usize = 32;
const MAX_LABEL_VALUE: usize = 256;
const MAX_KEY: usize = 200;
const MAX_ARGS: usize = 1000;
/// How far ahead a job may be scheduled.
const MAX_SCHEDULE_AHEAD_DAYS: i64 = 366;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub action: Action,
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    /// A policy name, or an inline policy object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Value>,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

impl SubmitRequest {
    /// Validates every field and resolves the policy (SPEC §2 selection order).
    /// The job of organization `org`, whose policies are `policies`.
    pub fn into_new_job(
        self,
        org: &str,
        policies: &Policies,
        now: DateTime<Utc>,
        created_by: &str,
    ) -> Result<NewJob, Error> {
        let split = |message: String| match message.split_once(": ") {
            Some((field, rest)) => Error::invalid(field, rest),
            None => Error::invalid("action", message),
        };
        match &self.action {
            // A pipeline's messages name the step from `steps`, as in a pipeline file.
            Action::Pipeline(p) => p.validate().map_err(|m| split(format!("action.{m}")))?,
            action => action.validate().map_err(split)?,
        }
        if let Action::Command(command) = &self.action
            && command.args.len() > MAX_ARGS
        {
            return Err(Error::invalid(
                "action.args",
                format!("at most {MAX_ARGS} arguments"),
            ));
        }
        let queue = self.queue.unwrap_or_else(|| "default".to_owned());
        validate_name("queue", &queue).map_err(split)?;
        let kind = match (self.kind, &self.action) {
            (Some(kind), _) => kind,
            (None, Action::Command(_)) => "command".to_owned(),
            (None, Action::Http(_)) => "http".to_owned(),
            (None, Action::Pipeline(_)) => "pipeline".to_owned(),
            (None, Action::Handler(_)) => {
                return Err(Error::invalid(
                    "kind",
                    "required with a handler action: the kind an embedding program registered",
                ));
            }
        };
        validate_name("kind", &kind).map_err(split)?;
        if let Some(target) = &self.target {
            validate_name("target", target).map_err(split)?;
        }
        let priority = match self.priority {
            None => retryd_core::job::DEFAULT_PRIORITY,
            Some(p) if (0..=MAX_PRIORITY as i64).contains(&p) => p as u8,
            Some(p) => {
                return Err(Error::invalid(
                    "priority",
                    format!("must be between 0 and {MAX_PRIORITY}, got {p}"),
                ));
            }
        };
        if self.labels.len() > MAX_LABELS {
            return Err(Error::invalid(
                "labels",
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        for (key, value) in &self.labels {
            validate_name("labels key", key)
                .map_err(|m| Error::invalid(format!("labels.{key}"), m))?;
            if value.len() > MAX_LABEL_VALUE {
                return Err(Error::invalid(
                    format!("labels.{key}"),
                    format!("value longer than {MAX_LABEL_VALUE} bytes"),
                ));
            }
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > MAX_KEY)
        {
            return Err(Error::invalid(
                "idempotency_key",
                format!("must be 1–{MAX_KEY} bytes"),
            ));
        }
        let run_at = self.run_at.unwrap_or(now);
        if run_at > now + chrono::Duration::days(MAX_SCHEDULE_AHEAD_DAYS) {
            return Err(Error::invalid(
                "run_at",
                format!("must be within {MAX_SCHEDULE_AHEAD_DAYS} days from now"),
            ));
        }
        if let Some(deadline) = self.deadline {
            if deadline <= now {
                return Err(Error::invalid("deadline", "must be in the future"));
            }
            if deadline <= run_at {
                return Err(Error::invalid("deadline", "must be after run_at"));
            }
        }
        let (policy_name, policy) = resolve_policy(self.policy, policies, &kind, priority)?;
        let mut action = self.action;
        if let Action::Pipeline(pipeline) = &mut action {
            resolve_step_policies(pipeline, policies)?;
        }
        Ok(NewJob {
            id: JobId::new(),
            org: org.to_owned(),
            queue,
            kind,
            target: self.target,
            action,
            policy_name,
            policy,
            priority,
            run_at,
            deadline: self.deadline,
            labels: self.labels,
            idempotency_key: self.idempotency_key,
            created_by: Some(created_by.to_owned()),
            created_at: now,
        })
    }
}

/// A job's policy: a name, an inline object, or (absent) the SPEC §2 selection.
fn resolve_policy(
    policy: Option<serde_json::Value>,
    policies: &Policies,
    kind: &str,
    priority: u8,
) -> Result<(String, Policy), Error> {
    Ok(match policy {
        Some(serde_json::Value::Object(fields)) => {
            let policy: Policy = serde_path_to_error::deserialize(serde_json::Value::Object(
                fields,
            ))
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "policy".to_owned()
                } else {
                    format!("policy.{path}")
                };
                Error::invalid(field, e.into_inner().to_string())
            })?;
            policy
                .validate()
                .map_err(|e| Error::invalid(format!("policy.{}", e.field), e.message))?;
            (INLINE.to_owned(), policy)
        }
        Some(serde_json::Value::String(name)) if name == INLINE => {
            return Err(Error::invalid(
                "policy",
                "'inline' is not a policy name; give the policy object instead",
            ));
        }
        Some(serde_json::Value::String(name)) => {
            let policy = policies.get(&name).cloned().ok_or_else(|| {
                Error::invalid(
                    "policy",
                    format!(
                        "unknown policy '{name}' (known: {})",
                        policies.names().join(", ")
                    ),
                )
            })?;
            (name, policy)
        }
        None | Some(serde_json::Value::Null) => {
            let name = policies.select(None, kind, priority);
            let policy = policies
                .get(&name)
                .cloned()
                .ok_or_else(|| Error::Internal(format!("selected policy '{name}' is missing")))?;
            (name, policy)
        }
        Some(_) => {
            return Err(Error::invalid(
                "policy",
                "must be a policy name or a policy object",
            ));
        }
    })
}

/// Snapshots each step's own policy, as a job's policy is snapshotted at submit.
fn resolve_step_policies(pipeline: &mut PipelineAction, policies: &Policies) -> Result<(), Error> {
    for step in &mut pipeline.steps {
        let field = format!("action.steps.{}.policy", step.name);
        step.resolved_policy = match step.policy_ref().map_err(|m| {
            Error::invalid(
                field.clone(),
                m.split_once(": ").map_or(m.as_str(), |(_, rest)| rest),
            )
        })? {
            None => None,
            Some(StepPolicy::Inline(policy)) => Some(*policy),
            Some(StepPolicy::Named(name)) => {
                Some(policies.get(&name).cloned().ok_or_else(|| {
                    Error::invalid(
                        field.clone(),
                        format!(
                            "unknown policy '{name}' (known: {})",
                            policies.names().join(", ")
                        ),
                    )
                })?)
            }
        };
    }
    Ok(())
}

/// Where a pipeline job stands: its current step and that step's attempts. Every field is
/// absent for other jobs.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct StepView {
    /// The current step (the failed one for a failed job); absent once all are done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps_total: Option<usize>,
    /// Attempts of the current step so far, and its policy's maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_max_attempts: Option<u32>,
    /// "running: confirm, attempt 2/3".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_status: Option<String>,
}

impl StepView {
    pub fn of(job: &Job, policies: &Policies) -> StepView {
        let Action::Pipeline(pipeline) = &job.action else {
            return StepView::default();
        };
        let current = job.current_step();
        let (name, snapshot) = job.effective_policy();
        let max = policies.current(name, snapshot).max_attempts;
        let attempt = job.step_attempt();
        StepView {
            step: current.map(|(_, s)| s.name.clone()),
            step_index: current.map(|(i, _)| i),
            steps_total: Some(pipeline.steps.len()),
            step_attempt: current.map(|_| attempt),
            step_max_attempts: current.map(|_| max),
            step_status: current.map(|(_, s)| {
                // A waiting job's next attempt is the one to come.
                let shown = if job.state.is_waiting() {
                    attempt + 1
                } else {
                    attempt
                };
                format!("{}: {}, attempt {shown}/{max}", job.state, s.name)
            }),
        }
    }
}

/// A job as the API shows it: secrets redacted, with its waiting reason and, when it did
/// not succeed, its diagnosis.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    #[serde(flatten)]
    pub job: Job,
    /// One line: why it is not running (absent while running or succeeded).
    pub waiting_reason: Option<String>,
    pub diagnosis: Option<Diagnosis>,
    /// The dead-letter group it belongs to (failed jobs only).
    pub fingerprint: Option<String>,
    /// A pipeline's current step.
    #[serde(flatten)]
    pub pipeline: StepView,
}

impl JobView {
    /// `paused` lists the paused queues of the job's organization; `around` says the rest
    /// of what is known around it.
    pub fn new(
        mut job: Job,
        now: DateTime<Utc>,
        paused: &[String],
        around: Around,
        policies: &Policies,
    ) -> Self {
        job.action = job.action.redacted();
        let pipeline = StepView::of(&job, policies);
        let around = Around {
            queue_paused: paused.contains(&job.queue),
            ..around
        };
        let waiting_reason = waiting_reason(&job, now, around);
        let diagnosis = diagnose(&job);
        let fingerprint = (job.state == JobState::Failed).then(|| {
            retryd_core::explain::fingerprint(
                job.last_error_class,
                job.last_error.as_deref().unwrap_or(""),
            )
        });
        JobView {
            job,
            waiting_reason,
            diagnosis,
            fingerprint,
            pipeline,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Submitted {
    #[serde(flatten)]
    pub view: JobView,
    /// False when the idempotency key matched an existing job.
    pub created: bool,
}

/// The most jobs one batch submit takes.
pub const MAX_BATCH: usize = 10_000;

/// Many jobs in one request: validated item by item, stored together in one transaction.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 10,000 jobs, each shaped like the body of `POST /jobs`.
    #[schema(value_type = Vec<SubmitRequest>)]
    pub jobs: Vec<serde_json::Value>,
}

impl BatchRequest {
    /// Every item parsed and validated. Any invalid item fails the whole batch with one
    /// error per invalid item, in order, so that nothing of a half-valid batch is stored.
    pub fn into_new_jobs(
        self,
        org: &str,
        policies: &Policies,
        now: DateTime<Utc>,
        created_by: &str,
    ) -> Result<Vec<NewJob>, Error> {
        if self.jobs.is_empty() || self.jobs.len() > MAX_BATCH {
            return Err(Error::invalid(
                "jobs",
                format!("between 1 and {MAX_BATCH} jobs, got {}", self.jobs.len()),
            ));
        }
        let mut jobs = Vec::with_capacity(self.jobs.len());
        let mut errors = Vec::new();
        for (index, item) in self.jobs.into_iter().enumerate() {
            let parsed = serde_path_to_error::deserialize::<_, SubmitRequest>(item)
                .map_err(|e| {
                    let path = e.path().to_string();
                    let field = if path == "." { String::new() } else { path };
                    Error::invalid(field, e.into_inner().to_string())
                })
                .and_then(|request| request.into_new_job(org, policies, now, created_by));
            match parsed {
                Ok(job) => jobs.push(job),
                Err(Error::Invalid { field, message }) => {
                    let field = match field.as_str() {
                        "" => format!("jobs[{index}]"),
                        f => format!("jobs[{index}].{f}"),
                    };
                    errors.push(ItemError {
                        index,
                        field,
                        message,
                    });
                }
                Err(other) => return Err(other),
            }
        }
        if errors.is_empty() {
            Ok(jobs)
        } else {
            Err(Error::InvalidItems(errors))
        }
    }
}

/// Why one item of a batch was refused.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemError {
    /// The item's position in `jobs`, from 0.
    pub index: usize,
    pub field: String,
    pub message: String,
}

/// One stored job of a batch, in the order of the request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    pub id: JobId,
    pub state: JobState,
    pub queue: String,
    pub kind: String,
    /// False when the idempotency key matched an existing job (or an earlier item).
    pub created: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchSubmitted {
    pub jobs: Vec<BatchItem>,
    /// How many of `jobs` were created (the others already existed).
    pub created: usize,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated states.
    pub state: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub target: Option<String>,
    /// `key=value`.
    pub label: Option<String>,
    /// Text to find (ignoring case) in the id (a short id too), kind, queue, target, last
    /// error or labels.
    pub q: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// `newest` first (the default) or `oldest` first; `next_cursor` continues in the same order.
    pub order: Option<ListOrder>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

/// The order of a job list, by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    Newest,
    Oldest,
}

pub const MAX_PAGE: usize = 500;
pub const DEFAULT_PAGE: usize = 50;

impl ListQuery {
    /// The filter, within organization `org`.
    pub fn filter(&self, org: &str) -> Result<retryd_store::JobFilter, Error> {
        let states = match &self.state {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.trim()
                        .parse::<JobState>()
                        .map_err(|e| Error::invalid("state", e.to_string()))
                })
                .collect::<Result<_, _>>()?,
        };
        let label = match &self.label {
            None => None,
            Some(pair) => match pair.split_once('=') {
                Some((k, v)) if !k.is_empty() => Some((k.to_owned(), v.to_owned())),
                _ => {
                    return Err(Error::invalid(
                        "label",
                        format!("write key=value, got {pair:?}"),
                    ));
                }
            },
        };
        let text = match self.q.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(q) if q.len() > 200 => {
                return Err(Error::invalid("q", "must be at most 200 characters"));
            }
            Some(q) => Some(q.to_owned()),
        };
        Ok(retryd_store::JobFilter {
            org: Some(org.to_owned()),
            text,
            states,
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            target: self.target.clone(),
            label,
            created_after: self.created_after,
            created_before: self.created_before,
            oldest_first: self.order == Some(ListOrder::Oldest),
        })
    }

    pub fn cursor(&self) -> Result<Option<JobId>, Error> {
        self.cursor
            .as_deref()
            .map(|c| c.parse().map_err(|e: String| Error::invalid("cursor", e)))
            .transpose()
    }

    pub fn limit(&self) -> Result<usize, Error> {
        crate::extract::limit(self.limit, DEFAULT_PAGE, MAX_PAGE)
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    pub next_cursor: Option<JobId>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Start the attempt count from zero again.
    #[serde(default)]
    pub reset: bool,
    /// New arguments for a command job (replace the old ones).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// Environment changes for a command job: a value (a string, or `{"value", "secret"}`)
    /// sets, `null` removes.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::HashMap<String, Object>>)]
    pub env: Option<BTreeMap<String, Option<retryd_core::EnvValue>>>,
    /// A policy name or an inline policy object.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Value>,
    /// A new deadline, in the future: an expired job runs again until then.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
}

impl RetryRequest {
    /// The changes this requeue makes to `job`, if any, validated like a submission.
    pub fn changes(
        &self,
        job: &Job,
        policies: &Policies,
        now: DateTime<Utc>,
    ) -> Result<Option<retryd_store::JobChanges>, Error> {
        match (self.deadline, job.deadline) {
            (Some(deadline), _) if deadline <= now => {
                return Err(Error::invalid("deadline", "must be in the future"));
            }
            // Requeued past its deadline, the job would expire again at once (issue 15).
            (None, Some(passed)) if passed <= now && job.state.is_terminal() => {
                return Err(Error::invalid(
                    "deadline",
                    format!(
                        "the job's deadline passed at {}: give a later one (retryd retry {} --deadline 1h)",
                        passed.format("%Y-%m-%d %H:%M:%S UTC"),
                        job.id
                    ),
                ));
            }
            _ => {}
        }
        if self.args.is_none()
            && self.env.is_none()
            && self.policy.is_none()
            && self.deadline.is_none()
        {
            return Ok(None);
        }
        let mut action = job.action.clone();
        let mut changed = Vec::new();
        if self.args.is_some() || self.env.is_some() {
            let Action::Command(command) = &mut action else {
                let field = if self.args.is_some() { "args" } else { "env" };
                return Err(Error::invalid(field, "applies to command jobs only"));
            };
            if let Some(args) = &self.args {
                if args.len() > MAX_ARGS {
                    return Err(Error::invalid(
                        "args",
                        format!("at most {MAX_ARGS} arguments"),
                    ));
                }
                command.args = args.clone();
                changed.push("args".to_owned());
            }
            if let Some(env) = &self.env {
                for (key, value) in env {
                    match value {
                        Some(value) => command.env.insert(key.clone(), value.clone()),
                        None => command.env.remove(key),
                    };
                }
                changed.push(format!(
                    "env ({})",
                    env.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            action
                .validate()
                .map_err(|message| match message.split_once(": ") {
                    Some((field, rest)) => {
                        Error::invalid(field.trim_start_matches("action."), rest)
                    }
                    None => Error::invalid("args", message),
                })?;
        }
        let (policy_name, policy) = match &self.policy {
            Some(value) => {
                let (name, policy) =
                    resolve_policy(Some(value.clone()), policies, &job.kind, job.priority)?;
                changed.push(format!("policy {} → {name}", job.policy_name));
                (name, policy)
            }
            None => (job.policy_name.clone(), job.policy.clone()),
        };
        if let Some(deadline) = self.deadline {
            changed.push(format!(
                "deadline → {}",
                deadline.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
        Ok(Some(retryd_store::JobChanges {
            action,
            policy_name,
            policy,
            deadline: self.deadline.or(job.deadline),
            summary: changed.join("; "),
        }))
    }
}

/// Which dead jobs a bulk action applies to. At least one selector is required.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DlqSelection {
    #[serde(default)]
    pub ids: Vec<JobId>,
    pub fingerprint: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub target: Option<String>,
    /// Select every dead job.
    #[serde(default)]
    pub all: bool,
    /// For requeue: start the attempt count from zero again.
    #[serde(default)]
    pub reset: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DlqGroup {
    pub fingerprint: String,
    pub class: Option<String>,
    /// The classification rule that decided the group's newest job.
    pub rule: Option<String>,
    /// What to do, first thing first: "Fix first: …" for permanent errors.
    pub advice: Vec<String>,
    /// The most recent error message of the group.
    pub message: String,
    pub count: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub queues: Vec<String>,
    pub kinds: Vec<String>,
    pub targets: Vec<String>,
    /// A few jobs of the group, newest first.
    pub sample_job_ids: Vec<JobId>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dlq {
    pub total: u64,
    pub groups: Vec<DlqGroup>,
    pub jobs: Vec<JobView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkResult {
    pub count: u64,
    pub job_ids: Vec<JobId>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyView {
    pub name: String,
    /// builtin, config (the configuration file) or api (managed through the API).
    pub source: retryd_store::policies::Source,
    /// False once deactivated: kept for the jobs using it, chosen by no new job.
    pub active: bool,
    /// The organization's active default: jobs that name no policy get it.
    pub default: bool,
    pub policy: Policy,
    pub schedule: Vec<retryd_core::policy::ScheduleRow>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Lines after this one (`seq`), oldest first.
    #[serde(default)]
    pub after: i64,
    /// Lines per page (1–5000, default 1000); with `tail` or `q`, the last so many.
    pub limit: Option<usize>,
    /// A stream of NDJSON lines that ends when the job is finished and its output drained.
    #[serde(default)]
    pub follow: bool,
    /// The last `limit` lines instead of the first after `after` (a long log's end).
    #[serde(default)]
    pub tail: bool,
    /// Only lines that contain this text (ignoring case): the last `limit` of them.
    pub q: Option<String>,
    /// Only this attempt's lines (from 1; with `tail` or `q`).
    pub attempt: Option<u32>,
    /// Every line as a text file (`at stream line`), to save.
    #[serde(default)]
    pub download: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogPage {
    pub lines: Vec<retryd_core::job::LogLine>,
    /// Pass as `after` to continue.
    pub next_after: i64,
    /// True once the job is finished and every line has been returned.
    pub complete: bool,
}

/// `POST /api/v1/session`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub token: String,
}

/// Who the session is, and the CSRF token its changes must carry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub role: retryd_core::Role,
    pub name: String,
    /// The organization the session acts in.
    pub org: String,
    /// An instance token: it may switch organization (`retryd_org` cookie).
    pub instance: bool,
    /// Send as `X-CSRF-Token` with every change made with the session cookie; empty when
    /// the request did not come with the cookie.
    pub csrf_token: String,
    /// False when the server runs without authentication (loopback only).
    pub auth: bool,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    pub name: String,
    /// The token's role in its organization.
    pub role: retryd_core::Role,
    /// The organization the token belongs to (default: the one the request acts in). Only
    /// an instance token may name another.
    pub org: Option<String>,
    /// An instance token: acts in any organization and manages organizations. Only an
    /// instance admin may create one.
    #[serde(default)]
    pub instance: bool,
}

impl NewTokenRequest {
    pub fn validate(&self) -> Result<(), Error> {
        validate_name("name", &self.name).map_err(|m| Error::invalid("name", m))?;
        if let Some(org) = &self.org {
            retryd_core::org::validate_org("org", org).map_err(|m| Error::invalid("org", m))?;
        }
        Ok(())
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub org: String,
    pub instance: bool,
    pub name: String,
    pub role: retryd_core::Role,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<retryd_store::TokenRecord> for TokenView {
    fn from(t: retryd_store::TokenRecord) -> Self {
        TokenView {
            id: t.id,
            org: t.org,
            instance: t.instance,
            name: t.name,
            role: t.role,
            created_at: t.created_at,
            created_by: t.created_by,
            revoked_at: t.revoked_at,
        }
    }
}

/// A new token: the plain text appears here once and is never retrievable again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenView,
}

/// `PUT /api/v1/policies/active`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivePolicyRequest {
    /// The policy jobs of the organization get when they name none; `null` goes back to
    /// the instance's rules (per kind, per priority, else `default`).
    pub name: Option<String>,
}

/// `POST /api/v1/policies`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPolicyRequest {
    pub name: String,
    pub policy: Policy,
}
