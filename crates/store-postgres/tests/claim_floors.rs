//! Claim floors on PostgreSQL: a claim starts its walk of the claim index where the node's
//! last claim found its first job, so that it passes over the entries of jobs already taken.
//! Nothing claimable may hide below a floor for long: what this node makes claimable lowers
//! the floor at once, and what another node does is found by the next walk from the
//! beginning, a fraction of a second later.

use chrono::Utc;
use retryd_store::conformance::{DynStore, claim_request, new_job};
use retryd_store_postgres::PostgresStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn node(url: &str) -> DynStore {
    Arc::new(PostgresStore::connect(url).await.expect("connect"))
}

/// Claims one job at a time until the job `wanted` comes; returns how long that took.
async fn claimed_within(store: &DynStore, wanted: retryd_core::JobId) -> Duration {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let claimed = store
            .claim_jobs(&claim_request(Utc::now(), 1))
            .await
            .unwrap();
        if claimed.iter().any(|c| c.job.id == wanted) {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {wanted} was not claimed in 5 s");
}

#[tokio::test]
async fn a_job_stored_ahead_of_a_floor_is_claimed_at_once_here_and_soon_on_another_node() {
    let url = retryd_store_postgres::testing::fresh_database().await;
    let (a, b) = (node(&url).await, node(&url).await);
    for _ in 0..40 {
        a.insert_job(new_job("default", 0, -60)).await.unwrap();
    }
    // A backlog being worked through: each claim fills its slots, so the next one starts
    // at the floor.
    for _ in 0..3 {
        assert_eq!(
            a.claim_jobs(&claim_request(Utc::now(), 4))
                .await
                .unwrap()
                .len(),
            4
        );
    }

    // Stored by this node with a higher priority: ahead of the floor, and the very next
    // claim takes it.
    let urgent = a.insert_job(new_job("default", 9, -60)).await.unwrap().job;
    let next = a.claim_jobs(&claim_request(Utc::now(), 1)).await.unwrap();
    assert_eq!(
        next[0].job.id, urgent.id,
        "this node's own job lowers its floor"
    );

    // Stored by another node: this node learns of it by a walk from the beginning.
    let from_b = b.insert_job(new_job("default", 9, -60)).await.unwrap().job;
    let waited = claimed_within(&a, from_b.id).await;
    assert!(
        waited < Duration::from_secs(1),
        "another node's job waited {waited:?} below the floor"
    );

    // A job due earlier than the floor's (same priority), by another node: the same.
    let early = b
        .insert_job(new_job("default", 0, -3600))
        .await
        .unwrap()
        .job;
    let waited = claimed_within(&a, early.id).await;
    assert!(waited < Duration::from_secs(1), "waited {waited:?}");
}

#[tokio::test]
async fn a_claim_that_finds_too_few_above_its_floor_looks_below_it_at_once() {
    let url = retryd_store_postgres::testing::fresh_database().await;
    let (a, b) = (node(&url).await, node(&url).await);
    for _ in 0..8 {
        a.insert_job(new_job("default", 0, -60)).await.unwrap();
    }
    assert_eq!(
        a.claim_jobs(&claim_request(Utc::now(), 4))
            .await
            .unwrap()
            .len(),
        4
    );
    // Another node stores a job ahead of a's floor; a's claim for more slots than the
    // backlog above the floor holds walks from the beginning in the same claim.
    let from_b = b.insert_job(new_job("default", 5, -60)).await.unwrap().job;
    let claimed = a.claim_jobs(&claim_request(Utc::now(), 16)).await.unwrap();
    assert_eq!(claimed.len(), 5, "the 4 left and b's job");
    assert!(claimed.iter().any(|c| c.job.id == from_b.id));
}
