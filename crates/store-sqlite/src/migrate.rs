//! The schema: `migrations/`, applied in order at start.

use super::*;

pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_attempt_process.sql")),
    (3, include_str!("../migrations/0003_queues.sql")),
    (4, include_str!("../migrations/0004_access_and_stats.sql")),
    (5, include_str!("../migrations/0005_pipelines.sql")),
    (
        6,
        include_str!("../migrations/0006_limits_notifications.sql"),
    ),
    (7, include_str!("../migrations/0007_list_indexes.sql")),
    (9, include_str!("../migrations/0009_process_host.sql")),
    (10, include_str!("../migrations/0010_schedules.sql")),
    (11, include_str!("../migrations/0011_organizations.sql")),
    (12, include_str!("../migrations/0012_circuit_history.sql")),
    (
        13,
        include_str!("../migrations/0013_list_by_org_and_state.sql"),
    ),
    (
        14,
        include_str!("../migrations/0014_finished_predicate_without_in.sql"),
    ),
    (
        15,
        include_str!("../migrations/0015_system_lines_on_attempts.sql"),
    ),
];

pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Exclusive)
        .map_err(backend)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .map_err(backend)?;
    for (version, sql) in MIGRATIONS {
        let applied: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if !applied {
            tx.execute_batch(sql).map_err(backend)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, ms(Utc::now())],
            )
            .map_err(backend)?;
        }
    }
    tx.commit().map_err(backend)
}
