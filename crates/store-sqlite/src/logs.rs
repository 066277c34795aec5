//! Output lines, written in one statement per batch.

use super::*;

/// Appends lines to an attempt's log, numbered from `first_index`.
pub(crate) fn insert_log_lines(
    tx: &Connection,
    lease: &Lease,
    first_index: u64,
    lines: &[NewLogLine],
) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT INTO log_lines (job_id, attempt_id, attempt, idx, at, stream, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(to_store)?;
    let job_id = lease.job_id.to_string();
    for (i, line) in lines.iter().enumerate() {
        stmt.execute(params![
            job_id,
            lease.attempt_id,
            lease.attempt,
            (first_index + i as u64) as i64,
            ms(line.at),
            line.stream.as_str(),
            line.line
        ])
        .map_err(to_store)?;
    }
    Ok(())
}
