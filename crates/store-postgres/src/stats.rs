//! The stats page's rows, grouped in the database.

use super::*;

/// Reads the grouped rows behind stats; `$1`..`$6` are since, until, queue, kind, target, org.
pub(crate) async fn stats_rows(
    client: &impl GenericClient,
    query: &StatsQuery,
) -> Result<StatsRows> {
    const FILTER: &str = "($3::text IS NULL OR j.queue = $3) AND ($4::text IS NULL OR j.kind = $4) AND ($5::text IS NULL OR j.target = $5) \
                          AND ($6::text IS NULL OR j.org = $6)";
    let window: [&(dyn ToSql + Sync); 6] = [
        &query.since,
        &query.until,
        &query.queue,
        &query.kind,
        &query.target,
        &query.org,
    ];
    let mut rows = StatsRows::default();
    for r in client
        .cached_query(
            &format!("SELECT j.state, COUNT(*) FROM jobs j WHERE j.created_at >= $1 AND j.created_at < $2 AND {FILTER} GROUP BY j.state"),
            &window,
        )
        .await
        .map_err(pg)?
    {
        rows.created.insert(state(r.get(0))?, r.get::<_, i64>(1) as u64);
    }
    rows.pending_retries = client
        .cached_query_one(
            &format!("SELECT COUNT(*) FROM jobs j WHERE j.state = 'retrying' AND $1::timestamptz <= $2::timestamptz AND {FILTER}"),
            &window,
        )
        .await
        .map_err(pg)?
        .get::<_, i64>(0) as u64;
    for r in client
        .cached_query(
            &format!(
                "SELECT j.kind, j.target, j.state, j.attempt <= 1, COUNT(*), SUM(j.attempt)::bigint FROM jobs j \
                 WHERE j.state IN ('succeeded', 'failed', 'expired', 'cancelled') \
                   AND j.finished_at >= $1 AND j.finished_at < $2 AND {FILTER} \
                 GROUP BY j.kind, j.target, j.state, j.attempt <= 1"
            ),
            &window,
        )
        .await
        .map_err(pg)?
    {
        rows.finished.push(FinishedGroup {
            kind: r.get(0),
            target: r.get(1),
            state: state(r.get(2))?,
            first_attempt: r.get(3),
            jobs: r.get::<_, i64>(4) as u64,
            attempts: r.get::<_, i64>(5) as u64,
        });
    }
    for r in client
        .cached_query(
            &format!(
                "SELECT a.class, a.error, COUNT(DISTINCT a.job_id), COUNT(*) FROM attempts a JOIN jobs j ON j.id = a.job_id \
                 WHERE a.started_at >= $1 AND a.started_at < $2 AND {FILTER} \
                   AND a.outcome IN ('failed', 'timed_out', 'lost') AND a.error IS NOT NULL \
                 GROUP BY a.class, a.error ORDER BY 3 DESC, 4 DESC, a.error LIMIT {TOP_ERRORS}"
            ),
            &window,
        )
        .await
        .map_err(pg)?
    {
        rows.errors.push(ErrorGroup {
            class: class(r.get(0))?,
            message: r.get(1),
            count: r.get::<_, i64>(2) as u64,
            attempts: r.get::<_, i64>(3) as u64,
        });
    }
    let bucket_ms = query.bucket.num_milliseconds().max(1);
    let series_params: [&(dyn ToSql + Sync); 7] = [
        &query.since,
        &query.until,
        &query.queue,
        &query.kind,
        &query.target,
        &query.org,
        &bucket_ms,
    ];
    for r in client
        .cached_query(
            &format!(
                "SELECT (floor(extract(epoch FROM a.started_at - $1) * 1000)::bigint / $7) AS b, COUNT(*), \
                        COUNT(*) FILTER (WHERE a.outcome IN ('failed', 'timed_out', 'lost')) \
                 FROM attempts a JOIN jobs j ON j.id = a.job_id \
                 WHERE a.started_at >= $1 AND a.started_at < $2 AND {FILTER} GROUP BY b ORDER BY b"
            ),
            &series_params,
        )
        .await
        .map_err(pg)?
    {
        rows.series.push(Bucket {
            start: query.since + chrono::Duration::milliseconds(r.get::<_, i64>(0) * bucket_ms),
            attempts: r.get::<_, i64>(1) as u64,
            failures: r.get::<_, i64>(2) as u64,
        });
    }
    Ok(rows)
}
