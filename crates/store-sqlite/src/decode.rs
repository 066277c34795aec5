//! Rows to values: jobs, events, log lines and their columns (instants are stored as
//! milliseconds since the epoch, JSON as text).

use super::*;

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(crate) fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(ms)
}

pub(crate) fn corrupt(column: usize, message: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        message.to_string().into(),
    )
}

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| corrupt(i, e))
}

pub(crate) fn state_col(row: &Row<'_>, i: usize) -> rusqlite::Result<JobState> {
    let text: String = row.get(i)?;
    text.parse().map_err(|e| corrupt(i, e))
}

pub(crate) fn id_col(row: &Row<'_>, i: usize) -> rusqlite::Result<JobId> {
    let text: String = row.get(i)?;
    text.parse().map_err(|e: String| corrupt(i, e))
}

pub(crate) fn class_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<Class>> {
    let text: Option<String> = row.get(i)?;
    text.map(|t| Class::parse(&t).ok_or_else(|| corrupt(i, format!("class {t}"))))
        .transpose()
}

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: id_col(row, 0)?,
        queue: row.get(1)?,
        kind: row.get(2)?,
        target: row.get(3)?,
        action: json_col(row, 4)?,
        policy_name: row.get(5)?,
        policy: json_col(row, 6)?,
        priority: row.get(7)?,
        run_at: from_ms(row.get(8)?),
        deadline: row.get::<_, Option<i64>>(9)?.map(from_ms),
        labels: json_col(row, 10)?,
        idempotency_key: row.get(11)?,
        created_by: row.get(12)?,
        state: state_col(row, 13)?,
        attempt: row.get(14)?,
        next_attempt_at: row.get::<_, Option<i64>>(15)?.map(from_ms),
        last_error: row.get(16)?,
        last_error_class: class_col(row, 17)?,
        last_rule: row.get(18)?,
        finish_reason: row.get(19)?,
        lease_owner: row.get(20)?,
        lease_expires_at: row.get::<_, Option<i64>>(21)?.map(from_ms),
        attempt_id: row.get(27)?,
        cancel_requested: row.get(22)?,
        hold_reason: row.get(30)?,
        created_at: from_ms(row.get(23)?),
        started_at: row.get::<_, Option<i64>>(24)?.map(from_ms),
        finished_at: row.get::<_, Option<i64>>(25)?.map(from_ms),
        updated_at: from_ms(row.get(26)?),
        steps: json_col(row, 28)?,
        step_attempt_base: row.get(29)?,
        org: row.get(31)?,
    })
}

pub(crate) fn log_line_from_row(row: &Row<'_>) -> rusqlite::Result<LogLine> {
    let stream: String = row.get(3)?;
    Ok(LogLine {
        seq: row.get(0)?,
        attempt: row.get(1)?,
        at: from_ms(row.get(2)?),
        stream: Stream::parse(&stream).ok_or_else(|| corrupt(3, format!("stream {stream}")))?,
        line: row.get(4)?,
    })
}

pub(crate) fn event_from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let from: Option<String> = row.get(3)?;
    Ok(Event {
        id: row.get(0)?,
        job_id: id_col(row, 1)?,
        at: from_ms(row.get(2)?),
        from: from
            .map(|f| f.parse().map_err(|e| corrupt(3, e)))
            .transpose()?,
        to: state_col(row, 4)?,
        reason: row.get(5)?,
        actor: row.get(6)?,
        step: row.get(7)?,
    })
}

pub(crate) fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("plain data serializes")
}
