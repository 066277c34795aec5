//! Requeues by hand: a finished job waits again (its attempt count kept or reset, its action or
//! policy perhaps changed); a retrying one is made due now.

use super::*;

impl PostgresStore {
    pub(crate) async fn requeue(
        &self,
        id: JobId,
        requeue: &Requeue,
    ) -> Result<(Job, Option<Event>)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let job = lock_job(&tx, id).await?;
        if let Err(refused) = rules::check_changes(&job, requeue) {
            tx.rollback().await.map_err(pg)?;
            return Err(refused);
        }
        if let Some(changes) = &requeue.changes {
            tx.cached_execute(
                "UPDATE jobs SET action = $2, policy_name = $3, policy = $4, deadline = $5 WHERE id = $1",
                &[
                    &id.0,
                    &to_json(&changes.action),
                    &changes.policy_name,
                    &to_json(&changes.policy),
                    &changes.deadline,
                ],
            )
            .await
            .map_err(pg)?;
        }
        if job.state == JobState::Retrying {
            tx.cached_execute(
                "UPDATE jobs SET next_attempt_at = $2, updated_at = $2 WHERE id = $1",
                &[&id.0, &requeue.now],
            )
            .await
            .map_err(pg)?;
            notify(&tx, WAKE_CHANNEL, "").await?;
            let job = load_job(&tx, id).await?;
            tx.commit().await.map_err(pg)?;
            self.floors.lower(&job);
            return Ok((job, None));
        }
        let to = match job.state.transition(JobState::Pending) {
            Ok(to) => to,
            Err(refused) => {
                tx.rollback().await.map_err(pg)?;
                return Err(refused.into());
            }
        };
        let attempt = if requeue.reset { 0 } else { job.attempt as i32 };
        tx.cached_execute(
            "UPDATE jobs SET state = $2, attempt = $3, next_attempt_at = $4, finish_reason = NULL, finished_at = NULL, \
             cancel_requested = false, updated_at = $4, started_at = CASE WHEN $5 THEN NULL ELSE started_at END, \
             step_attempt_base = CASE WHEN $5 THEN 0 ELSE step_attempt_base END WHERE id = $1",
            &[&id.0, &to.as_str(), &attempt, &requeue.now, &requeue.reset],
        )
        .await
        .map_err(pg)?;
        let reason = rules::requeue_reason(&job, requeue);
        let event = insert_event(
            &tx,
            id,
            requeue.now,
            Some(job.state),
            to,
            &reason,
            &requeue.actor,
            rules::claimed_step(&job),
        )
        .await?;
        notify(&tx, WAKE_CHANNEL, "").await?;
        let job = load_job(&tx, id).await?;
        tx.commit().await.map_err(pg)?;
        self.floors.lower(&job);
        Ok((job, Some(event)))
    }
}
