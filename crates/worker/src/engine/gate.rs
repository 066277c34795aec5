//! Execution slots, and how far ahead of them a node claims.
//!
//! A claim marks its jobs `running` and opens their attempts; the actions then take the
//! node's execution slots (its concurrency, and each queue's cap) in claim order. While
//! recent actions are short, a claim takes more jobs than there are free slots: those wait
//! here for a slot, a few milliseconds at most by the estimate below. One claim, one
//! group of results and one commit then cover tens of jobs instead of the few slots that
//! freed during the last round trip; with slow actions nothing is claimed ahead, and a
//! job stays `pending` (and claimable by another node) until a slot is free for it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How long a job claimed ahead of a free slot waits for one, by the estimate: the bound
/// that keeps `running` honest (as for a job claimed ahead of its due time).
pub(crate) const AHEAD_WAIT: Duration = Duration::from_millis(10);

/// A node claims at most this many times its concurrency ahead of its free slots.
pub(crate) const MAX_AHEAD_FACTOR: usize = 32;

/// How long actions take, as far as claiming ahead is concerned: a longer action raises
/// the estimate fast, by half the difference (claiming ahead stops before a queue of slow
/// jobs builds up, while one action that the busy machine held up does not stop it), a
/// shorter one lowers it slowly.
#[derive(Debug, Default)]
struct Pace {
    estimate: Option<Duration>,
}

impl Pace {
    fn observe(&mut self, took: Duration) {
        self.estimate = Some(match self.estimate {
            Some(estimate) if took < estimate => estimate - (estimate - took) / 16,
            Some(estimate) => estimate + (took - estimate) / 2,
            None => took,
        });
    }

    /// How many jobs `concurrency` slots run within [`AHEAD_WAIT`] at this pace, up to
    /// [`MAX_AHEAD_FACTOR`] times the concurrency; none before the first action ended.
    fn ahead(&self, concurrency: usize) -> usize {
        let Some(estimate) = self.estimate else {
            return 0;
        };
        let cap = concurrency * MAX_AHEAD_FACTOR;
        let per_slot = AHEAD_WAIT.as_nanos() / estimate.as_nanos().max(1);
        (per_slot.saturating_mul(concurrency as u128)).min(cap as u128) as usize
    }
}

/// The node's execution slots: its concurrency in all, and each queue's cap, handed out
/// in claim order.
#[derive(Debug)]
pub(crate) struct Gate {
    slots: Arc<Mutex<Slots>>,
    concurrency: usize,
    // A std Mutex: held only to read or update, never across .await.
    pace: Mutex<Pace>,
}

/// What is taken and who waits. A std Mutex guards it: held only to count and hand out,
/// never across .await.
#[derive(Debug)]
struct Slots {
    free: usize,
    taken_by_queue: HashMap<String, usize>,
    caps: BTreeMap<String, usize>,
    default_cap: usize,
    /// In claim order (a spawned task's first poll is not: the runtime runs the newest
    /// task first), so that a claim's order (priority, due time) is the order of starts.
    waiting: VecDeque<(String, oneshot::Sender<Slot>)>,
}

/// A claimed attempt's place in the line for a slot.
#[derive(Debug)]
pub(crate) struct Ticket(oneshot::Receiver<Slot>);

/// An action's hold on its slots, from its start until its end (or until dropped).
#[derive(Debug)]
pub(crate) struct Slot {
    /// `None` once given back.
    slots: Option<Arc<Mutex<Slots>>>,
    queue: String,
    since: Instant,
}

impl Slots {
    /// Hands free slots to the waiting, first come first served; one whose queue is full
    /// lets those behind it of other queues pass.
    fn hand_out(&mut self, me: &Arc<Mutex<Slots>>) {
        let mut i = 0;
        while self.free > 0 && i < self.waiting.len() {
            let (queue, sender) = &self.waiting[i];
            if sender.is_closed() {
                self.waiting.remove(i);
                continue;
            }
            let cap = self.caps.get(queue).copied().unwrap_or(self.default_cap);
            if self.taken_by_queue.get(queue).copied().unwrap_or(0) >= cap {
                i += 1;
                continue;
            }
            let (queue, sender) = self.waiting.remove(i).expect("looked at above");
            self.free -= 1;
            *self.taken_by_queue.entry(queue.clone()).or_default() += 1;
            let slot = Slot {
                slots: Some(me.clone()),
                queue,
                since: Instant::now(),
            };
            if let Err(mut slot) = sender.send(slot) {
                // Its attempt stopped waiting meanwhile: the slot is given back (here, as
                // the lock is held).
                slot.slots = None;
                self.give_back(&slot.queue);
            }
        }
    }

    fn give_back(&mut self, queue: &str) {
        self.free += 1;
        if let Some(taken) = self.taken_by_queue.get_mut(queue) {
            *taken = taken.saturating_sub(1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            let mut guard = slots.lock().expect("gate");
            guard.give_back(&self.queue);
            guard.hand_out(&slots);
        }
    }
}

impl Ticket {
    /// Waits for the slots. Never fails: the gate drops no one in line.
    pub async fn wait(self) -> Slot {
        self.0.await.expect("the gate hands out every ticket")
    }
}

impl Gate {
    pub fn new(concurrency: usize, caps: BTreeMap<String, usize>, default_cap: usize) -> Self {
        Gate {
            slots: Arc::new(Mutex::new(Slots {
                free: concurrency,
                taken_by_queue: HashMap::new(),
                caps,
                default_cap,
                waiting: VecDeque::new(),
            })),
            concurrency,
            pace: Mutex::new(Pace::default()),
        }
    }

    /// Takes a place in line for a slot of the node and one of `queue`.
    pub fn ticket(&self, queue: &str) -> Ticket {
        let (sender, receiver) = oneshot::channel();
        let mut slots = self.slots.lock().expect("gate");
        slots.waiting.push_back((queue.to_owned(), sender));
        slots.hand_out(&self.slots);
        Ticket(receiver)
    }

    /// Frees the slots of an action that ended, and learns from how long it took.
    pub fn leave(&self, slot: Slot) {
        let took = slot.since.elapsed();
        drop(slot);
        self.pace.lock().expect("pace").observe(took);
    }

    /// How many jobs a claim may take beyond the free slots now.
    pub fn ahead(&self) -> usize {
        self.pace.lock().expect("pace").ahead(self.concurrency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_claimed_ahead_of_slow_actions_or_before_the_first_one_ended() {
        let mut pace = Pace::default();
        assert_eq!(pace.ahead(16), 0);
        pace.observe(Duration::from_millis(200));
        assert_eq!(pace.ahead(16), 0, "a slot runs none of them in 10 ms");
        pace.observe(Duration::from_millis(5));
        assert!(
            pace.ahead(16) < 16,
            "a shorter action lowers the estimate slowly: {}",
            pace.ahead(16)
        );
    }

    #[test]
    fn short_actions_are_claimed_ahead_up_to_a_bound_and_a_slow_one_stops_it() {
        let mut pace = Pace::default();
        pace.observe(Duration::from_millis(2));
        assert_eq!(pace.ahead(16), 80, "5 per slot within 10 ms");
        for _ in 0..200 {
            pace.observe(Duration::from_micros(20));
        }
        assert_eq!(pace.ahead(16), 16 * MAX_AHEAD_FACTOR);
        pace.observe(Duration::from_millis(4));
        assert_eq!(
            pace.ahead(16),
            64,
            "one action held up 4 ms: about 2 ms each now"
        );
        pace.observe(Duration::from_secs(1));
        assert_eq!(pace.ahead(16), 0, "one slow action is enough to stop it");
    }

    #[tokio::test]
    async fn slots_go_in_line_order_within_the_node_and_queue_caps() {
        let gate = Gate::new(2, BTreeMap::from([("deploy".to_owned(), 1)]), 2);
        let given = |ticket: &mut Ticket| ticket.0.try_recv().ok();
        let deploy = gate.ticket("deploy").wait().await;
        let mut second_deploy = gate.ticket("deploy");
        let mail = gate.ticket("mail").wait().await;
        let mut second_mail = gate.ticket("mail");
        let third_mail = gate.ticket("mail");
        assert!(
            given(&mut second_deploy).is_none() && given(&mut second_mail).is_none(),
            "two slots, both taken"
        );
        gate.leave(mail);
        assert!(
            given(&mut second_deploy).is_none(),
            "first in line, but its queue's one slot is taken"
        );
        let second_mail = given(&mut second_mail).expect("the next in line of another queue");
        drop(third_mail);
        gate.leave(deploy);
        let second_deploy = given(&mut second_deploy).expect("its queue's slot is free");
        gate.leave(second_mail);
        gate.leave(second_deploy);
        assert_eq!(
            gate.slots.lock().unwrap().free,
            2,
            "every slot came back, the one of the ticket that stopped waiting too"
        );
        assert!(gate.slots.lock().unwrap().waiting.is_empty());
    }
}
