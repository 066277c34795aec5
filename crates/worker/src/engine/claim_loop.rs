//! The claim loop's pure parts and its pass: when to sweep, how many slots a claim asks
//! for, and one tick (sweep what is due, claim, start the attempts, plan the next wake-up).

use super::running::Occupancy;
use super::{Engine, gate};
use crate::attempt;
use crate::maintenance::{deadlines, rescuer};
use chrono::{DateTime, Utc};
use retryd_store::{ClaimRequest, Claimed, Wakeups, rules};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::task::JoinSet;

use super::SAFETY_RECHECK;

/// When the deadline sweep and the lease rescue next have work. A tick runs each only when
/// its instant has come (or on the safety re-check), so that the wake-up for a due retry
/// costs one claim, not three queries.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    deadline: Option<DateTime<Utc>>,
    lease_expiry: Option<DateTime<Utc>>,
    /// When both last ran regardless: the safety net for changes made behind our back.
    last_full: Option<DateTime<Utc>>,
    /// When the instants above were read.
    planned: Option<DateTime<Utc>>,
}

/// How many attempts, executing, waiting for their slots or for their result's commit, a
/// node holds at most: its concurrency, as many again for each claimed ahead of a slot (see
/// [`gate`](super::gate)), and a backlog of results as large as the concurrency, at least 64.
fn result_backlog(concurrency: usize) -> usize {
    concurrency * (1 + gate::MAX_AHEAD_FACTOR) + concurrency.max(64)
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

/// How many more attempts a claim may take: the free execution slots and `ahead` more, less
/// those claimed and still waiting for a slot, and no more than the result backlog leaves
/// room for. Results waiting for their commit are bounded too: past the backlog, a slow
/// database holds new claims back instead of piling results up.
pub(crate) fn free_slots(concurrency: usize, ahead: usize, occupancy: &Occupancy) -> usize {
    (concurrency + ahead)
        .saturating_sub(occupancy.active)
        .min(result_backlog(concurrency).saturating_sub(occupancy.held))
}

/// The free slots per queue with a cap of its own, and those of an uncapped queue: its cap,
/// with as large a share claimed ahead as the node's, less what it holds.
pub(crate) fn queue_slots(
    caps: &BTreeMap<String, usize>,
    default_cap: usize,
    (concurrency, ahead): (usize, usize),
    free: usize,
    occupancy: &Occupancy,
) -> (HashMap<String, usize>, usize) {
    let with_ahead = |cap: usize| cap + ahead * cap / concurrency.max(1);
    let cap_of = |queue: &str| with_ahead(caps.get(queue).copied().unwrap_or(default_cap));
    let mut queue_free: HashMap<String, usize> =
        caps.keys().map(|q| (q.clone(), cap_of(q))).collect();
    for (queue, count) in &occupancy.active_by_queue {
        queue_free.insert(queue.clone(), cap_of(queue).saturating_sub(*count));
    }
    (queue_free, with_ahead(default_cap).min(free))
}

/// One pass: expire and rescue when their time has come, claim. Returns how long to
/// sleep unless woken.
pub(crate) async fn tick(
    engine: &Engine,
    attempts: &mut JoinSet<()>,
    sweep: &mut Sweep,
) -> retryd_store::Result<Duration> {
    let store = &engine.inner.store;
    let now = engine.now();
    let (deadlines_due, leases_due) = sweep.due(now);
    if deadlines_due {
        deadlines::expire(engine, now).await?;
    }
    if leases_due {
        rescuer::rescue(engine, rescuer::Scope::Expired).await;
    }
    let request = claim_request(engine, engine.now());
    let wanted = request.limit;
    let claiming = std::time::Instant::now();
    let claimed = store.claim_jobs(&request).await?;
    engine
        .inner
        .metrics
        .claimed_in(claiming.elapsed().as_secs_f64());
    let full = claimed.len() == wanted;
    for job in claimed {
        register(engine, &job);
        // In claim order: the order in which the actions take their slots.
        let ticket = engine.inner.gate.ticket(&job.job.queue);
        // Boxed: the attempt's future is about 6 KB, and spawning it moved it twice.
        attempts.spawn(Box::pin(attempt::run(engine.clone(), job, ticket)));
    }
    if full && let Some(pause) = sweep.pause_while_full(engine.now()) {
        // Every slot is taken: a finished attempt wakes the loop, and there is no need to
        // ask the database when work is due until then.
        return Ok(pause);
    }
    let wakeups = store
        .next_wakeup(&rules::skipped_queues(&request), &request.runnable)
        .await?;
    let now = engine.now();
    sweep.plan(&wakeups, now);
    Ok(pause_until(&wakeups, now, request.limit == 0))
}

/// How long to sleep after a tick: woken CLAIM_LEAD ahead of due work (see
/// `claim_request`), on time for the sweeps, at least every safety re-check.
fn pause_until(wakeups: &Wakeups, now: DateTime<Utc>, no_free_slot: bool) -> Duration {
    let wake_at = [
        wakeups.due.map(|due| due - lead()),
        wakeups.deadline,
        wakeups.lease_expiry,
    ]
    .into_iter()
    .flatten()
    .min();
    match wake_at {
        Some(at) if at > now => (at - now)
            .to_std()
            .unwrap_or(SAFETY_RECHECK)
            .min(SAFETY_RECHECK),
        // Due but not claimable yet (no free slot): a freed slot wakes us.
        Some(_) => Duration::from_millis(if no_free_slot { 1000 } else { 10 }),
        None => SAFETY_RECHECK,
    }
}

fn register(engine: &Engine, claimed: &Claimed) {
    engine.publish(claimed.event.clone());
    engine.inner.running.register(
        &claimed.lease,
        &claimed.job.queue,
        engine.inner.release.child_token(),
    );
}

/// A busy node claims freed slots in batches rather than one by one: after an action
/// ends, it waits up to [`GATHER`] for more to end, until half of what it may claim is
/// free. One claim then starts several attempts, and their results tend to share a commit
/// too.
pub(crate) async fn gather_slots(engine: &Engine, attempts: &mut JoinSet<()>) {
    let concurrency = engine.inner.config.concurrency;
    let until = tokio::time::Instant::now() + GATHER;
    let claimable = || {
        let ahead = engine.inner.gate.ahead();
        let free = free_slots(concurrency, ahead, &engine.inner.running.occupancy());
        (free, (concurrency + ahead) / 2)
    };
    while let (free, half) = claimable()
        && free < half
        && !attempts.is_empty()
    {
        tokio::select! {
            // An action ended (its result is being recorded) or an attempt task ended.
            _ = engine.inner.wake.notified() => {}
            Some(_) = attempts.join_next() => {}
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}

fn claim_request(engine: &Engine, now: DateTime<Utc>) -> ClaimRequest {
    let config = &engine.inner.config;
    let occupancy = engine.inner.running.occupancy();
    let ahead = engine.inner.gate.ahead();
    let free = free_slots(config.concurrency, ahead, &occupancy);
    let (queue_free, default_queue_free) = queue_slots(
        &config.queue_concurrency,
        config.default_queue_concurrency,
        (config.concurrency, ahead),
        free,
        &occupancy,
    );
    ClaimRequest {
        node: config.node.clone(),
        now,
        due_by: now + lead(),
        lease_until: now
            + chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(30)),
        limit: free,
        queue_free,
        default_queue_free,
        runnable: engine.inner.runnable.clone(),
        limits: engine.inner.limits.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_sweep_runs_when_its_instant_comes_and_once() {
        let mut sweep = Sweep::default();
        assert_eq!(
            sweep.due(at(0)),
            (true, true),
            "the first tick checks everything"
        );
        let wakeups = Wakeups {
            due: None,
            deadline: Some(at(500)),
            lease_expiry: Some(at(2_000)),
        };
        sweep.plan(&wakeups, at(0));
        assert_eq!(sweep.due(at(499)), (false, false));
        assert_eq!(sweep.due(at(500)), (true, false));
        assert_eq!(
            sweep.due(at(600)),
            (false, false),
            "forgotten until the next plan"
        );
        assert_eq!(sweep.due(at(2_000)), (false, true));
        let safety = SAFETY_RECHECK.as_millis() as i64;
        assert_eq!(sweep.due(at(safety)), (true, true), "the safety re-check");
    }

    #[test]
    fn a_full_node_sleeps_until_a_sweep_or_a_replan() {
        let mut sweep = Sweep::default();
        assert_eq!(sweep.pause_while_full(at(0)), None, "no plan yet");
        sweep.due(at(0));
        sweep.plan(
            &Wakeups {
                due: None,
                deadline: Some(at(300)),
                lease_expiry: None,
            },
            at(0),
        );
        assert_eq!(
            sweep.pause_while_full(at(100)),
            Some(Duration::from_millis(200))
        );
        sweep.due(at(300));
        assert_eq!(
            sweep.pause_while_full(at(300)),
            Some(REPLAN_WHEN_FULL - Duration::from_millis(300))
        );
    }

    #[test]
    fn claims_take_free_slots_and_those_ahead_within_the_result_backlog() {
        let occupancy = |active, held| Occupancy {
            active,
            held,
            active_by_queue: HashMap::new(),
        };
        assert_eq!(free_slots(16, 0, &occupancy(0, 0)), 16);
        assert_eq!(free_slots(16, 0, &occupancy(10, 10)), 6);
        assert_eq!(free_slots(16, 32, &occupancy(10, 10)), 38, "claimed ahead");
        // Actions ended, results waiting for their commit: slots free up to the backlog.
        let backlog = result_backlog(16);
        assert_eq!(backlog, 16 * (1 + gate::MAX_AHEAD_FACTOR) + 64);
        assert_eq!(free_slots(16, 0, &occupancy(0, backlog - 10)), 10);
        assert_eq!(free_slots(16, 128, &occupancy(0, backlog)), 0);
        assert_eq!(
            result_backlog(200),
            200 * (1 + gate::MAX_AHEAD_FACTOR) + 200
        );
    }

    #[test]
    fn queue_caps_count_only_attempts_not_ended() {
        let caps = BTreeMap::from([("deploy".to_owned(), 2), ("mail".to_owned(), 5)]);
        let occupancy = Occupancy {
            active: 3,
            held: 5,
            active_by_queue: HashMap::from([("deploy".into(), 2), ("other".into(), 1)]),
        };
        let (per_queue, default_free) = queue_slots(&caps, 4, (16, 0), 13, &occupancy);
        assert_eq!(per_queue["deploy"], 0);
        assert_eq!(per_queue["mail"], 5);
        assert_eq!(
            per_queue["other"], 3,
            "an uncapped queue has the default cap"
        );
        assert_eq!(default_free, 4);
        assert_eq!(
            queue_slots(&caps, 4, (16, 0), 1, &occupancy).1,
            1,
            "never more than free"
        );
        let (per_queue, default_free) = queue_slots(&caps, 4, (16, 32), 13, &occupancy);
        assert_eq!(
            (per_queue["deploy"], per_queue["mail"], default_free),
            (4, 15, 12),
            "a share claimed ahead in proportion to each cap"
        );
    }

    #[test]
    fn the_loop_wakes_ahead_of_due_work_and_on_time_for_sweeps() {
        let now = at(0);
        let wakeups = |due, deadline| Wakeups {
            due,
            deadline,
            lease_expiry: None,
        };
        assert_eq!(
            pause_until(&wakeups(Some(at(1_000)), None), now, false),
            Duration::from_millis(1_000) - CLAIM_LEAD
        );
        assert_eq!(
            pause_until(&wakeups(Some(at(1_000)), Some(at(400))), now, false),
            Duration::from_millis(400)
        );
        assert_eq!(
            pause_until(&wakeups(None, None), now, false),
            SAFETY_RECHECK
        );
        assert_eq!(
            pause_until(&wakeups(Some(at(-5)), None), now, true),
            Duration::from_secs(1),
            "due but no free slot: a freed slot wakes the loop"
        );
    }
}
