//! Cancels and deadlines: a waiting job cancelled at once, a running one asked to stop; jobs
//! whose deadline passed expire.

use super::*;

impl SqliteStore {
    pub(crate) async fn cancel(
        &self,
        id: JobId,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(Job, Option<Event>)> {
        let actor = actor.to_owned();
        self.write(move |tx| {
            let job = load_job(tx, id)?;
            if job.state == JobState::Running {
                exec(tx, "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 WHERE id = ?1", params![id.to_string(), ms(now)])
                    .map_err(to_store)?;
                let event = if job.cancel_requested {
                    None
                } else {
                    let reason = rules::cancel_request_reason(&actor);
                    Some(insert_event(tx, id, now, Some(job.state), job.state, &reason, &actor, rules::claimed_step(&job))?)
                };
                return Ok((load_job(tx, id)?, event));
            }
            let to = job.state.transition(JobState::Cancelled)?;
            let reason = rules::cancel_reason(&actor);
            exec(tx,
                "UPDATE jobs SET state = ?2, finish_reason = ?3, finished_at = ?4, next_attempt_at = NULL, updated_at = ?4 WHERE id = ?1",
                params![id.to_string(), to.as_str(), reason, ms(now)],
            )
            .map_err(to_store)?;
            let event = insert_event(tx, id, now, Some(job.state), to, &reason, &actor, rules::claimed_step(&job))?;
            Ok((load_job(tx, id)?, Some(event)))
        })
        .await
    }
}

impl SqliteStore {
    pub(crate) async fn expire(&self, now: DateTime<Utc>) -> Result<Vec<(Job, Event)>> {
        self.write(move |tx| {
            let due: Vec<Job> = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_deadline WHERE state IN ('pending', 'retrying') AND deadline IS NOT NULL AND deadline <= ?1"
                    ))
                    .map_err(to_store)?;
                let rows = stmt.query_map([ms(now)], job_from_row).map_err(to_store)?;
                rows.collect::<rusqlite::Result<_>>().map_err(to_store)?
            };
            let mut expired = Vec::with_capacity(due.len());
            for job in due {
                let to = job.state.transition(JobState::Expired)?;
                let reason = rules::expire_reason(&job, now);
                exec(tx,
                    "UPDATE jobs SET state = ?2, finish_reason = ?3, finished_at = ?4, next_attempt_at = NULL, updated_at = ?4 WHERE id = ?1",
                    params![job.id.to_string(), to.as_str(), reason, ms(now)],
                )
                .map_err(to_store)?;
                let event = insert_event(tx, job.id, now, Some(job.state), to, &reason, rules::SCHEDULER, rules::claimed_step(&job))?;
                expired.push((load_job(tx, job.id)?, event));
            }
            Ok(expired)
        })
        .await
    }
}
