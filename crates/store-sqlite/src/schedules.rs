//! Recurring jobs: definitions, the leader's lease and each fire's advance.

use super::*;

pub(crate) const SCHEDULE_COLUMNS: &str = "id, name, definition, paused, next_fire, last_fire, last_job_id, last_skip, \
     created_at, created_by, updated_at, org";

pub(crate) fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        id: row.get(0)?,
        name: row.get(1)?,
        definition: json_col(row, 2)?,
        paused: row.get(3)?,
        next_fire: row.get::<_, Option<i64>>(4)?.map(from_ms),
        last_fire: row.get::<_, Option<i64>>(5)?.map(from_ms),
        last_job_id: match row.get::<_, Option<String>>(6)? {
            Some(text) => Some(text.parse().map_err(|e: String| corrupt(6, e))?),
            None => None,
        },
        last_skip: row.get(7)?,
        created_at: from_ms(row.get(8)?),
        created_by: row.get(9)?,
        updated_at: from_ms(row.get(10)?),
        org: row.get(11)?,
    })
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn insert_schedule(&self, s: &Schedule) -> Result<()> {
        let s = s.clone();
        self.write(move |tx| {
            exec(
                tx,
                &format!("INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    s.id,
                    s.name,
                    json(&s.definition),
                    s.paused,
                    opt_ms(s.next_fire),
                    opt_ms(s.last_fire),
                    s.last_job_id.map(|j| j.to_string()),
                    s.last_skip,
                    ms(s.created_at),
                    s.created_by,
                    ms(s.updated_at),
                    s.org
                ],
            )
            .map_err(|e| unique_violation(e, &format!("a schedule named '{}'", s.name)))?;
            Ok(())
        })
        .await
    }

    async fn update_schedule(&self, s: &Schedule) -> Result<bool> {
        let s = s.clone();
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE schedules SET definition = ?2, paused = ?3, next_fire = ?4, updated_at = ?5 WHERE id = ?1",
                params![s.id, json(&s.definition), s.paused, opt_ms(s.next_fire), ms(s.updated_at)],
            )
            .map(|n| n == 1)
            .map_err(to_store)
        })
        .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            exec(tx, "DELETE FROM schedules WHERE id = ?1", [id])
                .map(|n| n == 1)
                .map_err(to_store)
        })
        .await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY org, name"
                ))
                .map_err(to_store)?;
            let rows = stmt.query_map([], schedule_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn lead_schedules(
        &self,
        node: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let node = node.to_owned();
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO schedule_leader (id, node, until) VALUES (1, ?1, ?3) \
                 ON CONFLICT (id) DO UPDATE SET node = ?1, until = ?3 \
                 WHERE schedule_leader.node = ?1 OR schedule_leader.until < ?2 RETURNING node",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![node, ms(now), ms(until)], |_| Ok(()))
                    .optional()
            })
            .map(|led| led.is_some())
            .map_err(to_store)
        })
        .await
    }

    async fn advance_schedule(
        &self,
        id: &str,
        expected: Option<DateTime<Utc>>,
        p: &Progress,
    ) -> Result<bool> {
        let (id, p) = (id.to_owned(), p.clone());
        self.write(move |tx| {
            exec(
                tx,
                "UPDATE schedules SET next_fire = ?3, last_fire = COALESCE(?4, last_fire), \
                 last_job_id = COALESCE(?5, last_job_id), last_skip = COALESCE(?6, last_skip), updated_at = ?7 \
                 WHERE id = ?1 AND next_fire IS ?2",
                params![
                    id,
                    opt_ms(expected),
                    opt_ms(p.next_fire),
                    opt_ms(p.last_fire),
                    p.last_job_id.map(|j| j.to_string()),
                    p.last_skip,
                    ms(p.updated_at)
                ],
            )
            .map(|n| n == 1)
            .map_err(to_store)
        })
        .await
    }
}
