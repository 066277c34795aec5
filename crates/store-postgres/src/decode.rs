//! Rows to values: jobs, events, log lines and their columns.

use super::*;
use retryd_core::policy::Policy;
use tokio_postgres::types::Json;

pub(crate) fn state(text: &str) -> Result<JobState> {
    text.parse().map_err(corrupt)
}

pub(crate) fn class(text: Option<String>) -> Result<Option<Class>> {
    text.map(|t| Class::parse(&t).ok_or_else(|| corrupt(format!("class {t}"))))
        .transpose()
}

/// A job selected with `JOB_COLUMNS`.
pub(crate) fn job_from_row(row: &Row) -> Result<Job> {
    job_from_lean_row(row, &HashMap::new())
}

/// A job selected with `LEAN_JOB_COLUMNS`: a policy the row does not hold is its snapshot's,
/// from `snapshots` (see `policies::PolicySnapshots::resolve`).
pub(crate) fn job_from_lean_row(row: &Row, snapshots: &HashMap<i64, Policy>) -> Result<Job> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    let policy = match row.try_get::<_, Option<Json<Policy>>>(6).map_err(get)? {
        Some(Json(policy)) => policy,
        None => {
            let id: Option<i64> = row.try_get(policies::POLICY_ID).map_err(get)?;
            id.and_then(|id| snapshots.get(&id))
                .cloned()
                .ok_or_else(|| corrupt(format!("policy snapshot {id:?}: not found")))?
        }
    };
    Ok(Job {
        id: JobId(row.try_get(0).map_err(get)?),
        queue: row.try_get(1).map_err(get)?,
        kind: row.try_get(2).map_err(get)?,
        target: row.try_get(3).map_err(get)?,
        action: json_col(row, 4)?,
        policy_name: row.try_get(5).map_err(get)?,
        policy,
        priority: u8::try_from(row.try_get::<_, i32>(7).map_err(get)?).map_err(corrupt)?,
        run_at: row.try_get(8).map_err(get)?,
        deadline: row.try_get(9).map_err(get)?,
        labels: json_col(row, 10)?,
        idempotency_key: row.try_get(11).map_err(get)?,
        created_by: row.try_get(12).map_err(get)?,
        state: state(row.try_get(13).map_err(get)?)?,
        attempt: u32::try_from(row.try_get::<_, i32>(14).map_err(get)?).map_err(corrupt)?,
        next_attempt_at: row.try_get(15).map_err(get)?,
        last_error: row.try_get(16).map_err(get)?,
        last_error_class: class(row.try_get(17).map_err(get)?)?,
        last_rule: row.try_get(18).map_err(get)?,
        finish_reason: row.try_get(19).map_err(get)?,
        lease_owner: row.try_get(20).map_err(get)?,
        lease_expires_at: row.try_get(21).map_err(get)?,
        cancel_requested: row.try_get(22).map_err(get)?,
        hold_reason: row.try_get(30).map_err(get)?,
        created_at: row.try_get(23).map_err(get)?,
        started_at: row.try_get(24).map_err(get)?,
        finished_at: row.try_get(25).map_err(get)?,
        updated_at: row.try_get(26).map_err(get)?,
        attempt_id: row.try_get(27).map_err(get)?,
        steps: json_col(row, 28)?,
        step_attempt_base: u32::try_from(row.try_get::<_, i32>(29).map_err(get)?)
            .map_err(corrupt)?,
        org: row.try_get(31).map_err(get)?,
    })
}

pub(crate) fn log_line_from_row(row: &Row) -> Result<LogLine> {
    let stream: String = row.get(3);
    Ok(LogLine {
        seq: row.get(0),
        attempt: row.get::<_, i32>(1) as u32,
        at: row.get(2),
        stream: Stream::parse(&stream).ok_or_else(|| corrupt(format!("stream {stream}")))?,
        line: row.get(4),
    })
}

pub(crate) fn event_from_row(row: &Row) -> Result<Event> {
    let get = |e: tokio_postgres::Error| corrupt(e);
    let from: Option<String> = row.try_get(3).map_err(get)?;
    Ok(Event {
        id: row.try_get(0).map_err(get)?,
        job_id: JobId(row.try_get(1).map_err(get)?),
        at: row.try_get(2).map_err(get)?,
        from: from.as_deref().map(state).transpose()?,
        to: state(row.try_get(4).map_err(get)?)?,
        reason: row.try_get(5).map_err(get)?,
        actor: row.try_get(6).map_err(get)?,
        step: row.try_get(7).map_err(get)?,
    })
}
