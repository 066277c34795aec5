//! Claims: the due jobs this node can run, shared between organizations, gated by circuits,
//! budgets and rate limits, opened as attempts under a lease, in one transaction.

use super::*;

/// The parameters of `queries/claim/candidates.sql`, its walk starting at `walk`'s floors.
fn claim_params<'a>(
    request: &'a ClaimRequest,
    skipped: &'a Vec<String>,
    window: &'a i64,
    walk: &'a floors::Walk,
) -> [&'a (dyn ToSql + Sync); 10] {
    [
        &request.now,
        skipped,
        window,
        &request.runnable.handler_kinds,
        &request.runnable.builtin,
        &request.due_by,
        &walk.orgs,
        &walk.ranks,
        &walk.dues,
        &walk.ids,
    ]
}

impl PostgresStore {
    pub(crate) async fn claim(&self, request: &ClaimRequest) -> Result<Vec<Claimed>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let skipped = rules::skipped_queues(request);
        let window = rules::candidate_window(request) as i64;
        let sql = with_columns(include_str!("../queries/claim/candidates.sql"));
        let walk = self.floors.walk(!skipped.is_empty());
        let (mut tx, mut rows) = Tx::begin_with(
            self.scheduler_client().await?,
            &sql,
            &claim_params(request, &skipped, &window, &walk),
        )
        .await?;
        let mut from_floors = walk.starts_at_floors();
        if from_floors && rows.len() < request.limit {
            // Not enough above the floors: what lies below them is looked at now, not later,
            // in a transaction of its own. Within this one, the walk's statement would see jobs
            // committed after this transaction's id was drawn (at its first row lock), and
            // their claim events would stream before their creation (the stream is in
            // transaction order).
            from_floors = false;
            tx.commit().await.map_err(pg)?;
            drop(tx);
            (tx, rows) = Tx::begin_with(
                self.scheduler_client().await?,
                &sql,
                &claim_params(request, &skipped, &window, &floors::Walk::default()),
            )
            .await?;
        }
        let snapshots = self.policies.resolve(tx.client(), &rows).await?;
        let candidates = rows
            .iter()
            .map(|row| job_from_lean_row(row, &snapshots))
            .collect::<Result<Vec<_>>>()?;
        self.floors.found(from_floors, &candidates);
        let candidates = rules::fair_share(candidates);
        let budgets = read_org_budgets(tx.client(), &candidates, request.now).await?;
        let by_org = rules::gate_orgs(candidates, &budgets, request.now);
        let candidates = by_org.admitted;
        let (circuits, usage) =
            read_limits(tx.client(), &candidates, &request.limits, request.now).await?;
        let mut gated = rules::gate(candidates, &circuits, &usage, &request.limits, request.now);
        gated.held.extend(by_org.held);
        if !gated.held.is_empty() {
            let ids: Vec<uuid::Uuid> = gated.held.iter().map(|h| h.id.0).collect();
            let until: Vec<DateTime<Utc>> = gated.held.iter().map(|h| h.until).collect();
            let reasons: Vec<&str> = gated.held.iter().map(|h| h.reason.as_str()).collect();
            tx.client()
                .cached_execute(
                    "UPDATE jobs SET next_attempt_at = t.until, hold_reason = t.reason, updated_at = $4 \
                     FROM unnest($1::uuid[], $2::timestamptz[], $3::text[]) AS t(id, until, reason) WHERE jobs.id = t.id",
                    &[&ids, &until, &reasons, &request.now],
                )
                .await
                .map_err(pg)?;
            for held in gated.held.iter().filter(|h| h.starts) {
                insert_event(
                    tx.client(),
                    held.id,
                    request.now,
                    Some(held.state),
                    held.state,
                    &held.reason,
                    &request.node,
                    None,
                )
                .await?;
            }
        }
        let chosen = rules::within_slots(gated.admitted, request);
        if chosen.is_empty() {
            // Commit, not drop: the candidates' row locks end with it, and the connection
            // stays in the pool.
            tx.commit().await.map_err(pg)?;
            return Ok(Vec::new());
        }
        let rows = chosen
            .iter()
            .map(|job| ClaimRow::of(job, request))
            .collect::<Result<Vec<_>>>()?;
        // The rows as columns, for `unnest`.
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.job_id.0).collect();
        let numbers: Vec<i32> = rows.iter().map(|r| r.number as i32).collect();
        let steps: Vec<Option<&str>> = rows.iter().map(|r| r.step.as_deref()).collect();
        let targets: Vec<Option<&str>> = rows.iter().map(|r| r.target.as_deref()).collect();
        let starts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.started_at).collect();
        let from_states: Vec<&str> = rows.iter().map(|r| r.from.as_str()).collect();
        let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
        let start_sql = tx
            .prepare(include_str!("../queries/claim/start.sql"))
            .await?;
        let events_sql = tx
            .prepare(&format!(
                "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) \
                 SELECT job, $2, from_state, 'running', reason, $3, step \
                 FROM unnest($1::uuid[], $4::text[], $5::text[], $6::text[]) AS t(job, from_state, reason, step) \
                 RETURNING {EVENT_COLUMNS}"
            ))
            .await?;
        let start: [&(dyn ToSql + Sync); 8] = [
            &ids,
            &numbers,
            &request.node,
            &request.now,
            &steps,
            &targets,
            &request.lease_until,
            &starts,
        ];
        let event: [&(dyn ToSql + Sync); 6] = [
            &ids,
            &request.now,
            &request.node,
            &from_states,
            &reasons,
            &steps,
        ];
        let probes = rules::probe_targets(&chosen, &circuits, request.now);
        // The batch's writes and, when no probe needs its attempt id, the COMMIT: one round
        // trip, whatever the batch's size. The server runs them in this order.
        let (started, events) = if probes.is_empty() {
            let (started, events, ()) = futures::try_join!(
                tx.client().query(&start_sql, &start),
                tx.client().query(&events_sql, &event),
                tx.commit(),
            )
            .map_err(pg)?;
            (started, events)
        } else {
            futures::try_join!(
                tx.client().query(&start_sql, &start),
                tx.client().query(&events_sql, &event),
            )
            .map_err(pg)?
        };
        let attempt_ids: BTreeMap<uuid::Uuid, i64> =
            started.iter().map(|row| (row.get(0), row.get(1))).collect();
        let events: BTreeMap<JobId, Event> = events
            .iter()
            .map(|row| event_from_row(row).map(|e| (e.job_id, e)))
            .collect::<Result<_>>()?;
        if !probes.is_empty() {
            for (job, target) in probes {
                tx.client()
                    .cached_execute(
                        "UPDATE circuits SET probe_attempt_id = $2 WHERE target = $1",
                        &[&target, &attempt_ids[&job.0]],
                    )
                    .await
                    .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)?;
        }
        let mut events = events;
        chosen
            .into_iter()
            .zip(&rows)
            .map(|(job, row)| {
                let missing = || corrupt(format!("claimed job {} vanished", job.id));
                let attempt_id = *attempt_ids.get(&job.id.0).ok_or_else(missing)?;
                Ok(Claimed {
                    due_at: rules::due_at(&job),
                    lease: Lease {
                        job_id: job.id,
                        attempt_id,
                        attempt: row.number,
                        node: request.node.clone(),
                    },
                    event: events.remove(&job.id).ok_or_else(missing)?,
                    job: row.started(job, attempt_id, request, stored_instant),
                })
            })
            .collect()
    }
}
