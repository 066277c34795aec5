//! The `pipeline` action: ordered named steps, each a command or an HTTP call with its own
//! policy and timeout. A step exports values (`::set-output name=value` on a command's
//! stdout, or JSON pointers into an HTTP reply) that later steps read as environment
//! variables (`RETRYD_OUTPUT_<NAME>`) and as `{{ steps.<step>.outputs.<name> }}` or
//! `{{ outputs.<name> }}` in their arguments, environment values, URL, headers and body.
//!
//! Completed steps are stored on the job ([`StepRecord`]), so that a retry of a failed
//! pipeline resumes at the step that failed.

use crate::classify::Class;
use crate::job::{CommandAction, EnvValue, HttpAction};
use crate::policy::Policy;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub const MAX_STEPS: usize = 50;
pub const MAX_EXPORTS: usize = 32;
/// The longest exported value: outputs travel in the job row and in environment variables.
pub const MAX_OUTPUT_BYTES: usize = 4096;
/// The prefix of a command's output line that exports a value.
pub const SET_OUTPUT: &str = "::set-output ";
/// The prefix of the environment variables that carry earlier steps' outputs.
pub const OUTPUT_ENV_PREFIX: &str = "RETRYD_OUTPUT_";

/// A pipeline: its steps run in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PipelineAction {
    pub steps: Vec<Step>,
}

/// One step: exactly one of `command` and `http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpAction>,
    /// A policy name or an inline policy; the job's policy when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub policy: Option<serde_json::Value>,
    /// The policy as it was at submit (set by the server, like a job's policy snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_policy: Option<Policy>,
    /// Time limit of one attempt of this step.
    #[serde(
        default,
        with = "crate::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "30s"))]
    pub timeout: Option<Duration>,
    /// A failure of this step is recorded and the pipeline goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_failure: bool,
    /// Output name → JSON pointer into the HTTP reply (HTTP steps only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub export: BTreeMap<String, String>,
}

/// How a step's policy was given.
#[derive(Debug, Clone, PartialEq)]
pub enum StepPolicy {
    Named(String),
    Inline(Box<Policy>),
}

impl Step {
    /// The step's own policy, parsed; `None` means the job's.
    pub fn policy_ref(&self) -> Result<Option<StepPolicy>, String> {
        let field = format!("steps.{}.policy", self.name);
        match &self.policy {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(name)) => Ok(Some(StepPolicy::Named(name.clone()))),
            Some(value @ serde_json::Value::Object(_)) => {
                let policy: Policy =
                    serde_json::from_value(value.clone()).map_err(|e| format!("{field}: {e}"))?;
                policy
                    .validate()
                    .map_err(|e| format!("{field}.{}: {}", e.field, e.message))?;
                Ok(Some(StepPolicy::Inline(Box::new(policy))))
            }
            Some(_) => Err(format!("{field}: must be a policy name or a policy object")),
        }
    }

    /// The time limit of one attempt: the step's, its action's, then the policy's.
    pub fn timeout_under(&self, policy: &Policy) -> Option<Duration> {
        self.timeout
            .or(self.command.as_ref().and_then(|c| c.timeout))
            .or(self.http.as_ref().and_then(|h| h.timeout))
            .or(policy.attempt_timeout)
    }

    /// The values to scrub from output and logs.
    pub fn secrets(&self) -> Vec<String> {
        match (&self.command, &self.http) {
            (Some(c), _) => c.secrets(),
            (_, Some(h)) => h.secrets_list(),
            _ => Vec::new(),
        }
    }

    fn texts(&self) -> Vec<(String, &str)> {
        let mut texts = Vec::new();
        if let Some(c) = &self.command {
            texts.extend(
                c.args
                    .iter()
                    .map(|a| ("command.args".to_owned(), a.as_str())),
            );
            texts.extend(
                c.env
                    .iter()
                    .map(|(k, v)| (format!("command.env.{k}"), v.value())),
            );
            if let Some(stdin) = &c.stdin {
                texts.push(("command.stdin".to_owned(), stdin.as_str()));
            }
        }
        if let Some(h) = &self.http {
            texts.push(("http.url".to_owned(), h.url.as_str()));
            texts.extend(
                h.headers
                    .iter()
                    .map(|(k, v)| (format!("http.headers.{k}"), v.value())),
            );
            if let Some(body) = &h.body {
                texts.push(("http.body".to_owned(), body.as_str()));
            }
        }
        texts
    }
}

fn valid_output_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

impl PipelineAction {
    /// Checks the whole pipeline; each message names the step and the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(format!(
                "steps: a pipeline has 1–{MAX_STEPS} steps, got {}",
                self.steps.len()
            ));
        }
        for (index, step) in self.steps.iter().enumerate() {
            crate::job::validate_name(&format!("steps[{index}].name"), &step.name)?;
            if self.steps[..index].iter().any(|s| s.name == step.name) {
                return Err(format!(
                    "steps[{index}].name: step name {:?} is used twice",
                    step.name
                ));
            }
            let at = format!("steps.{}", step.name);
            // The action's own messages start with "action."; here they belong to the step.
            let within = |kind: &str, message: String| {
                format!(
                    "{at}.{kind}.{}",
                    message.strip_prefix("action.").unwrap_or(&message)
                )
            };
            match (&step.command, &step.http) {
                (Some(command), None) => {
                    // Templates are filled in at run time; validate with them in place.
                    command.validate().map_err(|m| within("command", m))?;
                    if !step.export.is_empty() {
                        return Err(format!(
                            "{at}.export: only http steps export JSON fields; a command step prints `::set-output name=value` lines"
                        ));
                    }
                }
                (None, Some(http)) => {
                    let mut probe = http.clone();
                    probe.url = fill_for_validation(&http.url);
                    probe.validate().map_err(|m| within("http", m))?;
                }
                _ => {
                    return Err(format!("{at}: give exactly one of `command` and `http`"));
                }
            }
            step.policy_ref()?;
            crate::job::validate_timeout(&format!("{at}.timeout"), step.timeout)?;
            if step.export.len() > MAX_EXPORTS {
                return Err(format!("{at}.export: at most {MAX_EXPORTS} values"));
            }
            for (name, pointer) in &step.export {
                if !valid_output_name(name) {
                    return Err(format!(
                        "{at}.export: {name:?} is not an output name (letters, digits and _, not starting with a digit, at most 64)"
                    ));
                }
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return Err(format!(
                        "{at}.export.{name}: {pointer:?} is not a JSON pointer (it starts with '/', e.g. \"/result/hash\")"
                    ));
                }
            }
            for (field, text) in step.texts() {
                for reference in references(text).map_err(|m| format!("{at}.{field}: {m}"))? {
                    if let Reference::Step { step: from, .. } = &reference
                        && !self.steps[..index].iter().any(|s| &s.name == from)
                    {
                        return Err(format!(
                            "{at}.{field}: {{{{ steps.{from}… }}}} names no earlier step (earlier: {})",
                            names_or_none(&self.steps[..index])
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn secrets(&self) -> Vec<String> {
        self.steps.iter().flat_map(Step::secrets).collect()
    }

    /// `compile → estimate-gas → submit`.
    pub fn summary(&self) -> String {
        let names: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        format!("pipeline: {}", names.join(" → "))
    }
}

fn names_or_none(steps: &[Step]) -> String {
    if steps.is_empty() {
        "none".to_owned()
    } else {
        steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A URL with its templates replaced by a placeholder host part, to check its shape.
fn fill_for_validation(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push('x');
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// What a template names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `steps.<step>.outputs.<name>`
    Step { step: String, name: String },
    /// `outputs.<name>`: the latest step that exported it.
    Latest { name: String },
}

fn parse_reference(inner: &str) -> Result<Reference, String> {
    let parts: Vec<&str> = inner.trim().split('.').collect();
    match parts.as_slice() {
        ["steps", step, "outputs", name] if !step.is_empty() && valid_output_name(name) => {
            Ok(Reference::Step {
                step: (*step).to_owned(),
                name: (*name).to_owned(),
            })
        }
        ["outputs", name] if valid_output_name(name) => Ok(Reference::Latest {
            name: (*name).to_owned(),
        }),
        _ => Err(format!(
            "{{{{ {} }}}} is not a template; write {{{{ steps.<step>.outputs.<name> }}}} or {{{{ outputs.<name> }}}}",
            inner.trim()
        )),
    }
}

/// Splits a text into literal parts and template references.
fn segments(text: &str) -> Result<Vec<Result<&str, Reference>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push(Ok(&rest[..start]));
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| "a `{{` without its `}}`".to_owned())?;
        out.push(Err(parse_reference(&rest[start + 2..start + end])?));
        rest = &rest[start + end + 2..];
    }
    out.push(Ok(rest));
    Ok(out)
}

/// The templates a text uses.
pub fn references(text: &str) -> Result<Vec<Reference>, String> {
    Ok(segments(text)?
        .into_iter()
        .filter_map(Result::err)
        .collect())
}

/// Fills a text's templates from completed steps.
pub fn render(text: &str, done: &[StepRecord]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for segment in segments(text)? {
        match segment {
            Ok(literal) => out.push_str(literal),
            Err(Reference::Step { step, name }) => {
                let record = done.iter().find(|r| r.name == step).ok_or_else(|| {
                    format!("{{{{ steps.{step}.outputs.{name} }}}}: step {step} has not run")
                })?;
                let value = record.outputs.get(&name).ok_or_else(|| {
                    format!(
                        "{{{{ steps.{step}.outputs.{name} }}}}: step {step} exported no {name} (it exported: {})",
                        keys_or_none(&record.outputs)
                    )
                })?;
                out.push_str(value);
            }
            Err(Reference::Latest { name }) => {
                let value = latest_outputs(done).remove(&name).ok_or_else(|| {
                    format!("{{{{ outputs.{name} }}}}: no earlier step exported {name}")
                })?;
                out.push_str(&value);
            }
        }
    }
    Ok(out)
}

fn keys_or_none(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        "nothing".to_owned()
    } else {
        map.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Every output of the completed steps; a later step's value of a name wins.
pub fn latest_outputs(done: &[StepRecord]) -> BTreeMap<String, String> {
    done.iter()
        .flat_map(|r| r.outputs.clone())
        .collect::<BTreeMap<_, _>>()
}

/// `tx_hash` → `RETRYD_OUTPUT_TX_HASH`.
pub fn output_env_name(name: &str) -> String {
    format!("{OUTPUT_ENV_PREFIX}{}", name.to_ascii_uppercase())
}

/// A `::set-output name=value` line's name and value.
pub fn parse_set_output(line: &str) -> Option<(String, String)> {
    let (name, value) = line.trim_end().strip_prefix(SET_OUTPUT)?.split_once('=')?;
    let name = name.trim();
    (valid_output_name(name) && value.len() <= MAX_OUTPUT_BYTES)
        .then(|| (name.to_owned(), value.to_owned()))
}

fn render_values(
    values: &mut BTreeMap<String, EnvValue>,
    done: &[StepRecord],
    field: &str,
) -> Result<(), String> {
    for (key, value) in values.iter_mut() {
        let rendered = render(value.value(), done).map_err(|m| format!("{field}.{key}: {m}"))?;
        *value = match value {
            EnvValue::Plain(_) => EnvValue::Plain(rendered),
            EnvValue::Marked { secret, .. } => EnvValue::Marked {
                value: rendered,
                secret: *secret,
            },
        };
    }
    Ok(())
}

impl Step {
    /// The step's command with its templates filled and earlier outputs in its environment.
    pub fn command_to_run(&self, done: &[StepRecord]) -> Option<Result<CommandAction, String>> {
        let command = self.command.as_ref()?;
        let mut c = command.clone();
        let filled = (|| {
            for arg in &mut c.args {
                *arg = render(arg, done).map_err(|m| format!("command.args: {m}"))?;
            }
            render_values(&mut c.env, done, "command.env")?;
            if let Some(stdin) = &mut c.stdin {
                *stdin = render(stdin, done).map_err(|m| format!("command.stdin: {m}"))?;
            }
            for (name, value) in latest_outputs(done) {
                c.env
                    .entry(output_env_name(&name))
                    .or_insert(EnvValue::Plain(value));
            }
            c.env
                .insert("RETRYD_STEP".to_owned(), EnvValue::Plain(self.name.clone()));
            c.timeout = self.timeout.or(c.timeout);
            Ok(c)
        })();
        Some(filled)
    }

    /// The step's request with its templates filled.
    pub fn http_to_run(&self, done: &[StepRecord]) -> Option<Result<HttpAction, String>> {
        let http = self.http.as_ref()?;
        let mut h = http.clone();
        let filled = (|| {
            h.url = render(&h.url, done).map_err(|m| format!("http.url: {m}"))?;
            render_values(&mut h.headers, done, "http.headers")?;
            if let Some(body) = &mut h.body {
                *body = render(body, done).map_err(|m| format!("http.body: {m}"))?;
            }
            h.timeout = self.timeout.or(h.timeout);
            h.validate()?;
            Ok(h)
        })();
        Some(filled)
    }
}

/// The values a JSON reply exports: each pointer must find a value.
pub fn export_from_json(
    export: &BTreeMap<String, String>,
    body: &str,
) -> Result<BTreeMap<String, String>, String> {
    if export.is_empty() {
        return Ok(BTreeMap::new());
    }
    let reply: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("export: the reply is not JSON ({e})"))?;
    export
        .iter()
        .map(|(name, pointer)| {
            // The reply itself says why (a JSON-RPC error, say): keep its start.
            let value = reply.pointer(pointer).ok_or_else(|| {
                let shown: String = body.chars().take(300).collect();
                format!("export.{name}: the reply has no {pointer}: {shown}")
            })?;
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => {
                    return Err(format!("export.{name}: {pointer} is null in the reply"));
                }
                other => other.to_string(),
            };
            if text.len() > MAX_OUTPUT_BYTES {
                return Err(format!(
                    "export.{name}: the value is longer than {MAX_OUTPUT_BYTES} bytes"
                ));
            }
            Ok((name.clone(), text))
        })
        .collect()
}

/// How a completed step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Succeeded,
    /// Failed, and the pipeline went on (`continue_on_failure`).
    Failed,
}

/// A completed step, stored on the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    /// Attempts the step took.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub finished_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(json: serde_json::Value) -> PipelineAction {
        serde_json::from_value(json).unwrap()
    }

    fn done(name: &str, outputs: &[(&str, &str)]) -> StepRecord {
        StepRecord {
            name: name.to_owned(),
            status: StepStatus::Succeeded,
            attempts: 1,
            outputs: outputs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            error: None,
            class: None,
            rule: None,
            finished_at: Utc::now(),
        }
    }

    #[test]
    fn templates_fill_from_earlier_steps() {
        let steps = [
            done("submit", &[("tx_hash", "0xabc")]),
            done("gas", &[("gas", "21000")]),
        ];
        assert_eq!(
            render(
                "hash={{ steps.submit.outputs.tx_hash }} gas={{outputs.gas}}",
                &steps
            ),
            Ok("hash=0xabc gas=21000".to_owned())
        );
        let missing = render("{{ steps.submit.outputs.receipt }}", &steps).unwrap_err();
        assert!(
            missing.contains("exported no receipt (it exported: tx_hash)"),
            "{missing}"
        );
        assert!(render("{{ steps.verify.outputs.x }}", &steps).is_err());
        assert!(render("{{ nonsense }}", &steps).is_err());
        assert!(render("{{ outputs.gas ", &steps).is_err());
    }

    #[test]
    fn set_output_lines_are_parsed() {
        assert_eq!(
            parse_set_output("::set-output tx_hash=0xabc=def"),
            Some(("tx_hash".to_owned(), "0xabc=def".to_owned()))
        );
        assert_eq!(parse_set_output("::set-output 1x=2"), None);
        assert_eq!(parse_set_output("set-output a=b"), None);
    }

    #[test]
    fn validation_names_the_step_and_the_field() {
        let ok = pipeline(serde_json::json!({ "steps": [
            { "name": "submit", "http": { "method": "POST", "url": "http://node/rpc" }, "export": { "tx_hash": "/result" } },
            { "name": "confirm", "command": { "program": "confirm", "args": ["{{ steps.submit.outputs.tx_hash }}"] },
              "policy": { "max_attempts": 5 } },
        ]}));
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (
                serde_json::json!({ "steps": [] }),
                "steps: a pipeline has 1–50 steps",
            ),
            (
                serde_json::json!({ "steps": [{ "name": "a" }] }),
                "steps.a: give exactly one of `command` and `http`",
            ),
            (
                serde_json::json!({ "steps": [{ "name": "a", "http": { "url": "ftp://x" } }] }),
                "steps.a.http.url: must be an http",
            ),
            (
                serde_json::json!({ "steps": [{ "name": "a", "command": { "program": "x", "args": ["{{ steps.b.outputs.c }}"] } },
                                               { "name": "b", "command": { "program": "y" } }] }),
                "steps.a.command.args: {{ steps.b… }} names no earlier step (earlier: none)",
            ),
            (
                serde_json::json!({ "steps": [{ "name": "a", "command": { "program": "x" }, "policy": { "max_attempts": 0 } }] }),
                "steps.a.policy.max_attempts: must be between 1 and 100",
            ),
            (
                serde_json::json!({ "steps": [{ "name": "a", "command": { "program": "x" }, "export": { "h": "/x" } }] }),
                "steps.a.export: only http steps",
            ),
            (
                serde_json::json!({ "steps": [{ "name": "a", "command": { "program": "x" } }, { "name": "a", "command": { "program": "x" } }] }),
                "steps[1].name: step name \"a\" is used twice",
            ),
        ];
        for (json, expected) in cases {
            let error = pipeline(json).validate().unwrap_err();
            assert!(error.starts_with(expected), "{error} (expected {expected})");
        }
    }

    #[test]
    fn json_exports_follow_pointers() {
        let export: BTreeMap<String, String> = [
            ("tx_hash".to_owned(), "/result/hash".to_owned()),
            ("block".to_owned(), "/result/block".to_owned()),
        ]
        .into();
        let values = export_from_json(&export, r#"{"result":{"hash":"0xabc","block":7}}"#).unwrap();
        assert_eq!(values["tx_hash"], "0xabc");
        assert_eq!(values["block"], "7");
        let error = export_from_json(&export, r#"{"result":{}}"#).unwrap_err();
        assert!(error.contains("the reply has no /result/block"), "{error}");
    }

    #[test]
    fn commands_get_earlier_outputs_in_their_environment() {
        let step: Step = serde_json::from_value(serde_json::json!({
            "name": "confirm",
            "command": { "program": "confirm", "args": ["{{ outputs.tx_hash }}"] },
        }))
        .unwrap();
        let command = step
            .command_to_run(&[done("submit", &[("tx_hash", "0xabc")])])
            .unwrap()
            .unwrap();
        assert_eq!(command.args, ["0xabc"]);
        assert_eq!(command.env["RETRYD_OUTPUT_TX_HASH"].value(), "0xabc");
        assert_eq!(command.env["RETRYD_STEP"].value(), "confirm");
    }
}
