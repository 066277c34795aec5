//! Results: a group of finished attempts checked against their leases and written in one
//! transaction (group commit, one committer at a time).

use super::*;
use crate::policies::PolicySnapshots;
use retryd_store::rows::{KeptLine, ResultLines};

/// Writes a group of results in one transaction; answers each in order. `Err` when the
/// transaction failed: then nothing of the group is written.
pub(crate) async fn finish_group(
    pool: &Pool,
    policies: &PolicySnapshots,
    results: &[AttemptResult],
) -> Result<Vec<Result<(Job, Event)>>> {
    let mut ids: Vec<uuid::Uuid> = results.iter().map(|r| r.lease.job_id.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let lines = results.iter().map(|r| r.log.lines.len()).sum::<usize>() as i32;
    // In id order, so that two groups lock their common jobs in one order.
    let (tx, rows, seqs) = Tx::begin_with_also(
        pool.get().await.map_err(pool_error)?,
        &format!("SELECT {LEAN_JOB_COLUMNS} FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE"),
        &[&ids],
        (lines > 0).then_some((RESERVE_SEQS, &[&lines])),
    )
    .await?;
    let snapshots = policies.resolve(tx.client(), &rows).await?;
    let mut jobs: HashMap<JobId, Job> = rows
        .iter()
        .map(|row| job_from_lean_row(row, &snapshots).map(|job| (job.id, job)))
        .collect::<Result<_>>()?;
    let seqs: Vec<i64> = seqs.iter().map(|row| row.get(0)).collect();
    let mut seqs = seqs.as_slice();
    let mut answers: Vec<Option<Result<(Job, Event)>>> = results.iter().map(|_| None).collect();
    let mut finished = Finished::default();
    let mut accepted: Vec<(usize, Job)> = Vec::new();
    let mut log = LogRows::default();
    let mut wake = false;
    for (i, result) in results.iter().enumerate() {
        let lease = &result.lease;
        let (own_seqs, rest) = seqs.split_at(result.log.lines.len());
        seqs = rest;
        let Some(job) = jobs.get(&lease.job_id) else {
            // Gone, or finished by an earlier result of this group: after that one, no
            // lease is held any more (what the attempt printed is kept all the same).
            answers[i] = Some(Err(if accepted.iter().any(|(_, j)| j.id == lease.job_id) {
                log.push_rows(lease, &ResultLines::of(&result.log, own_seqs, false).rows);
                Error::LeaseLost {
                    job_id: lease.job_id,
                    attempt_id: lease.attempt_id,
                }
            } else {
                Error::NotFound(lease.job_id)
            }));
            continue;
        };
        let verdict = if rules::fence_holds(job, lease, result.fence) {
            job.state
                .transition(result.next.state())
                .map_err(Error::from)
        } else {
            Err(Error::LeaseLost {
                job_id: job.id,
                attempt_id: lease.attempt_id,
            })
        };
        let mut lines = ResultLines::of(&result.log, own_seqs, verdict.is_ok());
        log.push_rows(lease, &lines.rows);
        let to = match verdict {
            Ok(to) => to,
            Err(e) => {
                answers[i] = Some(Err(e));
                continue;
            }
        };
        let job = jobs.remove(&lease.job_id).expect("looked up above");
        wake |= result.next.state() == JobState::Retrying || !result.notify.is_empty();
        let mut row = FinishRow::of(&job, to, result);
        row.attempt.keep(&mut lines);
        // The job as the group's update leaves it (what it returns to the caller).
        accepted.push((i, row.finished(job, stored_instant)));
        finished.push(row);
    }
    // Every statement sent with the COMMIT below is prepared first, so that none falls
    // behind it (see `tx`).
    let [attempts_sql, jobs_sql, events_sql] = Finished::statements();
    let notify_sql = "SELECT pg_notify($1, $2)";
    futures::try_join!(
        tx.prepare(LogRows::SQL),
        tx.prepare(&attempts_sql),
        tx.prepare(&jobs_sql),
        tx.prepare(&events_sql),
        tx.prepare(notify_sql),
    )?;
    if accepted.is_empty() {
        // Only refused results: their output lines are all there is to write.
        futures::try_join!(log.insert(tx.client()), async {
            tx.commit().await.map_err(pg)
        })?;
        return Ok(answers
            .into_iter()
            .map(|a| a.expect("every result is answered"))
            .collect());
    }
    let mut targets: Vec<&str> = accepted
        .iter()
        .filter(|(i, _)| results[*i].circuit.is_some())
        .filter_map(|(_, job)| job.target.as_deref())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    let rare = !targets.is_empty() || accepted.iter().any(|(i, _)| !results[*i].notify.is_empty());
    let notify_sql = &tx.prepare(notify_sql).await?;
    let tx = &tx;
    let wake_others = |wake: bool| async move {
        if wake {
            tx.client()
                .execute(notify_sql, &[&WAKE_CHANNEL, &""])
                .await
                .map_err(pg)?;
        }
        Ok(())
    };
    let events = if !rare {
        // The group's writes and its COMMIT, in one round trip.
        let ((), written, (), ()) = futures::try_join!(
            log.insert(tx.client()),
            finished.write(tx),
            wake_others(wake),
            async { tx.commit().await.map_err(pg) },
        )?;
        written
    } else {
        let ((), written) = futures::try_join!(log.insert(tx.client()), finished.write(tx))?;
        // Circuits count the attempt rows written above; one statement each.
        if !targets.is_empty() {
            lock_targets(tx.client(), &targets).await?;
        }
        for (k, (i, job)) in accepted.iter().enumerate() {
            let result = &results[*i];
            if let (Some(target), Some(config)) = (&job.target, &result.circuit) {
                let failed = finished.target_failed[k];
                wake |= update_circuit(
                    tx.client(),
                    target,
                    result.lease.attempt_id,
                    failed,
                    config,
                    result.now,
                )
                .await?;
            }
            for notification in &result.notify {
                enqueue(tx.client(), job.id, notification, result.now).await?;
            }
        }
        futures::try_join!(wake_others(wake), async { tx.commit().await.map_err(pg) })?;
        written
    };
    let mut events: HashMap<JobId, Event> = events.into_iter().map(|e| (e.job_id, e)).collect();
    for (i, job) in accepted {
        let missing = || corrupt(format!("finished job {} vanished", job.id));
        let event = events.remove(&job.id).ok_or_else(missing)?;
        answers[i] = Some(Ok((job, event)));
    }
    Ok(answers
        .into_iter()
        .map(|a| a.expect("every result is answered"))
        .collect())
}

/// A result waiting for its group's transaction, and where its answer goes.
pub(crate) type QueuedResult = (AttemptResult, oneshot::Sender<Result<(Job, Event)>>);

/// Results of attempts are written in groups (see [`GroupQueue`]): each call queues its
/// result and starts the committer task unless one runs.
pub(crate) type ResultGroups = GroupQueue<QueuedResult>;

/// The committer: writes groups until the queue is empty. If it panics, the role is handed
/// back, so that the next result starts a new committer.
pub(crate) async fn commit_results(
    pool: Pool,
    policies: Arc<PolicySnapshots>,
    groups: Arc<ResultGroups>,
) {
    let _role = groups.role();
    loop {
        let group = groups.take();
        if !group.is_empty() {
            let (results, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            match finish_group(&pool, &policies, &results).await {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Err(e) => {
                    // Nothing of the group was written: each result may be sent again.
                    let message = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(Error::Backend(message.clone())));
                    }
                }
            }
        }
        if !groups.keep_committing() {
            return;
        }
    }
}

/// What a group's accepted result writes, by column.
#[derive(Default)]
pub(crate) struct Finished {
    ids: Vec<uuid::Uuid>,
    states: Vec<&'static str>,
    next_at: Vec<Option<DateTime<Utc>>>,
    errors: Vec<Option<String>>,
    classes: Vec<Option<&'static str>>,
    rules: Vec<Option<String>>,
    finish_reasons: Vec<Option<String>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    now: Vec<DateTime<Utc>>,
    refunds: Vec<i32>,
    steps: Vec<Value>,
    // The attempts' rows.
    attempt_ids: Vec<i64>,
    outcomes: Vec<&'static str>,
    exit_codes: Vec<Option<i32>>,
    delays: Vec<Option<i64>>,
    delay_reasons: Vec<Option<String>>,
    dropped: Vec<i64>,
    target_failed: Vec<Option<bool>>,
    opening: KeptColumns,
    closing: KeptColumns,
    // The events.
    from_states: Vec<&'static str>,
    reasons: Vec<String>,
    actors: Vec<String>,
    event_steps: Vec<Option<String>>,
}

impl Finished {
    /// Adds a result's rows as one more element of each column (for `unnest`).
    pub(crate) fn push(&mut self, row: FinishRow) {
        let FinishRow {
            attempt,
            job_id,
            from,
            to,
            finish_reason,
            finished_at,
            steps,
            reason,
            actor,
            step,
        } = row;
        self.ids.push(job_id.0);
        self.states.push(to.as_str());
        self.next_at.push(attempt.next.at);
        self.errors.push(attempt.error);
        self.classes.push(attempt.class);
        self.rules.push(attempt.rule);
        self.finish_reasons.push(finish_reason);
        self.finished_at.push(finished_at);
        self.now.push(attempt.finished_at);
        self.refunds.push(attempt.next.refund as i32);
        self.steps.push(to_json(&steps));
        self.attempt_ids.push(attempt.id);
        self.outcomes.push(attempt.outcome);
        self.exit_codes.push(attempt.exit_code);
        self.delays.push(attempt.next.delay_ms);
        self.delay_reasons.push(attempt.next.delay_reason);
        self.dropped.push(attempt.output_dropped_bytes);
        self.target_failed.push(attempt.target_failed);
        self.opening.push(attempt.opening);
        self.closing.push(attempt.closing);
        self.from_states.push(from.as_str());
        self.reasons.push(reason);
        self.actors.push(actor);
        self.event_steps.push(step);
    }

    /// The statements of [`Finished::write`]: the attempts' rows, the jobs' rows, the events.
    pub(crate) fn statements() -> [String; 3] {
        [
"UPDATE attempts SET finished_at = t.now, outcome = t.outcome, exit_code = t.exit_code, error = t.error, \
             class = t.class, rule = t.rule, next_delay_ms = t.delay, delay_reason = t.delay_reason, \
             output_dropped_bytes = t.dropped, target_failed = t.target_failed, \
             opening_seq = t.opening_seq, opening_at = t.opening_at, opening_line = t.opening_line, \
             closing_seq = t.closing_seq, closing_at = t.closing_at, closing_line = t.closing_line \
             FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], \
                         $8::bigint[], $9::text[], $10::bigint[], $11::bool[], \
                         $12::bigint[], $13::timestamptz[], $14::text[], $15::bigint[], $16::timestamptz[], $17::text[]) \
               AS t(id, now, outcome, exit_code, error, class, rule, delay, delay_reason, dropped, target_failed, \
                    opening_seq, opening_at, opening_line, closing_seq, closing_at, closing_line) \
             WHERE attempts.id = t.id".to_owned(),
            "UPDATE jobs SET state = t.n_state, next_attempt_at = t.n_next_at, hold_reason = NULL, \
             last_error = COALESCE(t.n_error, last_error), \
             last_error_class = CASE WHEN t.n_error IS NULL THEN last_error_class ELSE t.n_class END, \
             last_rule = CASE WHEN t.n_error IS NULL THEN last_rule ELSE t.n_rule END, \
             finish_reason = t.n_finish_reason, finished_at = t.n_finished_at, lease_owner = NULL, \
             lease_expires_at = NULL, current_attempt_id = NULL, cancel_requested = false, \
             updated_at = t.n_now, attempt = attempt - t.n_refund, steps = t.n_steps \
             FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], \
                         $8::timestamptz[], $9::timestamptz[], $10::int[], $11::jsonb[]) \
               AS t(n_id, n_state, n_next_at, n_error, n_class, n_rule, n_finish_reason, n_finished_at, n_now, n_refund, n_steps) \
             WHERE jobs.id = t.n_id".to_owned(),
            format!(
            "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) \
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
             RETURNING {EVENT_COLUMNS}"
            ),
        ]
    }

    /// The attempts' rows, the jobs' rows and the events, in one round trip; answers the
    /// events. Its statements must be prepared already (see [`Tx`]) when it is sent together
    /// with others.
    pub(crate) async fn write(&self, tx: &Tx) -> Result<Vec<Event>> {
        let attempt_columns: [&(dyn ToSql + Sync); 17] = [
            &self.attempt_ids,
            &self.now,
            &self.outcomes,
            &self.exit_codes,
            &self.errors,
            &self.classes,
            &self.rules,
            &self.delays,
            &self.delay_reasons,
            &self.dropped,
            &self.target_failed,
            &self.opening.seqs,
            &self.opening.ats,
            &self.opening.lines,
            &self.closing.seqs,
            &self.closing.ats,
            &self.closing.lines,
        ];
        let job_columns: [&(dyn ToSql + Sync); 11] = [
            &self.ids,
            &self.states,
            &self.next_at,
            &self.errors,
            &self.classes,
            &self.rules,
            &self.finish_reasons,
            &self.finished_at,
            &self.now,
            &self.refunds,
            &self.steps,
        ];
        let event_columns: [&(dyn ToSql + Sync); 7] = [
            &self.ids,
            &self.now,
            &self.from_states,
            &self.states,
            &self.reasons,
            &self.actors,
            &self.event_steps,
        ];
        let [attempts_sql, jobs_sql, events_sql] = Self::statements();
        let (attempts_sql, jobs_sql, events_sql) = futures::try_join!(
            tx.prepare(&attempts_sql),
            tx.prepare(&jobs_sql),
            tx.prepare(&events_sql)
        )?;
        // Sent together (one round trip); the server runs them in this order.
        let (_, _, events) = futures::try_join!(
            tx.client().execute(&attempts_sql, &attempt_columns),
            tx.client().execute(&jobs_sql, &job_columns),
            tx.client().query(&events_sql, &event_columns),
        )
        .map_err(pg)?;
        events.iter().map(event_from_row).collect()
    }
}

/// The system lines the attempts' rows keep (see [`ResultLines`]), by column.
#[derive(Default)]
struct KeptColumns {
    seqs: Vec<Option<i64>>,
    ats: Vec<Option<DateTime<Utc>>>,
    lines: Vec<Option<String>>,
}

impl KeptColumns {
    fn push(&mut self, line: Option<KeptLine>) {
        self.seqs.push(line.as_ref().map(|l| l.seq));
        self.ats.push(line.as_ref().map(|l| l.at));
        self.lines.push(line.map(|l| text(&l.line)));
    }
}

/// Writes a finished attempt's row (the last attempt of a pipeline step).
pub(crate) async fn finish_attempt_row(tx: &impl GenericClient, row: &AttemptRow) -> Result<()> {
    tx.cached_execute(
        "UPDATE attempts SET finished_at = $2, outcome = $3, exit_code = $4, error = $5, class = $6, rule = $7, \
         next_delay_ms = $8, delay_reason = $9, output_dropped_bytes = $10, target_failed = $11 WHERE id = $1",
        &[
            &row.id,
            &row.finished_at,
            &row.outcome,
            &row.exit_code,
            &row.error,
            &row.class,
            &row.rule,
            &row.next.delay_ms,
            &row.next.delay_reason,
            &row.output_dropped_bytes,
            &row.target_failed,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}
