//! The schema: `migrations/`, applied in order at start, one node at a time.

use super::*;

pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_queues.sql")),
    (4, include_str!("../migrations/0004_access_and_stats.sql")),
    (5, include_str!("../migrations/0005_pipelines.sql")),
    (
        6,
        include_str!("../migrations/0006_limits_notifications.sql"),
    ),
    (7, include_str!("../migrations/0007_list_indexes.sql")),
    (8, include_str!("../migrations/0008_fillfactor.sql")),
    (9, include_str!("../migrations/0009_event_stream_order.sql")),
    (11, include_str!("../migrations/0011_process_host.sql")),
    (12, include_str!("../migrations/0012_schedules.sql")),
    (13, include_str!("../migrations/0013_organizations.sql")),
    (14, include_str!("../migrations/0014_circuit_history.sql")),
    (15, include_str!("../migrations/0015_claim_floor.sql")),
    (
        16,
        include_str!("../migrations/0016_list_by_org_and_state.sql"),
    ),
    (
        17,
        include_str!("../migrations/0017_list_fields_finished_only.sql"),
    ),
    (
        18,
        include_str!("../migrations/0018_lighter_result_writes.sql"),
    ),
    (
        19,
        include_str!("../migrations/0019_labels_index_labelled_only.sql"),
    ),
    (
        20,
        include_str!("../migrations/0020_system_lines_on_attempts.sql"),
    ),
    (
        21,
        include_str!("../migrations/0021_shared_policy_snapshots.sql"),
    ),
];

pub(crate) async fn migrate(pool: &Pool) -> Result<()> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg)?;
    // Nodes starting together queue here; the first applies, the others find it done.
    tx.cached_execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS retryd_migrations (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        .await
        .map_err(pg)?;
    for (version, sql) in MIGRATIONS {
        let applied = tx
            .cached_query_opt(
                "SELECT 1 FROM retryd_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(pg)?
            .is_some();
        if !applied {
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.cached_execute(
                "INSERT INTO retryd_migrations (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg)?;
            info!(version, "applied migration");
        }
    }
    tx.commit().await.map_err(pg)
}
