//! Per-target and per-organization limits: the advisory locks that make nodes count alike,
//! retry budgets, concurrency and rate usage, and circuits with their history.

use super::*;

/// Takes the advisory locks of the given targets until the transaction ends, in one order so
/// that two transactions cannot wait for each other.
pub(crate) async fn lock_targets(client: &impl GenericClient, targets: &[&str]) -> Result<()> {
    lock_names(client, TARGET_LOCK_CLASS, targets).await
}

/// Takes the transaction's advisory locks of `class` on `names`, in hash order (so that two
/// transactions never wait on each other crosswise).
pub(crate) async fn lock_names(
    client: &impl GenericClient,
    class: i32,
    names: &[&str],
) -> Result<()> {
    client
        .cached_execute(
            "SELECT pg_advisory_xact_lock($1, h) FROM (SELECT hashtext(t) AS h FROM unnest($2::text[]) AS t ORDER BY 1) AS s",
            &[&class, &names],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

/// The retry budgets of the organizations with a retry among the candidates, read under
/// their locks.
pub(crate) async fn read_org_budgets(
    client: &impl GenericClient,
    candidates: &[Job],
    now: DateTime<Utc>,
) -> Result<HashMap<String, rules::OrgBudget>> {
    let orgs = rules::retrying_orgs(candidates);
    if orgs.is_empty() {
        return Ok(HashMap::new());
    }
    // Only organizations with a budget are locked and counted: most have none, and their
    // retries must not wait for either (each claim with a retry paid tens of milliseconds).
    let budgeted: Vec<String> = client
        .cached_query(
            "SELECT name FROM organizations WHERE retry_budget IS NOT NULL AND name = ANY($1)",
            &[&orgs],
        )
        .await
        .map_err(pg)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if budgeted.is_empty() {
        return Ok(HashMap::new());
    }
    let orgs: Vec<&str> = budgeted.iter().map(String::as_str).collect();
    lock_names(client, ORG_LOCK_CLASS, &orgs).await?;
    let since = now
        - chrono::Duration::from_std(retryd_store::limits::ORG_BUDGET_WINDOW).unwrap_or_default();
    let rows = client
        .cached_query(
            include_str!("../queries/claim/org_budgets.sql"),
            &[&orgs, &since],
        )
        .await
        .map_err(pg)?;
    rows.iter()
        .map(|row| {
            let cap: i32 = row.get(1);
            Ok((
                row.get(0),
                rules::OrgBudget {
                    cap: u32::try_from(cap).map_err(corrupt)?,
                    used: TargetUsage {
                        retries: row.get::<_, i64>(2) as u32,
                        oldest: row.get(3),
                    },
                },
            ))
        })
        .collect()
}

/// The circuits and budget usage of the candidates' targets, as far as the limits need them,
/// read under the targets' locks so that two nodes never both take the last slot.
pub(crate) async fn read_limits(
    client: &impl GenericClient,
    candidates: &[Job],
    limits: &TargetLimits,
    now: DateTime<Utc>,
) -> Result<(HashMap<String, Circuit>, HashMap<String, TargetUsage>)> {
    let targets = rules::targets_of(candidates);
    let (mut circuits, mut usage) = (HashMap::new(), HashMap::new());
    if targets.is_empty() || limits.is_empty() {
        return Ok((circuits, usage));
    }
    lock_targets(client, &targets).await?;
    if limits.circuit.is_some() {
        for row in client
            .cached_query(
                &format!("SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target = ANY($1)"),
                &[&targets],
            )
            .await
            .map_err(pg)?
        {
            let circuit = circuit_from_row(&row)?;
            circuits.insert(circuit.target.clone(), circuit);
        }
    }
    if let Some(budget) = &limits.budget {
        let since = now - chrono::Duration::from_std(budget.window).unwrap_or_default();
        for row in client
            .cached_query(
                "SELECT target, COUNT(*), MIN(started_at) FROM attempts \
                 WHERE target = ANY($1) AND number > 1 AND started_at > $2 GROUP BY target",
                &[&targets, &since],
            )
            .await
            .map_err(pg)?
        {
            usage.insert(
                row.get(0),
                TargetUsage {
                    retries: row.get::<_, i64>(1) as u32,
                    oldest: row.get(2),
                },
            );
        }
    }
    Ok((circuits, usage))
}

pub(crate) const CIRCUIT_COLUMNS: &str =
    "target, opened_at, open_until, probe_attempt_id, failures, attempts";

pub(crate) fn circuit_from_row(row: &Row) -> Result<Circuit> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    Ok(Circuit {
        target: row.try_get(0).map_err(get)?,
        opened_at: row.try_get(1).map_err(get)?,
        open_until: row.try_get(2).map_err(get)?,
        probe_attempt_id: row.try_get(3).map_err(get)?,
        failures: row.try_get::<_, i32>(4).map_err(get)? as u32,
        attempts: row.try_get::<_, i32>(5).map_err(get)? as u32,
    })
}

/// Deletes a target's circuit and ends its outage (`closed_by` says how); the jobs it held
/// may start at once. Whether there was one.
pub(crate) async fn close_circuit_rows(
    client: &impl GenericClient,
    target: &str,
    closed_by: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let closed = client
        .cached_execute("DELETE FROM circuits WHERE target = $1", &[&target])
        .await
        .map_err(pg)?;
    client
        .cached_execute(
            "UPDATE circuit_history SET closed_at = $2, closed_by = $3 WHERE target = $1 AND closed_at IS NULL",
            &[&target, &now, &closed_by],
        )
        .await
        .map_err(pg)?;
    client
        .cached_execute(
            "DELETE FROM circuit_history WHERE closed_at < $1",
            &[&(now - retryd_store::OUTAGE_RETENTION)],
        )
        .await
        .map_err(pg)?;
    // SKIP LOCKED: a job a claim holds right now is being looked at anyway, and waiting for it
    // could deadlock with that claim.
    client
        .cached_execute(
            "UPDATE jobs SET next_attempt_at = $2, hold_reason = NULL, updated_at = $2 WHERE id IN \
             (SELECT id FROM jobs WHERE target = $1 AND state IN ('pending', 'retrying') \
              AND starts_with(hold_reason, $3) FOR UPDATE SKIP LOCKED)",
            &[&target, &now, &rules::CIRCUIT_HOLD],
        )
        .await
        .map_err(pg)?;
    Ok(closed == 1)
}

/// Counts a finished attempt towards its target's circuit (under the target's lock).
/// Returns true when the circuit closed, which makes the jobs it held due now.
pub(crate) async fn update_circuit(
    client: &impl GenericClient,
    target: &str,
    attempt_id: i64,
    failed: Option<bool>,
    config: &CircuitConfig,
    now: DateTime<Utc>,
) -> Result<bool> {
    let circuit = client
        .cached_query_opt(
            &format!("SELECT {CIRCUIT_COLUMNS} FROM circuits WHERE target = $1"),
            &[&target],
        )
        .await
        .map_err(pg)?
        .map(|row| circuit_from_row(&row))
        .transpose()?;
    let window = if failed == Some(true) {
        let since = now - chrono::Duration::from_std(config.window).unwrap_or_default();
        let row = client
            .cached_query_one(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE target_failed) FROM attempts \
                 WHERE target = $1 AND target_failed IS NOT NULL AND started_at > $2",
                &[&target, &since],
            )
            .await
            .map_err(pg)?;
        (row.get::<_, i64>(0) as u32, row.get::<_, i64>(1) as u32)
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
            client
                .cached_execute(
                    "INSERT INTO circuits (target, opened_at, open_until, probe_attempt_id, failures, attempts) \
                     VALUES ($1, $2, $3, NULL, $4, $5) ON CONFLICT (target) DO UPDATE SET \
                     opened_at = $2, open_until = $3, probe_attempt_id = NULL, failures = $4, attempts = $5",
                    &[&target, &now, &until, &(failures as i32), &(attempts as i32)],
                )
                .await
                .map_err(pg)?;
            // A failed probe continues the outage; otherwise one begins.
            if circuit.is_some() {
                client
                    .cached_execute(
                        "UPDATE circuit_history SET reopened = reopened + 1 WHERE target = $1 AND closed_at IS NULL",
                        &[&target],
                    )
                    .await
            } else {
                client
                    .cached_execute(
                        "INSERT INTO circuit_history (target, opened_at, failures, attempts) VALUES ($1, $2, $3, $4)",
                        &[&target, &now, &(failures as i32), &(attempts as i32)],
                    )
                    .await
            }
            .map_err(pg)?;
        }
        CircuitChange::Close => {
            close_circuit_rows(client, target, &retryd_store::closed_by(None), now).await?;
            return Ok(true);
        }
        CircuitChange::FreeProbe => {
            client
                .cached_execute(
                    "UPDATE circuits SET probe_attempt_id = NULL WHERE target = $1",
                    &[&target],
                )
                .await
                .map_err(pg)?;
        }
    }
    Ok(false)
}
