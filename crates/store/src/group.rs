//! Group commit for both backends: writes queue up, and one committer at a time takes every
//! queued write, commits them together and looks again. A lone write waits for no one;
//! writes that arrive while a group commits form the next group, however many there are.
//!
//! (Callers taking turns at a lock instead each committed the few writes queued during the
//! previous turn: groups of two under load, and a transaction per two results.)

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

#[derive(Debug)]
pub struct GroupQueue<T> {
    // A std Mutex: held only to push or take, never across .await.
    queued: Mutex<Vec<T>>,
    committing: AtomicBool,
}

impl<T> Default for GroupQueue<T> {
    fn default() -> Self {
        GroupQueue {
            queued: Mutex::new(Vec::new()),
            committing: AtomicBool::new(false),
        }
    }
}

impl<T> GroupQueue<T> {
    /// Queues `item`. `true`: no committer runs, and the caller must start one (which then
    /// calls [`take`](Self::take) until [`keep_committing`](Self::keep_committing) says no).
    #[must_use]
    pub fn push(&self, item: T) -> bool {
        self.queued.lock().expect("group queue").push(item);
        !self.committing.swap(true, SeqCst)
    }

    /// Every queued item: the committer's next group.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.queued.lock().expect("group queue"))
    }

    /// Called by the committer after each group: hands the role back, unless items arrived
    /// meanwhile and it could take the role again (`true`: commit another group).
    pub fn keep_committing(&self) -> bool {
        self.committing.store(false, SeqCst);
        !self.queued.lock().expect("group queue").is_empty() && !self.committing.swap(true, SeqCst)
    }

    /// Held by the committer while it runs: if it panics, the role is handed back, so that
    /// the next push starts another committer instead of queueing forever.
    pub fn role(&self) -> Role<'_, T> {
        Role(self)
    }
}

pub struct Role<'a, T>(&'a GroupQueue<T>);

impl<T> Drop for Role<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.committing.store(false, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_committer_takes_every_queued_item_and_hands_over_cleanly() {
        let queue = GroupQueue::default();
        assert!(queue.push(1), "the first push starts a committer");
        assert!(!queue.push(2), "one runs already");
        assert_eq!(queue.take(), vec![1, 2]);
        assert!(!queue.push(3), "still committing the first group");
        assert!(
            queue.keep_committing(),
            "3 arrived meanwhile: another round"
        );
        assert_eq!(queue.take(), vec![3]);
        assert!(
            !queue.keep_committing(),
            "nothing left: the role is handed back"
        );
        assert!(queue.push(4), "the next push starts a committer again");
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _role = queue.role();
            panic!("a committer fails");
        }));
        assert!(panicked.is_err());
        assert!(queue.push(5), "after a panic, too");
    }

    #[test]
    fn concurrent_pushes_are_all_committed_by_exactly_one_committer_at_a_time() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        let queue = Arc::new(GroupQueue::default());
        let committed = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let committer = |queue: Arc<GroupQueue<u32>>,
                         committed: Arc<AtomicUsize>,
                         active: Arc<AtomicUsize>| loop {
            assert_eq!(active.fetch_add(1, SeqCst), 0, "two committers at once");
            committed.fetch_add(queue.take().len(), SeqCst);
            active.fetch_sub(1, SeqCst);
            if !queue.keep_committing() {
                return;
            }
        };
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (queue, committed, active) = (queue.clone(), committed.clone(), active.clone());
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        if queue.push(i) {
                            committer(queue.clone(), committed.clone(), active.clone());
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(committed.load(SeqCst), 8_000, "nothing left behind");
    }
}
