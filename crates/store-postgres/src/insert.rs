//! New jobs: a batch stored in one transaction, streamed by `COPY` when no job of it has an
//! idempotency key, else as a pipeline of statements that answer a taken key with the job
//! that holds it; then the `submitted` events of the jobs it created, streamed by `COPY` too.

use super::*;
use deadpool_postgres::Transaction;
use futures::{StreamExt, TryStreamExt};
use retryd_core::job::Action;
use retryd_store::rows::{stored_job, submitted_event};
use std::collections::HashSet;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, Type};

/// Rows per statement of a batch with idempotency keys. Such a batch is sent as a pipeline of
/// statements in its transaction, so that this process encodes the next chunk while the
/// server stores the one before.
const CHUNK: usize = 500;

/// Chunks in flight at once. Measured on 20,000 jobs: 500 rows and 8 in flight beat 1,000
/// and 4, 2,000 and 4, and 250 and 16.
const PIPELINE: usize = 8;

/// New jobs without idempotency keys: the columns `queries/insert/jobs.sql` writes, streamed
/// as binary rows. `COPY` spares the server what an `INSERT … SELECT FROM unnest(…)` costs
/// per row (decoding 15 arrays, a function scan materialised in a tuple store): 15 % more
/// jobs a second in bulk enqueue.
const COPY_JOBS: &str = "COPY jobs (id, queue, kind, target, action, policy_name, policy_id, \
     priority, run_at, deadline, labels, idempotency_key, created_by, state, attempt, \
     next_attempt_at, created_at, updated_at, org) FROM STDIN BINARY";
const COPY_JOBS_TYPES: [Type; 19] = [
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TEXT,
    Type::INT8,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::JSONB,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::TEXT,
];

/// The `submitted` events, under ids drawn first from the events' sequence in the jobs'
/// order (so they stream in the batch's order).
const COPY_EVENTS: &str =
    "COPY events (id, job_id, at, from_state, to_state, reason, actor, step) FROM STDIN BINARY";
const COPY_EVENTS_TYPES: [Type; 8] = [
    Type::INT8,
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];
const RESERVE_EVENT_IDS: &str = reserve_numbers!("events_id_seq");

/// New jobs with idempotency keys as the columns of `queries/insert/jobs.sql`, in its
/// parameter order, borrowed from the jobs; JSON columns are encoded straight from their types.
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

/// Streams new jobs without idempotency keys into the batch's transaction.
async fn copy_jobs(tx: &Transaction<'_>, jobs: &[NewJob], policy_ids: &[i64]) -> Result<()> {
    let sink = tx.copy_in(COPY_JOBS).await.map_err(pg)?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_JOBS_TYPES);
    futures::pin_mut!(writer);
    for (job, policy_id) in jobs.iter().zip(policy_ids) {
        writer
            .as_mut()
            .write(&[
                &job.id.0,
                &job.queue,
                &job.kind,
                &job.target,
                &Json(&job.action),
                &job.policy_name,
                policy_id,
                &i32::from(job.priority),
                &job.run_at,
                &job.deadline,
                &Json(&job.labels),
                &job.idempotency_key,
                &job.created_by,
                &JobState::Pending.as_str(),
                &0i32,
                &job.run_at,
                &job.created_at,
                &job.created_at,
                &job.org,
            ])
            .await
            .map_err(pg)?;
    }
    writer.finish().await.map_err(pg)?;
    Ok(())
}

/// Stores a batch with idempotency keys, chunk by chunk in order (a later chunk's key
/// conflicts with an earlier one's row); answers the ids it stored. A key already taken
/// (by a stored job or an earlier one of this batch) inserts nothing.
async fn insert_keyed(
    tx: &Transaction<'_>,
    jobs: &[NewJob],
    policy_ids: &[i64],
) -> Result<HashSet<uuid::Uuid>> {
    let statement = tx
        .prepare_cached(include_str!("../queries/insert/jobs.sql"))
        .await
        .map_err(pg)?;
    let chunks: Vec<_> = jobs
        .chunks(CHUNK)
        .zip(policy_ids.chunks(CHUNK))
        .map(|(chunk, policy_ids)| {
            let statement = &statement;
            async move {
                let columns = NewJobColumns::of(chunk, policy_ids);
                tx.query(statement, &columns.params()).await.map_err(pg)
            }
        })
        .collect();
    let chunks: Vec<Vec<Row>> = futures::stream::iter(chunks)
        .buffered(PIPELINE)
        .try_collect()
        .await?;
    Ok(chunks.iter().flatten().map(|row| row.get(0)).collect())
}

/// Streams the `submitted` events of `created` into the batch's transaction; answers them.
async fn copy_events(tx: &Transaction<'_>, created: &[&NewJob]) -> Result<Vec<Event>> {
    let count = i32::try_from(created.len()).map_err(corrupt)?;
    let ids = tx
        .query(
            &tx.prepare_cached(RESERVE_EVENT_IDS).await.map_err(pg)?,
            &[&count],
        )
        .await
        .map_err(pg)?;
    let events: Vec<Event> = created
        .iter()
        .zip(&ids)
        .map(|(job, id)| submitted_event(job, id.get(0), stored_instant))
        .collect();
    let sink = tx.copy_in(COPY_EVENTS).await.map_err(pg)?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_EVENTS_TYPES);
    futures::pin_mut!(writer);
    for event in &events {
        writer
            .as_mut()
            .write(&[
                &event.id,
                &event.job_id.0,
                &event.at,
                &event.from.map(JobState::as_str),
                &event.to.as_str(),
                &event.reason,
                &event.actor,
                &event.step,
            ])
            .await
            .map_err(pg)?;
    }
    writer.finish().await.map_err(pg)?;
    Ok(events)
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
        let keyed = jobs.iter().any(|j| j.idempotency_key.is_some());
        // The jobs as stored are built while the server stores the rows.
        let (inserted, mut stored) = futures::join!(
            async {
                if keyed {
                    insert_keyed(&tx, &jobs, &policy_ids).await.map(Some)
                } else {
                    copy_jobs(&tx, &jobs, &policy_ids).await.map(|()| None)
                }
            },
            // timestamptz keeps microseconds.
            async {
                jobs.iter()
                    .map(|j| stored_job(j, stored_instant))
                    .collect::<Vec<Job>>()
            }
        );
        // `None`: every job was stored.
        let inserted = inserted?;
        let was_stored = |id: &uuid::Uuid| inserted.as_ref().is_none_or(|ids| ids.contains(id));
        stored.retain(|j| was_stored(&j.id.0));
        let created: Vec<&NewJob> = jobs.iter().filter(|j| was_stored(&j.id.0)).collect();
        let events = if created.is_empty() {
            Vec::new()
        } else {
            let events = copy_events(&tx, &created).await?;
            notify(&tx, WAKE_CHANNEL, "").await?;
            events
        };
        let taken: Vec<(&str, &str, &str)> = jobs
            .iter()
            .filter(|j| !was_stored(&j.id.0))
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
