//! Claim floors: where a claim starts its walk of an organization's `jobs_claim` entries.
//!
//! A claim takes jobs from the front of `jobs_claim` (by priority, due time, id). The index
//! entries of the jobs it took stay there, dead, until VACUUM removes them, and autovacuum
//! comes at most once a minute, on a big jobs table only after a fifth of it changed. Every
//! claim walked over all of them first: 730 index pages a claim after 100,000 jobs, and a
//! drain slowed down as it went. So a node remembers, per organization, the key of the first
//! job its last claim found, and the next claim starts there (`key >= floor`, a bound of the
//! index scan).
//!
//! Below a floor there are only taken jobs, except for what became claimable since: this
//! node's own writes lower the floor to the job they made claimable ([`ClaimFloors::lower`]),
//! and a walk from the beginning every [`FULL_WALK_EVERY`] finds what another node did (a job
//! it stored with a higher priority, a claim of its that rolled back). A claim that does not
//! fill its free slots from the floor walks again from the beginning at once, so a floor
//! never keeps a node idle. Queues the node skips (full) would leave their jobs behind a
//! floor: while there are any, every walk starts at the beginning.

use chrono::{DateTime, Utc};
use retryd_core::job::Job;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long what another node made claimable below this node's floor may wait at most.
const FULL_WALK_EVERY: Duration = Duration::from_millis(100);

/// A job's place in `jobs_claim`, in its order: `(-priority, next_attempt_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    rank: i32,
    due: DateTime<Utc>,
    id: uuid::Uuid,
}

impl Key {
    fn of(job: &Job) -> Option<Key> {
        Some(Key {
            rank: -i32::from(job.priority),
            due: job.next_attempt_at?,
            id: job.id.0,
        })
    }
}

/// The floors a claim starts from, as columns for `unnest` (empty: from the beginning).
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub orgs: Vec<String>,
    pub ranks: Vec<i32>,
    pub dues: Vec<DateTime<Utc>>,
    pub ids: Vec<uuid::Uuid>,
}

impl Walk {
    pub fn starts_at_floors(&self) -> bool {
        !self.orgs.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct ClaimFloors {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    floors: HashMap<String, Key>,
    last_full_walk: Option<Instant>,
}

impl ClaimFloors {
    /// Where the next claim starts: from the floors, unless a walk from the beginning is due
    /// or the node skips queues.
    pub fn walk(&self, skips_queues: bool) -> Walk {
        let state = self.state.lock().expect("claim floors");
        let due = state
            .last_full_walk
            .is_none_or(|at| at.elapsed() >= FULL_WALK_EVERY);
        if skips_queues || due {
            return Walk::default();
        }
        let mut walk = Walk::default();
        for (org, key) in &state.floors {
            walk.orgs.push(org.clone());
            walk.ranks.push(key.rank);
            walk.dues.push(key.due);
            walk.ids.push(key.id);
        }
        walk
    }

    /// After a walk: the first job found in each organization becomes its floor. A walk
    /// from the beginning also drops the floors of organizations where it found nothing.
    pub fn found(&self, from_floors: bool, candidates: &[Job]) {
        self.found_keys(
            from_floors,
            candidates
                .iter()
                .filter_map(|j| Some((j.org.as_str(), Key::of(j)?))),
        );
    }

    fn found_keys<'a>(&self, from_floors: bool, keys: impl Iterator<Item = (&'a str, Key)>) {
        let mut state = self.state.lock().expect("claim floors");
        if !from_floors {
            state.floors.clear();
            state.last_full_walk = Some(Instant::now());
        }
        let mut first: HashMap<&str, Key> = HashMap::new();
        for (org, key) in keys {
            let floor = first.entry(org).or_insert_with(|| key.clone());
            *floor = floor.clone().min(key);
        }
        for (org, key) in first {
            state.floors.insert(org.to_owned(), key);
        }
    }

    /// A job this node made claimable (stored, requeued, due again): a floor above it comes
    /// down to it.
    pub fn lower(&self, job: &Job) {
        if let Some(key) = Key::of(job) {
            self.lower_key(&job.org, key);
        }
    }

    fn lower_key(&self, org: &str, key: Key) {
        let mut state = self.state.lock().expect("claim floors");
        if let Some(floor) = state.floors.get_mut(org)
            && key < *floor
        {
            *floor = key;
        }
    }

    /// Forgets every floor: the next claim walks from the beginning.
    pub fn forget(&self) {
        *self.state.lock().expect("claim floors") = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(priority: i32, due_ms: i64, id: u128) -> Key {
        Key {
            rank: -priority,
            due: DateTime::from_timestamp_millis(1_800_000_000_000 + due_ms).unwrap(),
            id: uuid::Uuid::from_u128(id),
        }
    }

    fn floor_of(walk: &Walk, org: &str) -> (i32, uuid::Uuid) {
        let i = walk.orgs.iter().position(|o| o == org).unwrap();
        (walk.ranks[i], walk.ids[i])
    }

    #[test]
    fn a_floor_starts_at_the_first_job_found_and_only_comes_down() {
        let floors = ClaimFloors::default();
        assert!(
            !floors.walk(false).starts_at_floors(),
            "the first walk starts at the beginning"
        );
        floors.found_keys(
            false,
            [
                ("a", key(0, 20, 2)),
                ("a", key(0, 10, 1)),
                ("b", key(5, 30, 3)),
            ]
            .into_iter(),
        );
        let walk = floors.walk(false);
        assert!(walk.starts_at_floors());
        assert_eq!(
            floor_of(&walk, "a"),
            (0, uuid::Uuid::from_u128(1)),
            "the smallest key found"
        );
        assert_eq!(floor_of(&walk, "b").0, -5, "a higher priority sorts first");

        floors.lower_key("a", key(0, 15, 9));
        assert_eq!(
            floor_of(&floors.walk(false), "a").1,
            uuid::Uuid::from_u128(1),
            "a job behind the floor leaves it"
        );
        floors.lower_key("a", key(1, 99, 8));
        assert_eq!(
            floor_of(&floors.walk(false), "a"),
            (-1, uuid::Uuid::from_u128(8)),
            "a higher priority lowers it"
        );

        assert!(
            !floors.walk(true).starts_at_floors(),
            "skipped queues: from the beginning"
        );
        floors.forget();
        assert!(!floors.walk(false).starts_at_floors());
    }

    #[test]
    fn a_walk_from_the_beginning_is_due_after_a_while_and_resets_the_floors() {
        let floors = ClaimFloors::default();
        floors.found_keys(false, [("a", key(0, 10, 1))].into_iter());
        assert!(floors.walk(false).starts_at_floors());
        floors.state.lock().unwrap().last_full_walk =
            Some(Instant::now() - FULL_WALK_EVERY - Duration::from_millis(1));
        assert!(!floors.walk(false).starts_at_floors());
        floors.found_keys(false, std::iter::empty());
        assert!(
            floors.state.lock().unwrap().floors.is_empty(),
            "nothing found from the beginning: no floor"
        );
    }
}
