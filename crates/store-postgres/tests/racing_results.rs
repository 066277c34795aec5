//! A result that arrives while another transaction holds its job's row (here a lease renewal,
//! then a rescue, written by another connection) waits for it and judges the row as that
//! transaction left it: it still applies after a renewal, and is refused after a rescue,
//! which a result group that read its jobs without locking them would overwrite.

use retryd_core::JobState;
use retryd_core::job::AttemptOutcome;
use retryd_store::conformance::{DynStore, claim_request, new_job, result, t0};
use retryd_store::{Error, Next};
use retryd_store_postgres::PostgresStore;
use std::time::{Duration, Instant};

/// Runs `change` on the job's row in a transaction of another connection, and commits it only
/// once the result waits for that row. Answers the result's answer.
async fn result_around(change: &str) -> (DynStore, retryd_core::JobId, Result<JobState, Error>) {
    let url = retryd_store_postgres::testing::fresh_database().await;
    let store: DynStore = std::sync::Arc::new(PostgresStore::connect(&url).await.expect("connect"));
    let job = store
        .insert_job(new_job("default", 50, 0))
        .await
        .unwrap()
        .job;
    let claimed = store.claim_jobs(&claim_request(t0(), 1)).await.unwrap();
    assert_eq!(claimed.len(), 1);

    let other = retryd_store_postgres::testing::connect(&url).await;
    other.batch_execute("BEGIN").await.unwrap();
    assert_eq!(other.execute(change, &[&job.id.0]).await.unwrap(), 1);

    let finishing = tokio::spawn({
        let store = store.clone();
        let result = result(
            &claimed[0],
            t0() + chrono::Duration::seconds(1),
            AttemptOutcome::Succeeded,
            Next::Succeeded,
        );
        async move { store.finish_attempt(&result).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = other
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the result never waited for the row"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    other.batch_execute("COMMIT").await.unwrap();
    let answer = finishing.await.unwrap().map(|(job, _)| job.state);
    (store, job.id, answer)
}

#[tokio::test]
async fn a_result_applies_after_a_renewal_it_waited_for() {
    let (store, id, answer) = result_around(
        "UPDATE jobs SET lease_expires_at = lease_expires_at + interval '1 minute' WHERE id = $1",
    )
    .await;
    assert_eq!(answer.unwrap(), JobState::Succeeded);
    let job = store.get_job(id).await.unwrap();
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.lease_owner, None);
}

#[tokio::test]
async fn a_result_is_refused_after_a_rescue_it_waited_for() {
    let (store, id, answer) = result_around(
        "UPDATE jobs SET state = 'retrying', lease_owner = NULL, lease_expires_at = NULL, \
         current_attempt_id = NULL, next_attempt_at = now() WHERE id = $1",
    )
    .await;
    assert!(
        matches!(answer, Err(Error::LeaseLost { .. })),
        "a rescued attempt's result must be refused: {answer:?}"
    );
    let job = store.get_job(id).await.unwrap();
    assert_eq!(job.state, JobState::Retrying, "the rescue stands");
    assert_eq!(job.finished_at, None);
}
