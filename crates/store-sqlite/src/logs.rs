//! Output lines: rows of the log, and the sequence numbers of a result's lines.

use super::*;
use retryd_store::rows::LogRow;

/// Appends lines to an attempt's log, numbered from `first_index`, each taking the next
/// number of the log's sequence.
pub(crate) fn insert_log_lines(
    tx: &Connection,
    lease: &Lease,
    first_index: u64,
    lines: &[NewLogLine],
) -> Result<()> {
    let rows = (lines.iter().enumerate()).map(|(i, line)| (None, first_index + i as u64, line));
    insert(tx, lease, rows)
}

/// Stores a result's rows, numbered already (see [`reserve_seqs`]).
pub(crate) fn insert_log_rows(tx: &Connection, lease: &Lease, rows: &[LogRow<'_>]) -> Result<()> {
    insert(
        tx,
        lease,
        rows.iter().map(|r| (Some(r.seq), r.index, r.line)),
    )
}

/// Lines as (sequence number, index within the attempt, line). A `None` sequence number (a
/// NULL rowid) takes the next number of the table's AUTOINCREMENT sequence.
fn insert<'a>(
    tx: &Connection,
    lease: &Lease,
    rows: impl Iterator<Item = (Option<i64>, u64, &'a NewLogLine)>,
) -> Result<()> {
    let mut stmt = tx
        .prepare_cached(
            "INSERT OR FAIL INTO log_lines (seq, job_id, attempt_id, attempt, idx, at, stream, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(to_store)?;
    let job_id = lease.job_id.to_string();
    for (seq, index, line) in rows {
        stmt.execute(params![
            seq,
            job_id,
            lease.attempt_id,
            lease.attempt,
            index as i64,
            ms(line.at),
            line.stream.as_str(),
            line.line
        ])
        .map_err(to_store)?;
    }
    Ok(())
}

/// Takes `n` numbers of the log's sequence (`sqlite_sequence`, which AUTOINCREMENT never
/// lowers) for a result's lines: the lines its attempt's row keeps are numbered like the rows,
/// so that a job's log reads in one order whichever way its lines are stored. (Not one
/// `UPDATE … RETURNING`: SQLite collects returned rows in a temporary b-tree, and the drain
/// measured 6 % slower with it.)
pub(crate) fn reserve_seqs(tx: &Connection, n: usize) -> Result<Vec<i64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let last: Option<i64> = tx
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'log_lines'")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
        .map_err(to_store)?;
    let (last, sql) = match last {
        Some(last) => (
            last,
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'log_lines'",
        ),
        // No line was ever numbered by the sequence: it starts after the stored lines.
        None => (
            tx.query_row("SELECT COALESCE(max(seq), 0) FROM log_lines", [], |row| {
                row.get(0)
            })
            .map_err(to_store)?,
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('log_lines', ?1)",
        ),
    };
    let end = last + n as i64;
    exec(tx, sql, params![end]).map_err(to_store)?;
    Ok((last + 1..=end).collect())
}
