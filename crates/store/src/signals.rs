//! What a process's parts tell each other as it happens: the API, the engine and the
//! backend's listener share one [`Signals`] per store.
//!
//! - notices say that something changed that a running engine must act on (new work, a
//!   cancel, a paused queue, a policy); a backend with other nodes (PostgreSQL) also feeds in
//!   what they did. This is how the API reaches a running attempt without knowing the engine.
//! - events are the state changes this process stored, for live streams to wake on;
//! - log wakes name the jobs whose output this process just stored, for log followers.
//!
//! Each is a broadcast: nobody listening is fine (the change is stored either way), and a
//! receiver that lags learns so and looks again.

use crate::Notice;
use retryd_core::JobId;
use retryd_core::job::Event;
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct Signals {
    notices: broadcast::Sender<Notice>,
    events: broadcast::Sender<Event>,
    logs: broadcast::Sender<JobId>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            notices: broadcast::channel(1024).0,
            events: broadcast::channel(4096).0,
            logs: broadcast::channel(1024).0,
        }
    }
}

impl Signals {
    pub fn notice(&self, notice: Notice) {
        let _ = self.notices.send(notice);
    }

    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    pub fn publish(&self, event: Event) {
        let _ = self.events.send(event);
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn log_written(&self, job: JobId) {
        let _ = self.logs.send(job);
    }

    pub fn logs(&self) -> broadcast::Receiver<JobId> {
        self.logs.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_receiver_hears_a_notice_and_nobody_listening_is_fine() {
        let signals = Signals::default();
        signals.notice(Notice::Wake);
        let (mut a, mut b) = (signals.notices(), signals.clone().notices());
        let id = JobId::new();
        signals.notice(Notice::Cancel(id));
        assert_eq!(a.recv().await.unwrap(), Notice::Cancel(id));
        assert_eq!(b.recv().await.unwrap(), Notice::Cancel(id));
    }
}
