//! Cancels and deadlines: a waiting job cancelled at once, a running one asked to stop; jobs
//! whose deadline passed expire.

use super::*;

impl PostgresStore {
    pub(crate) async fn cancel(
        &self,
        id: JobId,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(Job, Option<Event>)> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let job = lock_job(&tx, id).await?;
        if job.state == JobState::Running {
            tx.cached_execute(
                "UPDATE jobs SET cancel_requested = true, updated_at = $2 WHERE id = $1",
                &[&id.0, &now],
            )
            .await
            .map_err(pg)?;
            notify(&tx, CANCEL_CHANNEL, &id.to_string()).await?;
            let event = if job.cancel_requested {
                None
            } else {
                let reason = rules::cancel_request_reason(actor);
                let step = rules::claimed_step(&job);
                Some(
                    insert_event(
                        &tx,
                        id,
                        now,
                        Some(job.state),
                        job.state,
                        &reason,
                        actor,
                        step,
                    )
                    .await?,
                )
            };
            let job = load_job(&tx, id).await?;
            tx.commit().await.map_err(pg)?;
            return Ok((job, event));
        }
        let to = match job.state.transition(JobState::Cancelled) {
            Ok(to) => to,
            Err(refused) => {
                tx.rollback().await.map_err(pg)?;
                return Err(refused.into());
            }
        };
        let reason = rules::cancel_reason(actor);
        tx.cached_execute(
            "UPDATE jobs SET state = $2, finish_reason = $3, finished_at = $4, next_attempt_at = NULL, updated_at = $4 WHERE id = $1",
            &[&id.0, &to.as_str(), &reason, &now],
        )
        .await
        .map_err(pg)?;
        let event = insert_event(
            &tx,
            id,
            now,
            Some(job.state),
            to,
            &reason,
            actor,
            rules::claimed_step(&job),
        )
        .await?;
        let job = load_job(&tx, id).await?;
        tx.commit().await.map_err(pg)?;
        Ok((job, Some(event)))
    }
}

impl PostgresStore {
    pub(crate) async fn expire(&self, now: DateTime<Utc>) -> Result<Vec<(Job, Event)>> {
        let mut client = self.scheduler_client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // One node sweeps at a time; another finds the lock taken and leaves it to that one
        // (whose sweep this is), and takes over on its next tick if that node dies.
        let locked: bool = tx
            .cached_query_one("SELECT pg_try_advisory_xact_lock($1)", &[&EXPIRE_LOCK])
            .await
            .map_err(pg)?
            .get(0);
        if !locked {
            tx.commit().await.map_err(pg)?;
            return Ok(Vec::new());
        }
        let due = select_jobs(
            &tx,
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('pending', 'retrying') AND deadline IS NOT NULL AND deadline <= $1 \
                 FOR UPDATE SKIP LOCKED"
            ),
            &[&now],
        )
        .await?;
        let mut expired = Vec::with_capacity(due.len());
        for job in due {
            let to = job.state.transition(JobState::Expired)?;
            let reason = rules::expire_reason(&job, now);
            tx.cached_execute(
                "UPDATE jobs SET state = $2, finish_reason = $3, finished_at = $4, next_attempt_at = NULL, updated_at = $4 WHERE id = $1",
                &[&job.id.0, &to.as_str(), &reason, &now],
            )
            .await
            .map_err(pg)?;
            let event = insert_event(
                &tx,
                job.id,
                now,
                Some(job.state),
                to,
                &reason,
                rules::SCHEDULER,
                rules::claimed_step(&job),
            )
            .await?;
            expired.push((load_job(&tx, job.id).await?, event));
        }
        tx.commit().await.map_err(pg)?;
        Ok(expired)
    }
}
