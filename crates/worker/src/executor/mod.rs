//! Executors run one attempt of an action and report how it ended. They know nothing of
//! stores or policies: the engine classifies what they report.

pub mod command;
pub mod guard;
pub mod handler;
pub mod http;

use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use retryd_core::classify::Failure;
use retryd_core::job::Stream;
use std::time::Duration;

/// One line of captured output, already redacted.
#[derive(Debug, Clone)]
pub struct OutputLine {
    pub at: DateTime<Utc>,
    pub stream: Stream,
    pub line: String,
}

/// Why an attempt was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Its time limit passed.
    Timeout,
    /// The engine asked it to stop (cancel, shutdown).
    Requested,
}

/// How an attempt ended, whatever ran it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The action succeeded.
    pub ok: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stopped: Option<Stopped>,
    /// The command ignored SIGTERM and was killed with SIGKILL after this grace period.
    pub killed_after_grace: Option<Duration>,
    /// The action could not start (the message says why).
    pub start_error: Option<String>,
    pub http_status: Option<u16>,
    /// The request got no response: refused, reset, DNS, TLS.
    pub connect_error: bool,
    /// The server's `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The action could not be built (bad URL, bad header): permanent.
    pub invalid_action: bool,
    /// The action classified its own failure: a handler's error says whether it is
    /// transient or permanent.
    pub class: Option<retryd_core::Class>,
    /// What happened, in the executor's words ("GET https://… → 503 Service Unavailable"),
    /// when it says more than the status alone.
    pub summary: Option<String>,
    /// An HTTP reply's body, when a pipeline step exports values from it.
    pub body: Option<String>,
}

impl Outcome {
    /// A one-line description of how it ended, for `last_error` and the log.
    pub fn describe(&self) -> String {
        if let Some(error) = self.start_error.as_ref().or(self.summary.as_ref()) {
            return error.clone();
        }
        match (self.stopped, self.http_status, self.exit_code, self.signal) {
            (Some(Stopped::Timeout), ..) => {
                format!("killed: attempt timed out{}", self.escalation())
            }
            (Some(Stopped::Requested), ..) => format!("stopped on request{}", self.escalation()),
            (None, Some(status), ..) => format!("HTTP {status}"),
            (None, None, Some(code), _) => format!("exited with code {code}"),
            (None, None, None, Some(signal)) => format!(
                "killed by signal {}",
                Signal::try_from(signal)
                    .map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned())
            ),
            _ if self.connect_error => "no response: the connection failed".to_owned(),
            _ => "ended without a status".to_owned(),
        }
    }

    /// ", SIGKILL after 10s: it ignored SIGTERM" when the stop needed SIGKILL.
    pub fn escalation(&self) -> String {
        self.killed_after_grace
            .map(|grace| {
                format!(
                    "; it ignored SIGTERM and was killed with SIGKILL after {}",
                    retryd_core::duration::format(grace)
                )
            })
            .unwrap_or_default()
    }

    /// What classification rules look at.
    pub fn failure<'a>(&self, output: &'a str) -> Failure<'a> {
        Failure {
            exit_code: self.exit_code,
            timed_out: self.stopped == Some(Stopped::Timeout),
            http_status: self.http_status,
            connect_error: self.connect_error,
            invalid_action: self.invalid_action,
            output,
        }
    }
}
