//! The `handler` action: a function the embedding program registered for the job's kind,
//! called in this process. Its error classifies itself; a panic is an unknown failure.

use super::{Outcome, OutputLine, Stopped};
use retryd_core::job::{HandlerAction, JobId, Stream};
use retryd_core::retry::Classify;
use retryd_core::{Class, Clock};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a handler is given: the job and a way to write to its log.
#[derive(Debug, Clone)]
pub struct HandlerJob {
    pub id: JobId,
    pub kind: String,
    /// This attempt's number, from 1.
    pub attempt: u32,
    pub payload: serde_json::Value,
    lines: mpsc::Sender<OutputLine>,
    clock: Arc<dyn Clock>,
}

impl HandlerJob {
    /// Appends a line to the job's log (shown by `retryd logs` and the dashboard).
    pub async fn log(&self, line: impl Into<String>) {
        let line = OutputLine {
            at: self.clock.now(),
            stream: Stream::Stdout,
            line: line.into(),
        };
        // The pump ends only after the handler returns, so this cannot fail meanwhile.
        let _ = self.lines.send(line).await;
    }
}

/// A failed handler call: its message, class and optional retry-after hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub message: String,
    pub class: Class,
    pub retry_after: Option<Duration>,
}

impl HandlerError {
    /// Any error that says what it is (see [`Classify`]).
    pub fn from_classified<E: Classify + fmt::Display>(error: &E) -> Self {
        HandlerError {
            message: error.to_string(),
            class: error.class(),
            retry_after: error.retry_after(),
        }
    }
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A function registered for a job kind. The embedding crate wraps typed closures in this.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, job: HandlerJob) -> HandlerFuture;
}

/// The handlers of this process, by kind.
#[derive(Clone, Default)]
pub struct Handlers(HashMap<String, Arc<dyn Handler>>);

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Handlers {
    pub fn insert(&mut self, kind: impl Into<String>, handler: Arc<dyn Handler>) {
        self.0.insert(kind.into(), handler);
    }

    /// The kinds registered, for the claim filter.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.0.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.0.get(kind)
    }
}

/// Where a handler call runs and what it may write to.
pub struct Call<'a> {
    pub handlers: &'a Handlers,
    pub id: JobId,
    pub kind: &'a str,
    pub attempt: u32,
    pub clock: Arc<dyn Clock>,
}

/// Calls the handler for `call.kind` under the time limit, stopping it (by dropping its
/// future) when asked.
pub async fn run(
    call: Call<'_>,
    action: &HandlerAction,
    timeout: Option<Duration>,
    stop: CancellationToken,
    lines: mpsc::Sender<OutputLine>,
) -> Outcome {
    let Some(handler) = call.handlers.get(call.kind) else {
        // The claim only takes registered kinds; a job changed behind our back lands here.
        return Outcome {
            start_error: Some(format!(
                "no handler registered for kind {:?} in this process",
                call.kind
            )),
            class: Some(Class::Unknown),
            ..Outcome::default()
        };
    };
    let job = HandlerJob {
        id: call.id,
        kind: call.kind.to_owned(),
        attempt: call.attempt,
        payload: action.payload.clone(),
        lines,
        clock: call.clock,
    };
    // A task of its own, so that a panic is caught as the attempt's failure.
    let mut task = tokio::spawn(handler.call(job));
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let stopped = |why| Outcome {
        stopped: Some(why),
        ..Outcome::default()
    };
    tokio::select! {
        joined = &mut task => match joined {
            Ok(Ok(())) => Outcome { ok: true, ..Outcome::default() },
            Ok(Err(error)) => Outcome {
                summary: Some(error.message),
                class: Some(error.class),
                retry_after: error.retry_after,
                ..Outcome::default()
            },
            Err(e) => Outcome {
                summary: Some(format!("handler panicked: {}", panic_message(e))),
                class: Some(Class::Unknown),
                ..Outcome::default()
            },
        },
        _ = limit => {
            task.abort();
            stopped(Stopped::Timeout)
        }
        _ = stop.cancelled() => {
            task.abort();
            stopped(Stopped::Requested)
        }
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned()),
        Err(e) => e.to_string(),
    }
}
