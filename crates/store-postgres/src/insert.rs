//! New jobs: a batch stored in one statement, idempotency keys answered with the job they
//! already name.

use super::*;
use retryd_store::rows::stored_job;

/// New jobs as the columns of `queries/insert/jobs.sql`, in its parameter order.
struct NewJobColumns {
    ids: Vec<uuid::Uuid>,
    queues: Vec<String>,
    kinds: Vec<String>,
    targets: Vec<Option<String>>,
    actions: Vec<Value>,
    policy_names: Vec<String>,
    policies: Vec<Value>,
    priorities: Vec<i32>,
    run_ats: Vec<DateTime<Utc>>,
    deadlines: Vec<Option<DateTime<Utc>>>,
    labels: Vec<Value>,
    idempotency_keys: Vec<Option<String>>,
    created_bys: Vec<Option<String>>,
    created_ats: Vec<DateTime<Utc>>,
    orgs: Vec<String>,
}

impl NewJobColumns {
    fn of(jobs: &[NewJob]) -> Self {
        NewJobColumns {
            ids: jobs.iter().map(|j| j.id.0).collect(),
            queues: jobs.iter().map(|j| j.queue.clone()).collect(),
            kinds: jobs.iter().map(|j| j.kind.clone()).collect(),
            targets: jobs.iter().map(|j| j.target.clone()).collect(),
            actions: jobs.iter().map(|j| to_json(&j.action)).collect(),
            policy_names: jobs.iter().map(|j| j.policy_name.clone()).collect(),
            policies: jobs.iter().map(|j| to_json(&j.policy)).collect(),
            priorities: jobs.iter().map(|j| i32::from(j.priority)).collect(),
            run_ats: jobs.iter().map(|j| j.run_at).collect(),
            deadlines: jobs.iter().map(|j| j.deadline).collect(),
            labels: jobs.iter().map(|j| to_json(&j.labels)).collect(),
            idempotency_keys: jobs.iter().map(|j| j.idempotency_key.clone()).collect(),
            created_bys: jobs.iter().map(|j| j.created_by.clone()).collect(),
            created_ats: jobs.iter().map(|j| j.created_at).collect(),
            orgs: jobs.iter().map(|j| j.org.clone()).collect(),
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
            &self.policies,
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

impl PostgresStore {
    pub(crate) async fn insert(&self, jobs: Vec<NewJob>) -> Result<Vec<Inserted>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let columns = NewJobColumns::of(&jobs);
        // One statement for the whole batch; a key already taken (by a stored job or an
        // earlier one of this batch) inserts nothing and is looked up below.
        let inserted: std::collections::HashSet<uuid::Uuid> = tx
            .cached_query(
                include_str!("../queries/insert/jobs.sql"),
                &columns.params(),
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        // timestamptz keeps microseconds.
        let mut stored: HashMap<uuid::Uuid, Job> = jobs
            .iter()
            .filter(|j| inserted.contains(&j.id.0))
            .map(|j| (j.id.0, stored_job(j, stored_instant)))
            .collect();
        let created: Vec<&NewJob> = jobs
            .iter()
            .filter(|j| stored.contains_key(&j.id.0))
            .collect();
        let events = if created.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<uuid::Uuid> = created.iter().map(|j| j.id.0).collect();
            let ats: Vec<DateTime<Utc>> = created.iter().map(|j| j.created_at).collect();
            let actors: Vec<&str> = created.iter().map(|j| rules::submitter(j)).collect();
            let steps: Vec<Option<String>> = created.iter().map(|j| rules::first_step(j)).collect();
            let rows = tx
                .cached_query(
                    &format!(
                        "INSERT INTO events (job_id, at, from_state, to_state, reason, actor, step) \
                         SELECT job, at, NULL, 'pending', 'submitted', actor, step \
                         FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[]) AS t(job, at, actor, step) \
                         RETURNING {EVENT_COLUMNS}"
                    ),
                    &[&ids, &ats, &actors, &steps],
                )
                .await
                .map_err(pg)?;
            notify(&tx, WAKE_CHANNEL, "").await?;
            rows.iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>>>()?
        };
        let taken: Vec<(&str, &str, &str)> = jobs
            .iter()
            .filter(|j| !stored.contains_key(&j.id.0))
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
                let job = job_from_row(row)?;
                stored.insert(job.id.0, job);
            }
        }
        tx.commit().await.map_err(pg)?;
        for job in stored.values().filter(|j| j.state.is_waiting()) {
            self.floors.lower(job);
        }
        rules::answer_inserts(&jobs, stored.into_values().collect(), events)
    }
}
