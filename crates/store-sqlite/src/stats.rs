//! The stats page's rows, grouped in the database.

use super::*;

/// Reads the grouped rows behind stats; `?1`..`?6` are since, until, queue, kind, target, org.
pub(crate) fn stats_rows(conn: &Connection, query: &StatsQuery) -> rusqlite::Result<StatsRows> {
    const FILTER: &str = "(?3 IS NULL OR j.queue = ?3) AND (?4 IS NULL OR j.kind = ?4) AND (?5 IS NULL OR j.target = ?5) \
                          AND (?6 IS NULL OR j.org = ?6)";
    let window = params![
        ms(query.since),
        ms(query.until),
        query.queue,
        query.kind,
        query.target,
        query.org
    ];
    let mut rows = StatsRows::default();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT j.state, COUNT(*) FROM jobs j WHERE j.created_at >= ?1 AND j.created_at < ?2 AND {FILTER} GROUP BY j.state"
    ))?;
    rows.created = stmt
        .query_map(window, |r| {
            Ok((state_col(r, 0)?, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.pending_retries = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*) FROM jobs j WHERE j.state = 'retrying' AND ?1 <= ?2 AND {FILTER}"
        ))?
        .query_row(window, |r| r.get::<_, i64>(0))? as u64;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT j.kind, j.target, j.state, j.attempt <= 1, COUNT(*), SUM(j.attempt) FROM jobs j \
         WHERE j.state IN ('succeeded', 'failed', 'expired', 'cancelled') \
           AND j.finished_at >= ?1 AND j.finished_at < ?2 AND {FILTER} \
         GROUP BY j.kind, j.target, j.state, j.attempt <= 1"
    ))?;
    rows.finished = stmt
        .query_map(window, |r| {
            Ok(FinishedGroup {
                kind: r.get(0)?,
                target: r.get(1)?,
                state: state_col(r, 2)?,
                first_attempt: r.get(3)?,
                jobs: r.get::<_, i64>(4)? as u64,
                attempts: r.get::<_, i64>(5)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT a.class, a.error, COUNT(DISTINCT a.job_id), COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id \
         WHERE a.started_at >= ?1 AND a.started_at < ?2 AND {FILTER} \
           AND a.outcome IN ('failed', 'timed_out', 'lost') AND a.error IS NOT NULL \
         GROUP BY a.class, a.error ORDER BY 3 DESC, 4 DESC, a.error LIMIT {TOP_ERRORS}"
    ))?;
    rows.errors = stmt
        .query_map(window, |r| {
            Ok(ErrorGroup {
                class: class_col(r, 0)?,
                message: r.get(1)?,
                count: r.get::<_, i64>(2)? as u64,
                attempts: r.get::<_, i64>(3)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let bucket_ms = query.bucket.num_milliseconds().max(1);
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT (a.started_at - ?1) / ?7, COUNT(*), \
                SUM(CASE WHEN a.outcome IN ('failed', 'timed_out', 'lost') THEN 1 ELSE 0 END) \
         FROM attempts a JOIN jobs j ON j.id = a.job_id \
         WHERE a.started_at >= ?1 AND a.started_at < ?2 AND {FILTER} GROUP BY 1 ORDER BY 1"
    ))?;
    rows.series = stmt
        .query_map(
            params![
                ms(query.since),
                ms(query.until),
                query.queue,
                query.kind,
                query.target,
                query.org,
                bucket_ms
            ],
            |r| {
                Ok(Bucket {
                    start: from_ms(ms(query.since) + r.get::<_, i64>(0)? * bucket_ms),
                    attempts: r.get::<_, i64>(1)? as u64,
                    failures: r.get::<_, i64>(2)? as u64,
                })
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}
