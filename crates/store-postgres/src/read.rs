//! Reads: jobs, their attempts, events and output, counts and wake-up times.

use super::*;

#[async_trait]
impl JobReader for PostgresStore {
    async fn get_job(&self, id: JobId) -> Result<Job> {
        load_job(&self.client().await?, id).await
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<Page> {
        let client = self.client().await?;
        let states: Vec<&str> = if filter.states.is_empty() {
            JobState::ALL.iter().map(|s| s.as_str()).collect()
        } else {
            filter.states.iter().map(|s| s.as_str()).collect()
        };
        let (label_key, label_value) = filter.label.clone().unzip();
        let jobs = select_jobs(
            &client,
            &filter.in_order(&with_columns(
                &include_str!("../queries/read/list_jobs.sql").replace(
                    "{SLICE_FILTERS}",
                    include_str!("../queries/read/list_filters.sql"),
                ),
            )),
            &[
                &states,
                &filter.queue,
                &filter.kind,
                &filter.target,
                &label_key,
                &label_value,
                &filter.created_after,
                &filter.created_before,
                &cursor.map(|c| c.0),
                &((limit + 1) as i64),
                &filter.org,
                &filter.text.as_deref().map(str::to_lowercase),
            ],
        )
        .await?;
        Ok(Page::of_one_more(jobs, limit))
    }

    async fn list_attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT job_id, number, step, node, started_at, finished_at, outcome, exit_code, error, class, rule, \
                 next_delay_ms, delay_reason, output_dropped_bytes FROM attempts WHERE job_id = $1 ORDER BY id",
                &[&id.0],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                let get = |e: tokio_postgres::Error| corrupt(e);
                let outcome: Option<String> = row.try_get(6).map_err(get)?;
                Ok(Attempt {
                    job_id: JobId(row.try_get(0).map_err(get)?),
                    number: row.try_get::<_, i32>(1).map_err(get)? as u32,
                    step: row.try_get(2).map_err(get)?,
                    node: row.try_get(3).map_err(get)?,
                    started_at: row.try_get(4).map_err(get)?,
                    finished_at: row.try_get(5).map_err(get)?,
                    outcome: outcome
                        .map(|o| {
                            AttemptOutcome::parse(&o).ok_or_else(|| corrupt(format!("outcome {o}")))
                        })
                        .transpose()?,
                    exit_code: row.try_get(7).map_err(get)?,
                    error: row.try_get(8).map_err(get)?,
                    class: class(row.try_get(9).map_err(get)?)?,
                    rule: row.try_get(10).map_err(get)?,
                    next_delay_ms: row
                        .try_get::<_, Option<i64>>(11)
                        .map_err(get)?
                        .map(|v| v.max(0) as u64),
                    delay_reason: row.try_get(12).map_err(get)?,
                    output_dropped_bytes: row.try_get::<_, i64>(13).map_err(get)?.max(0) as u64,
                })
            })
            .collect()
    }

    async fn list_events(&self, id: JobId) -> Result<Vec<Event>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE job_id = $1 ORDER BY id"),
                &[&id.0],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(event_from_row).collect()
    }

    /// Stream order here is (writing transaction, id), not id: ids are drawn before commit,
    /// so a later id can commit first. Only the events of transactions older than the
    /// snapshot's xmin are delivered; those are final, so nothing is ever skipped (see
    /// migration 0009). The cursor event's own position is looked up; if it was pruned, the
    /// stream goes on from the oldest transaction among the events after it.
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events \
                     WHERE (xid, id) > (COALESCE((SELECT xid FROM events WHERE id = $1), \
                                                 (SELECT min(xid) FROM events WHERE id > $1), '0'), $1) \
                       AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY xid, id LIMIT $2"
                ),
                &[&after, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_event_id(&self) -> Result<i64> {
        let client = self.client().await?;
        Ok(client
            .cached_query_opt(
                "SELECT id FROM events WHERE xid < pg_snapshot_xmin(pg_current_snapshot()) \
                 ORDER BY xid DESC, id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(pg)?
            .map_or(0, |row| row.get(0)))
    }

    async fn read_log(&self, id: JobId, after: i64, limit: usize) -> Result<Vec<LogLine>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                include_str!("../queries/logs/read.sql"),
                &[&id.0, &after, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        rows.iter().map(log_line_from_row).collect()
    }

    async fn read_log_tail(
        &self,
        id: JobId,
        limit: usize,
        containing: Option<&str>,
        attempt: Option<u32>,
    ) -> Result<Vec<LogLine>> {
        let client = self.client().await?;
        let containing = containing.map(str::to_lowercase);
        let attempt = attempt.map(|n| n as i32);
        let rows = client
            .cached_query(
                include_str!("../queries/logs/tail.sql"),
                &[&id.0, &(limit as i64), &containing, &attempt],
            )
            .await
            .map_err(pg)?;
        let mut lines = rows
            .iter()
            .map(log_line_from_row)
            .collect::<Result<Vec<_>>>()?;
        lines.reverse();
        Ok(lines)
    }

    async fn count_ahead(&self, job: &Job, now: DateTime<Utc>) -> Result<u64> {
        let client = self.client().await?;
        let due = job.next_attempt_at.unwrap_or(job.run_at);
        let row = client
            .cached_query_one(
                include_str!("../queries/read/count_ahead.sql"),
                &[
                    &job.queue,
                    &now,
                    &i32::from(job.priority),
                    &due,
                    &job.id.0,
                    &job.org,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn count_running(&self, org: &str) -> Result<u64> {
        let client = self.client().await?;
        let row = client
            .cached_query_one(
                "SELECT COUNT(*) FROM jobs WHERE state = 'running' AND org = $1",
                &[&org],
            )
            .await
            .map_err(pg)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn paused_queues(&self, org: &str) -> Result<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT name FROM queues WHERE org = $1 AND paused ORDER BY name",
                &[&org],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn queue_depths(&self, org: Option<&str>) -> Result<BTreeMap<String, u64>> {
        let client = self.client().await?;
        let rows = client
            .cached_query("SELECT queue, COUNT(*) FROM jobs WHERE state IN ('pending', 'retrying') AND ($1::text IS NULL OR org = $1) GROUP BY queue", &[&org])
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn count_by_state(&self, org: Option<&str>) -> Result<BTreeMap<JobState, u64>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT state, COUNT(*) FROM jobs WHERE $1::text IS NULL OR org = $1 GROUP BY state",
                &[&org],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|r| Ok((state(r.get(0))?, r.get::<_, i64>(1) as u64)))
            .collect()
    }

    async fn expired_leases(&self, cutoff: DateTime<Utc>) -> Result<Vec<Job>> {
        let client = self.scheduler_client().await?;
        select_jobs(
            &client,
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_expires_at < $1"
            ),
            &[&cutoff],
        )
        .await
    }

    async fn list_circuits(&self, org: Option<&str>) -> Result<Vec<Circuit>> {
        let client = self.client().await?;
        client
            .cached_query(
                &format!(
                    "SELECT {CIRCUIT_COLUMNS} FROM circuits \
                     WHERE $1::text IS NULL OR target IN (SELECT target FROM jobs WHERE org = $1 AND target IS NOT NULL) \
                     ORDER BY target"
                ),
                &[&org],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(circuit_from_row)
            .collect()
    }

    async fn circuit_history(&self, org: Option<&str>, limit: usize) -> Result<Vec<CircuitOutage>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT target, opened_at, closed_at, failures, attempts, reopened, closed_by \
                 FROM circuit_history \
                 WHERE $1::text IS NULL OR target IN (SELECT target FROM jobs WHERE org = $1 AND target IS NOT NULL) \
                 ORDER BY opened_at DESC, id DESC LIMIT $2",
                &[&org, &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| CircuitOutage {
                target: r.get(0),
                opened_at: r.get(1),
                closed_at: r.get(2),
                failures: r.get::<_, i32>(3) as u32,
                attempts: r.get::<_, i32>(4) as u32,
                reopened: r.get::<_, i32>(5) as u32,
                closed_by: r.get(6),
            })
            .collect())
    }

    async fn held_by_circuits(&self, org: &str) -> Result<BTreeMap<String, u64>> {
        let client = self.client().await?;
        let rows = client
            .cached_query(
                "SELECT target, COUNT(*) FROM jobs WHERE org = $1 AND state IN ('pending', 'retrying') \
                 AND target IS NOT NULL AND starts_with(hold_reason, $2) GROUP BY target",
                &[&org, &rules::CIRCUIT_HOLD],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn attempt_process(&self, attempt_id: i64) -> Result<Option<Process>> {
        let client = self.client().await?;
        let row = client
            .cached_query_opt(
                "SELECT pid, pid_started, pid_host FROM attempts WHERE id = $1",
                &[&attempt_id],
            )
            .await
            .map_err(pg)?;
        Ok(row.and_then(
            |r| match (r.get::<_, Option<i64>>(0), r.get::<_, Option<i64>>(1)) {
                (Some(pid), Some(started)) => Some(Process {
                    pid: pid as u32,
                    started: started as u64,
                    host: r.get(2),
                }),
                _ => None,
            },
        ))
    }

    async fn next_wakeup(&self, skipped: &[String], runnable: &Runnable) -> Result<Wakeups> {
        let client = self.scheduler_client().await?;
        let row = client
            .cached_query_one(
                include_str!("../queries/read/next_wakeup.sql"),
                &[&skipped, &runnable.handler_kinds, &runnable.builtin],
            )
            .await
            .map_err(pg)?;
        Ok(Wakeups {
            due: row.get(0),
            deadline: row.get(1),
            lease_expiry: row.get(2),
        })
    }

    async fn ping(&self) -> Result<()> {
        let client = self.client().await?;
        client.cached_query_one("SELECT 1", &[]).await.map_err(pg)?;
        Ok(())
    }

    async fn stats_rows(&self, query: &StatsQuery) -> Result<StatsRows> {
        stats_rows(&self.client().await?, query).await
    }
}
