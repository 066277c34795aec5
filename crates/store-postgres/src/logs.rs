//! Output lines as columns, for one `unnest` insert per group.

use super::*;
use retryd_store::rows::LogRow;

/// Log lines of one or more attempts, as the columns of one INSERT.
#[derive(Default)]
pub(crate) struct LogRows {
    seqs: Vec<Option<i64>>,
    job_ids: Vec<uuid::Uuid>,
    attempt_ids: Vec<i64>,
    attempts: Vec<i32>,
    indexes: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    streams: Vec<&'static str>,
    lines: Vec<String>,
}

impl LogRows {
    /// Lines appended while the attempt runs: numbered by the sequence as they are inserted.
    pub(crate) fn push(&mut self, lease: &Lease, first_index: u64, lines: &[NewLogLine]) {
        for (i, line) in lines.iter().enumerate() {
            self.push_line(lease, None, first_index + i as u64, line);
        }
    }

    /// A result's rows, numbered already (see [`RESERVE_SEQS`]).
    pub(crate) fn push_rows(&mut self, lease: &Lease, rows: &[LogRow<'_>]) {
        for row in rows {
            self.push_line(lease, Some(row.seq), row.index, row.line);
        }
    }

    fn push_line(&mut self, lease: &Lease, seq: Option<i64>, index: u64, line: &NewLogLine) {
        self.seqs.push(seq);
        self.job_ids.push(lease.job_id.0);
        self.attempt_ids.push(lease.attempt_id);
        self.attempts.push(lease.attempt as i32);
        self.indexes.push(index as i64);
        self.ats.push(line.at);
        self.streams.push(line.stream.as_str());
        self.lines.push(text(&line.line));
    }

    // COALESCE evaluates `nextval` only for the lines not numbered yet.
    pub(crate) const SQL: &str = "INSERT INTO log_lines (seq, job_id, attempt_id, attempt, idx, at, stream, line) \
         SELECT COALESCE(t.seq, nextval('log_lines_seq_seq')), t.job_id, t.attempt_id, t.attempt, t.idx, t.at, t.stream, t.line \
         FROM UNNEST($1::bigint[], $2::uuid[], $3::bigint[], $4::int[], $5::bigint[], $6::timestamptz[], $7::text[], $8::text[]) \
           AS t(seq, job_id, attempt_id, attempt, idx, at, stream, line)";

    /// Its statement must be in the connection's cache already (see [`Tx`]) when it is sent
    /// together with others.
    pub(crate) async fn insert(&self, client: &impl GenericClient) -> Result<()> {
        if self.lines.is_empty() {
            return Ok(());
        }
        client
            .cached_execute(
                Self::SQL,
                &[
                    &self.seqs,
                    &self.job_ids,
                    &self.attempt_ids,
                    &self.attempts,
                    &self.indexes,
                    &self.ats,
                    &self.streams,
                    &self.lines,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }
}

/// PostgreSQL text cannot hold NUL; such bytes become U+FFFD.
pub(crate) fn text(line: &str) -> String {
    line.replace('\0', "\u{FFFD}")
}

/// Takes numbers of the log's sequence, one for each line of a result group (`$1` of them,
/// increasing): the lines an attempt's row keeps are numbered like the rows, so that a job's
/// log reads in one order whichever way its lines are stored. `nextval` is not transactional:
/// it may travel with the group's BEGIN.
pub(crate) const RESERVE_SEQS: &str = reserve_numbers!("log_lines_seq_seq");
