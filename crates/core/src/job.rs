//! Jobs, attempts, events and the values they are made of. Constructors that take outside
//! input validate it, so a value inside the engine is a valid one.

use crate::classify::Class;
use crate::pipeline::{PipelineAction, Step, StepRecord};
use crate::policy::Policy;
use crate::state::JobState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim()).map(JobId).map_err(|_| {
            format!("'{s}' is not a job id (a UUID such as 0193a6f2-7c1e-7d3a-9f0e-2b4c5d6e7f80)")
        })
    }
}

/// Queue, kind, target and label keys: 1–64 characters of letters, digits and `_ - . : /`.
pub fn validate_name(field: &str, value: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-.:/".contains(c);
    if value.is_empty() || value.len() > 64 || !value.chars().all(ok_char) {
        return Err(format!(
            "{field}: must be 1–64 characters of letters, digits and _ - . : /, got {value:?}"
        ));
    }
    Ok(())
}

pub const MAX_PRIORITY: u8 = 100;
pub const DEFAULT_PRIORITY: u8 = 50;

/// An environment value; `{"value": "...", "secret": true}` is never shown or logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum EnvValue {
    Plain(String),
    Marked {
        value: String,
        #[serde(default)]
        secret: bool,
    },
}

impl EnvValue {
    pub fn value(&self) -> &str {
        match self {
            EnvValue::Plain(v) | EnvValue::Marked { value: v, .. } => v,
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, EnvValue::Marked { secret: true, .. })
    }
}

pub const REDACTED: &str = "[REDACTED]";

/// One attempt's time limit, when given: more than zero and at most the longest budget.
pub fn validate_timeout(field: &str, timeout: Option<std::time::Duration>) -> Result<(), String> {
    match timeout {
        Some(t) if t.is_zero() || t > crate::policy::MAX_BUDGET => Err(format!(
            "{field}: must be more than 0s and at most {}",
            crate::duration::format(crate::policy::MAX_BUDGET)
        )),
        _ => Ok(()),
    }
}

/// Run a program. No shell unless the user writes `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommandAction {
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Time limit of one attempt; overrides the policy's `attempt_timeout`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<std::time::Duration>,
}

impl CommandAction {
    pub fn validate(&self) -> Result<(), String> {
        if self.program.trim().is_empty() {
            return Err("action.program: must not be empty".into());
        }
        validate_timeout("action.timeout", self.timeout)?;
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(format!("action.env: {key:?} is not a valid variable name"));
            }
        }
        // The kernel reads paths, arguments and the environment as C strings: a NUL would
        // cut them short, or fail every attempt at run time.
        let named = std::iter::once(("action.program".to_owned(), self.program.as_str()))
            .chain(
                self.cwd
                    .iter()
                    .map(|c| ("action.cwd".to_owned(), c.as_str())),
            )
            .chain(
                self.args
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("action.args[{i}]"), a.as_str())),
            )
            .chain(
                self.env
                    .iter()
                    .map(|(k, v)| (format!("action.env.{k}"), v.value())),
            );
        for (field, value) in named {
            if value.contains('\0') {
                return Err(format!("{field}: must not contain a NUL byte"));
            }
        }
        Ok(())
    }

    /// The time limit of one attempt under `policy`.
    pub fn timeout_under(&self, policy: &Policy) -> Option<std::time::Duration> {
        self.timeout.or(policy.attempt_timeout)
    }

    /// The values to scrub from output and logs.
    pub fn secrets(&self) -> Vec<String> {
        secret_values(&self.env).collect()
    }

    /// `program arg…` as a person would type it.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                    format!("'{}'", a.replace('\'', r"'\''"))
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Call an HTTP endpoint. Success is a 2xx status unless `success_statuses` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HttpAction {
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    /// Header values; `{"value": "...", "secret": true}` is never shown or logged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, EnvValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Time limit of one attempt; overrides the policy's `attempt_timeout`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<std::time::Duration>,
    /// Statuses that count as success; empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub success_statuses: Vec<u16>,
}

fn default_method() -> String {
    "GET".to_owned()
}

pub const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// The largest request body an HTTP action may carry.
pub const MAX_HTTP_BODY: usize = 256 * 1024;

impl HttpAction {
    pub fn validate(&self) -> Result<(), String> {
        if !HTTP_METHODS.contains(&self.method.as_str()) {
            return Err(format!(
                "action.method: must be one of {}, got {:?}",
                HTTP_METHODS.join(", "),
                self.method
            ));
        }
        let rest = self
            .url
            .strip_prefix("http://")
            .or_else(|| self.url.strip_prefix("https://"));
        let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
        if host.is_none_or(str::is_empty)
            || self.url.len() > 2048
            || self
                .url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "action.url: must be an http:// or https:// URL with a host (at most 2048 characters), got {:?}",
                self.url
            ));
        }
        for (name, value) in &self.headers {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return Err(format!(
                    "action.headers: {name:?} is not a valid header name"
                ));
            }
            if value
                .value()
                .chars()
                .any(|c| c == '\r' || c == '\n' || c == '\0')
            {
                return Err(format!(
                    "action.headers.{name}: must not contain line breaks or NUL"
                ));
            }
        }
        if self.body.as_ref().is_some_and(|b| b.len() > MAX_HTTP_BODY) {
            return Err(format!("action.body: at most {MAX_HTTP_BODY} bytes"));
        }
        if let Some(status) = self
            .success_statuses
            .iter()
            .find(|s| !(100..=599).contains(*s))
        {
            return Err(format!(
                "action.success_statuses: {status} is not an HTTP status (100–599)"
            ));
        }
        validate_timeout("action.timeout", self.timeout)?;
        Ok(())
    }

    /// The header values to scrub from output and logs.
    pub fn secrets_list(&self) -> Vec<String> {
        secret_values(&self.headers).collect()
    }

    /// Whether a response status means success.
    pub fn is_success(&self, status: u16) -> bool {
        if self.success_statuses.is_empty() {
            (200..300).contains(&status)
        } else {
            self.success_statuses.contains(&status)
        }
    }
}

/// Call the function a program embedding the engine registered for the job's `kind`. Only a
/// node that registered that kind claims the job; `retryd serve` never does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HandlerAction {
    /// The handler's input, as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Time limit of one attempt; overrides the policy's `attempt_timeout`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<std::time::Duration>,
}

/// The largest handler payload, serialized.
pub const MAX_HANDLER_PAYLOAD: usize = 256 * 1024;

impl HandlerAction {
    pub fn validate(&self) -> Result<(), String> {
        if self.payload.to_string().len() > MAX_HANDLER_PAYLOAD {
            return Err(format!(
                "action.payload: at most {MAX_HANDLER_PAYLOAD} bytes of JSON"
            ));
        }
        validate_timeout("action.timeout", self.timeout)?;
        Ok(())
    }
}

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Action {
    Command(CommandAction),
    Http(HttpAction),
    Pipeline(PipelineAction),
    Handler(HandlerAction),
}

fn redact_values(values: &mut BTreeMap<String, EnvValue>) {
    for value in values.values_mut() {
        if value.is_secret() {
            *value = EnvValue::Marked {
                value: REDACTED.to_owned(),
                secret: true,
            };
        }
    }
}

/// What a list shows of a value it leaves out.
pub const OMITTED: &str = "[omitted in lists]";
/// Arguments a list shows, each cut to [`SUMMARY_ARG_CHARS`].
pub const SUMMARY_ARGS: usize = 16;
pub const SUMMARY_ARG_CHARS: usize = 200;
/// A handler payload larger than this, as JSON, is left out of lists.
pub const SUMMARY_PAYLOAD_BYTES: usize = 1024;

fn omit_values(values: &mut BTreeMap<String, EnvValue>) {
    for value in values.values_mut() {
        *value = EnvValue::Plain(OMITTED.to_owned());
    }
}

fn omitted_size(text: &Option<String>) -> Option<String> {
    text.as_ref()
        .map(|t| format!("[{} bytes, omitted in lists]", t.len()))
}

fn summarize_command(c: &mut CommandAction) {
    omit_values(&mut c.env);
    c.stdin = omitted_size(&c.stdin);
    let more = c.args.len().saturating_sub(SUMMARY_ARGS);
    c.args.truncate(SUMMARY_ARGS);
    for arg in &mut c.args {
        if arg.chars().count() > SUMMARY_ARG_CHARS {
            *arg = format!(
                "{}…",
                arg.chars().take(SUMMARY_ARG_CHARS).collect::<String>()
            );
        }
    }
    if more > 0 {
        c.args.push(format!("[{more} more arguments]"));
    }
}

fn summarize_http(h: &mut HttpAction) {
    omit_values(&mut h.headers);
    h.body = omitted_size(&h.body);
}

fn secret_values(values: &BTreeMap<String, EnvValue>) -> impl Iterator<Item = String> + '_ {
    values
        .values()
        .filter(|v| v.is_secret() && !v.value().is_empty())
        .map(|v| v.value().to_owned())
}

impl Action {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Action::Command(c) => c.validate(),
            Action::Http(h) => h.validate(),
            Action::Pipeline(p) => p.validate(),
            Action::Handler(h) => h.validate(),
        }
    }

    pub fn secrets(&self) -> Vec<String> {
        match self {
            Action::Command(c) => c.secrets(),
            Action::Http(h) => h.secrets_list(),
            Action::Pipeline(p) => p.secrets(),
            Action::Handler(_) => Vec::new(),
        }
    }

    /// The same action with secret values replaced, for anything shown or logged.
    pub fn redacted(&self) -> Action {
        match self {
            Action::Command(c) => {
                let mut c = c.clone();
                redact_values(&mut c.env);
                Action::Command(c)
            }
            Action::Http(h) => {
                let mut h = h.clone();
                redact_values(&mut h.headers);
                Action::Http(h)
            }
            Action::Pipeline(p) => {
                let mut p = p.clone();
                for step in &mut p.steps {
                    if let Some(c) = &mut step.command {
                        redact_values(&mut c.env);
                    }
                    if let Some(h) = &mut step.http {
                        redact_values(&mut h.headers);
                    }
                }
                Action::Pipeline(p)
            }
            Action::Handler(h) => Action::Handler(h.clone()),
        }
    }

    /// Applies `f` to every secret value (secret env values, secret headers, also in
    /// pipeline steps): how secrets are sealed before storage and opened before a run.
    pub fn try_map_secrets(
        &mut self,
        f: &mut dyn FnMut(&str) -> Result<String, String>,
    ) -> Result<(), String> {
        let mut map = |values: &mut BTreeMap<String, EnvValue>| -> Result<(), String> {
            for value in values.values_mut() {
                if let EnvValue::Marked {
                    value,
                    secret: true,
                } = value
                {
                    *value = f(value)?;
                }
            }
            Ok(())
        };
        match self {
            Action::Command(c) => map(&mut c.env),
            Action::Http(h) => map(&mut h.headers),
            Action::Pipeline(p) => p.steps.iter_mut().try_for_each(|step| {
                if let Some(c) = &mut step.command {
                    map(&mut c.env)?;
                }
                if let Some(h) = &mut step.http {
                    map(&mut h.headers)?;
                }
                Ok(())
            }),
            Action::Handler(_) => Ok(()),
        }
    }

    /// The same action as a list shows it: no stdin, body, environment or header values,
    /// and only the first arguments, cut short. Lists stay small whatever the jobs carry.
    pub fn summarized(&self) -> Action {
        let mut action = self.clone();
        match &mut action {
            Action::Command(c) => summarize_command(c),
            Action::Http(h) => summarize_http(h),
            Action::Pipeline(p) => {
                for step in &mut p.steps {
                    if let Some(c) = &mut step.command {
                        summarize_command(c);
                    }
                    if let Some(h) = &mut step.http {
                        summarize_http(h);
                    }
                }
            }
            // A handler's payload is usually a few ids: kept unless it is large.
            Action::Handler(h) => {
                if h.payload.to_string().len() > SUMMARY_PAYLOAD_BYTES {
                    h.payload = serde_json::Value::String(OMITTED.to_owned());
                }
            }
        }
        action
    }

    pub fn summary(&self) -> String {
        match self {
            Action::Command(c) => c.display(),
            Action::Http(h) => format!("{} {}", h.method, h.url),
            Action::Pipeline(p) => p.summary(),
            Action::Handler(_) => "handler".to_owned(),
        }
    }

    /// The time limit of one attempt under `policy` (a pipeline's steps have their own).
    pub fn timeout_under(&self, policy: &Policy) -> Option<std::time::Duration> {
        match self {
            Action::Command(c) => c.timeout,
            Action::Http(h) => h.timeout,
            Action::Pipeline(_) => return None,
            Action::Handler(h) => h.timeout,
        }
        .or(policy.attempt_timeout)
    }
}

/// Replaces every secret value in `text`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    crate::redact::Redactor::new(secrets).redact(text)
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// Its node died or let the lease lapse; counted as a transient failure.
    Lost,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Lost => "lost",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            AttemptOutcome::Succeeded,
            AttemptOutcome::Failed,
            AttemptOutcome::TimedOut,
            AttemptOutcome::Cancelled,
            AttemptOutcome::Lost,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
    }
}

/// A job to insert, validated by whoever built it from outside input.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    /// The organization that owns the job.
    pub org: String,
    pub queue: String,
    pub kind: String,
    pub target: Option<String>,
    pub action: Action,
    /// The name of the policy chosen for the job, or `inline`.
    pub policy_name: String,
    /// The policy as it was when the job was submitted (inline policies live only here).
    pub policy: Policy,
    pub priority: u8,
    pub run_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: JobId,
    /// The organization that owns the job.
    #[serde(default = "crate::org::default_org")]
    pub org: String,
    pub queue: String,
    pub kind: String,
    pub target: Option<String>,
    pub action: Action,
    pub policy_name: String,
    pub policy: Policy,
    pub priority: u8,
    pub run_at: DateTime<Utc>,
    pub deadline: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
    pub idempotency_key: Option<String>,
    pub created_by: Option<String>,
    pub state: JobState,
    /// Attempts claimed so far (an attempt counts from its claim).
    pub attempt: u32,
    /// When a waiting job becomes due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_class: Option<Class>,
    /// The classification rule that decided the last failure.
    pub last_rule: Option<String>,
    /// Why a terminal job ended, as a sentence.
    pub finish_reason: Option<String>,
    /// The node holding the running attempt's lease.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The running attempt's id: the fence every write about that attempt must match.
    pub attempt_id: Option<i64>,
    pub cancel_requested: bool,
    /// A pipeline's completed steps, in order; the next one is the current step.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// The job's attempt count when the current step began: its attempts are the ones after.
    #[serde(default)]
    pub step_attempt_base: u32,
    /// Why a waiting job's start was put off by its target's circuit or retry budget
    /// (cleared when it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the first attempt started (the origin of `max_elapsed`).
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl Job {
    /// The pipeline step that runs next (or now): its index and definition.
    pub fn current_step(&self) -> Option<(usize, &Step)> {
        match &self.action {
            Action::Pipeline(p) => p
                .steps
                .get(self.steps.len())
                .map(|step| (self.steps.len(), step)),
            _ => None,
        }
    }

    /// Attempts of the current step so far (counting a running one).
    pub fn step_attempt(&self) -> u32 {
        self.attempt.saturating_sub(self.step_attempt_base)
    }

    /// The policy that decides the current attempt, with its name: the current step's own
    /// policy (snapshotted at submit), else the job's.
    pub fn effective_policy(&self) -> (&str, &Policy) {
        if let Some((_, step)) = self.current_step()
            && let Some(policy) = &step.resolved_policy
        {
            return (step_policy_label(step), policy);
        }
        (&self.policy_name, &self.policy)
    }

    /// The attempt number the effective policy counts: the step's for a pipeline.
    pub fn effective_attempt(&self) -> u32 {
        if self.current_step().is_some() {
            self.step_attempt()
        } else {
            self.attempt
        }
    }
}

fn step_policy_label(step: &Step) -> &str {
    match &step.policy {
        Some(serde_json::Value::String(name)) => name,
        _ => "inline",
    }
}

/// One try of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    pub job_id: JobId,
    pub number: u32,
    pub step: Option<String>,
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<AttemptOutcome>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub class: Option<Class>,
    pub rule: Option<String>,
    /// The wait chosen before the next attempt, in milliseconds.
    pub next_delay_ms: Option<u64>,
    /// Why that wait: `backoff` or `retry-after`.
    pub delay_reason: Option<String>,
    /// Output bytes dropped from the front of the bounded log.
    pub output_dropped_bytes: u64,
}

/// One state change of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Increases across all jobs: the position in the global event stream.
    pub id: i64,
    pub job_id: JobId,
    pub at: DateTime<Utc>,
    pub from: Option<JobState>,
    pub to: JobState,
    pub reason: String,
    pub actor: String,
    /// A pipeline's step at the change: the one that ran, runs, or runs next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines retryd itself writes into the log (attempt started, classification…).
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            "system" => Some(Stream::System),
            _ => None,
        }
    }
}

/// One captured output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    /// Increases within a job; `after=seq` resumes a follow.
    pub seq: i64,
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_env_values_are_redacted() {
        let action: Action = serde_json::from_str(
            r#"{"type":"command","program":"deploy","env":{"USER":"ci","TOKEN":{"value":"s3cr3t","secret":true}}}"#,
        )
        .unwrap();
        assert_eq!(action.secrets(), vec!["s3cr3t".to_owned()]);
        let shown = serde_json::to_string(&action.redacted()).unwrap();
        assert!(!shown.contains("s3cr3t"));
        assert_eq!(
            redact("token=s3cr3t", &action.secrets()),
            "token=[REDACTED]"
        );
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("queue", "deploy").is_ok());
        assert!(validate_name("queue", "").is_err());
        assert!(validate_name("queue", "has space").is_err());
        assert!(validate_name("queue", &"x".repeat(65)).is_err());
    }
}
