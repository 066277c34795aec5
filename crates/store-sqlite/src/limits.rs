//! Per-target and per-organization limits: retry budgets, concurrency and rate usage, and
//! circuits with their history.

use super::*;

/// The retry budgets of the organizations with a retry among the candidates.
pub(crate) fn read_org_budgets(
    tx: &Connection,
    candidates: &[Job],
    now: DateTime<Utc>,
) -> Result<HashMap<String, rules::OrgBudget>> {
    let orgs = rules::retrying_orgs(candidates);
    if orgs.is_empty() {
        return Ok(HashMap::new());
    }
    // Only organizations with a budget are counted: most have none, and their retries must
    // not pay for a read of the window's attempts.
    let budgeted: Vec<String> = tx
        .prepare_cached(
            "SELECT name FROM organizations WHERE retry_budget IS NOT NULL \
             AND name IN (SELECT value FROM json_each(?1))",
        )
        .and_then(|mut stmt| {
            stmt.query_map([json(&orgs)], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(to_store)?;
    if budgeted.is_empty() {
        return Ok(HashMap::new());
    }
    let orgs = budgeted;
    let since = now
        - chrono::Duration::from_std(retryd_store::limits::ORG_BUDGET_WINDOW).unwrap_or_default();
    let mut stmt = tx
        .prepare_cached(include_str!("../queries/claim/org_budgets.sql"))
        .map_err(to_store)?;
    let rows = stmt
        .query_map(params![json(&orgs), ms(since)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                rules::OrgBudget {
                    cap: r.get(1)?,
                    used: TargetUsage {
                        retries: r.get(2)?,
                        oldest: r.get::<_, Option<i64>>(3)?.map(from_ms),
                    },
                },
            ))
        })
        .map_err(to_store)?;
    rows.collect::<rusqlite::Result<_>>().map_err(to_store)
}

/// The circuits and budget usage of the candidates' targets, as far as the limits need them.
pub(crate) fn read_limits(
    tx: &Connection,
    candidates: &[Job],
    limits: &TargetLimits,
    now: DateTime<Utc>,
) -> Result<(HashMap<String, Circuit>, HashMap<String, TargetUsage>)> {
    let targets = rules::targets_of(candidates);
    let (mut circuits, mut usage) = (HashMap::new(), HashMap::new());
    if targets.is_empty() || limits.is_empty() {
        return Ok((circuits, usage));
    }
    let targets = json(&targets);
    if limits.circuit.is_some() {
        let mut stmt = tx
            .prepare_cached(&format!("SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target IN (SELECT value FROM json_each(?1))"))
            .map_err(to_store)?;
        let rows = stmt
            .query_map([&targets], circuit_from_row)
            .map_err(to_store)?;
        for circuit in rows {
            let circuit = circuit.map_err(to_store)?;
            circuits.insert(circuit.target.clone(), circuit);
        }
    }
    if let Some(budget) = &limits.budget {
        let since = now - chrono::Duration::from_std(budget.window).unwrap_or_default();
        let mut stmt = tx
            .prepare_cached(
                "SELECT target, COUNT(*), MIN(started_at) FROM attempts \
                 WHERE target IN (SELECT value FROM json_each(?1)) AND number > 1 AND started_at > ?2 GROUP BY target",
            )
            .map_err(to_store)?;
        let rows = stmt
            .query_map(params![targets, ms(since)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    TargetUsage {
                        retries: r.get(1)?,
                        oldest: r.get::<_, Option<i64>>(2)?.map(from_ms),
                    },
                ))
            })
            .map_err(to_store)?;
        for row in rows {
            let (target, used) = row.map_err(to_store)?;
            usage.insert(target, used);
        }
    }
    Ok((circuits, usage))
}

pub(crate) const CIRCUIT_COLUMNS: &str =
    "target, opened_at, open_until, probe_attempt_id, failures, attempts";

pub(crate) fn circuit_from_row(row: &Row<'_>) -> rusqlite::Result<Circuit> {
    Ok(Circuit {
        target: row.get(0)?,
        opened_at: from_ms(row.get(1)?),
        open_until: from_ms(row.get(2)?),
        probe_attempt_id: row.get(3)?,
        failures: row.get(4)?,
        attempts: row.get(5)?,
    })
}

/// Deletes a target's circuit and ends its outage (`closed_by` says how); the jobs it held
/// may start at once. Whether there was one.
pub(crate) fn close_circuit_rows(
    tx: &Connection,
    target: &str,
    closed_by: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let closed = tx
        .execute("DELETE FROM circuits WHERE target = ?1", [target])
        .map_err(to_store)?;
    tx.execute(
        "UPDATE circuit_history SET closed_at = ?2, closed_by = ?3 WHERE target = ?1 AND closed_at IS NULL",
        params![target, ms(now), closed_by],
    )
    .map_err(to_store)?;
    tx.execute(
        "DELETE FROM circuit_history WHERE closed_at < ?1",
        [ms(now - retryd_store::OUTAGE_RETENTION)],
    )
    .map_err(to_store)?;
    tx.execute(
        "UPDATE jobs SET next_attempt_at = ?2, hold_reason = NULL, updated_at = ?2 \
         WHERE target = ?1 AND state IN ('pending', 'retrying') AND substr(hold_reason, 1, length(?3)) = ?3",
        params![target, ms(now), rules::CIRCUIT_HOLD],
    )
    .map_err(to_store)?;
    Ok(closed == 1)
}

/// Counts a finished attempt towards its target's circuit.
pub(crate) fn update_circuit(
    tx: &Connection,
    target: &str,
    attempt_id: i64,
    failed: Option<bool>,
    config: &CircuitConfig,
    now: DateTime<Utc>,
) -> Result<()> {
    let circuit = tx
        .query_row(
            &format!("SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target = ?1"),
            [target],
            circuit_from_row,
        )
        .optional()
        .map_err(to_store)?;
    let window = if failed == Some(true) {
        let since = now - chrono::Duration::from_std(config.window).unwrap_or_default();
        tx.query_row(
            "SELECT COUNT(*), COALESCE(SUM(target_failed), 0) FROM attempts \
             WHERE target = ?1 AND target_failed IS NOT NULL AND started_at > ?2",
            params![target, ms(since)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(to_store)?
    } else {
        (0, 0)
    };
    match rules::circuit_after(circuit.as_ref(), attempt_id, failed, window, config, now) {
        CircuitChange::Keep => {}
        CircuitChange::Open {
            until,
            failures,
            attempts,
        } => {
            tx.execute(
                "INSERT INTO circuits (target, opened_at, open_until, probe_attempt_id, failures, attempts) \
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5) ON CONFLICT (target) DO UPDATE SET \
                 opened_at = ?2, open_until = ?3, probe_attempt_id = NULL, failures = ?4, attempts = ?5",
                params![target, ms(now), ms(until), failures, attempts],
            )
            .map_err(to_store)?;
            // A failed probe continues the outage; otherwise one begins.
            if circuit.is_some() {
                tx.execute(
                    "UPDATE circuit_history SET reopened = reopened + 1 WHERE target = ?1 AND closed_at IS NULL",
                    [target],
                )
            } else {
                tx.execute(
                    "INSERT INTO circuit_history (target, opened_at, failures, attempts) VALUES (?1, ?2, ?3, ?4)",
                    params![target, ms(now), failures, attempts],
                )
            }
            .map_err(to_store)?;
        }
        CircuitChange::Close => {
            close_circuit_rows(tx, target, &retryd_store::closed_by(None), now)?;
        }
        CircuitChange::FreeProbe => {
            tx.execute(
                "UPDATE circuits SET probe_attempt_id = NULL WHERE target = ?1",
                [target],
            )
            .map_err(to_store)?;
        }
    }
    Ok(())
}
