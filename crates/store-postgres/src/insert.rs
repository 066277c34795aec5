//! New jobs: a batch stored in one transaction as a pipeline of statements, idempotency keys
//! answered with the job they already name.

use super::*;
use futures::{StreamExt, TryStreamExt};
use retryd_core::job::Action;
use retryd_store::rows::stored_job;
use tokio_postgres::types::Json;
use tokio_postgres::{Statement, Transaction};

/// Rows per statement of a batch. A batch is sent as a pipeline of such statements in one
/// transaction, so that this process encodes the next chunk while the server stores the one
/// before: one statement for 10,000 jobs kept one side idle while the other worked.
const CHUNK: usize = 500;
/// `queries/insert/jobs.sql` for a chunk with idempotency keys.
const KEYED_JOBS_SQL: &str = concat!(
    include_str!("../queries/insert/jobs.sql"),
    "ON CONFLICT (org, queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING\n",
    "RETURNING id"
);

/// Chunks in flight at once. Measured on 20,000 jobs: 500 rows and 8 in flight beat 1,000
/// and 4, 2,000 and 4, and 250 and 16.
const PIPELINE: usize = 8;

/// New jobs as the columns of `queries/insert/jobs.sql`, in its parameter order, borrowed
/// from the jobs; JSON columns are encoded straight from their types.
struct NewJobColumns<'a> {
    ids: Vec<uuid::Uuid>,
    queues: Vec<&'a str>,
    kinds: Vec<&'a str>,
    targets: Vec<Option<&'a str>>,
    actions: Vec<Json<&'a Action>>,
    policy_names: Vec<&'a str>,
    policy_ids: &'a [i64],
    priorities: Vec<i32>,
    run_ats: Vec<DateTime<Utc>>,
    deadlines: Vec<Option<DateTime<Utc>>>,
    labels: Vec<Json<&'a BTreeMap<String, String>>>,
    idempotency_keys: Vec<Option<&'a str>>,
    created_bys: Vec<Option<&'a str>>,
    created_ats: Vec<DateTime<Utc>>,
    orgs: Vec<&'a str>,
}

impl<'a> NewJobColumns<'a> {
    fn of(jobs: &'a [NewJob], policy_ids: &'a [i64]) -> Self {
        NewJobColumns {
            ids: jobs.iter().map(|j| j.id.0).collect(),
            queues: jobs.iter().map(|j| j.queue.as_str()).collect(),
            kinds: jobs.iter().map(|j| j.kind.as_str()).collect(),
            targets: jobs.iter().map(|j| j.target.as_deref()).collect(),
            actions: jobs.iter().map(|j| Json(&j.action)).collect(),
            policy_names: jobs.iter().map(|j| j.policy_name.as_str()).collect(),
            policy_ids,
            priorities: jobs.iter().map(|j| i32::from(j.priority)).collect(),
            run_ats: jobs.iter().map(|j| j.run_at).collect(),
            deadlines: jobs.iter().map(|j| j.deadline).collect(),
            labels: jobs.iter().map(|j| Json(&j.labels)).collect(),
            idempotency_keys: jobs.iter().map(|j| j.idempotency_key.as_deref()).collect(),
            created_bys: jobs.iter().map(|j| j.created_by.as_deref()).collect(),
            created_ats: jobs.iter().map(|j| j.created_at).collect(),
            orgs: jobs.iter().map(|j| j.org.as_str()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 15] {
        [
            &self.ids,
            &self.queues,
            &self.kinds,
            &self.targets,
            &self.actions,
            &self.policy_names,
            &self.policy_ids,
            &self.priorities,
            &self.run_ats,
            &self.deadlines,
            &self.labels,
            &self.idempotency_keys,
            &self.created_bys,
            &self.created_ats,
            &self.orgs,
        ]
    }
}

/// Stores one chunk of a batch and the `submitted` events of the jobs it created: the ids
/// stored and the events.
async fn insert_chunk(
    tx: &Transaction<'_>,
    statements: &[Statement; 3],
    jobs: &[NewJob],
    policy_ids: &[i64],
) -> Result<(Vec<uuid::Uuid>, Vec<Event>)> {
    let columns = NewJobColumns::of(jobs, policy_ids);
    let created: Vec<&NewJob> = if jobs.iter().any(|j| j.idempotency_key.is_some()) {
        // A key already taken (by a stored job or an earlier one of this batch) inserts
        // nothing and is looked up by the caller.
        let inserted: std::collections::HashSet<uuid::Uuid> = tx
            .query(&statements[0], &columns.params())
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        jobs.iter().filter(|j| inserted.contains(&j.id.0)).collect()
    } else {
        tx.execute(&statements[1], &columns.params())
            .await
            .map_err(pg)?;
        jobs.iter().collect()
    };
    if created.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let ids: Vec<uuid::Uuid> = created.iter().map(|j| j.id.0).collect();
    let ats: Vec<DateTime<Utc>> = created.iter().map(|j| j.created_at).collect();
    let actors: Vec<&str> = created.iter().map(|j| rules::submitter(j)).collect();
    let steps: Vec<Option<String>> = created.iter().map(|j| rules::first_step(j)).collect();
    let events = tx
        .query(&statements[2], &[&ids, &ats, &actors, &steps])
        .await
        .map_err(pg)?
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok((ids, events))
}

impl PostgresStore {
    pub(crate) async fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Inserted>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let policy_ids = self
            .policies
            .ids(&client, jobs.iter().map(|j| &j.policy))
            .await?;
        let tx = client.transaction().await.map_err(pg)?;
        let events_sql = format!(
            "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) \
             SELECT job, at, NULL, 'pending', 'submitted', actor, step \
             FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) AS t(job, at, actor, step) \
             RETURNING {EVENT_COLUMNS}"
        );
        let statements = futures::try_join!(
            tx.prepare_cached(KEYED_JOBS_SQL),
            tx.prepare_cached(include_str!("../queries/insert/jobs.sql")),
            tx.prepare_cached(&events_sql),
        )
        .map_err(pg)?;
        let statements = [statements.0, statements.1, statements.2];
        // The chunks' statements go out in order (a later chunk's key conflicts with an
        // earlier one's row), each encoded while the ones before it are stored.
        let chunks: Vec<_> = jobs
            .chunks(CHUNK)
            .zip(policy_ids.chunks(CHUNK))
            .map(|(chunk, policy_ids)| insert_chunk(&tx, &statements, chunk, policy_ids))
            .collect();
        let chunks: Vec<(Vec<uuid::Uuid>, Vec<Event>)> = futures::stream::iter(chunks)
            .buffered(PIPELINE)
            .try_collect()
            .await?;
        let mut events = Vec::with_capacity(jobs.len());
        let mut inserted = std::collections::HashSet::with_capacity(jobs.len());
        for (ids, chunk_events) in chunks {
            inserted.extend(ids);
            events.extend(chunk_events);
        }
        if !events.is_empty() {
            notify(&tx, WAKE_CHANNEL, "").await?;
        }
        // timestamptz keeps microseconds.
        let mut stored: Vec<Job> = jobs
            .iter()
            .filter(|j| inserted.contains(&j.id.0))
            .map(|j| stored_job(j, stored_instant))
            .collect();
        let taken: Vec<(&str, &str, &str)> = jobs
            .iter()
            .filter(|j| !inserted.contains(&j.id.0))
            .filter_map(|j| {
                Some((
                    j.org.as_str(),
                    j.queue.as_str(),
                    j.idempotency_key.as_deref()?,
                ))
            })
            .collect();
        let orgs: Vec<&str> = taken.iter().map(|t| t.0).collect();
        let queues: Vec<&str> = taken.iter().map(|t| t.1).collect();
        let keys: Vec<&str> = taken.iter().map(|t| t.2).collect();
        if !keys.is_empty() {
            let existing = tx
                .cached_query(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM jobs \
                         WHERE (org, queue, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
                    ),
                    &[&orgs, &queues, &keys],
                )
                .await
                .map_err(pg)?;
            for row in &existing {
                stored.push(job_from_row(row)?);
            }
        }
        tx.commit().await.map_err(pg)?;
        for job in stored.iter().filter(|j| j.state.is_waiting()) {
            self.floors.lower(job);
        }
        rules::answer_inserts(&jobs, stored, events)
    }
}
