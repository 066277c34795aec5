//! The engine service. Its parts, each in its own module:
//!
//! - [`claim_loop`]: one loop that claims work and sleeps exactly until the next thing is
//!   due, and runs the deadline and lease sweeps when their instants come;
//! - [`running`]: the map of this node's running attempts and what stops them;
//! - [`record`]: the one path by which a result (an attempt's or a rescue's) is stored;
//! - the background services in [`crate::maintenance`], each with its own config, started
//!   by [`Engine::run`] and joined at shutdown.
//!
//! Clients never call the engine: they change the store through
//! [`retryd_store::Control`], and what the engine must act on (new work, a cancel, a paused
//! queue, a policy) arrives as a notice through the store's signals.

pub(crate) mod claim_loop;
pub(crate) mod gate;
pub(crate) mod record;
pub(crate) mod running;

use crate::executor::guard::HostGuard;
use crate::executor::handler::Handlers;
use crate::executor::http::HttpClient;
use crate::maintenance::{self, rescuer::Scope};
use crate::metrics::Metrics;
use crate::notify;
use chrono::{DateTime, Utc};
use retryd_core::job::{Event, Job};
use retryd_core::{Clock, JobId, JobState};
use retryd_store::channels::{Sink, channel_org, channel_sinks};
use retryd_store::sealing::SecretKeys;
use retryd_store::{AttemptResult, Control, Policies, PolicyBook, Runnable, Store, TargetLimits};
use running::RunningMap;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub const DEFAULT_CONCURRENCY: usize = 16;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_LOG_TAIL_BYTES: usize = 256 * 1024;
/// The loop re-checks the database at least this often even when nothing is due: a safety
/// net for changes made behind its back (another process editing the file), not the way
/// due work is found.
pub const SAFETY_RECHECK: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's name, recorded on attempts and leases.
    pub node: String,
    /// Attempts this node runs at once, in all.
    pub concurrency: usize,
    /// Per-queue caps; queues not listed get `default_queue_concurrency`.
    pub queue_concurrency: BTreeMap<String, usize>,
    pub default_queue_concurrency: usize,
    pub lease: Duration,
    /// Between SIGTERM and SIGKILL when an attempt is stopped.
    pub kill_grace: Duration,
    /// How long shutdown waits for running attempts before releasing them.
    pub shutdown_grace: Duration,
    pub log_tail_bytes: usize,
    /// How long finished jobs are kept, per terminal state.
    pub retention: BTreeMap<JobState, Duration>,
    /// Hosts `http` actions may call; empty means any public host.
    pub http_allow_hosts: Vec<String>,
    /// Seals secret values before jobs are stored (see [`retryd_store::sealing`]); without keys they
    /// are stored as given.
    pub secret_keys: Option<Arc<SecretKeys>>,
    /// Hosts `http` actions may call although they are internal (loopback, private,
    /// link-local…): the SSRF guard's opt-out. Empty: none.
    pub http_allow_internal: Vec<String>,
    /// Circuit breaking and retry budgets per target; the default enforces neither.
    pub limits: TargetLimits,
    /// Where job events are delivered.
    pub notifications: Vec<Sink>,
    /// Whether this node claims `command` and `http` jobs. An embedding program that only
    /// runs its own handlers turns this off.
    pub run_builtin: bool,
}

/// Finished jobs are kept 14 days, failed ones (the dead-letter queue) 30 days.
pub fn default_retention() -> BTreeMap<JobState, Duration> {
    const DAY: u64 = 86_400;
    BTreeMap::from([
        (JobState::Succeeded, Duration::from_secs(14 * DAY)),
        (JobState::Cancelled, Duration::from_secs(14 * DAY)),
        (JobState::Expired, Duration::from_secs(14 * DAY)),
        (JobState::Failed, Duration::from_secs(30 * DAY)),
    ])
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            node: default_node_name(),
            concurrency: DEFAULT_CONCURRENCY,
            queue_concurrency: BTreeMap::new(),
            default_queue_concurrency: DEFAULT_CONCURRENCY,
            lease: DEFAULT_LEASE,
            kill_grace: DEFAULT_KILL_GRACE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            log_tail_bytes: DEFAULT_LOG_TAIL_BYTES,
            retention: default_retention(),
            http_allow_hosts: Vec::new(),
            http_allow_internal: Vec::new(),
            secret_keys: None,
            limits: TargetLimits::default(),
            notifications: Vec::new(),
            run_builtin: true,
        }
    }
}

/// `host-pid`: unique among live processes, readable in the dashboard.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Shared with the clients of this process (see [`Engine::control`]).
    policies: Arc<PolicyBook>,
    pub config: EngineConfig,
    /// Shared by every `http` attempt: one connection pool, one guard.
    pub http: HttpClient,
    pub metrics: Metrics,
    /// The config's limits, shared by every claim request without a copy.
    limits: Arc<TargetLimits>,
    /// Wakes the notifier: a result enqueued deliveries, or another node may have.
    deliveries: Notify,
    /// Organizations' notification channels, by organization, as last read with the
    /// policies. A std RwLock: the Arc is cloned out, never held across .await.
    channels: std::sync::RwLock<Arc<BTreeMap<String, Vec<Sink>>>>,
    /// Functions registered by an embedding program, by job kind.
    pub handlers: Handlers,
    /// What the claim may take: built-in actions and the registered handler kinds.
    runnable: Runnable,
    /// Wakes the claim loop: new or requeued work, a freed slot.
    wake: Notify,
    /// Wakes the scheduler: a schedule was created, changed or deleted.
    schedules: Notify,
    pub running: RunningMap,
    /// The execution slots the claimed attempts take, and how far ahead of them to claim.
    pub gate: gate::Gate,
    /// Cancelled when shutdown begins: attempts still waiting for a slot are released
    /// without starting.
    pub draining: CancellationToken,
    /// Cancelled when shutdown's grace period ends: every attempt still running is released.
    pub release: CancellationToken,
    /// Since when this node has reached the database without a failure; `None` while it
    /// cannot. Leases are judged on it: see [`maintenance::rescuer::may_rescue`].
    reachable_since: Mutex<Option<DateTime<Utc>>>,
}

/// The engine and its handle: cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policies: Policies,
        config: EngineConfig,
    ) -> Self {
        Self::with_handlers(store, clock, policies, config, Handlers::default())
    }

    /// An engine that also runs `handler` jobs of the kinds in `handlers`, and only those
    /// among handler jobs.
    pub fn with_handlers(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policies: Policies,
        config: EngineConfig,
        handlers: Handlers,
    ) -> Self {
        let runnable = Runnable {
            builtin: config.run_builtin,
            handler_kinds: handlers.kinds(),
        };
        let started = clock.now();
        let gate = gate::Gate::new(
            config.concurrency,
            config.queue_concurrency.clone(),
            config.default_queue_concurrency,
        );
        Engine {
            inner: Arc::new(Inner {
                store,
                clock,
                policies: Arc::new(PolicyBook::new(policies)),
                http: HttpClient::new(HostGuard::new(
                    &config.http_allow_hosts,
                    &config.http_allow_internal,
                )),
                limits: Arc::new(config.limits.clone()),
                deliveries: Notify::new(),
                channels: Default::default(),
                config,
                metrics: Metrics::default(),
                handlers,
                runnable,
                wake: Notify::new(),
                schedules: Notify::new(),
                running: RunningMap::default(),
                gate,
                draining: CancellationToken::new(),
                release: CancellationToken::new(),
                reachable_since: Mutex::new(Some(started)),
            }),
        }
    }

    /// A handle for this process's clients (the API, an embedding program): it shares this
    /// engine's store, clock, policy book and secret keys, and reaches the engine only
    /// through the store's notices.
    pub fn control(&self) -> Control {
        Control::new(
            self.inner.store.clone(),
            self.inner.clock.clone(),
            self.inner.policies.clone(),
            self.inner.config.secret_keys.clone(),
        )
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// An organization's policies as of now (built-in, configured and its API-managed ones).
    pub fn policies(&self, org: &str) -> Arc<Policies> {
        self.inner.policies.of(org)
    }

    /// Re-reads the managed policies and, validated against them, the organizations'
    /// notification channels.
    pub(crate) async fn reload_policies_or_warn(&self) {
        if let Err(e) = self.inner.policies.reload(self.inner.store.as_ref()).await {
            warn!(error = %e, "could not re-read the managed policies");
        }
        match self.inner.store.list_channels().await {
            Ok(channels) => {
                let (sinks, broken) = channel_sinks(&channels, &|org| self.policies(org));
                for reason in broken {
                    warn!(%reason, "a notification channel is left out");
                }
                *self.inner.channels.write().expect("channels") = Arc::new(sinks);
            }
            Err(e) => warn!(error = %e, "could not re-read the notification channels"),
        }
    }

    /// The sink of that name: one of the instance's, or an organization's channel.
    pub(crate) fn sink(&self, name: &str) -> Option<Sink> {
        if channel_org(name).is_none() {
            return self
                .inner
                .config
                .notifications
                .iter()
                .find(|s| s.name == name)
                .cloned();
        }
        let channels = self.inner.channels.read().expect("channels").clone();
        channels
            .values()
            .flatten()
            .find(|s| s.name == name)
            .cloned()
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub(crate) fn log_written(&self, job: JobId) {
        self.inner.store.signals().log_written(job);
    }

    pub(crate) fn publish(&self, event: Event) {
        self.inner.store.signals().publish(event);
    }

    /// Tells the loop to look for work now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// How many attempts this node is running (their actions have not ended yet).
    pub fn running_count(&self) -> usize {
        self.inner.running.executing()
    }

    /// An attempt's action ended: its slot is free for the next claim while its result is
    /// being recorded. Results then commit in larger groups, and a claim never waits for
    /// the flush of the previous attempts' results.
    pub(crate) fn action_ended(&self, lease: &retryd_store::Lease) {
        self.inner.running.action_ended(lease);
        self.wake();
    }

    /// Forgets a finished attempt, unless the job's next attempt already took its place.
    pub(crate) fn unregister(&self, lease: &retryd_store::Lease) {
        self.inner.running.unregister(lease);
        self.wake();
    }

    /// Notes whether the database answered this node's last call.
    pub(crate) fn note_reachable(&self, answered: bool) {
        let mut since = self.inner.reachable_since.lock().expect("reachability");
        match (answered, *since) {
            (true, None) => {
                info!("the database answers again; leases are judged from now on");
                *since = Some(self.now());
            }
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }

    pub(crate) fn reachable_since(&self) -> Option<DateTime<Utc>> {
        *self.inner.reachable_since.lock().expect("reachability")
    }

    /// Fills in what a result carries beyond the attempt: the circuit it counts towards and
    /// the notifications it enqueues.
    pub(crate) fn complete_result(&self, job: &Job, result: &mut AttemptResult) {
        result.circuit = self.inner.config.limits.circuit;
        let channels = self.inner.channels.read().expect("channels").clone();
        let sinks: Vec<Sink> = self
            .inner
            .config
            .notifications
            .iter()
            .chain(channels.get(&job.org).into_iter().flatten())
            .cloned()
            .collect();
        result.notify = notify::for_result(&sinks, job, result);
    }

    /// Wakes the notifier after a result enqueued deliveries (or another node may have).
    pub(crate) fn deliveries_enqueued(&self) {
        self.inner.deliveries.notify_one();
    }

    pub(crate) fn schedules_changed(&self) -> &Notify {
        &self.inner.schedules
    }

    pub(crate) fn deliveries(&self) -> &Notify {
        &self.inner.deliveries
    }

    /// Runs until `shutdown` fires, then stops claiming, lets running attempts finish within
    /// the grace period, and releases the rest. The background services stop after the
    /// attempts: the heartbeat keeps their leases until the end.
    pub async fn run(&self, shutdown: CancellationToken) {
        let exclusive = self.inner.store.is_exclusive();
        // Before this node runs anything: what its previous process left running.
        maintenance::rescuer::rescue(
            self,
            if exclusive {
                Scope::Everything
            } else {
                Scope::Own
            },
        )
        .await;
        // Subscribed before the first policy read, so that no change falls in between.
        let notices = self.inner.store.signals().notices();
        self.reload_policies_or_warn().await;
        let stop = CancellationToken::new();
        let mut services = JoinSet::new();
        let config = &self.inner.config;
        services.spawn(
            maintenance::heartbeat::Heartbeat {
                engine: self.clone(),
                every: config.lease / 3,
                lease: config.lease,
            }
            .run(stop.clone()),
        );
        services.spawn(
            maintenance::pruner::Pruner {
                engine: self.clone(),
                every: maintenance::pruner::PRUNE_EVERY,
                retention: config.retention.clone(),
            }
            .run(stop.clone()),
        );
        services.spawn(
            maintenance::notices::Notices {
                engine: self.clone(),
            }
            .run(notices, stop.clone()),
        );
        services.spawn(
            maintenance::scheduler::Scheduler {
                engine: self.clone(),
                lease: maintenance::scheduler::LEADER_LEASE,
            }
            .run(stop.clone()),
        );
        // Always: an organization's admins may add a channel at any time.
        services.spawn(
            maintenance::notifier::Notifier {
                engine: self.clone(),
                lease: maintenance::notifier::DELIVERY_LEASE,
                batch: maintenance::notifier::DELIVERY_BATCH,
            }
            .run(stop.clone()),
        );
        let mut attempts = JoinSet::new();
        info!(node = %config.node, concurrency = config.concurrency, "engine started");
        let mut sweep = claim_loop::Sweep::default();
        while !shutdown.is_cancelled() {
            let started = std::time::Instant::now();
            let result = claim_loop::tick(self, &mut attempts, &mut sweep).await;
            tracing::debug!(took_us = started.elapsed().as_micros() as u64, "tick");
            let pause = match result {
                Ok(pause) => pause,
                Err(e) => {
                    self.note_reachable(false);
                    error!(error = %e, "engine loop: database error; trying again in 1 s");
                    Duration::from_secs(1)
                }
            };
            let woken = tokio::select! {
                _ = self.inner.wake.notified() => true,
                _ = tokio::time::sleep(pause) => false,
                _ = shutdown.cancelled() => false,
                Some(_) = attempts.join_next(), if !attempts.is_empty() => true,
            };
            if woken {
                claim_loop::gather_slots(self, &mut attempts).await;
            }
        }
        self.inner.draining.cancel();
        let grace = self.inner.config.shutdown_grace;
        if !attempts.is_empty() {
            info!(running = attempts.len(), grace = ?grace, "shutting down: waiting for running attempts");
        }
        let drained = tokio::time::timeout(grace, async {
            while attempts.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                running = attempts.len(),
                "grace period over: releasing running attempts to run again"
            );
            self.inner.release.cancel();
            while attempts.join_next().await.is_some() {}
        }
        stop.cancel();
        while services.join_next().await.is_some() {}
        info!("engine stopped");
    }
}
