//! Reads: jobs, their attempts, events and output, counts and wake-up times.

use super::*;

/// The job listing with only the lines that apply (see the query file): `given` lists the
/// parameters that have a value, `finished` whether the slice's state is a final one. The
/// lines are the file's own: no input reaches the SQL.
pub(crate) fn list_query(given: &[usize], finished: bool) -> String {
    let applies = |condition: &str| match condition {
        "finished" => finished,
        _ => match condition.strip_prefix('!') {
            Some(negated) => !given.iter().any(|n| format!("?{n}") == negated),
            None => given.iter().any(|n| format!("?{n}") == condition),
        },
    };
    let query = include_str!("../queries/read/list_jobs.sql")
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .filter(|line| match line.split_once(" -- ") {
            Some((_, conditions)) => conditions.split_whitespace().all(applies),
            None => true,
        })
        .collect::<Vec<_>>()
        .join("\n");
    with_columns(&query)
}

/// One page of `filter`'s jobs, in its order: with a label, one walk of that label's jobs;
/// else one walk per (organization, state) slice, each through the list index of its filter
/// and stopping at the page's size, merged into the page (as on PostgreSQL).
fn list_page(
    conn: &Connection,
    filter: &JobFilter,
    cursor: Option<JobId>,
    limit: usize,
) -> Result<Vec<Job>> {
    let query = |given: &[usize], finished| filter.in_order(&list_query(given, finished));
    if filter.label.is_some() {
        let states = (!filter.states.is_empty())
            .then(|| json(&filter.states.iter().map(|s| s.as_str()).collect::<Vec<_>>()));
        let given = given_parameters(
            filter,
            cursor,
            [states.is_some(), false, filter.org.is_some()],
        );
        let slice = Slice {
            states,
            state: None,
            org: filter.org.as_deref(),
        };
        return list_slice(conn, &query(&given, false), filter, cursor, limit, slice);
    }
    let orgs: Vec<String> = match &filter.org {
        Some(org) => vec![org.clone()],
        None => conn
            .prepare_cached("SELECT name FROM organizations")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .map_err(to_store)?,
    };
    let states = if filter.states.is_empty() {
        JobState::ALL.to_vec()
    } else {
        filter.states.clone()
    };
    // Every slice binds one state and one organization: two statements serve them all.
    let given = given_parameters(filter, cursor, [false, true, true]);
    let (waiting, finished) = (query(&given, false), query(&given, true));
    let mut jobs = Vec::new();
    for org in &orgs {
        for &state in &states {
            let sql = if state.is_terminal() {
                &finished
            } else {
                &waiting
            };
            let slice = Slice {
                states: None,
                state: Some(state),
                org: Some(org),
            };
            jobs.extend(list_slice(conn, sql, filter, cursor, limit, slice)?);
        }
    }
    jobs.sort_unstable_by_key(|job| job.id);
    if !filter.oldest_first {
        jobs.reverse();
    }
    jobs.truncate(limit + 1);
    Ok(jobs)
}

/// Which jobs one walk of the list reads besides `filter`'s fields: of the given states (a
/// JSON list), or of one state, in one organization or all.
struct Slice<'a> {
    states: Option<String>,
    state: Option<JobState>,
    org: Option<&'a str>,
}

/// The numbers of the list query's parameters that have a value (see the query file);
/// `slice` says whether the states (?1), the state (?10) and the organization (?11) do.
fn given_parameters(filter: &JobFilter, cursor: Option<JobId>, slice: [bool; 3]) -> Vec<usize> {
    let [states, state, org] = slice;
    [
        (1, states),
        (2, filter.queue.is_some()),
        (3, filter.kind.is_some()),
        (4, filter.target.is_some()),
        (5, filter.label.is_some()),
        (7, filter.created_after.is_some()),
        (8, filter.created_before.is_some()),
        (9, cursor.is_some()),
        (10, state),
        (11, org),
        (12, filter.text.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect()
}

/// Up to `limit + 1` jobs of `filter` in its order within `slice`, read by `sql` (the list
/// query with the lines for the parameters given).
fn list_slice(
    conn: &Connection,
    sql: &str,
    filter: &JobFilter,
    cursor: Option<JobId>,
    limit: usize,
    slice: Slice<'_>,
) -> Result<Vec<Job>> {
    let (label_key, label_value) = filter.label.clone().unzip();
    let mut stmt = conn.prepare_cached(sql).map_err(to_store)?;
    let rows = stmt
        .query_map(
            params![
                slice.states,
                filter.queue,
                filter.kind,
                filter.target,
                label_key,
                label_value,
                opt_ms(filter.created_after),
                opt_ms(filter.created_before),
                cursor.map(|c| c.to_string()),
                slice.state.map(JobState::as_str),
                slice.org,
                filter.text.as_deref().map(str::to_lowercase),
                (limit + 1) as i64,
            ],
            job_from_row,
        )
        .map_err(to_store)?;
    rows.collect::<rusqlite::Result<_>>().map_err(to_store)
}

#[async_trait]
impl JobReader for SqliteStore {
    async fn get_job(&self, id: JobId) -> Result<Job> {
        self.read(move |conn| load_job(conn, id)).await
    }

    async fn list_jobs(
        &self,
        filter: &JobFilter,
        cursor: Option<JobId>,
        limit: usize,
    ) -> Result<Page> {
        let filter = filter.clone();
        self.read(move |conn| {
            Ok(Page::of_one_more(
                list_page(conn, &filter, cursor, limit)?,
                limit,
            ))
        })
        .await
    }

    async fn list_attempts(&self, id: JobId) -> Result<Vec<Attempt>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT job_id, number, step, node, started_at, finished_at, outcome, exit_code, error, class, rule, \
                     next_delay_ms, delay_reason, output_dropped_bytes FROM attempts WHERE job_id = ?1 ORDER BY id",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map([id.to_string()], |row| {
                    let outcome: Option<String> = row.get(6)?;
                    Ok(Attempt {
                        job_id: id_col(row, 0)?,
                        number: row.get(1)?,
                        step: row.get(2)?,
                        node: row.get(3)?,
                        started_at: from_ms(row.get(4)?),
                        finished_at: row.get::<_, Option<i64>>(5)?.map(from_ms),
                        outcome: outcome
                            .map(|o| AttemptOutcome::parse(&o).ok_or_else(|| corrupt(6, format!("outcome {o}"))))
                            .transpose()?,
                        exit_code: row.get(7)?,
                        error: row.get(8)?,
                        class: class_col(row, 9)?,
                        rule: row.get(10)?,
                        next_delay_ms: row.get::<_, Option<i64>>(11)?.map(|v| v.max(0) as u64),
                        delay_reason: row.get(12)?,
                        output_dropped_bytes: row.get::<_, i64>(13)?.max(0) as u64,
                    })
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn list_events(&self, id: JobId) -> Result<Vec<Event>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, job_id, at, from_state, to_state, reason, actor, step FROM events WHERE job_id = ?1 ORDER BY id")
                .map_err(to_store)?;
            let rows = stmt.query_map([id.to_string()], event_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, job_id, at, from_state, to_state, reason, actor, step FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")
                .map_err(to_store)?;
            let rows = stmt.query_map(params![after, limit as i64], event_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn last_event_id(&self) -> Result<i64> {
        self.read(|conn| {
            conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
                .map_err(to_store)
        })
        .await
    }

    async fn read_log(&self, id: JobId, after: i64, limit: usize) -> Result<Vec<LogLine>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(include_str!("../queries/logs/read.sql"))
                .map_err(to_store)?;
            let rows = stmt
                .query_map(
                    params![id.to_string(), after, limit as i64],
                    log_line_from_row,
                )
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn read_log_tail(
        &self,
        id: JobId,
        limit: usize,
        containing: Option<&str>,
        attempt: Option<u32>,
    ) -> Result<Vec<LogLine>> {
        let containing = containing.map(str::to_lowercase);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(include_str!("../queries/logs/tail.sql"))
                .map_err(to_store)?;
            let rows = stmt
                .query_map(
                    params![id.to_string(), limit as i64, containing, attempt],
                    log_line_from_row,
                )
                .map_err(to_store)?;
            let mut lines = rows
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(to_store)?;
            lines.reverse();
            Ok(lines)
        })
        .await
    }

    async fn count_ahead(&self, job: &Job, now: DateTime<Utc>) -> Result<u64> {
        let (queue, priority, id) = (job.queue.clone(), job.priority, job.id.to_string());
        let (org, due) = (
            job.org.clone(),
            ms(job.next_attempt_at.unwrap_or(job.run_at)),
        );
        self.read(move |conn| {
            conn.query_row(
                include_str!("../queries/read/count_ahead.sql"),
                params![queue, ms(now), priority, due, id, org],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(to_store)
        })
        .await
    }

    async fn count_running(&self, org: &str) -> Result<u64> {
        let org = org.to_owned();
        self.read(move |conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM jobs INDEXED BY jobs_lease WHERE state = 'running' AND org = ?1")
                .and_then(|mut stmt| stmt.query_row([org], |r| r.get::<_, i64>(0)))
                .map(|n| n as u64)
                .map_err(to_store)
        })
        .await
    }

    async fn paused_queues(&self, org: &str) -> Result<Vec<String>> {
        let org = org.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name FROM queues WHERE org = ?1 AND paused = 1 ORDER BY name",
                )
                .map_err(to_store)?;
            let rows = stmt.query_map([org], |r| r.get(0)).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn queue_depths(&self, org: Option<&str>) -> Result<BTreeMap<String, u64>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT queue, COUNT(*) FROM jobs WHERE state IN ('pending', 'retrying') AND (?1 IS NULL OR org = ?1) GROUP BY queue")
                .map_err(to_store)?;
            let rows = stmt.query_map([org], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn count_by_state(&self, org: Option<&str>) -> Result<BTreeMap<JobState, u64>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT state, COUNT(*) FROM jobs WHERE ?1 IS NULL OR org = ?1 GROUP BY state",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map([org], |r| {
                    Ok((state_col(r, 0)?, r.get::<_, i64>(1)? as u64))
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn expired_leases(&self, cutoff: DateTime<Utc>) -> Result<Vec<Job>> {
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs INDEXED BY jobs_lease WHERE state = 'running' AND lease_expires_at < ?1"))
                .map_err(to_store)?;
            let rows = stmt.query_map([ms(cutoff)], job_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn next_wakeup(&self, skipped: &[String], runnable: &Runnable) -> Result<Wakeups> {
        let skipped = json(&skipped);
        let kinds = json(&runnable.handler_kinds);
        let builtin = runnable.builtin;
        self.read(move |conn| {
            conn.query_row(
                include_str!("../queries/read/next_wakeup.sql"),
                params![skipped, kinds, builtin],
                |r| {
                    let at = |i| r.get::<_, Option<i64>>(i).map(|t| t.map(from_ms));
                    Ok(Wakeups {
                        due: at(0)?,
                        deadline: at(1)?,
                        lease_expiry: at(2)?,
                    })
                },
            )
            .map_err(to_store)
        })
        .await
    }

    async fn list_circuits(&self, org: Option<&str>) -> Result<Vec<Circuit>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {CIRCUIT_COLUMNS} FROM circuits \
                     WHERE ?1 IS NULL OR target IN (SELECT target FROM jobs WHERE org = ?1 AND target IS NOT NULL) \
                     ORDER BY target"
                ))
                .map_err(to_store)?;
            let rows = stmt.query_map([org], circuit_from_row).map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn circuit_history(&self, org: Option<&str>, limit: usize) -> Result<Vec<CircuitOutage>> {
        let org = org.map(str::to_owned);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT target, opened_at, closed_at, failures, attempts, reopened, closed_by \
                     FROM circuit_history \
                     WHERE ?1 IS NULL OR target IN (SELECT target FROM jobs WHERE org = ?1 AND target IS NOT NULL) \
                     ORDER BY opened_at DESC, id DESC LIMIT ?2",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map(params![org, limit as i64], |r| {
                    Ok(CircuitOutage {
                        target: r.get(0)?,
                        opened_at: from_ms(r.get(1)?),
                        closed_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
                        failures: r.get(3)?,
                        attempts: r.get(4)?,
                        reopened: r.get(5)?,
                        closed_by: r.get(6)?,
                    })
                })
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn held_by_circuits(&self, org: &str) -> Result<BTreeMap<String, u64>> {
        let org = org.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT target, COUNT(*) FROM jobs WHERE org = ?1 AND state IN ('pending', 'retrying') \
                     AND target IS NOT NULL AND substr(hold_reason, 1, length(?2)) = ?2 GROUP BY target",
                )
                .map_err(to_store)?;
            let rows = stmt
                .query_map(params![org, rules::CIRCUIT_HOLD], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
                .map_err(to_store)?;
            rows.collect::<rusqlite::Result<_>>().map_err(to_store)
        })
        .await
    }

    async fn attempt_process(&self, attempt_id: i64) -> Result<Option<Process>> {
        self.read(move |conn| {
            let row: Option<(Option<u32>, Option<i64>, Option<String>)> = conn
                .query_row(
                    "SELECT pid, pid_started, pid_host FROM attempts WHERE id = ?1",
                    [attempt_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(to_store)?;
            Ok(match row {
                Some((Some(pid), Some(started), host)) => Some(Process {
                    pid,
                    started: started as u64,
                    host,
                }),
                _ => None,
            })
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(to_store))
            .await
    }

    async fn stats_rows(&self, query: &StatsQuery) -> Result<StatsRows> {
        let query = query.clone();
        self.read(move |conn| stats_rows(conn, &query).map_err(to_store))
            .await
    }
}
