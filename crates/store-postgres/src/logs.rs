//! Output lines as columns, for one `unnest` insert per group.

use super::*;

/// Log lines of one or more attempts, as the columns of one INSERT.
#[derive(Default)]
pub(crate) struct LogRows {
    job_ids: Vec<uuid::Uuid>,
    attempt_ids: Vec<i64>,
    attempts: Vec<i32>,
    indexes: Vec<i64>,
    ats: Vec<DateTime<Utc>>,
    streams: Vec<&'static str>,
    lines: Vec<String>,
}

impl LogRows {
    pub(crate) fn push(&mut self, lease: &Lease, first_index: u64, lines: &[NewLogLine]) {
        for (i, line) in lines.iter().enumerate() {
            self.job_ids.push(lease.job_id.0);
            self.attempt_ids.push(lease.attempt_id);
            self.attempts.push(lease.attempt as i32);
            self.indexes.push((first_index + i as u64) as i64);
            self.ats.push(line.at);
            self.streams.push(line.stream.as_str());
            // PostgreSQL text cannot hold NUL; such bytes become U+FFFD.
            self.lines.push(line.line.replace('\0', "\u{FFFD}"));
        }
    }

    pub(crate) const SQL: &str = "INSERT INTO log_lines (job_id, attempt_id, attempt, idx, at, stream, line) \
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::int[], $4::bigint[], $5::timestamptz[], $6::text[], $7::text[])";

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
