//! New jobs: a batch stored in one transaction, idempotency keys answered with the job they
//! already name.

use super::*;
use retryd_core::policy::Policy;
use retryd_store::rows::{stored_job, submitted_event};

impl SqliteStore {
    pub(crate) async fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Inserted>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // Without a savepoint: a key taken is answered, not refused, so nothing is checked
        // after the first write (a savepoint copied every page the batch changed).
        self.write_checked(move |tx| {
            let mut stored = Vec::with_capacity(jobs.len());
            let mut events = Vec::with_capacity(jobs.len());
            // Prepared once for the batch, not looked up in the statement cache per job.
            let mut key_holder = tx
                .prepare_cached(
                    "SELECT id FROM jobs WHERE org = ?1 AND queue = ?2 AND idempotency_key = ?3",
                )
                .map_err(to_store)?;
            let mut insert_job = tx
                .prepare_cached(include_str!("../queries/insert/jobs.sql"))
                .map_err(to_store)?;
            // A run of jobs under one policy (the usual batch) encodes it once.
            let mut policy: Option<(&Policy, String)> = None;
            for job in &jobs {
                // A key taken by a stored job, or by an earlier job of this batch (the same
                // transaction sees it), is answered with that job.
                if let Some(key) = &job.idempotency_key {
                    let existing: Option<String> = key_holder
                        .query_row(params![job.org, job.queue, key], |r| r.get(0))
                        .optional()
                        .map_err(to_store)?;
                    if let Some(existing) = existing {
                        stored.push(load_job(tx, existing.parse().map_err(Error::Corrupt)?)?);
                        continue;
                    }
                }
                if policy.as_ref().is_none_or(|(p, _)| *p != &job.policy) {
                    policy = Some((&job.policy, json(&job.policy)));
                }
                let policy_json = policy.as_ref().map(|(_, text)| text.as_str());
                insert_job
                    .execute(params![
                        job.id.to_string(),
                        job.queue,
                        job.kind,
                        job.target,
                        json(&job.action),
                        job.policy_name,
                        policy_json,
                        job.priority,
                        ms(job.run_at),
                        opt_ms(job.deadline),
                        json(&job.labels),
                        job.idempotency_key,
                        job.created_by,
                        ms(job.created_at),
                        job.org,
                    ])
                    .map_err(to_store)?;
                let mut event = submitted_event(job, 0, stored_instant);
                event.id = write_event(tx, &event)?;
                events.push(event);
                // Stored as milliseconds.
                stored.push(stored_job(job, stored_instant));
            }
            rules::answer_inserts(&jobs, stored, events)
        })
        .await
    }
}
