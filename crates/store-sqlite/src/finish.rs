//! Results: a finished attempt's row.

use super::*;

/// Writes a finished attempt's row.
pub(crate) fn finish_attempt_row(conn: &Connection, row: &AttemptRow) -> Result<()> {
    exec(
        conn,
        "UPDATE OR FAIL attempts SET finished_at = ?2, outcome = ?3, exit_code = ?4, error = ?5, class = ?6, rule = ?7, \
         next_delay_ms = ?8, delay_reason = ?9, output_dropped_bytes = ?10, target_failed = ?11, \
         opening_seq = ?12, opening_at = ?13, opening_line = ?14, closing_seq = ?15, closing_at = ?16, closing_line = ?17 \
         WHERE id = ?1",
        params![
            row.id,
            ms(row.finished_at),
            row.outcome,
            row.exit_code,
            row.error,
            row.class,
            row.rule,
            row.next.delay_ms,
            row.next.delay_reason,
            row.output_dropped_bytes,
            row.target_failed,
            row.opening.as_ref().map(|l| l.seq),
            row.opening.as_ref().map(|l| ms(l.at)),
            row.opening.as_ref().map(|l| &l.line),
            row.closing.as_ref().map(|l| l.seq),
            row.closing.as_ref().map(|l| ms(l.at)),
            row.closing.as_ref().map(|l| &l.line),
        ],
    )
    .map_err(to_store)?;
    Ok(())
}
