//! Requeues by hand: a finished job waits again (its attempt count kept or reset, its action or
//! policy perhaps changed); a retrying one is made due now.

use super::*;

impl SqliteStore {
    pub(crate) async fn requeue(
        &self,
        id: JobId,
        requeue: &Requeue,
    ) -> Result<(Job, Option<Event>)> {
        let requeue = requeue.clone();
        self.write(move |tx| {
            let job = load_job(tx, id)?;
            let now = ms(requeue.now);
            rules::check_changes(&job, &requeue)?;
            if let Some(changes) = &requeue.changes {
                exec(tx,
                    "UPDATE jobs SET action = ?2, policy_name = ?3, policy = ?4, deadline = ?5 WHERE id = ?1",
                    params![id.to_string(), json(&changes.action), changes.policy_name, json(&changes.policy), opt_ms(changes.deadline)],
                )
                .map_err(to_store)?;
            }
            if job.state == JobState::Retrying {
                exec(tx, "UPDATE jobs SET next_attempt_at = ?2, updated_at = ?2 WHERE id = ?1", params![id.to_string(), now])
                    .map_err(to_store)?;
                return Ok((load_job(tx, id)?, None));
            }
            let to = job.state.transition(JobState::Pending)?;
            let attempt = if requeue.reset { 0 } else { job.attempt };
            exec(tx,
                "UPDATE jobs SET state = ?2, attempt = ?3, next_attempt_at = ?4, finish_reason = NULL, finished_at = NULL, \
                 cancel_requested = 0, updated_at = ?4, started_at = CASE WHEN ?5 THEN NULL ELSE started_at END, \
                 step_attempt_base = CASE WHEN ?5 THEN 0 ELSE step_attempt_base END WHERE id = ?1",
                params![id.to_string(), to.as_str(), attempt, now, requeue.reset],
            )
            .map_err(to_store)?;
            let reason = rules::requeue_reason(&job, &requeue);
            let event = insert_event(tx, id, requeue.now, Some(job.state), to, &reason, &requeue.actor, rules::claimed_step(&job))?;
            Ok((load_job(tx, id)?, Some(event)))
        })
        .await
    }
}
