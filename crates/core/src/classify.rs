//! Failure classification: ordered rules, the first match wins, and the rule that matched
//! is recorded with the attempt so that every retry (or refusal to retry) is explainable.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::LazyLock;

/// What a failure means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Worth another attempt.
    Transient,
    /// Stop now: another attempt would fail the same way.
    Permanent,
    /// No rule recognised it: the policy decides (retry by default), and it is flagged so
    /// that someone writes a rule.
    Unknown,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Transient => "transient",
            Class::Permanent => "permanent",
            Class::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Class> {
        match text {
            "transient" => Some(Class::Transient),
            "permanent" => Some(Class::Permanent),
            "unknown" => Some(Class::Unknown),
            _ => None,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user rule, written in a policy. Exactly one matcher must be set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Shown when the rule matches; generated from the matcher when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub class: Class,
    /// Matches these process exit codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_codes: Option<Vec<i32>>,
    /// Case-insensitive regular expression searched in the output tail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Matches these HTTP statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<Vec<u16>>,
}

impl Rule {
    pub fn validate(&self) -> Result<(), String> {
        let set = [
            self.exit_codes.is_some(),
            self.output.is_some(),
            self.http_status.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            return Err("set exactly one of exit_codes, output, http_status".into());
        }
        if let Some(pattern) = &self.output {
            compile(pattern).map_err(|e| format!("output: invalid regular expression: {e}"))?;
        }
        Ok(())
    }

    fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        if let Some(codes) = &self.exit_codes {
            return format!("exit code in {codes:?}");
        }
        if let Some(pattern) = &self.output {
            return format!("output matches /{pattern}/");
        }
        format!(
            "HTTP status in {:?}",
            self.http_status.as_deref().unwrap_or_default()
        )
    }

    fn matches(&self, failure: &Failure<'_>) -> bool {
        if let Some(codes) = &self.exit_codes {
            return failure.exit_code.is_some_and(|code| codes.contains(&code));
        }
        if let Some(pattern) = &self.output {
            return compile(pattern).is_ok_and(|re| re.is_match(tail(failure.output)));
        }
        if let Some(statuses) = &self.http_status {
            return failure.http_status.is_some_and(|s| statuses.contains(&s));
        }
        false
    }
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
}

/// What is known about a failed attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failure<'a> {
    pub exit_code: Option<i32>,
    /// Killed because it ran past its attempt timeout.
    pub timed_out: bool,
    pub http_status: Option<u16>,
    /// The request never got a response (refused, reset, DNS, TLS).
    pub connect_error: bool,
    /// The action could not even be built (a malformed URL or header): no attempt can work.
    pub invalid_action: bool,
    /// Captured output (its tail is what rules look at).
    pub output: &'a str,
}

/// The outcome of classification: the class and the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub class: Class,
    pub rule: String,
}

/// Rules look at the last 32 KiB of output: errors are printed last, and scanning a bounded
/// window keeps classification cheap whatever a job prints.
const TAIL_BYTES: usize = 32 * 1024;

fn tail(output: &str) -> &str {
    if output.len() <= TAIL_BYTES {
        return output;
    }
    let mut start = output.len() - TAIL_BYTES;
    while !output.is_char_boundary(start) {
        start += 1;
    }
    &output[start..]
}

enum Builtin {
    InvalidAction,
    TimedOut,
    Exit(&'static [i32]),
    ExitRange(i32, i32),
    Output(Regex),
    ConnectError,
    Http(&'static [u16]),
    HttpRange(u16, u16),
}

struct BuiltinRule {
    name: &'static str,
    class: Class,
    matcher: Builtin,
}

fn output(pattern: &str) -> Builtin {
    Builtin::Output(compile(pattern).expect("built-in pattern compiles"))
}

/// The built-in rules, in order. Exit codes and HTTP statuses, which say exactly what
/// happened, come first; then permanent output patterns before transient ones, because retrying an authentication
/// failure that also mentions a reset connection only repeats the failure.
static BUILTIN_RULES: LazyLock<Vec<BuiltinRule>> = LazyLock::new(|| {
    use Class::*;
    let rule = |name, class, matcher| BuiltinRule {
        name,
        class,
        matcher,
    };
    vec![
        rule("the action cannot start", Permanent, Builtin::InvalidAction),
        rule(
            "killed by the attempt timeout",
            Transient,
            Builtin::TimedOut,
        ),
        rule(
            "exit code 75 (EX_TEMPFAIL)",
            Transient,
            Builtin::Exit(&[75]),
        ),
        rule(
            "exit code 126 (not executable)",
            Permanent,
            Builtin::Exit(&[126]),
        ),
        rule(
            "exit code 127 (command not found)",
            Permanent,
            Builtin::Exit(&[127]),
        ),
        rule("connect error", Transient, Builtin::ConnectError),
        rule(
            "HTTP 408/425/429/5xx",
            Transient,
            Builtin::Http(&[408, 425, 429, 500, 502, 503, 504]),
        ),
        rule("HTTP 4xx", Permanent, Builtin::HttpRange(400, 499)),
        rule(
            "output: image or repository not found",
            Permanent,
            output(
                r"(image|repository|manifest)\b.{0,40}\bnot found|manifest unknown|pull access denied|no such image",
            ),
        ),
        rule(
            "output: invalid image reference",
            Permanent,
            output(r"invalid reference format"),
        ),
        rule(
            "output: container name already in use",
            Permanent,
            output(r"the container name \S+ is already in use"),
        ),
        rule(
            "output: permission denied",
            Permanent,
            output(r"permission denied|operation not permitted"),
        ),
        rule(
            "output: access denied",
            Permanent,
            output(r"access denied|access is denied"),
        ),
        rule(
            "output: authentication or authorization failed",
            Permanent,
            output(
                r"authentication failed|authorization failed|unauthorized|invalid credentials|auth(entication)? error",
            ),
        ),
        rule(
            "output: invalid configuration",
            Permanent,
            output(r"invalid config(uration)?|configuration error"),
        ),
        rule(
            "output: command not found",
            Permanent,
            output(r"command not found|executable file not found"),
        ),
        rule(
            "output: container daemon unreachable",
            Transient,
            output(r"cannot connect to the docker daemon|is the docker daemon running"),
        ),
        rule(
            "output: connection refused or reset",
            Transient,
            output(
                r"connection (refused|reset|aborted|closed)|econnrefused|econnreset|broken pipe",
            ),
        ),
        rule(
            "output: timeout",
            Transient,
            output(r"timed? ?out|timeout|etimedout|deadline exceeded"),
        ),
        rule(
            "output: name resolution failed",
            Transient,
            output(
                r"name resolution|could not resolve|name or service not known|no such host|getaddrinfo|enotfound",
            ),
        ),
        rule(
            "output: network unreachable",
            Transient,
            output(r"network is unreachable|no route to host|host is unreachable"),
        ),
        rule(
            "output: no space left on device",
            Transient,
            output(r"no space left"),
        ),
        rule(
            "output: too many open files",
            Transient,
            output(r"too many open files"),
        ),
        rule(
            "output: out of memory",
            Transient,
            output(r"out of memory|cannot allocate memory|\boom\b"),
        ),
        rule(
            "output: resource temporarily unavailable",
            Transient,
            output(
                r"resource temporarily unavailable|try again|temporarily unavailable|service unavailable|too many requests|rate limit",
            ),
        ),
        rule(
            "exit code 64–78 (sysexits usage or configuration error)",
            Permanent,
            Builtin::ExitRange(64, 78),
        ),
    ]
});

impl Builtin {
    fn matches(&self, failure: &Failure<'_>) -> bool {
        match self {
            Builtin::InvalidAction => failure.invalid_action,
            Builtin::TimedOut => failure.timed_out,
            Builtin::Exit(codes) => failure.exit_code.is_some_and(|c| codes.contains(&c)),
            Builtin::ExitRange(lo, hi) => {
                failure.exit_code.is_some_and(|c| (*lo..=*hi).contains(&c))
            }
            Builtin::Output(re) => re.is_match(tail(failure.output)),
            Builtin::ConnectError => failure.connect_error,
            Builtin::Http(statuses) => failure.http_status.is_some_and(|s| statuses.contains(&s)),
            Builtin::HttpRange(lo, hi) => failure
                .http_status
                .is_some_and(|s| (*lo..=*hi).contains(&s)),
        }
    }
}

/// Classifies a failure: the policy's own rules first, then the built-in ones.
pub fn classify(rules: &[Rule], failure: &Failure<'_>) -> Classification {
    if let Some(rule) = rules.iter().find(|rule| rule.matches(failure)) {
        return Classification {
            class: rule.class,
            rule: rule.label(),
        };
    }
    if let Some(rule) = BUILTIN_RULES
        .iter()
        .find(|rule| rule.matcher.matches(failure))
    {
        return Classification {
            class: rule.class,
            rule: rule.name.to_owned(),
        };
    }
    Classification {
        class: Class::Unknown,
        rule: "no rule matched".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32, output: &str) -> Classification {
        classify(
            &[],
            &Failure {
                exit_code: Some(code),
                output,
                ..Failure::default()
            },
        )
    }

    #[test]
    fn connection_refused_is_transient() {
        let c = exit(1, "curl: (7) Failed to connect: Connection refused\n");
        assert_eq!(c.class, Class::Transient);
        assert_eq!(c.rule, "output: connection refused or reset");
    }

    #[test]
    fn permission_denied_and_missing_commands_are_permanent() {
        assert_eq!(
            exit(1, "open /etc/shadow: Permission denied").class,
            Class::Permanent
        );
        assert_eq!(exit(127, "").rule, "exit code 127 (command not found)");
        assert_eq!(exit(64, "").class, Class::Permanent);
        assert_eq!(exit(75, "").class, Class::Transient);
    }

    #[test]
    fn timeouts_and_http_statuses_follow_the_spec() {
        let timed_out = Failure {
            timed_out: true,
            ..Failure::default()
        };
        assert_eq!(classify(&[], &timed_out).class, Class::Transient);
        for (status, class) in [
            (503, Class::Transient),
            (429, Class::Transient),
            (404, Class::Permanent),
            (401, Class::Permanent),
        ] {
            let f = Failure {
                http_status: Some(status),
                ..Failure::default()
            };
            assert_eq!(classify(&[], &f).class, class, "{status}");
        }
    }

    /// Real `docker run` error texts (exit code 125: the daemon's error, not the container's).
    #[test]
    fn container_launch_errors_are_classified() {
        let cases = [
            (
                "docker: Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp 127.0.0.1:443: connect: connection refused.",
                Class::Transient,
                "output: connection refused or reset",
            ),
            (
                "docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
                Class::Transient,
                "output: container daemon unreachable",
            ),
            (
                "docker: Error response from daemon: toomanyrequests: You have reached your pull rate limit.",
                Class::Transient,
                "output: resource temporarily unavailable",
            ),
            (
                "docker: Error response from daemon: pull access denied for acme/worker, repository does not exist or may require 'docker login': denied: requested access to the resource is denied.",
                Class::Permanent,
                "output: image or repository not found",
            ),
            (
                "Error response from daemon: No such image: acme/worker:1.2",
                Class::Permanent,
                "output: image or repository not found",
            ),
            (
                "docker: Error response from daemon: manifest for acme/worker:9.9 not found: manifest unknown: manifest unknown.",
                Class::Permanent,
                "output: image or repository not found",
            ),
            (
                "docker: invalid reference format: repository name must be lowercase.",
                Class::Permanent,
                "output: invalid image reference",
            ),
            (
                "docker: Error response from daemon: Conflict. The container name \"/job-42\" is already in use by container \"3f2a\". You have to remove (or rename) that container to be able to reuse that name.",
                Class::Permanent,
                "output: container name already in use",
            ),
            (
                "docker: Error response from daemon: failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: exec: \"deploy\": executable file not found in $PATH: unknown.",
                Class::Permanent,
                "output: command not found",
            ),
        ];
        for (text, class, rule) in cases {
            let c = exit(125, text);
            assert_eq!((c.class, c.rule.as_str()), (class, rule), "{text}");
        }
    }

    #[test]
    fn unmatched_failures_are_unknown() {
        assert_eq!(exit(1, "something odd").class, Class::Unknown);
    }

    #[test]
    fn user_rules_win_over_builtins() {
        let rule = Rule {
            name: Some("flaky RPC".into()),
            class: Class::Transient,
            exit_codes: None,
            output: Some("nonce too low".into()),
            http_status: None,
        };
        rule.validate().unwrap();
        let c = classify(
            &[rule],
            &Failure {
                exit_code: Some(1),
                output: "error: nonce too low; permission denied",
                ..Failure::default()
            },
        );
        assert_eq!(
            c,
            Classification {
                class: Class::Transient,
                rule: "flaky RPC".into()
            }
        );
    }

    #[test]
    fn rules_need_exactly_one_matcher() {
        let rule = Rule {
            name: None,
            class: Class::Permanent,
            exit_codes: None,
            output: None,
            http_status: None,
        };
        assert!(rule.validate().is_err());
        let bad = Rule {
            output: Some("(".into()),
            ..rule
        };
        assert!(bad.validate().unwrap_err().contains("regular expression"));
    }
}
