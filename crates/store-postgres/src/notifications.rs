//! Notification deliveries: queued with a job's transition, claimed, retried, given up.

use super::*;

pub(crate) async fn enqueue(
    client: &impl GenericClient,
    job: JobId,
    notification: &NewNotification,
    now: DateTime<Utc>,
) -> Result<()> {
    client
        .cached_execute(
            "INSERT INTO notifications (job_id, event, sink, payload, state, attempts, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5, $5)",
            &[&job.0, &notification.event, &notification.sink, &notification.payload, &now],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

pub(crate) const NOTIFICATION_COLUMNS: &str = "id, job_id, event, sink, payload, state, attempts, next_attempt_at, last_error, created_at, updated_at";

pub(crate) fn notification_from_row(row: &Row) -> Result<Notification> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    let state: String = row.try_get(5).map_err(get)?;
    Ok(Notification {
        id: row.try_get(0).map_err(get)?,
        job_id: JobId(row.try_get(1).map_err(get)?),
        event: row.try_get(2).map_err(get)?,
        sink: row.try_get(3).map_err(get)?,
        payload: row.try_get(4).map_err(get)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt(format!("delivery state {state}")))?,
        attempts: row.try_get::<_, i32>(6).map_err(get)? as u32,
        next_attempt_at: row.try_get(7).map_err(get)?,
        last_error: row.try_get(8).map_err(get)?,
        created_at: row.try_get(9).map_err(get)?,
        updated_at: row.try_get(10).map_err(get)?,
        log: Vec::new(),
    })
}

#[async_trait]
impl NotificationStore for PostgresStore {
    async fn claim_deliveries(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let claimed: Vec<Notification> = tx
            .cached_query(
                &format!(
                    "WITH due AS (SELECT id FROM notifications \
                       WHERE (state = 'pending' AND next_attempt_at <= $1) OR (state = 'delivering' AND lease_expires_at < $1) \
                       ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     UPDATE notifications n SET state = 'delivering', attempts = n.attempts + 1, lease_owner = $3, \
                       lease_expires_at = $4, next_attempt_at = NULL, updated_at = $1 \
                     FROM due WHERE n.id = due.id RETURNING {}",
                    NOTIFICATION_COLUMNS
                        .split(", ")
                        .map(|c| format!("n.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                &[&now, &(limit as i64), &node, &lease_until],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(notification_from_row)
            .collect::<Result<_>>()?;
        let ids: Vec<i64> = claimed.iter().map(|n| n.id).collect();
        let numbers: Vec<i32> = claimed.iter().map(|n| n.attempts as i32).collect();
        let attempt_ids: HashMap<i64, i64> = tx
            .cached_query(
                "INSERT INTO notification_attempts (notification_id, number, node, started_at) \
                 SELECT id, number, $3, $4 FROM unnest($1::bigint[], $2::int[]) AS t(id, number) \
                 RETURNING notification_id, id",
                &[&ids, &numbers, &node, &now],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        tx.commit().await.map_err(pg)?;
        Ok(claimed
            .into_iter()
            .map(|notification| ClaimedDelivery {
                attempt_id: attempt_ids[&notification.id],
                number: notification.attempts,
                notification,
            })
            .collect())
    }

    async fn finish_delivery(&self, result: &DeliveryResult) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let holds = tx
            .cached_query_opt(
                "SELECT 1 FROM notifications WHERE id = $1 AND state = 'delivering' AND lease_owner = $2 \
                 AND (SELECT MAX(id) FROM notification_attempts WHERE notification_id = $1) = $3 FOR UPDATE",
                &[&result.notification_id, &result.node, &result.attempt_id],
            )
            .await
            .map_err(pg)?
            .is_some();
        if !holds {
            tx.rollback().await.map_err(pg)?;
            return Err(lost_delivery(result.notification_id));
        }
        tx.cached_execute(
            "UPDATE notification_attempts SET finished_at = $2, ok = $3, status = $4, error = $5 WHERE id = $1",
            &[&result.attempt_id, &result.now, &result.ok, &result.status, &result.error],
        )
        .await
        .map_err(pg)?;
        let next_at = match &result.next {
            DeliveryNext::Retry { at } => Some(*at),
            _ => None,
        };
        tx.cached_execute(
            "UPDATE notifications SET state = $2, next_attempt_at = $3, lease_owner = NULL, lease_expires_at = NULL, \
             last_error = COALESCE($4, last_error), updated_at = $5 WHERE id = $1",
            &[
                &result.notification_id,
                &result.next.state().as_str(),
                &next_at,
                &result.error,
                &result.now,
            ],
        )
        .await
        .map_err(pg)?;
        if next_at.is_some() {
            notify(&tx, WAKE_CHANNEL, "").await?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn list_notifications(
        &self,
        job: Option<JobId>,
        org: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let client = self.client().await?;
        let mut notifications: Vec<Notification> = client
            .cached_query(
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE ($1::uuid IS NULL OR job_id = $1) \
                     AND ($3::text IS NULL OR job_id IN (SELECT id FROM jobs WHERE org = $3)) \
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&job.map(|j| j.0), &(limit as i64), &org],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(notification_from_row)
            .collect::<Result<_>>()?;
        let ids: Vec<i64> = notifications.iter().map(|n| n.id).collect();
        let mut logs: HashMap<i64, Vec<DeliveryAttempt>> = HashMap::new();
        for r in client
            .cached_query(
                "SELECT notification_id, number, node, started_at, finished_at, ok, status, error \
                 FROM notification_attempts WHERE notification_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .map_err(pg)?
        {
            logs.entry(r.get(0)).or_default().push(DeliveryAttempt {
                number: r.get::<_, i32>(1) as u32,
                node: r.get(2),
                started_at: r.get(3),
                finished_at: r.get(4),
                ok: r.get(5),
                status: r.get(6),
                error: r.get(7),
            });
        }
        for n in &mut notifications {
            n.log = logs.remove(&n.id).unwrap_or_default();
        }
        Ok(notifications)
    }

    async fn next_delivery(&self) -> Result<Option<DateTime<Utc>>> {
        let client = self.client().await?;
        let row = client
            .cached_query_one(
                "SELECT LEAST((SELECT MIN(next_attempt_at) FROM notifications WHERE state = 'pending'), \
                 (SELECT MIN(lease_expires_at) FROM notifications WHERE state = 'delivering'))",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }
}
