//! The engine service: one loop that claims work and sleeps exactly until the next thing is
//! due, a heartbeat that renews leases, and the operations clients call.

use crate::attempt::{self, LOST_RULE};
use crate::executor::guard::HostGuard;
use crate::executor::handler::Handlers;
use crate::executor::http::HttpClient;
use crate::metrics::Metrics;
use crate::notify::{self, Sink};
use crate::policies::Policies;
use chrono::{DateTime, Utc};
use retryd_core::job::{Event, Job, NewJob};
use retryd_core::{AttemptOutcome, Class, Clock, JobId, JobState};
use retryd_store::{
    AttemptResult, ClaimRequest, ClaimedDelivery, DeliveryNext, DeliveryResult, Fence, Inserted,
    Next, Notice, Requeue, Runnable, Store, TargetLimits, Wakeups, rules,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

pub const DEFAULT_CONCURRENCY: usize = 16;
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_LOG_TAIL_BYTES: usize = 256 * 1024;
/// The loop re-checks the database at least this often even when nothing is due: a safety
/// net for changes made behind its back (another process editing the file), not the way
/// due work is found.
pub const SAFETY_RECHECK: Duration = Duration::from_secs(30);
/// How long a node holds a notification delivery before another may take it over.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(120);
/// Deliveries claimed (and made concurrently) at once.
pub const DELIVERY_BATCH: usize = 16;

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
    /// Seals secret values before jobs are stored (see [`crate::sealing`]); without keys they
    /// are stored as given.
    pub secret_keys: Option<crate::sealing::SecretKeys>,
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

/// How often the retention purge runs (and once at start).
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

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

/// When the deadline sweep and the lease rescue next have work. A tick runs each only when
/// its instant has come (or on the safety re-check), so that the wake-up for a due retry
/// costs one claim, not three queries.
#[derive(Debug, Default)]
struct Sweep {
    deadline: Option<DateTime<Utc>>,
    lease_expiry: Option<DateTime<Utc>>,
    /// When both last ran regardless: the safety net for changes made behind our back.
    last_full: Option<DateTime<Utc>>,
    /// When the instants above were read.
    planned: Option<DateTime<Utc>>,
}

/// How many attempts, executing or waiting for their result's commit, a node holds at most:
/// its concurrency plus a backlog of results as large again, and at least 64.
fn result_backlog(concurrency: usize) -> usize {
    concurrency + concurrency.max(64)
}

/// How long a busy node waits for more slots to free before it claims (see `gather_slots`).
const GATHER: Duration = Duration::from_millis(2);

/// How far ahead of its due time a job is claimed. The claim's round trips (and a commit
/// queued behind others) take a few milliseconds; done ahead, they are not added to a retry's
/// start. The attempt then waits for the due time: its action never starts early.
const CLAIM_LEAD: Duration = Duration::from_millis(10);

fn lead() -> chrono::Duration {
    chrono::Duration::from_std(CLAIM_LEAD).expect("a few milliseconds")
}

/// While every slot is taken, the loop re-reads when the sweeps are due at most this often.
const REPLAN_WHEN_FULL: Duration = Duration::from_secs(1);

impl Sweep {
    /// Which sweeps this tick runs: (deadlines, leases). An instant that has come is
    /// forgotten until the next plan, so that it runs once.
    fn due(&mut self, now: DateTime<Utc>) -> (bool, bool) {
        let safety = chrono::Duration::from_std(SAFETY_RECHECK).unwrap_or_default();
        let full = self.last_full.is_none_or(|t| now - t >= safety);
        if full {
            self.last_full = Some(now);
        }
        let deadlines = full || self.deadline.is_some_and(|t| t <= now);
        let leases = full || self.lease_expiry.is_some_and(|t| t <= now);
        if deadlines {
            self.deadline = None;
        }
        if leases {
            self.lease_expiry = None;
        }
        (deadlines, leases)
    }

    fn plan(&mut self, wakeups: &Wakeups, now: DateTime<Utc>) {
        self.deadline = wakeups.deadline;
        self.lease_expiry = wakeups.lease_expiry;
        self.planned = Some(now);
    }

    /// How long a loop with every slot taken may sleep (a finished attempt wakes it
    /// earlier): until a sweep is due or the plan is due for a refresh. `None` when the plan
    /// is stale already.
    fn pause_while_full(&self, now: DateTime<Utc>) -> Option<Duration> {
        let replan = self.planned? + chrono::Duration::from_std(REPLAN_WHEN_FULL).ok()?;
        let safety = self.last_full? + chrono::Duration::from_std(SAFETY_RECHECK).ok()?;
        let next = [self.deadline, self.lease_expiry, Some(replan), Some(safety)]
            .into_iter()
            .flatten()
            .min()?;
        (next > now).then(|| (next - now).to_std().unwrap_or(Duration::ZERO))
    }
}

/// An attempt running on this node.
#[derive(Debug)]
pub(crate) struct Running {
    /// The attempt's id: the map is keyed by job, and a job's next attempt may be claimed
    /// before the task of its previous one has unregistered.
    pub attempt_id: i64,
    pub queue: String,
    pub stop: CancellationToken,
    /// Set when a client cancelled the job (as opposed to a shutdown release).
    pub cancelled: Arc<AtomicBool>,
    /// The action has ended and its result waits for its group commit: the attempt keeps
    /// its lease (renewed, fenced) but no longer takes an execution slot.
    pub recording: bool,
    /// Cancelled when a renewal shows this node no longer holds the attempt: the command
    /// stops at once (a short grace), and its result is not offered.
    pub lease_lost: CancellationToken,
    /// A pipeline is moving to its next step: its attempt id is about to change, so a
    /// renewal that misses the old one says nothing.
    pub advancing: bool,
}

/// What a running attempt listens to: a stop (cancel, shutdown), whether that stop was a
/// client's cancel, and the loss of its lease.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    pub stop: CancellationToken,
    pub cancelled: Arc<AtomicBool>,
    pub lease_lost: CancellationToken,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// Built-in and configured policies: the base the API-managed ones are laid over.
    base_policies: Policies,
    /// The base plus the managed policies, as last read from the store. A std RwLock: the
    /// Arc is cloned out, never held across .await.
    policies: std::sync::RwLock<Arc<Policies>>,
    pub config: EngineConfig,
    /// Shared by every `http` attempt: one connection pool, one guard.
    pub http: HttpClient,
    pub metrics: Metrics,
    /// The config's limits, shared by every claim request without a copy.
    limits: Arc<TargetLimits>,
    /// Wakes the notifier: a result enqueued deliveries, or another node may have.
    deliveries: Notify,
    /// Functions registered by an embedding program, by job kind.
    pub handlers: Handlers,
    /// What the claim may take: built-in actions and the registered handler kinds.
    runnable: Runnable,
    /// Paused queues, as last read from the store (refreshed on change notices and on every
    /// safety re-check). A std RwLock: read on every claim, never held across .await.
    paused: std::sync::RwLock<Vec<String>>,
    events: broadcast::Sender<Event>,
    /// The jobs whose output this process just stored: wakes log followers.
    logs: broadcast::Sender<JobId>,
    /// Wakes the claim loop: new or requeued work, a freed slot.
    wake: Notify,
    // A std Mutex: held only for map operations, never across .await.
    pub running: Mutex<HashMap<JobId, Running>>,
    /// Cancelled when shutdown's grace period ends: every attempt still running is released.
    pub release: CancellationToken,
    /// Since when this node has reached the database without a failure; `None` while it
    /// cannot. Leases are judged on it: see [`may_rescue`].
    reachable_since: Mutex<Option<DateTime<Utc>>>,
}

/// Whether the rescuer may take expired leases now. A lease that expired while the database
/// was unreachable proves nothing (its node could not renew it either): rescue waits until
/// this node has reached the database for a whole lease, time enough for every live node
/// to renew. A store one process owns has no other nodes to wait for.
pub fn may_rescue(
    exclusive: bool,
    reachable_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    lease: Duration,
) -> bool {
    exclusive
        || reachable_since.is_some_and(|since| {
            now - since >= chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
        })
}

/// Which expired leases a rescue takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Those expired by now.
    Expired,
    /// Every `running` job: at start on a store this process owns.
    Everything,
    /// Those held under this node's name: at start, they are the previous process's.
    Own,
}

/// The engine and its handle: cheap to clone, shared by the API and the loop.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] retryd_store::Error),
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
        let (events, _) = broadcast::channel(4096);
        let (logs, _) = broadcast::channel(1024);
        let runnable = Runnable {
            builtin: config.run_builtin,
            handler_kinds: handlers.kinds(),
        };
        let started = clock.now();
        Engine {
            inner: Arc::new(Inner {
                store,
                clock,
                policies: std::sync::RwLock::new(Arc::new(policies.clone())),
                base_policies: policies,
                http: HttpClient::new(HostGuard::new(
                    &config.http_allow_hosts,
                    &config.http_allow_internal,
                )),
                limits: Arc::new(config.limits.clone()),
                deliveries: Notify::new(),
                config,
                metrics: Metrics::default(),
                handlers,
                runnable,
                paused: std::sync::RwLock::new(Vec::new()),
                events,
                logs,
                wake: Notify::new(),
                running: Mutex::new(HashMap::new()),
                release: CancellationToken::new(),
                reachable_since: Mutex::new(Some(started)),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The policies as of now (built-in, configured and API-managed).
    pub fn policies(&self) -> Arc<Policies> {
        self.inner.policies.read().expect("policies lock").clone()
    }

    /// Re-reads the API-managed policies; other nodes' changes arrive this way.
    pub async fn reload_policies(&self) -> Result<(), Error> {
        let managed = self.inner.store.list_policies().await?;
        let policies = Arc::new(self.inner.base_policies.with_managed(&managed));
        *self.inner.policies.write().expect("policies lock") = policies;
        Ok(())
    }

    async fn reload_policies_or_warn(&self) {
        if let Err(e) = self.reload_policies().await {
            warn!(error = %e, "could not re-read the managed policies");
        }
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

    /// The job ids whose output this process stores, as it stores it.
    pub fn subscribe_logs(&self) -> broadcast::Receiver<JobId> {
        self.inner.logs.subscribe()
    }

    pub(crate) fn log_written(&self, job: JobId) {
        let _ = self.inner.logs.send(job);
    }

    /// Every state change this process makes, as it happens.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    pub(crate) fn publish(&self, event: Event) {
        // No subscriber is fine: the event is stored either way.
        let _ = self.inner.events.send(event);
    }

    /// Tells the loop to look for work now.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// How many attempts this node is running (their actions have not ended yet).
    pub fn running_count(&self) -> usize {
        self.inner
            .running
            .lock()
            .expect("running map")
            .values()
            .filter(|r| !r.recording)
            .count()
    }

    /// An attempt's action ended: its slot is free for the next claim while its result is
    /// being recorded. Results then commit in larger groups, and a claim never waits for
    /// the flush of the previous attempts' results.
    pub(crate) fn action_ended(&self, lease: &retryd_store::Lease) {
        let mut running = self.inner.running.lock().expect("running map");
        if let Some(entry) = running
            .get_mut(&lease.job_id)
            .filter(|r| r.attempt_id == lease.attempt_id)
        {
            entry.recording = true;
        }
        drop(running);
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

    pub async fn submit(&self, mut job: NewJob) -> Result<Inserted, Error> {
        self.seal(&mut job.action)?;
        let inserted = self.inner.store.insert_job(job).await?;
        self.announce(std::slice::from_ref(&inserted));
        Ok(inserted)
    }

    /// Submits a batch in one transaction (see [`retryd_store::JobWriter::insert_jobs`]).
    pub async fn submit_many(&self, mut jobs: Vec<NewJob>) -> Result<Vec<Inserted>, Error> {
        for job in &mut jobs {
            self.seal(&mut job.action)?;
        }
        let inserted = self.inner.store.insert_jobs(jobs).await?;
        self.announce(&inserted);
        Ok(inserted)
    }

    /// Publishes the `submitted` events of the jobs created, and wakes the loop for them.
    fn announce(&self, inserted: &[Inserted]) {
        let mut created = false;
        for event in inserted.iter().filter_map(|i| i.event.clone()) {
            self.publish(event);
            created = true;
        }
        if created {
            self.wake();
        }
    }

    fn seal(&self, action: &mut retryd_core::Action) -> Result<(), Error> {
        match &self.inner.config.secret_keys {
            Some(keys) => keys
                .seal(action)
                .map_err(|e| Error::Store(retryd_store::Error::Corrupt(e))),
            None => Ok(()),
        }
    }

    /// Cancels a job: at once when waiting, by stopping its attempt when running here.
    pub async fn cancel(&self, id: JobId, actor: &str) -> Result<Job, Error> {
        let (job, event) = self.inner.store.cancel_job(id, actor, self.now()).await?;
        if let Some(event) = event {
            self.publish(event);
        }
        if job.cancel_requested {
            self.stop_running(id);
        }
        Ok(job)
    }

    /// Requeues a finished job, or makes a retrying one due now.
    pub async fn requeue(&self, id: JobId, reset: bool, actor: &str) -> Result<Job, Error> {
        self.requeue_with(id, reset, None, actor).await
    }

    /// Requeues a finished job with an edited action or policy (recorded in its events).
    pub async fn requeue_with(
        &self,
        id: JobId,
        reset: bool,
        changes: Option<retryd_store::JobChanges>,
        actor: &str,
    ) -> Result<Job, Error> {
        let mut changes = changes;
        if let Some(changes) = &mut changes {
            self.seal(&mut changes.action)?;
        }
        let requeue = Requeue {
            reset,
            actor: actor.to_owned(),
            now: self.now(),
            changes,
        };
        let (job, event) = self.inner.store.requeue_job(id, &requeue).await?;
        if let Some(event) = event {
            self.publish(event);
        }
        self.wake();
        Ok(job)
    }

    /// Stops the attempt of `id` if it runs on this node, as a cancellation.
    fn stop_running(&self, id: JobId) -> bool {
        let running = self.inner.running.lock().expect("running map");
        match running.get(&id) {
            Some(attempt) => {
                attempt.cancelled.store(true, Ordering::SeqCst);
                attempt.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Runs until `shutdown` fires, then stops claiming, lets running attempts finish within
    /// the grace period, and releases the rest.
    pub async fn run(&self, shutdown: CancellationToken) {
        let exclusive = self.inner.store.is_exclusive();
        // Before this node runs anything: what its previous process left running.
        self.rescue(if exclusive {
            Scope::Everything
        } else {
            Scope::Own
        })
        .await;
        let heartbeat_stop = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat(heartbeat_stop.clone()));
        let pruner = tokio::spawn(self.clone().prune_periodically(heartbeat_stop.clone()));
        // Other nodes' policy changes arrive as notices (PostgreSQL NOTIFY); a backend without
        // notices has no other node.
        self.reload_policies_or_warn().await;
        let notifier = (!self.inner.config.notifications.is_empty())
            .then(|| tokio::spawn(self.clone().deliver_notifications(heartbeat_stop.clone())));
        if let Some(notices) = self.inner.store.notices() {
            tokio::spawn(self.clone().follow_notices(notices, heartbeat_stop.clone()));
        }
        let mut attempts = JoinSet::new();
        info!(node = %self.inner.config.node, concurrency = self.inner.config.concurrency, "engine started");
        let mut sweep = Sweep::default();
        while !shutdown.is_cancelled() {
            let started = std::time::Instant::now();
            let result = self.tick(&mut attempts, &mut sweep).await;
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
                self.gather_slots(&mut attempts).await;
            }
        }
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
        heartbeat_stop.cancel();
        let _ = heartbeat.await;
        let _ = pruner.await;
        if let Some(notifier) = notifier {
            let _ = notifier.await;
        }
        info!("engine stopped");
    }

    /// One pass: expire and rescue when their time has come, claim. Returns how long to
    /// sleep unless woken.
    async fn tick(&self, attempts: &mut JoinSet<()>, sweep: &mut Sweep) -> Result<Duration, Error> {
        let store = &self.inner.store;
        let now = self.now();
        let (deadlines, leases) = sweep.due(now);
        if deadlines && leases {
            // The safety re-check also re-reads the paused queues.
            self.refresh_paused().await;
        }
        if deadlines {
            for (_, event) in store.expire_jobs(now).await? {
                self.publish(event);
            }
        }
        if leases {
            self.rescue(Scope::Expired).await;
        }
        let request = self.claim_request(self.now());
        let wanted = request.limit;
        let claiming = std::time::Instant::now();
        let claimed = store.claim_jobs(&request).await?;
        self.inner
            .metrics
            .claimed_in(claiming.elapsed().as_secs_f64());
        let full = claimed.len() == wanted;
        for job in claimed {
            self.register(&job);
            attempts.spawn(attempt::run(self.clone(), job));
        }
        if full && let Some(pause) = sweep.pause_while_full(self.now()) {
            // Every slot is taken: a finished attempt wakes the loop, and there is no need to
            // ask the database when work is due until then.
            return Ok(pause);
        }
        let wakeups = store
            .next_wakeup(&rules::skipped_queues(&request), &request.runnable)
            .await?;
        let now = self.now();
        sweep.plan(&wakeups, now);
        // Woken CLAIM_LEAD ahead of due work (see `claim_request`), on time for the sweeps.
        let wake_at = [
            wakeups.due.map(|due| due - lead()),
            wakeups.deadline,
            wakeups.lease_expiry,
        ]
        .into_iter()
        .flatten()
        .min();
        let pause = match wake_at {
            Some(at) if at > now => (at - now)
                .to_std()
                .unwrap_or(SAFETY_RECHECK)
                .min(SAFETY_RECHECK),
            // Due but not claimable yet (no free slot): a freed slot wakes us.
            Some(_) => Duration::from_millis(if request.limit == 0 { 1000 } else { 10 }),
            None => SAFETY_RECHECK,
        };
        Ok(pause)
    }

    /// A busy node claims freed slots in batches rather than one by one: after an action
    /// ends, it waits up to [`GATHER`] for more to end, until half its slots are free. One
    /// claim then starts several attempts, and their results tend to share a commit too.
    async fn gather_slots(&self, attempts: &mut JoinSet<()>) {
        let half = self.inner.config.concurrency / 2;
        let until = tokio::time::Instant::now() + GATHER;
        while self
            .inner
            .config
            .concurrency
            .saturating_sub(self.running_count())
            < half
            && !attempts.is_empty()
        {
            tokio::select! {
                // An action ended (its result is being recorded) or an attempt task ended.
                _ = self.inner.wake.notified() => {}
                Some(_) = attempts.join_next() => {}
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }

    fn claim_request(&self, now: DateTime<Utc>) -> ClaimRequest {
        let config = &self.inner.config;
        let running = self.inner.running.lock().expect("running map");
        let executing: Vec<&Running> = running.values().filter(|r| !r.recording).collect();
        // Results waiting for their commit are bounded too: past the backlog, a slow
        // database holds new claims back instead of piling results up in memory.
        let free = config
            .concurrency
            .saturating_sub(executing.len())
            .min(result_backlog(config.concurrency).saturating_sub(running.len()));
        let mut per_queue: HashMap<String, usize> = HashMap::new();
        for attempt in executing {
            *per_queue.entry(attempt.queue.clone()).or_default() += 1;
        }
        let limit_of = |queue: &str| {
            config
                .queue_concurrency
                .get(queue)
                .copied()
                .unwrap_or(config.default_queue_concurrency)
        };
        let mut queue_free: HashMap<String, usize> = HashMap::new();
        for (queue, limit) in &config.queue_concurrency {
            queue_free.insert(queue.clone(), *limit);
        }
        for (queue, count) in per_queue {
            queue_free.insert(queue.clone(), limit_of(&queue).saturating_sub(count));
        }
        ClaimRequest {
            node: config.node.clone(),
            now,
            due_by: now + lead(),
            lease_until: now
                + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(30)),
            limit: free,
            queue_free,
            default_queue_free: config.default_queue_concurrency.min(free),
            paused: self.paused_queues(),
            runnable: self.inner.runnable.clone(),
            limits: self.inner.limits.clone(),
        }
    }

    /// Fills in what a result carries beyond the attempt: the circuit it counts towards and
    /// the notifications it enqueues.
    pub(crate) fn complete_result(&self, job: &Job, result: &mut AttemptResult) {
        result.circuit = self.inner.config.limits.circuit;
        result.notify = notify::for_result(&self.inner.config.notifications, job, result);
    }

    /// Wakes the notifier after a result enqueued deliveries.
    pub(crate) fn deliveries_enqueued(&self) {
        self.inner.deliveries.notify_one();
    }

    /// Delivers due notifications: claims a batch under a lease, delivers it concurrently,
    /// then sleeps until the next is due or a result enqueues one.
    async fn deliver_notifications(self, stop: CancellationToken) {
        let lease = chrono::Duration::from_std(DELIVERY_LEASE).unwrap_or(chrono::Duration::MAX);
        loop {
            let now = self.now();
            match self
                .inner
                .store
                .claim_deliveries(&self.inner.config.node, now, now + lease, DELIVERY_BATCH)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    let mut deliveries = JoinSet::new();
                    for claimed in batch {
                        deliveries.spawn(self.clone().deliver_one(claimed, stop.clone()));
                    }
                    while deliveries.join_next().await.is_some() {}
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "could not claim notification deliveries; will try again")
                }
            }
            let next = match self.inner.store.next_delivery().await {
                Ok(next) => next,
                Err(e) => {
                    warn!(error = %e, "could not read the next notification delivery");
                    Some(self.now() + chrono::Duration::seconds(1))
                }
            };
            let pause = notify::pause_until(next, self.now(), SAFETY_RECHECK);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.inner.deliveries.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn deliver_one(self, claimed: ClaimedDelivery, stop: CancellationToken) {
        let notification = &claimed.notification;
        let sink = self
            .inner
            .config
            .notifications
            .iter()
            .find(|s| s.name == notification.sink);
        let (ok, status, error, next) = notify::deliver(&self, sink, &claimed, stop).await;
        let outcome = match (&next, ok) {
            (_, true) => "delivered",
            (DeliveryNext::Retry { .. }, _) => "retrying",
            _ => "failed",
        };
        self.inner
            .metrics
            .delivery_tried(&notification.sink, outcome);
        let result = DeliveryResult {
            notification_id: notification.id,
            attempt_id: claimed.attempt_id,
            node: self.inner.config.node.clone(),
            now: self.now(),
            ok,
            status,
            error: error.clone(),
            next,
        };
        match self.inner.store.finish_delivery(&result).await {
            Ok(()) => info!(
                notification = notification.id, job_id = %notification.job_id, sink = %notification.sink,
                event = %notification.event, try_number = claimed.number, outcome, error = error.as_deref().unwrap_or(""),
                "notification delivery"
            ),
            Err(e) => {
                warn!(notification = notification.id, error = %e, "could not record a notification delivery")
            }
        }
    }

    /// The queues paused, as this node last read them.
    pub fn paused_queues(&self) -> Vec<String> {
        self.inner.paused.read().expect("paused list").clone()
    }

    async fn refresh_paused(&self) {
        match self.inner.store.paused_queues().await {
            Ok(paused) => *self.inner.paused.write().expect("paused list") = paused,
            Err(e) => warn!(error = %e, "could not read the paused queues; keeping the last list"),
        }
    }

    /// Pauses or resumes a queue: its running attempts finish, nothing new is claimed.
    pub async fn set_queue_paused(
        &self,
        queue: &str,
        paused: bool,
        actor: &str,
    ) -> Result<(), Error> {
        self.inner
            .store
            .set_queue_paused(queue, paused, actor, self.now())
            .await?;
        self.refresh_paused().await;
        self.wake();
        Ok(())
    }

    fn register(&self, claimed: &retryd_store::Claimed) {
        self.publish(claimed.event.clone());
        let stop = self.inner.release.child_token();
        let cancelled = Arc::new(AtomicBool::new(false));
        self.inner.running.lock().expect("running map").insert(
            claimed.job.id,
            Running {
                attempt_id: claimed.lease.attempt_id,
                queue: claimed.job.queue.clone(),
                stop,
                cancelled,
                recording: false,
                lease_lost: CancellationToken::new(),
                advancing: false,
            },
        );
    }

    /// Forgets a finished attempt, unless the job's next attempt already took its place.
    pub(crate) fn unregister(&self, lease: &retryd_store::Lease) {
        let mut running = self.inner.running.lock().expect("running map");
        if running
            .get(&lease.job_id)
            .is_some_and(|r| r.attempt_id == lease.attempt_id)
        {
            running.remove(&lease.job_id);
        }
        drop(running);
        self.wake();
    }

    /// A pipeline moves to its next step under the same lease (`advancing`), then did (`to`:
    /// the new attempt id renewals extend) or could not (`None`).
    pub(crate) fn switch_attempt(
        &self,
        from: &retryd_store::Lease,
        advancing: bool,
        to: Option<&retryd_store::Lease>,
    ) {
        let mut running = self.inner.running.lock().expect("running map");
        if let Some(entry) = running
            .get_mut(&from.job_id)
            .filter(|r| r.attempt_id == from.attempt_id)
        {
            entry.advancing = advancing;
            if let Some(to) = to {
                entry.attempt_id = to.attempt_id;
            }
        }
    }

    pub(crate) fn running_handles(&self, lease: &retryd_store::Lease) -> Option<Handles> {
        let running = self.inner.running.lock().expect("running map");
        running
            .get(&lease.job_id)
            .filter(|r| r.attempt_id == lease.attempt_id)
            .map(|r| Handles {
                stop: r.stop.clone(),
                cancelled: r.cancelled.clone(),
                lease_lost: r.lease_lost.clone(),
            })
    }

    /// Stops the attempts a renewal showed this node no longer holds: another node may be
    /// running their jobs already.
    fn stop_lost(&self, attempt_ids: &[i64]) {
        let running = self.inner.running.lock().expect("running map");
        for (job_id, attempt) in running.iter() {
            if attempt_ids.contains(&attempt.attempt_id) && !attempt.advancing {
                warn!(job_id = %job_id, attempt_id = attempt.attempt_id,
                    "this node no longer holds the attempt's lease (rescued or taken over): stopping it now");
                attempt.lease_lost.cancel();
                attempt.stop.cancel();
            }
        }
    }

    fn running_attempts(&self) -> Vec<i64> {
        self.inner
            .running
            .lock()
            .expect("running map")
            .values()
            .map(|r| r.attempt_id)
            .collect()
    }

    /// Reacts to other nodes: new or rescheduled work wakes the loop; a cancel stops the
    /// attempt if it runs here.
    async fn follow_notices(
        self,
        mut notices: broadcast::Receiver<Notice>,
        stop: CancellationToken,
    ) {
        loop {
            let notice = tokio::select! {
                _ = stop.cancelled() => return,
                notice = notices.recv() => notice,
            };
            match notice {
                Ok(Notice::Wake) => {
                    self.wake();
                    self.inner.deliveries.notify_one();
                }
                Ok(Notice::Cancel(id)) => {
                    self.stop_running(id);
                }
                Ok(Notice::Queues) => {
                    self.refresh_paused().await;
                    self.wake();
                }
                Ok(Notice::Policies) => self.reload_policies_or_warn().await,
                // Missed some: looking again covers whatever they were.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.reload_policies_or_warn().await;
                    self.wake();
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Deletes finished jobs past their retention, at start and then every `PRUNE_EVERY`.
    async fn prune_periodically(self, stop: CancellationToken) {
        loop {
            let now = self.now();
            let cutoffs: BTreeMap<JobState, DateTime<Utc>> = self
                .inner
                .config
                .retention
                .iter()
                .map(|(state, keep)| {
                    (
                        *state,
                        now - chrono::Duration::from_std(*keep).unwrap_or(chrono::Duration::MAX),
                    )
                })
                .collect();
            match self.inner.store.prune_jobs(&cutoffs).await {
                Ok(0) => {}
                Ok(n) => info!(pruned = n, "deleted finished jobs past their retention"),
                Err(e) => warn!(error = %e, "retention purge failed; will try again"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    }

    /// Renews this node's leases every third of the lease and delivers cancel requests.
    async fn heartbeat(self, stop: CancellationToken) {
        let every = self.inner.config.lease / 3;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let until = self.now()
                + chrono::Duration::from_std(self.inner.config.lease)
                    .unwrap_or(chrono::Duration::seconds(30));
            match self
                .inner
                .store
                .renew_leases(&self.inner.config.node, &self.running_attempts(), until)
                .await
            {
                Ok(renewal) => {
                    self.note_reachable(true);
                    for id in renewal.cancelled {
                        self.stop_running(id);
                    }
                    self.stop_lost(&renewal.lost);
                }
                Err(e) => {
                    self.note_reachable(false);
                    warn!(error = %e, "could not renew leases; will try again");
                }
            }
        }
    }

    /// Records attempts whose lease expired as `lost` and schedules their jobs by policy,
    /// after stopping their commands when they run on this host.
    async fn rescue(&self, scope: Scope) {
        let now = self.now();
        let exclusive = self.inner.store.is_exclusive();
        if scope == Scope::Expired
            && !may_rescue(
                exclusive,
                *self.inner.reachable_since.lock().expect("reachability"),
                now,
                self.inner.config.lease,
            )
        {
            return;
        }
        let cutoff = match scope {
            Scope::Expired => now,
            Scope::Everything | Scope::Own => DateTime::<Utc>::MAX_UTC,
        };
        let expired = match self.inner.store.expired_leases(cutoff).await {
            Ok(jobs) => jobs,
            Err(e) => {
                warn!(error = %e, "rescue: cannot list expired leases");
                return;
            }
        };
        let node = &self.inner.config.node;
        for job in expired {
            if scope == Scope::Own && job.lease_owner.as_ref() != Some(node) {
                continue;
            }
            let Some(attempt_id) = job.attempt_id else {
                continue;
            };
            if self
                .inner
                .running
                .lock()
                .expect("running map")
                .contains_key(&job.id)
            {
                continue;
            }
            let owner = job.lease_owner.clone().unwrap_or_else(|| "unknown".into());
            // Its command may still run (the node died or froze): on this host, it is stopped
            // before the job can run again.
            match self.inner.store.attempt_process(attempt_id).await {
                Ok(Some(process))
                    if crate::process::is_local(&process, exclusive)
                        && crate::process::kill_leftover_group(&process).await =>
                {
                    warn!(job_id = %job.id, pid = process.pid, owner = %owner, "stopped the command of a lost attempt");
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "rescue: cannot read the attempt's process; will try again");
                    continue;
                }
            }
            let rule = format!("{LOST_RULE}: node {owner} stopped renewing it");
            // A pipeline's lost attempt counts against its current step's policy.
            let (policy_name, snapshot) = job.effective_policy();
            let policy = self.policies().current(policy_name, snapshot).clone();
            let (next, reason) = if job.cancel_requested {
                (
                    Next::Cancelled,
                    format!("cancelled; attempt {} lost with node {owner}", job.attempt),
                )
            } else {
                let lost_before = match self.inner.store.list_attempts(job.id).await {
                    Ok(attempts) => attempts
                        .iter()
                        .filter(|a| {
                            a.outcome == Some(AttemptOutcome::Lost)
                                && a.rule.as_deref().is_some_and(|r| r.starts_with(LOST_RULE))
                        })
                        .count() as u32,
                    Err(e) => {
                        warn!(error = %e, "rescue: cannot count the job's lost attempts; will try again");
                        continue;
                    }
                };
                attempt::after_lost(
                    &policy,
                    lost_before + 1,
                    job.deadline,
                    now,
                    &format!("attempt {} lost ({rule})", job.effective_attempt()),
                )
            };
            let mut result = AttemptResult {
                lease: retryd_store::Lease {
                    job_id: job.id,
                    attempt_id,
                    attempt: job.attempt,
                    node: owner.clone(),
                },
                fence: Fence::Rescue {
                    expired_before: cutoff,
                },
                now,
                outcome: AttemptOutcome::Lost,
                exit_code: None,
                error: Some(format!(
                    "attempt lost: node {owner} stopped renewing its lease"
                )),
                class: Some(Class::Transient),
                rule: Some(rule),
                output_dropped_bytes: 0,
                next,
                reason,
                actor: format!("rescuer on {}", self.inner.config.node),
                step: None,
                circuit: None,
                notify: Vec::new(),
                log: Default::default(),
            };
            self.complete_result(&job, &mut result);
            let span = info_span!("rescue", job_id = %job.id, queue = %job.queue, kind = %job.kind,
                target = job.target.as_deref().unwrap_or("-"), attempt = job.attempt,
                step = job.current_step().map_or("-", |(_, s)| s.name.as_str()), state = %JobState::Running);
            async {
                match self.inner.store.finish_attempt(&result).await {
                    Ok((job, event)) => {
                        warn!(to = %job.state, "rescued a lost attempt");
                        self.inner.metrics.attempt_finished(
                            AttemptOutcome::Lost.as_str(),
                            Some(Class::Transient.as_str()),
                        );
                        self.publish(event);
                        if !result.notify.is_empty() {
                            self.deliveries_enqueued();
                        }
                    }
                    Err(retryd_store::Error::LeaseLost { .. }) => {}
                    Err(e) => warn!(error = %e, "rescue failed; will try again"),
                }
            }
            .instrument(span)
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_14_leases_are_judged_only_after_the_database_was_up_a_whole_lease() {
        let lease = Duration::from_secs(30);
        let back = Utc::now();
        let later = |s: i64| back + chrono::Duration::seconds(s);
        assert!(
            !may_rescue(false, None, later(100), lease),
            "unreachable now"
        );
        assert!(
            !may_rescue(false, Some(back), later(29), lease),
            "the owners may not have renewed yet"
        );
        assert!(may_rescue(false, Some(back), later(30), lease));
        assert!(
            may_rescue(true, None, later(0), lease),
            "a store one process owns has no other node to wait for"
        );
    }

    #[test]
    fn issue_14_lost_attempts_do_not_count_until_the_poison_limit() {
        let policy = retryd_core::Policy::default();
        let now = Utc::now();
        let (next, reason) = attempt::after_lost(&policy, 2, None, now, "attempt 1 lost");
        assert_eq!(
            next,
            Next::Lost {
                at: now + chrono::Duration::seconds(2),
                delay: Duration::from_secs(2)
            }
        );
        assert!(
            reason.contains("does not count (2 of 3 lost attempts allowed)"),
            "{reason}"
        );
        let (next, reason) = attempt::after_lost(&policy, 3, None, now, "attempt 1 lost");
        assert_eq!(next, Next::Failed);
        assert_eq!(
            reason,
            "lost 3 attempts (the node running it died each time): attempt 1 lost"
        );
        let (next, _) = attempt::after_lost(&policy, 1, Some(now), now, "attempt 1 lost");
        assert_eq!(next, Next::Expired, "a passed deadline still ends the job");
    }
}
