//! Recurring jobs: definitions, the leader's lease and each fire's advance.

use super::*;

pub(crate) const SCHEDULE_COLUMNS: &str = "id, name, definition, paused, next_fire, last_fire, last_job_id, last_skip, \
     created_at, created_by, updated_at, org";

pub(crate) fn schedule_from_row(row: &Row) -> Result<Schedule> {
    Ok(Schedule {
        id: row.get(0),
        name: row.get(1),
        definition: json_col(row, 2)?,
        paused: row.get(3),
        next_fire: row.get(4),
        last_fire: row.get(5),
        last_job_id: row.get::<_, Option<uuid::Uuid>>(6).map(JobId),
        last_skip: row.get(7),
        created_at: row.get(8),
        created_by: row.get(9),
        updated_at: row.get(10),
        org: row.get(11),
    })
}

/// Runs one schedule write and tells every node's scheduler (delivered at commit).
pub(crate) async fn schedule_write(
    store: &PostgresStore,
    name: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(pg)?;
    let changed = tx
        .cached_execute(sql, params)
        .await
        .map_err(|e| match e.code() {
            Some(&SqlState::UNIQUE_VIOLATION) => {
                Error::Conflict(format!("a schedule named '{name}' already exists"))
            }
            _ => pg(e),
        })?;
    notify(&tx, SCHEDULES_CHANNEL, name).await?;
    tx.commit().await.map_err(pg)?;
    Ok(changed)
}

#[async_trait]
impl ScheduleStore for PostgresStore {
    async fn insert_schedule(&self, s: &Schedule) -> Result<()> {
        schedule_write(
            self,
            &s.name,
            &format!("INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"),
            &[
                &s.id,
                &s.name,
                &to_json(&s.definition),
                &s.paused,
                &s.next_fire,
                &s.last_fire,
                &s.last_job_id.map(|j| j.0),
                &s.last_skip,
                &s.created_at,
                &s.created_by,
                &s.updated_at,
                &s.org,
            ],
        )
        .await
        .map(drop)
    }

    async fn update_schedule(&self, s: &Schedule) -> Result<bool> {
        schedule_write(
            self,
            &s.name,
            "UPDATE schedules SET definition = $2, paused = $3, next_fire = $4, updated_at = $5 WHERE id = $1",
            &[&s.id, &to_json(&s.definition), &s.paused, &s.next_fire, &s.updated_at],
        )
        .await
        .map(|n| n == 1)
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        schedule_write(self, id, "DELETE FROM schedules WHERE id = $1", &[&id])
            .await
            .map(|n| n == 1)
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY org, name"),
                &[],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn lead_schedules(
        &self,
        node: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let client = self.client().await?;
        let led = client
            .cached_query_opt(
                "INSERT INTO schedule_leader (id, node, until) VALUES (1, $1, $3) \
                 ON CONFLICT (id) DO UPDATE SET node = $1, until = $3 \
                 WHERE schedule_leader.node = $1 OR schedule_leader.until < $2 RETURNING node",
                &[&node, &now, &until],
            )
            .await
            .map_err(pg)?;
        Ok(led.is_some())
    }

    async fn advance_schedule(
        &self,
        id: &str,
        expected: Option<DateTime<Utc>>,
        p: &Progress,
    ) -> Result<bool> {
        let client = self.client().await?;
        let changed = client
            .cached_execute(
                "UPDATE schedules SET next_fire = $3, last_fire = COALESCE($4, last_fire), \
                 last_job_id = COALESCE($5, last_job_id), last_skip = COALESCE($6, last_skip), updated_at = $7 \
                 WHERE id = $1 AND next_fire IS NOT DISTINCT FROM $2",
                &[&id, &expected, &p.next_fire, &p.last_fire, &p.last_job_id.map(|j| j.0), &p.last_skip, &p.updated_at],
            )
            .await
            .map_err(pg)?;
        Ok(changed == 1)
    }
}
