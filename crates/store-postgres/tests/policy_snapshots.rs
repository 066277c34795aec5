//! Policy snapshots on PostgreSQL (migration 0021): a policy is stored once however many jobs
//! take it, by whichever process stores it first; every read gives each job its own policy,
//! whether the row names a snapshot, holds the policy itself (written before the migration)
//! or had it changed by a requeue.

use chrono::{Duration, Utc};
use retryd_core::job::NewJob;
use retryd_core::policy::Policy;
use retryd_core::{JobId, JobState};
use retryd_store::conformance::{DynStore, claim_request, new_job};
use retryd_store::{JobChanges, JobFilter, Requeue};
use retryd_store_postgres::PostgresStore;
use std::sync::Arc;
use std::time::Duration as StdDuration;

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

fn patient() -> Policy {
    Policy {
        max_attempts: 7,
        initial_delay: StdDuration::from_secs(3),
        ..Policy::default()
    }
}

#[tokio::test]
async fn a_policy_is_stored_once_and_every_job_reads_its_own() {
    let url = retryd_store_postgres::testing::fresh_database().await;
    let store: DynStore = Arc::new(PostgresStore::connect(&url).await.expect("connect"));
    let db = retryd_store_postgres::testing::connect(&url).await;

    // Five jobs under two policies, in one batch: two snapshots, no policy on the rows.
    let policies = [
        Policy::default(),
        patient(),
        Policy::default(),
        patient(),
        Policy::default(),
    ];
    let jobs: Vec<_> = policies
        .iter()
        .map(|policy| NewJob {
            policy: policy.clone(),
            ..new_job("default", 50, 0)
        })
        .collect();
    store.insert_jobs(jobs.clone()).await.expect("insert");
    assert_eq!(count(&db, "SELECT count(*) FROM policy_snapshots").await, 2);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM jobs WHERE policy IS NULL AND policy_id IS NOT NULL"
        )
        .await,
        5
    );

    // Another process (no snapshot known) stores the same policy: still two snapshots.
    let other: DynStore = Arc::new(PostgresStore::connect(&url).await.expect("connect"));
    let late = NewJob {
        policy: patient(),
        ..new_job("default", 50, 0)
    };
    other.insert_job(late.clone()).await.expect("insert");
    assert_eq!(count(&db, "SELECT count(*) FROM policy_snapshots").await, 2);

    // A row written before the migration holds its policy itself.
    let old = JobId::new();
    let inline = Policy {
        max_attempts: 2,
        ..Policy::default()
    };
    db.execute(
        "INSERT INTO jobs (id, queue, kind, target, action, policy_name, policy, priority, run_at, \
                           labels, state, attempt, next_attempt_at, created_at, updated_at, org) \
         SELECT $1, queue, kind, target, action, policy_name, $2, priority, run_at, labels, state, \
                attempt, next_attempt_at, created_at, updated_at, org FROM jobs WHERE id = $3",
        &[
            &old.0,
            &serde_json::to_value(&inline).unwrap(),
            &jobs[0].id.0,
        ],
    )
    .await
    .expect("an old row");

    let mut expected: Vec<(JobId, Policy)> =
        jobs.iter().map(|j| (j.id, j.policy.clone())).collect();
    expected.push((late.id, patient()));
    expected.push((old, inline.clone()));
    for (id, policy) in &expected {
        assert_eq!(
            &store.get_job(*id).await.unwrap().policy,
            policy,
            "get {id}"
        );
    }
    let listed = store
        .list_jobs(&JobFilter::default(), None, 100)
        .await
        .unwrap()
        .jobs;
    assert_eq!(listed.len(), expected.len());
    for job in &listed {
        let (_, policy) = expected.iter().find(|(id, _)| *id == job.id).unwrap();
        assert_eq!(&job.policy, policy, "listed {}", job.id);
    }

    // The claim and the result read the snapshots through the process's own ids, also in a
    // process that never stored them.
    let fresh: DynStore = Arc::new(PostgresStore::connect(&url).await.expect("connect"));
    let now = Utc::now();
    let claimed = fresh
        .claim_jobs(&claim_request(now, 100))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), expected.len());
    for c in &claimed {
        let (_, policy) = expected.iter().find(|(id, _)| *id == c.job.id).unwrap();
        assert_eq!(&c.job.policy, policy, "claimed {}", c.job.id);
    }

    // A requeue that changes the policy puts the new one on the row, and it wins.
    let (id, _) = expected[1].clone();
    db.execute(
        "UPDATE jobs SET state = 'failed', finished_at = now(), lease_owner = NULL, \
         lease_expires_at = NULL, current_attempt_id = NULL WHERE id = $1",
        &[&id.0],
    )
    .await
    .unwrap();
    let fixed = Policy {
        max_attempts: 9,
        ..patient()
    };
    let (requeued, _) = store
        .requeue_job(
            id,
            &Requeue {
                reset: true,
                actor: "carol".into(),
                now: now + Duration::seconds(1),
                changes: Some(JobChanges {
                    action: jobs[1].action.clone(),
                    policy_name: "fixed".into(),
                    policy: fixed.clone(),
                    deadline: None,
                    summary: "policy".into(),
                }),
            },
        )
        .await
        .expect("requeue");
    assert_eq!(
        (requeued.state, &requeued.policy),
        (JobState::Pending, &fixed)
    );
    assert_eq!(store.get_job(id).await.unwrap().policy, fixed);
    let again = store
        .claim_jobs(&claim_request(now + Duration::seconds(2), 10))
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.policy, fixed);
}
