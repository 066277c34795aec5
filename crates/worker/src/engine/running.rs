//! The attempts running on this node, and what stops them. Keyed by job: a job's next
//! attempt may be claimed before the task of its previous one has unregistered, so every
//! change names the attempt it means and leaves a newer one alone.

use retryd_core::JobId;
use retryd_store::Lease;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// An attempt running on this node.
#[derive(Debug)]
struct Running {
    attempt_id: i64,
    queue: String,
    stop: CancellationToken,
    /// Set when a client cancelled the job (as opposed to a shutdown release).
    cancelled: Arc<AtomicBool>,
    /// The action took its execution slots (see [`super::gate`]); until then the attempt
    /// waits for them.
    started: bool,
    /// The action has ended and its result waits for its group commit: the attempt keeps
    /// its lease (renewed, fenced) but no longer takes an execution slot.
    recording: bool,
    /// Cancelled when a renewal shows this node no longer holds the attempt: the command
    /// stops at once (a short grace), and its result is not offered.
    lease_lost: CancellationToken,
    /// A pipeline is moving to its next step: its attempt id is about to change, so a
    /// renewal that misses the old one says nothing.
    advancing: bool,
}

/// What a running attempt listens to: a stop (cancel, shutdown), whether that stop was a
/// client's cancel, and the loss of its lease.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    pub stop: CancellationToken,
    pub cancelled: Arc<AtomicBool>,
    pub lease_lost: CancellationToken,
}

/// How many attempts take or wait for slots, in all and per queue.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Occupancy {
    /// Attempts whose actions run or wait for their slots: claimed, not ended.
    pub active: usize,
    /// Every attempt held, those waiting for their result's commit included.
    pub held: usize,
    pub active_by_queue: HashMap<String, usize>,
}

// A std Mutex: held only for map operations, never across .await.
#[derive(Debug, Default)]
pub(crate) struct RunningMap(Mutex<Attempts>);

/// The attempts by job, and how many of them are active (claimed, action not ended) in all
/// and per queue: kept as they change, since the claim loop asks after every ended action
/// and a node may hold hundreds claimed ahead.
#[derive(Debug, Default)]
struct Attempts {
    by_job: HashMap<JobId, Running>,
    active: usize,
    active_by_queue: HashMap<String, usize>,
}

impl Attempts {
    /// Counts an attempt of `queue` that stops being active (its action ended).
    fn inactive(&mut self, queue: &str) {
        self.active -= 1;
        if let Some(count) = self.active_by_queue.get_mut(queue) {
            *count -= 1;
            if *count == 0 {
                self.active_by_queue.remove(queue);
            }
        }
    }

    /// Forgets an attempt that left the map, active or not.
    fn removed(&mut self, attempt: &Running) {
        if !attempt.recording {
            self.inactive(&attempt.queue);
        }
    }

    fn get(&self, job: &JobId) -> Option<&Running> {
        self.by_job.get(job)
    }

    fn get_mut(&mut self, job: &JobId) -> Option<&mut Running> {
        self.by_job.get_mut(job)
    }

    fn iter(&self) -> impl Iterator<Item = (&JobId, &Running)> {
        self.by_job.iter()
    }

    fn values(&self) -> impl Iterator<Item = &Running> {
        self.by_job.values()
    }
}

impl RunningMap {
    fn map(&self) -> std::sync::MutexGuard<'_, Attempts> {
        self.0.lock().expect("running map")
    }

    /// Registers a claimed attempt; `stop` is a child of the shutdown release.
    pub fn register(&self, lease: &Lease, queue: &str, stop: CancellationToken) {
        let mut map = self.map();
        map.active += 1;
        *map.active_by_queue.entry(queue.to_owned()).or_default() += 1;
        let replaced = map.by_job.insert(
            lease.job_id,
            Running {
                attempt_id: lease.attempt_id,
                queue: queue.to_owned(),
                stop,
                cancelled: Arc::new(AtomicBool::new(false)),
                started: false,
                recording: false,
                lease_lost: CancellationToken::new(),
                advancing: false,
            },
        );
        if let Some(replaced) = replaced {
            map.removed(&replaced);
        }
    }

    pub fn unregister(&self, lease: &Lease) {
        let mut map = self.map();
        if map
            .get(&lease.job_id)
            .is_some_and(|r| r.attempt_id == lease.attempt_id)
            && let Some(removed) = map.by_job.remove(&lease.job_id)
        {
            map.removed(&removed);
        }
    }

    /// The attempt's action took its slots and starts.
    pub fn started(&self, lease: &Lease) {
        if let Some(entry) = self
            .map()
            .get_mut(&lease.job_id)
            .filter(|r| r.attempt_id == lease.attempt_id)
        {
            entry.started = true;
        }
    }

    pub fn action_ended(&self, lease: &Lease) {
        let mut map = self.map();
        let Some(entry) = map
            .by_job
            .get_mut(&lease.job_id)
            .filter(|r| r.attempt_id == lease.attempt_id && !r.recording)
        else {
            return;
        };
        entry.recording = true;
        let queue = entry.queue.clone();
        map.inactive(&queue);
    }

    /// A pipeline moves to its next step under the same lease (`advancing`), then did (`to`:
    /// the new attempt id renewals extend) or could not (`None`).
    pub fn switch_attempt(&self, from: &Lease, advancing: bool, to: Option<&Lease>) {
        if let Some(entry) = self
            .map()
            .get_mut(&from.job_id)
            .filter(|r| r.attempt_id == from.attempt_id)
        {
            entry.advancing = advancing;
            if let Some(to) = to {
                entry.attempt_id = to.attempt_id;
            }
        }
    }

    pub fn handles(&self, lease: &Lease) -> Option<Handles> {
        self.map()
            .get(&lease.job_id)
            .filter(|r| r.attempt_id == lease.attempt_id)
            .map(|r| Handles {
                stop: r.stop.clone(),
                cancelled: r.cancelled.clone(),
                lease_lost: r.lease_lost.clone(),
            })
    }

    /// Stops the attempt of `id` if it runs here, as a client's cancellation.
    pub fn stop_cancelled(&self, id: JobId) -> bool {
        match self.map().get(&id) {
            Some(attempt) => {
                attempt.cancelled.store(true, Ordering::SeqCst);
                attempt.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Stops the attempts a renewal showed this node no longer holds: another node may be
    /// running their jobs already. A pipeline between steps is left alone.
    pub fn stop_lost(&self, attempt_ids: &[i64]) -> usize {
        let mut stopped = 0;
        for (job_id, attempt) in self.map().iter() {
            if attempt_ids.contains(&attempt.attempt_id) && !attempt.advancing {
                warn!(job_id = %job_id, attempt_id = attempt.attempt_id,
                    "this node no longer holds the attempt's lease (rescued or taken over): stopping it now");
                attempt.lease_lost.cancel();
                attempt.stop.cancel();
                stopped += 1;
            }
        }
        stopped
    }

    /// The attempts whose leases the heartbeat renews.
    pub fn attempt_ids(&self) -> Vec<i64> {
        self.map().values().map(|r| r.attempt_id).collect()
    }

    pub fn contains(&self, job: JobId) -> bool {
        self.map().by_job.contains_key(&job)
    }

    /// Attempts whose actions run now (not those waiting for a slot).
    pub fn executing(&self) -> usize {
        self.map()
            .values()
            .filter(|r| r.started && !r.recording)
            .count()
    }

    pub fn occupancy(&self) -> Occupancy {
        let map = self.map();
        Occupancy {
            active: map.active,
            held: map.by_job.len(),
            active_by_queue: map.active_by_queue.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(job_id: JobId, attempt_id: i64) -> Lease {
        Lease {
            job_id,
            attempt_id,
            attempt: 1,
            node: "n".into(),
        }
    }

    #[test]
    fn an_ended_action_frees_its_slot_but_keeps_its_lease() {
        let map = RunningMap::default();
        let (a, b) = (lease(JobId::new(), 1), lease(JobId::new(), 2));
        map.register(&a, "deploy", CancellationToken::new());
        map.register(&b, "mail", CancellationToken::new());
        assert_eq!(map.executing(), 0, "both wait for their slots");
        map.started(&a);
        map.started(&b);
        assert_eq!(map.executing(), 2);
        map.action_ended(&a);
        let occupancy = map.occupancy();
        assert_eq!((occupancy.active, occupancy.held), (1, 2));
        assert_eq!(
            occupancy.active_by_queue,
            HashMap::from([("mail".into(), 1)])
        );
        assert_eq!(map.attempt_ids().len(), 2, "both leases are still renewed");
        map.unregister(&a);
        assert_eq!(map.occupancy().held, 1);
    }

    #[test]
    fn changes_for_an_older_attempt_leave_the_newer_one_alone() {
        let map = RunningMap::default();
        let job = JobId::new();
        map.register(&lease(job, 1), "q", CancellationToken::new());
        map.register(&lease(job, 2), "q", CancellationToken::new());
        map.started(&lease(job, 2));
        map.action_ended(&lease(job, 1));
        map.unregister(&lease(job, 1));
        assert!(map.contains(job));
        assert_eq!(map.executing(), 1);

        assert!(map.handles(&lease(job, 1)).is_none());
        assert!(map.handles(&lease(job, 2)).is_some());
        assert_eq!(
            map.occupancy(),
            Occupancy {
                active: 1,
                held: 1,
                active_by_queue: HashMap::from([("q".into(), 1)]),
            },
            "the replaced attempt is not counted"
        );
        map.action_ended(&lease(job, 2));
        map.action_ended(&lease(job, 2));
        assert_eq!(map.occupancy().active, 0, "an action ends once");
        map.unregister(&lease(job, 2));
        assert_eq!(map.occupancy(), Occupancy::default());
    }

    #[test]
    fn a_lost_lease_stops_its_attempt_unless_a_pipeline_is_between_steps() {
        let map = RunningMap::default();
        let (a, b) = (lease(JobId::new(), 1), lease(JobId::new(), 2));
        map.register(&a, "q", CancellationToken::new());
        map.register(&b, "q", CancellationToken::new());
        map.switch_attempt(&b, true, None);
        assert_eq!(map.stop_lost(&[1, 2]), 1);
        let handles = map.handles(&a).unwrap();
        assert!(handles.lease_lost.is_cancelled() && handles.stop.is_cancelled());
        assert!(
            !handles.cancelled.load(Ordering::SeqCst),
            "not a client's cancel"
        );
        let moved = lease(b.job_id, 3);
        map.switch_attempt(&b, false, Some(&moved));
        assert!(
            map.handles(&moved).is_some(),
            "renewals now extend the new attempt"
        );
        assert!(map.stop_cancelled(b.job_id));
        assert!(
            map.handles(&moved)
                .unwrap()
                .cancelled
                .load(Ordering::SeqCst)
        );
    }
}
