//! The live stream's order on PostgreSQL, where several transactions write events at once:
//! an event whose id was drawn before another's but whose transaction commits after it is
//! still streamed, and a cursor whose event was pruned still resumes.

use retryd_store::conformance::{DynStore, new_job, stream_starts_after};
use retryd_store_postgres::PostgresStore;
use std::time::{Duration, Instant};

/// The ids streamed after `after`, once there are `want` of them. A reader waits for every
/// older transaction on the whole server to end (other tests' among them), so this allows
/// for a few moments' wait; it never returns more than the events there are.
async fn streamed(store: &DynStore, after: i64, want: usize) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<i64> = store
            .events_after(after, 100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        if ids.len() >= want || Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_event_committed_after_a_later_id_is_streamed_not_skipped() {
    let url = retryd_store_postgres::testing::fresh_database().await;
    let store: DynStore = std::sync::Arc::new(PostgresStore::connect(&url).await.expect("connect"));
    let first = store.insert_job(new_job("default", 50, 0)).await.unwrap();
    let first_event = first.event.expect("creation event").id;

    // A slow writer draws the next event id and keeps its transaction open.
    let slow = retryd_store_postgres::testing::connect(&url).await;
    slow.batch_execute("BEGIN").await.unwrap();
    let slow_id: i64 = slow
        .query_one(
            "INSERT INTO events (job_id, at, to_state, reason, actor) \
             VALUES ($1, now(), 'pending', 'slow writer', 'test') RETURNING id",
            &[&first.job.id.0],
        )
        .await
        .unwrap()
        .get(0);

    // Meanwhile another job's event, with a higher id, commits.
    let second = store.insert_job(new_job("default", 50, 0)).await.unwrap();
    let second_event = second.event.expect("creation event").id;
    assert!(second_event > slow_id);

    // While the slow transaction is open its place in the stream is unknown, so nothing
    // after it is delivered yet, and a new stream starts before it.
    stream_starts_after(&store, first_event).await;
    assert_eq!(store.events_after(first_event, 100).await.unwrap(), vec![]);

    slow.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        streamed(&store, first_event, 2).await,
        vec![slow_id, second_event]
    );
    stream_starts_after(&store, second_event).await;
    assert_eq!(store.events_after(second_event, 100).await.unwrap(), vec![]);

    // A rolled-back writer leaves a gap in the ids; the stream does not wait for it.
    let aborted = retryd_store_postgres::testing::connect(&url).await;
    aborted.batch_execute("BEGIN").await.unwrap();
    aborted
        .execute(
            "INSERT INTO events (job_id, at, to_state, reason, actor) \
             VALUES ($1, now(), 'pending', 'rolled back', 'test')",
            &[&first.job.id.0],
        )
        .await
        .unwrap();
    aborted.batch_execute("ROLLBACK").await.unwrap();
    let third = store.insert_job(new_job("default", 50, 0)).await.unwrap();
    let third_event = third.event.expect("creation event").id;
    assert_eq!(streamed(&store, second_event, 1).await, vec![third_event]);

    // A client resuming after an event that has since been pruned still gets what followed.
    retryd_store_postgres::testing::connect(&url)
        .await
        .execute("DELETE FROM events WHERE id = $1", &[&first_event])
        .await
        .unwrap();
    assert_eq!(
        streamed(&store, first_event, 3).await,
        vec![slow_id, second_event, third_event]
    );
}
