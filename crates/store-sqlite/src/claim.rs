//! Claims: the due jobs this node can run, shared between organizations, gated by circuits,
//! budgets and rate limits, opened as attempts under a lease, in one transaction.

use super::*;

impl SqliteStore {
    pub(crate) async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        let request = request.clone();
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        self.write_claim(move |tx| {
            let skipped = rules::skipped_queues(&request);
            let now = ms(request.now);
            let window = rules::candidate_window(&request);
            // Each organization's own candidates (what it has left under its running limit),
            // then shared out between them.
            let mut candidates: Vec<Job> = Vec::new();
            let mut orgs = tx.prepare_cached(include_str!("../queries/claim/orgs.sql")).map_err(to_store)?;
            let offers = orgs
                .query_map([window as i64], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(to_store)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(to_store)?;
            let mut stmt = tx.prepare_cached(&with_columns(include_str!("../queries/claim/candidates.sql"))).map_err(to_store)?;
            for (org, offer) in offers.into_iter().filter(|(_, offer)| *offer > 0) {
                let rows = stmt
                    .query_map(
                        params![
                            now,
                            json(&skipped),
                            offer,
                            json(&request.runnable.handler_kinds),
                            request.runnable.builtin,
                            ms(request.due_by),
                            org
                        ],
                        job_from_row,
                    )
                    .map_err(to_store)?;
                candidates.extend(rows.collect::<rusqlite::Result<Vec<_>>>().map_err(to_store)?);
            }
            let candidates = rules::fair_share(candidates);
            let budgets = read_org_budgets(tx, &candidates, request.now)?;
            let by_org = rules::gate_orgs(candidates, &budgets, request.now);
            let candidates = by_org.admitted;
            let (circuits, usage) = read_limits(tx, &candidates, &request.limits, request.now)?;
            let mut gated = rules::gate(candidates, &circuits, &usage, &request.limits, request.now);
            gated.held.extend(by_org.held);
            let chosen = rules::within_slots(gated.admitted, &request);
            let probes: HashMap<JobId, String> = rules::probe_targets(&chosen, &circuits, request.now).into_iter().collect();
            // Whatever a claim may refuse is checked before its first write: it runs without
            // a savepoint of its own (see `commit_in_one_transaction`).
            let rows = chosen.iter().map(|job| ClaimRow::of(job, &request)).collect::<Result<Vec<_>>>()?;
            for held in &gated.held {
                tx.execute(
                    "UPDATE jobs SET next_attempt_at = ?2, hold_reason = ?3, updated_at = ?4 WHERE id = ?1",
                    params![held.id.to_string(), ms(held.until), held.reason, now],
                )
                .map_err(to_store)?;
                if held.starts {
                    insert_event(tx, held.id, request.now, Some(held.state), held.state, &held.reason, &request.node, None)?;
                }
            }
            let mut claimed = Vec::with_capacity(rows.len());
            for (job, row) in chosen.into_iter().zip(rows) {
                let (number, start) = (row.number, ms(row.started_at));
                exec(tx,
                    "INSERT OR FAIL INTO attempts (job_id, number, step, node, started_at, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![job.id.to_string(), number, row.step, request.node, start, row.target],
                )
                .map_err(to_store)?;
                let attempt_id = tx.last_insert_rowid();
                if let Some(target) = probes.get(&job.id) {
                    tx.execute("UPDATE circuits SET probe_attempt_id = ?2 WHERE target = ?1", params![target, attempt_id])
                        .map_err(to_store)?;
                }
                exec(tx,
                    "UPDATE OR FAIL jobs SET state = 'running', attempt = ?2, lease_owner = ?3, lease_expires_at = ?4, \
                     current_attempt_id = ?5, next_attempt_at = NULL, hold_reason = NULL, started_at = COALESCE(started_at, ?7), updated_at = ?6 \
                     WHERE id = ?1",
                    params![job.id.to_string(), number, request.node, ms(request.lease_until), attempt_id, now, start],
                )
                .map_err(to_store)?;
                let event = insert_event(tx, job.id, request.now, Some(row.from), JobState::Running, &row.reason, &request.node, row.step.clone())?;
                claimed.push(Claimed {
                    due_at: rules::due_at(&job),
                    lease: Lease { job_id: job.id, attempt_id, attempt: number, node: request.node.clone() },
                    event,
                    job: row.started(job, attempt_id, &request, stored_instant),
                });
            }
            Ok(claimed)
        })
        .await
    }
}
