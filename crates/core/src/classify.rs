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

    fn matches(&self, failure: &Failure<'_>) -> Option<Matched> {
        if let Some(codes) = &self.exit_codes {
            return failure
                .exit_code
                .is_some_and(|code| codes.contains(&code))
                .then_some(Matched { line: None });
        }
        if let Some(pattern) = &self.output {
            return compile(pattern)
                .ok()
                .and_then(|re| matched_line(&re, failure.output));
        }
        if let Some(statuses) = &self.http_status {
            return failure
                .http_status
                .is_some_and(|s| statuses.contains(&s))
                .then_some(Matched { line: None });
        }
        None
    }
}

/// A rule matched; for an output rule, on this line.
struct Matched {
    line: Option<String>,
}

/// The last line of the output tail on which `re` matches (a pattern that spans lines gives
/// the line where its last match starts): the line that decided the class is the error a
/// person should read first.
fn matched_line(re: &Regex, output: &str) -> Option<Matched> {
    let tail = tail(output);
    let line = tail
        .lines()
        .rev()
        .find(|line| re.is_match(line))
        .or_else(|| {
            let start = re.find_iter(tail).last()?.start();
            let from = tail[..start].rfind('\n').map_or(0, |i| i + 1);
            tail[from..].lines().next()
        })?;
    Some(Matched {
        line: Some(line.trim().to_owned()),
    })
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
    /// The output line an output rule matched: the attempt's headline error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
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
    Http(fn(u16) -> bool),
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
/// happened, come first; then permanent output patterns before transient ones, because
/// retrying an authentication failure that also mentions a reset connection only repeats
/// the failure. Each output rule is named for every phrase it matches, so that the rule an
/// attempt records says what was seen (a 503 is not "resource temporarily unavailable").
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
            Builtin::Http(|s| matches!(s, 408 | 425 | 429 | 500..=599)),
        ),
        rule(
            "HTTP 4xx",
            Permanent,
            Builtin::Http(|s| (400..=499).contains(&s)),
        ),
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
        // Permanent: an expired or untrusted certificate does not renew itself between
        // attempts seconds apart; retrying only hides the cause until the attempts run out.
        rule(
            "output: TLS certificate expired or not trusted",
            Permanent,
            output(
                r"certificate has expired|certificate verify failed|x509: certificate|self[- ]signed certificate|unable to get local issuer certificate",
            ),
        ),
        // A wallet or account without the balance the action spends: someone must fund it.
        rule(
            "output: insufficient funds",
            Permanent,
            output(r"insufficient funds|insufficient balance"),
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
        // The server is full now; it has room again when other clients disconnect.
        rule(
            "output: too many connections or clients",
            Transient,
            output(r"too many (connections|clients)|remaining connection slots are reserved"),
        ),
        rule(
            "output: HTTP 429 too many requests or rate limit",
            Transient,
            output(
                r"too many requests|toomanyrequests|rate limit|returned error: 429\b|\b(http|status)\W{0,3}429\b",
            ),
        ),
        rule(
            "output: HTTP 503 service unavailable",
            Transient,
            output(
                r"service (temporarily )?unavailable|returned error: 503\b|\b(http|status)\W{0,3}503\b",
            ),
        ),
        rule(
            "output: HTTP 5xx server error",
            Transient,
            output(
                r"returned error: 5\d\d\b|\b(http|status)\W{0,3}5\d\d\b|bad gateway|gateway time-?out|internal server error",
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
            output(r"no space left|enospc|disk quota exceeded"),
        ),
        rule(
            "output: too many open files",
            Transient,
            output(r"too many open files"),
        ),
        rule(
            "output: out of memory",
            Transient,
            output(r"out of memory|cannot allocate memory|\boom\b|oomkilled|oom[- ]killer"),
        ),
        // Another apt or unattended-upgrades holds the dpkg lock; it lets go in minutes.
        rule(
            "output: package manager lock held (dpkg/apt)",
            Transient,
            output(r"could not get lock|unable to acquire the dpkg|dpkg frontend lock"),
        ),
        rule(
            "output: resource temporarily unavailable or try again",
            Transient,
            output(
                r"resource temporarily unavailable|temporarily unavailable|try again|\beagain\b",
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
    fn matches(&self, failure: &Failure<'_>) -> Option<Matched> {
        let hit = match self {
            Builtin::InvalidAction => failure.invalid_action,
            Builtin::TimedOut => failure.timed_out,
            Builtin::Exit(codes) => failure.exit_code.is_some_and(|c| codes.contains(&c)),
            Builtin::ExitRange(lo, hi) => {
                failure.exit_code.is_some_and(|c| (*lo..=*hi).contains(&c))
            }
            Builtin::Output(re) => return matched_line(re, failure.output),
            Builtin::ConnectError => failure.connect_error,
            Builtin::Http(statuses) => failure.http_status.is_some_and(statuses),
        };
        hit.then_some(Matched { line: None })
    }
}

/// Classifies a failure: the policy's own rules first, then the built-in ones.
pub fn classify(rules: &[Rule], failure: &Failure<'_>) -> Classification {
    let user = rules
        .iter()
        .find_map(|rule| Some((rule.matches(failure)?, rule.class, rule.label())));
    let builtin = || {
        BUILTIN_RULES.iter().find_map(|rule| {
            Some((
                rule.matcher.matches(failure)?,
                rule.class,
                rule.name.to_owned(),
            ))
        })
    };
    match user.or_else(builtin) {
        Some((matched, class, rule)) => Classification {
            class,
            rule,
            line: matched.line,
        },
        None => Classification {
            class: Class::Unknown,
            rule: "no rule matched".to_owned(),
            line: None,
        },
    }
}

/// Lines that close a failed command's output without saying what failed (docker's
/// `See 'docker run --help'.`, usage hints): never an attempt's headline.
static BOILERPLATE: LazyLock<Regex> = LazyLock::new(|| {
    compile(r"^(see '[^']*--help'\.?|run '[^']*--help' for more information\.?)$")
        .expect("built-in pattern compiles")
});

/// The headline error of a failed attempt: the line that decided its class, else the last
/// stderr line, else the last line of output (boilerplate skipped). `lines` are the
/// attempt's output lines in order, as (is stderr, text).
pub fn headline<'a>(
    classification: &'a Classification,
    lines: impl DoubleEndedIterator<Item = (bool, &'a str)> + Clone,
) -> Option<&'a str> {
    if let Some(line) = &classification.line {
        return Some(line);
    }
    let telling = |(_, line): &(bool, &str)| {
        let line = line.trim();
        !line.is_empty() && !BOILERPLATE.is_match(line)
    };
    let last_stderr = lines
        .clone()
        .rev()
        .filter(telling)
        .find(|(stderr, _)| *stderr);
    last_stderr
        .or_else(|| lines.rev().find(telling))
        .map(|(_, line)| line.trim())
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
                "output: HTTP 429 too many requests or rate limit",
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
                rule: "flaky RPC".into(),
                line: Some("error: nonce too low; permission denied".into()),
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

    /// Issue 15: a 503 was reported under "output: resource temporarily unavailable", the
    /// first phrase of a catch-all rule.
    #[test]
    fn issue_15_a_503_is_reported_under_a_rule_that_names_it() {
        let c = exit(22, "upload\nGET /v2/deploy: 503 Service Unavailable\n");
        assert_eq!(c.class, Class::Transient);
        assert_eq!(c.rule, "output: HTTP 503 service unavailable");
        assert_eq!(
            c.line.as_deref(),
            Some("GET /v2/deploy: 503 Service Unavailable")
        );
    }

    /// Issue 15: the rule named "HTTP 408/425/429/5xx" covered only 500, 502, 503 and 504.
    #[test]
    fn issue_15_every_5xx_status_is_transient_and_other_4xx_permanent() {
        for status in [408, 425, 429, 500, 501, 502, 503, 504, 505, 507, 599] {
            let c = classify(
                &[],
                &Failure {
                    http_status: Some(status),
                    ..Failure::default()
                },
            );
            assert_eq!(
                (c.class, c.rule.as_str()),
                (Class::Transient, "HTTP 408/425/429/5xx"),
                "{status}"
            );
        }
        for status in [400, 403, 404, 409, 422] {
            let f = Failure {
                http_status: Some(status),
                ..Failure::default()
            };
            assert_eq!(classify(&[], &f).class, Class::Permanent, "{status}");
        }
    }

    /// Issue 15: common deploy failures fell to `unknown`. Each is classified by a rule that
    /// names it, on the line that says it.
    #[test]
    fn issue_15_common_deploy_failures_are_classified() {
        let cases = [
            (
                "ERROR 1040 (HY000): Too many connections",
                Class::Transient,
                "output: too many connections or clients",
            ),
            (
                "psql: error: FATAL:  sorry, too many clients already",
                Class::Transient,
                "output: too many connections or clients",
            ),
            (
                "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 2101 (unattended-upgr)",
                Class::Transient,
                "output: package manager lock held (dpkg/apt)",
            ),
            (
                "curl: (60) SSL certificate problem: certificate has expired",
                Class::Permanent,
                "output: TLS certificate expired or not trusted",
            ),
            (
                "requests.exceptions.SSLError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)",
                Class::Permanent,
                "output: TLS certificate expired or not trusted",
            ),
            (
                "Last State: Terminated  Reason: OOMKilled  Exit Code: 137",
                Class::Transient,
                "output: out of memory",
            ),
            (
                "curl: (22) The requested URL returned error: 429",
                Class::Transient,
                "output: HTTP 429 too many requests or rate limit",
            ),
            (
                "curl: (22) The requested URL returned error: 502",
                Class::Transient,
                "output: HTTP 5xx server error",
            ),
            (
                "npm ERR! code ENOSPC",
                Class::Transient,
                "output: no space left on device",
            ),
        ];
        for (text, class, rule) in cases {
            let output = format!("deploying v1.4.2\n{text}\nexiting\n");
            let c = exit(1, &output);
            assert_eq!((c.class, c.rule.as_str()), (class, rule), "{text}");
            assert_eq!(c.line.as_deref(), Some(text), "{text}");
        }
    }

    fn headline_of(c: &Classification, lines: &[(bool, &'static str)]) -> Option<String> {
        headline(c, lines.iter().copied()).map(str::to_owned)
    }

    /// Issue 15: a contract deploy that failed with `insufficient funds` on stderr was
    /// headlined by its last stdout line; a docker failure by `See 'docker run --help'.`.
    #[test]
    fn issue_15_the_headline_is_the_deciding_line_else_the_last_error_line() {
        let lines = [
            (
                false,
                "Deploying Vault from 0x52908400098527886e0f7030069857d2e4169ee7",
            ),
            (
                true,
                "Error: insufficient funds for gas * price + value: have 10 want 20",
            ),
            (
                false,
                "Deploying Vault from 0x52908400098527886e0f7030069857d2e4169ee7",
            ),
        ];
        let unknown = exit(1, "");
        assert_eq!(
            headline_of(&unknown, &lines).as_deref(),
            Some("Error: insufficient funds for gas * price + value: have 10 want 20")
        );
        let docker = [
            (true, "Unable to find image 'acme/api:9.9' locally"),
            (
                true,
                "docker: Error response from daemon: manifest for acme/api:9.9 not found: manifest unknown.",
            ),
            (true, "See 'docker run --help'."),
        ];
        let text = "Unable to find image 'acme/api:9.9' locally\ndocker: Error response from daemon: manifest for acme/api:9.9 not found: manifest unknown.\nSee 'docker run --help'.\n";
        let matched = exit(125, text);
        assert_eq!(
            headline_of(&matched, &docker).as_deref(),
            Some(
                "docker: Error response from daemon: manifest for acme/api:9.9 not found: manifest unknown."
            )
        );
        let odd_daemon_error = [
            (true, "docker: Error response from daemon: something new."),
            (true, "See 'docker run --help'."),
        ];
        assert_eq!(
            headline_of(&unknown, &odd_daemon_error).as_deref(),
            Some("docker: Error response from daemon: something new.")
        );
        let stdout_only = [(false, "step 1"), (false, "giving up"), (false, "  ")];
        assert_eq!(
            headline_of(&unknown, &stdout_only).as_deref(),
            Some("giving up")
        );
        assert_eq!(headline_of(&unknown, &[]), None);
    }
}
