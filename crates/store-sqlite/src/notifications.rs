//! Notification deliveries: queued with a job's transition, claimed, retried, given up.

use super::*;

pub(crate) fn enqueue(
    tx: &Connection,
    job: JobId,
    notification: &NewNotification,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        "INSERT INTO notifications (job_id, event, sink, payload, state, attempts, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5, ?5)",
        params![job.to_string(), notification.event, notification.sink, json(&notification.payload), ms(now)],
    )
    .map_err(to_store)?;
    Ok(())
}

pub(crate) const NOTIFICATION_COLUMNS: &str = "id, job_id, event, sink, payload, state, attempts, next_attempt_at, last_error, created_at, updated_at";

pub(crate) fn notification_from_row(row: &Row<'_>) -> rusqlite::Result<Notification> {
    let state: String = row.get(5)?;
    Ok(Notification {
        id: row.get(0)?,
        job_id: id_col(row, 1)?,
        event: row.get(2)?,
        sink: row.get(3)?,
        payload: json_col(row, 4)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt(5, format!("delivery state {state}")))?,
        attempts: row.get(6)?,
        next_attempt_at: row.get::<_, Option<i64>>(7)?.map(from_ms),
        last_error: row.get(8)?,
        created_at: from_ms(row.get(9)?),
        updated_at: from_ms(row.get(10)?),
        log: Vec::new(),
    })
}

pub(crate) fn load_notification(conn: &Connection, id: i64) -> Result<Notification> {
    let mut notification = conn
        .query_row(
            &format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?1"),
            [id],
            notification_from_row,
        )
        .map_err(to_store)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT number, node, started_at, finished_at, ok, status, error FROM notification_attempts \
             WHERE notification_id = ?1 ORDER BY id",
        )
        .map_err(to_store)?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(DeliveryAttempt {
                number: r.get(0)?,
                node: r.get(1)?,
                started_at: from_ms(r.get(2)?),
                finished_at: r.get::<_, Option<i64>>(3)?.map(from_ms),
                ok: r.get(4)?,
                status: r.get(5)?,
                error: r.get(6)?,
            })
        })
        .map_err(to_store)?;
    notification.log = rows.collect::<rusqlite::Result<_>>().map_err(to_store)?;
    Ok(notification)
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn claim_deliveries(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<ClaimedDelivery>> {
        let node = node.to_owned();
        self.write(move |tx| {
            let ids: Vec<i64> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id FROM notifications WHERE (state = 'pending' AND next_attempt_at <= ?1) \
                         OR (state = 'delivering' AND lease_expires_at < ?1) ORDER BY next_attempt_at, id LIMIT ?2",
                    )
                    .map_err(to_store)?;
                let rows = stmt.query_map(params![ms(now), limit as i64], |r| r.get(0)).map_err(to_store)?;
                rows.collect::<rusqlite::Result<_>>().map_err(to_store)?
            };
            let mut claimed = Vec::with_capacity(ids.len());
            for id in ids {
                tx.execute(
                    "UPDATE notifications SET state = 'delivering', attempts = attempts + 1, lease_owner = ?2, \
                     lease_expires_at = ?3, next_attempt_at = NULL, updated_at = ?4 WHERE id = ?1",
                    params![id, node, ms(lease_until), ms(now)],
                )
                .map_err(to_store)?;
                let notification = load_notification(tx, id)?;
                tx.execute(
                    "INSERT INTO notification_attempts (notification_id, number, node, started_at) VALUES (?1, ?2, ?3, ?4)",
                    params![id, notification.attempts, node, ms(now)],
                )
                .map_err(to_store)?;
                claimed.push(ClaimedDelivery {
                    attempt_id: tx.last_insert_rowid(),
                    number: notification.attempts,
                    notification,
                });
            }
            Ok(claimed)
        })
        .await
    }

    async fn finish_delivery(&self, result: &DeliveryResult) -> Result<()> {
        let result = result.clone();
        self.write(move |tx| {
            let holds: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM notifications WHERE id = ?1 AND state = 'delivering' AND lease_owner = ?2 \
                     AND (SELECT MAX(id) FROM notification_attempts WHERE notification_id = ?1) = ?3)",
                    params![result.notification_id, result.node, result.attempt_id],
                    |r| r.get(0),
                )
                .map_err(to_store)?;
            if !holds {
                return Err(lost_delivery(result.notification_id));
            }
            let now = ms(result.now);
            tx.execute(
                "UPDATE notification_attempts SET finished_at = ?2, ok = ?3, status = ?4, error = ?5 WHERE id = ?1",
                params![result.attempt_id, now, result.ok, result.status, result.error],
            )
            .map_err(to_store)?;
            let next_at = match &result.next {
                retryd_store::DeliveryNext::Retry { at } => Some(ms(*at)),
                _ => None,
            };
            tx.execute(
                "UPDATE notifications SET state = ?2, next_attempt_at = ?3, lease_owner = NULL, lease_expires_at = NULL, \
                 last_error = COALESCE(?4, last_error), updated_at = ?5 WHERE id = ?1",
                params![result.notification_id, result.next.state().as_str(), next_at, result.error, now],
            )
            .map_err(to_store)?;
            Ok(())
        })
        .await
    }

    async fn list_notifications(
        &self,
        job: Option<JobId>,
        org: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let ids: Vec<i64> = {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT id FROM notifications WHERE (?1 IS NULL OR job_id = ?1) \
                         AND (?3 IS NULL OR job_id IN (SELECT id FROM jobs WHERE org = ?3)) ORDER BY id DESC LIMIT ?2",
                    )
                    .map_err(to_store)?;
                let rows = stmt
                    .query_map(params![job.map(|j| j.to_string()), limit as i64, org], |r| r.get(0))
                    .map_err(to_store)?;
                rows.collect::<rusqlite::Result<_>>().map_err(to_store)?
            };
            ids.into_iter().map(|id| load_notification(conn, id)).collect()
        })
        .await
    }

    async fn next_delivery(&self) -> Result<Option<DateTime<Utc>>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT MIN(t) FROM (SELECT MIN(next_attempt_at) AS t FROM notifications WHERE state = 'pending' \
                 UNION ALL SELECT MIN(lease_expires_at) FROM notifications WHERE state = 'delivering')",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map(|t| t.map(from_ms))
            .map_err(to_store)
        })
        .await
    }
}
