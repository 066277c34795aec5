//! retryd's durable engine inside your program: open a store (a SQLite file or a PostgreSQL
//! URL), register async handlers by job kind, enqueue typed payloads and run the workers in
//! this process.
//!
//! The jobs are ordinary retryd jobs with a `handler` action: the same states, policies,
//! classification, events, leases and rescue as jobs run by `retryd serve`, and the same
//! database, so the server's API, dashboard and CLI show them. Only a process that
//! registered a job's kind claims it; `retryd serve` never does. A job whose process dies
//! mid-attempt is rescued and runs again when a process with its handler is back.
//!
//! ```no_run
//! use retryd_core::retry::{Permanent, Transient};
//! use retryd_embed::{Context, Embedded, Job};
//! use serde::{Deserialize, Serialize};
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail {
//!     to: String,
//! }
//!
//! impl Job for SendEmail {
//!     const KIND: &'static str = "send-email";
//! }
//!
//! #[derive(Debug)]
//! enum MailError {
//!     Busy,
//!     NoSuchMailbox,
//! }
//!
//! impl std::fmt::Display for MailError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         f.write_str(match self {
//!             MailError::Busy => "mail server busy",
//!             MailError::NoSuchMailbox => "no such mailbox",
//!         })
//!     }
//! }
//!
//! impl retryd_core::retry::Classify for MailError {
//!     fn class(&self) -> retryd_core::Class {
//!         match self {
//!             MailError::Busy => retryd_core::Class::Transient,
//!             MailError::NoSuchMailbox => retryd_core::Class::Permanent,
//!         }
//!     }
//! }
//!
//! async fn send(email: SendEmail, cx: Context) -> Result<(), MailError> {
//!     cx.log(format!("sending to {}", email.to)).await;
//!     Ok(())
//! }
//!
//! # async fn demo() -> Result<(), retryd_embed::Error> {
//! let engine = Embedded::builder("jobs.db").handler(send).open().await?;
//! engine.enqueue(&SendEmail { to: "ada@example.com".into() }).await?;
//! engine.run(CancellationToken::new()).await;
//! # Ok(())
//! # }
//! ```
//!
//! Handler errors implement [`Classify`] (or are wrapped in [`Transient`] / [`Permanent`],
//! which also carry a `Display`), so a permanent error ends the job at once and a transient
//! one is retried by the job's policy, honouring a `retry_after` hint.
//!
//! [`Transient`]: retryd_core::retry::Transient
//! [`Permanent`]: retryd_core::retry::Permanent

use chrono::{DateTime, Utc};
use retryd_core::job::{Action, HandlerAction, NewJob, validate_name};
use retryd_core::retry::Classify;
use retryd_core::{Class, Clock, JobId, SystemClock};
use retryd_store::Store;
use retryd_store_postgres::PostgresStore;
use retryd_store_sqlite::{SqliteStore, Synchronous};
use retryd_worker::executor::handler::{
    Handler, HandlerError, HandlerFuture, HandlerJob, Handlers,
};
use retryd_worker::{EngineConfig, Policies};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use retryd_worker::Engine;

/// A payload type and the job kind it is enqueued and handled as.
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The job's `kind`: 1–64 characters of letters, digits and `_ - . : /`.
    const KIND: &'static str;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Store(#[from] retryd_store::Error),
    /// A value given to the builder or to `enqueue` is not valid; the message names it.
    #[error("{0}")]
    Invalid(String),
    #[error("payload: cannot serialize it as JSON: {0}")]
    Payload(#[from] serde_json::Error),
}

/// What an attempt's handler gets beside its payload.
#[derive(Debug, Clone)]
pub struct Context {
    job: HandlerJob,
}

impl Context {
    pub fn job_id(&self) -> JobId {
        self.job.id
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// Appends a line to the job's log, shown by `retryd logs` and the dashboard.
    pub async fn log(&self, line: impl Into<String>) {
        self.job.log(line).await;
    }
}

/// Options of one enqueue. `Default` is the server's defaults: queue `default`, the policy
/// chosen for the kind, priority 50, due now.
#[derive(Debug, Clone, Default)]
pub struct Enqueue {
    /// The organization that owns the job (`default` when not given).
    pub org: Option<String>,
    pub queue: Option<String>,
    /// A named policy (built-in or given to the builder).
    pub policy: Option<String>,
    pub priority: Option<u8>,
    pub run_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
    /// A second enqueue with the same key returns the first job.
    pub idempotency_key: Option<String>,
    pub target: Option<String>,
}

/// Adapts a typed `async fn(J, Context) -> Result<(), E>` to the engine's handler.
struct Typed<J, F> {
    f: F,
    payload: PhantomData<fn() -> J>,
}

impl<J, F, Fut, E> Handler for Typed<J, F>
where
    J: Job,
    F: Fn(J, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Classify + fmt::Display + 'static,
{
    fn call(&self, job: HandlerJob) -> HandlerFuture {
        let payload = match serde_json::from_value::<J>(job.payload.clone()) {
            Ok(payload) => payload,
            Err(e) => {
                // Another attempt would read the same payload.
                let error = HandlerError {
                    message: format!("payload does not match kind {:?}: {e}", J::KIND),
                    class: Class::Permanent,
                    retry_after: None,
                };
                return Box::pin(std::future::ready(Err(error)));
            }
        };
        let fut = (self.f)(payload, Context { job });
        Box::pin(async move { fut.await.map_err(|e| HandlerError::from_classified(&e)) })
    }
}

/// Where the jobs live: a PostgreSQL URL, else a SQLite file path (`sqlite://` optional).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Database {
    Sqlite(String),
    Postgres(String),
}

impl Database {
    fn parse(text: &str) -> Result<Self, Error> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Database::Postgres(text.to_owned()));
        }
        let path = text.strip_prefix("sqlite://").unwrap_or(text);
        if path.trim().is_empty() {
            return Err(Error::Invalid(
                "database: give a SQLite file path or a postgres:// URL".into(),
            ));
        }
        Ok(Database::Sqlite(path.to_owned()))
    }
}

/// Configures an [`Embedded`] engine; [`Embedded::builder`] starts one.
pub struct Builder {
    database: String,
    config: EngineConfig,
    policies: Policies,
    handlers: Handlers,
    synchronous: Synchronous,
    error: Option<Error>,
}

impl Builder {
    /// Registers the handler of `J::KIND`. A later registration of the same kind replaces it.
    pub fn handler<J, F, Fut, E>(mut self, f: F) -> Self
    where
        J: Job,
        F: Fn(J, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Classify + fmt::Display + 'static,
    {
        if let Err(message) = validate_name("kind", J::KIND) {
            self.error.get_or_insert(Error::Invalid(message));
        }
        self.handlers.insert(
            J::KIND,
            Arc::new(Typed {
                f,
                payload: PhantomData,
            }),
        );
        self
    }

    /// Attempts this process runs at once (default 16).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self.config.default_queue_concurrency = n;
        self
    }

    /// The name recorded on attempts and leases (default `host-pid`).
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.config.node = name.into();
        self
    }

    /// How long an attempt's lease lasts without renewal (default 30 s): how soon another
    /// process rescues the job if this one dies (on SQLite the next start rescues at once).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// Also run `command` and `http` jobs, like `retryd serve` (default: handlers only).
    pub fn run_builtin(mut self, yes: bool) -> Self {
        self.config.run_builtin = yes;
        self
    }

    /// Named policies and the policy of each kind.
    pub fn policies(mut self, policies: Policies) -> Self {
        self.policies = policies;
        self
    }

    /// SQLite durability (default `Full`: an enqueue survives power loss once it returns).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// The full engine configuration, for what the methods above do not cover.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens the store (running its migrations) and builds the engine. Nothing runs until
    /// [`Embedded::run`].
    pub async fn open(self) -> Result<Embedded, Error> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.config.concurrency == 0 {
            return Err(Error::Invalid("concurrency: must be at least 1".to_owned()));
        }
        if self.config.lease < Duration::from_secs(1) {
            return Err(Error::Invalid("lease: must be at least 1s".to_owned()));
        }
        let (store, clock): (Arc<dyn Store>, Arc<dyn Clock>) =
            match Database::parse(&self.database)? {
                Database::Sqlite(path) => (
                    Arc::new(SqliteStore::open(path, self.synchronous)?),
                    Arc::new(SystemClock),
                ),
                Database::Postgres(url) => {
                    let store = PostgresStore::connect_as(&url, Some(&self.config.node)).await?;
                    let clock = Arc::new(store.clock());
                    (Arc::new(store), clock)
                }
            };
        Ok(Embedded {
            engine: Engine::with_handlers(store, clock, self.policies, self.config, self.handlers),
        })
    }
}

/// The engine running in this process. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Embedded {
    engine: Engine,
}

impl Embedded {
    /// Starts configuring an engine on `database`: a SQLite file path or a PostgreSQL URL.
    pub fn builder(database: impl Into<String>) -> Builder {
        Builder {
            database: database.into(),
            config: EngineConfig {
                run_builtin: false,
                ..EngineConfig::default()
            },
            policies: Policies::default(),
            handlers: Handlers::default(),
            synchronous: Synchronous::Full,
            error: None,
        }
    }

    /// Enqueues `job` as a `J::KIND` job with the default options.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<JobId, Error> {
        self.enqueue_with(job, Enqueue::default()).await
    }

    /// Enqueues `job` with `options`. With an idempotency key already used, returns the
    /// existing job's id.
    pub async fn enqueue_with<J: Job>(&self, job: &J, options: Enqueue) -> Result<JobId, Error> {
        let new = self.new_job(J::KIND, serde_json::to_value(job)?, options)?;
        Ok(self.engine.control().submit(new).await?.job.id)
    }

    /// Enqueues many `J::KIND` jobs with the default options in one transaction (one
    /// statement on PostgreSQL): all of them, or on error none. Returns their ids in order.
    pub async fn enqueue_many<'a, J: Job + 'a>(
        &self,
        jobs: impl IntoIterator<Item = &'a J>,
    ) -> Result<Vec<JobId>, Error> {
        self.enqueue_many_with(jobs.into_iter().map(|job| (job, Enqueue::default())))
            .await
    }

    /// Enqueues many `J::KIND` jobs, each with its options, in one transaction. An
    /// idempotency key already used (or used by an earlier job of the batch) returns the
    /// existing job's id.
    pub async fn enqueue_many_with<'a, J: Job + 'a>(
        &self,
        jobs: impl IntoIterator<Item = (&'a J, Enqueue)>,
    ) -> Result<Vec<JobId>, Error> {
        let new = jobs
            .into_iter()
            .map(|(job, options)| self.new_job(J::KIND, serde_json::to_value(job)?, options))
            .collect::<Result<Vec<_>, Error>>()?;
        let inserted = self.engine.control().submit_many(new).await?;
        Ok(inserted.into_iter().map(|i| i.job.id).collect())
    }

    fn new_job(
        &self,
        kind: &str,
        payload: serde_json::Value,
        options: Enqueue,
    ) -> Result<NewJob, Error> {
        let invalid = Error::Invalid;
        let action = Action::Handler(HandlerAction {
            payload,
            timeout: None,
        });
        action.validate().map_err(invalid)?;
        validate_name("kind", kind).map_err(invalid)?;
        let org = options.org.unwrap_or_else(retryd_core::org::default_org);
        retryd_core::org::validate_org("org", &org).map_err(invalid)?;
        let queue = options.queue.unwrap_or_else(|| "default".to_owned());
        validate_name("queue", &queue).map_err(invalid)?;
        if let Some(target) = &options.target {
            validate_name("target", target).map_err(invalid)?;
        }
        for key in options.labels.keys() {
            validate_name("labels key", key).map_err(invalid)?;
        }
        let priority = options
            .priority
            .unwrap_or(retryd_core::job::DEFAULT_PRIORITY);
        if priority > retryd_core::job::MAX_PRIORITY {
            return Err(Error::Invalid(format!(
                "priority: must be between 0 and {}, got {priority}",
                retryd_core::job::MAX_PRIORITY
            )));
        }
        let policies = self.engine.policies(&org);
        let policy_name = match options.policy {
            Some(name) => name,
            None => policies.select(None, kind, priority),
        };
        let policy = policies.get(&policy_name).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "policy: unknown policy '{policy_name}' (known: {})",
                policies.names().join(", ")
            ))
        })?;
        let now = self.engine.now();
        let run_at = options.run_at.unwrap_or(now);
        if options.deadline.is_some_and(|d| d <= run_at) {
            return Err(Error::Invalid("deadline: must be after run_at".into()));
        }
        Ok(NewJob {
            id: JobId::new(),
            org,
            queue,
            kind: kind.to_owned(),
            target: options.target,
            action,
            policy_name,
            policy,
            priority,
            run_at,
            deadline: options.deadline,
            labels: options.labels,
            idempotency_key: options.idempotency_key,
            created_by: Some(format!("embedded on {}", self.engine.config().node)),
            created_at: now,
        })
    }

    /// Claims and runs jobs until `shutdown` fires, then lets running attempts finish within
    /// the shutdown grace and releases the rest to run again.
    pub async fn run(&self, shutdown: CancellationToken) {
        self.engine.run(shutdown).await;
    }

    /// Serves retryd's HTTP API (and so the dashboard and the CLI) for this engine until
    /// `shutdown` fires. Useful on SQLite, where only one process may open the file. With
    /// `auth.enabled` (the default), callers need a token stored in this database (made by
    /// `retryd serve` on its first start or by `retryd token create`).
    pub async fn serve_api(
        &self,
        listener: TcpListener,
        auth: retryd_server::auth::AuthConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        retryd_server::serve(listener, api_state(&self.engine, auth), shutdown).await
    }

    /// The engine: its store (jobs, attempts, events) and, through [`Engine::control`],
    /// submit, cancel and requeue.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_pick_the_backend() {
        assert_eq!(
            Database::parse("postgres://localhost/app").unwrap(),
            Database::Postgres("postgres://localhost/app".into())
        );
        assert_eq!(
            Database::parse("sqlite://jobs.db").unwrap(),
            Database::Sqlite("jobs.db".into())
        );
        assert_eq!(
            Database::parse("/var/lib/app/jobs.db").unwrap(),
            Database::Sqlite("/var/lib/app/jobs.db".into())
        );
        assert!(Database::parse(" ").is_err());
    }
}

/// The API's state for a process whose engine is `engine`: the API changes jobs through the
/// engine's [`Control`](retryd_store::Control) and reports the engine's running count and
/// metrics. Used by `retryd serve` and [`Retryd::serve_api`].
pub fn api_state(
    engine: &Engine,
    auth: retryd_server::auth::AuthConfig,
) -> retryd_server::AppState {
    retryd_server::AppState {
        control: engine.control(),
        node: std::sync::Arc::new(EngineNode(engine.clone())),
        auth: retryd_server::auth::Auth::new(auth),
    }
}

/// The engine as the API sees the node it runs on.
#[derive(Debug)]
struct EngineNode(Engine);

impl retryd_server::Node for EngineNode {
    fn running(&self) -> usize {
        self.0.running_count()
    }

    fn metrics(
        &self,
        by_state: &std::collections::BTreeMap<retryd_core::JobState, u64>,
        depths: &std::collections::BTreeMap<String, u64>,
        circuits: &[retryd_store::Circuit],
        now: chrono::DateTime<chrono::Utc>,
    ) -> String {
        let metrics = self.0.metrics();
        metrics.set_circuits(circuits, now);
        metrics.render(by_state, depths)
    }
}
