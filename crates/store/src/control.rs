//! The changes clients make (the API, the embedded library): each is a store call, and what
//! a running engine must act on travels as a [`Notice`] through the store's [`Signals`](crate::Signals).
//! So nothing that changes a job needs the engine: a cancel reaches the node running the
//! attempt the same way whether that node is this process or another.

use crate::policies::{Policies, PolicyBook};
use crate::sealing::SecretKeys;
use crate::{Error, Inserted, JobChanges, Notice, Requeue, Result, Store};
use chrono::{DateTime, Utc};
use retryd_core::job::{Job, NewJob};
use retryd_core::{Action, Clock, JobId};
use std::sync::Arc;

/// A handle for clients: cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    policies: Arc<PolicyBook>,
    /// Seal secret values before they are stored; `None` stores them as given.
    keys: Option<Arc<SecretKeys>>,
}

impl Control {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        policies: Arc<PolicyBook>,
        keys: Option<Arc<SecretKeys>>,
    ) -> Self {
        Control {
            store,
            clock,
            policies,
            keys,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// An organization's policies as of now (built-in, configured and its API-managed ones).
    pub fn policies(&self, org: &str) -> Arc<Policies> {
        self.policies.of(org)
    }

    /// After a managed policy changed: re-read them here, and tell the engines.
    pub async fn policies_changed(&self) -> Result<()> {
        self.policies.reload(self.store.as_ref()).await?;
        self.store.signals().notice(Notice::Policies);
        Ok(())
    }

    pub async fn submit(&self, job: NewJob) -> Result<Inserted> {
        let mut inserted = self.submit_many(vec![job]).await?;
        inserted
            .pop()
            .ok_or_else(|| Error::Corrupt("an insert answered nothing".into()))
    }

    /// Submits a batch in one transaction (see [`crate::JobWriter::insert_jobs`]).
    pub async fn submit_many(&self, mut jobs: Vec<NewJob>) -> Result<Vec<Inserted>> {
        for job in &mut jobs {
            self.seal_action(&mut job.action)?;
        }
        let inserted = self.store.insert_jobs(jobs).await?;
        let signals = self.store.signals();
        let mut created = false;
        for event in inserted.iter().filter_map(|i| i.event.clone()) {
            signals.publish(event);
            created = true;
        }
        if created {
            signals.notice(Notice::Wake);
        }
        Ok(inserted)
    }

    /// Cancels a job: at once when waiting; when running, its node stops the attempt.
    pub async fn cancel(&self, id: JobId, actor: &str) -> Result<Job> {
        let (job, event) = self.store.cancel_job(id, actor, self.now()).await?;
        let signals = self.store.signals();
        if let Some(event) = event {
            signals.publish(event);
        }
        if job.cancel_requested {
            signals.notice(Notice::Cancel(id));
        }
        Ok(job)
    }

    /// Requeues a finished job, or makes a retrying one due now; `changes` edits its action
    /// or policy first (recorded in its events).
    pub async fn requeue(
        &self,
        id: JobId,
        reset: bool,
        changes: Option<JobChanges>,
        actor: &str,
    ) -> Result<Job> {
        let mut changes = changes;
        if let Some(changes) = &mut changes {
            self.seal_action(&mut changes.action)?;
        }
        let requeue = Requeue {
            reset,
            actor: actor.to_owned(),
            now: self.now(),
            changes,
        };
        let (job, event) = self.store.requeue_job(id, &requeue).await?;
        let signals = self.store.signals();
        if let Some(event) = event {
            signals.publish(event);
        }
        signals.notice(Notice::Wake);
        Ok(job)
    }

    /// Pauses or resumes an organization's queue: its running attempts finish, nothing new
    /// is claimed.
    pub async fn set_queue_paused(
        &self,
        org: &str,
        queue: &str,
        paused: bool,
        actor: &str,
    ) -> Result<()> {
        self.store
            .set_queue_paused(org, queue, paused, actor, self.now())
            .await?;
        self.store.signals().notice(Notice::Queues);
        Ok(())
    }

    /// Closes a target's circuit by hand: the jobs it held start at once, here and on the
    /// other nodes; its outage says that `actor` closed it. Whether it was open or half-open.
    pub async fn close_circuit(&self, target: &str, actor: &str) -> Result<bool> {
        let closed = self.store.close_circuit(target, actor, self.now()).await?;
        self.store.signals().notice(Notice::Wake);
        Ok(closed)
    }

    /// After a schedule was created, changed, paused, resumed or deleted: the schedulers of
    /// this process look again (other nodes learn it from the store).
    pub fn schedules_changed(&self) {
        self.store.signals().notice(Notice::Schedules);
    }

    /// Seals an action's secret values for storage elsewhere than a job (a schedule's
    /// template); sealing a sealed value leaves it as it is.
    pub fn seal_action(&self, action: &mut Action) -> Result<()> {
        match &self.keys {
            Some(keys) => keys.seal(action).map_err(Error::Corrupt),
            None => Ok(()),
        }
    }
}
