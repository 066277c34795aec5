//! The behaviour every backend must show. Each function is one test; a backend runs them
//! all with [`conformance_tests!`](crate::conformance_tests), each on a fresh database.

use crate::*;
use chrono::{Duration as Span, TimeZone};
use retryd_core::Policy;
use retryd_core::job::{Action, CommandAction, HandlerAction};
use retryd_core::org::DEFAULT_ORG;
use retryd_core::pipeline::{PipelineAction, Step, StepRecord, StepStatus};
use std::sync::Arc;
use std::time::Duration;

pub type DynStore = Arc<dyn Store>;

/// Generates one `#[tokio::test]` per conformance test. `$make` is an async expression that
/// yields a fresh [`DynStore`].
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            insert_and_get_round_trip,
            idempotency_key_returns_the_existing_job,
            a_batch_insert_answers_each_job_in_order_with_its_key_honoured,
            a_large_batch_keeps_its_order_and_keys_across_its_statements,
            claims_go_by_priority_then_due_time,
            jobs_are_not_claimed_before_they_are_due,
            concurrent_claims_never_claim_a_job_twice,
            claims_respect_queue_slots_and_paused_queues,
            a_failed_attempt_schedules_the_retry,
            late_result_after_rescue_is_refused,
            expired_leases_are_found_and_renewed_ones_are_not,
            cancel_waiting_job_at_once_and_running_job_by_request,
            cancelling_a_finished_job_is_an_invalid_transition,
            requeue_with_and_without_reset,
            a_released_attempt_is_not_counted,
            deadlines_expire_waiting_jobs,
            prune_and_purge_never_touch_live_jobs,
            listing_filters_and_cursor_pagination,
            listing_combines_labels_states_and_cursors,
            logs_append_trim_and_read,
            an_attempts_system_lines_read_back_in_order_around_its_output,
            results_finished_at_once_each_apply_once_with_their_lines,
            an_attempts_process_is_recorded,
            paused_queues_are_remembered,
            next_wakeup_is_the_earliest_due_instant,
            tokens_are_unique_by_name_and_revocable,
            managed_policies_are_created_updated_and_deactivated,
            stats_rows_group_what_happened_in_the_window,
            top_errors_rank_by_jobs_not_attempts,
            pipeline_steps_advance_under_one_lease_and_survive_a_requeue,
            an_open_circuit_holds_its_target_until_a_probe_closes_it,
            a_retry_budget_caps_retries_per_target_but_not_first_attempts,
            notifications_are_enqueued_with_the_result_and_delivered_once,
            handler_jobs_go_only_to_nodes_that_registered_their_kind,
            schedules_are_unique_by_name_and_advance_only_from_the_expected_fire_time,
            organizations_own_their_jobs_keys_queues_and_counts,
            claims_share_free_slots_between_organizations,
            an_organizations_running_limit_caps_its_claims,
            an_organizations_retry_budget_caps_its_retries_only,
            organizations_and_channels_are_kept,
            listing_searches_ids_kinds_targets_errors_and_labels,
            a_circuit_closed_by_hand_frees_what_it_held,
            claims_and_results_answer_each_job_as_stored,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: $crate::conformance::DynStore = $make.await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}

/// The instant the tests' jobs are due at, and claimed at.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()
}

fn secs(n: i64) -> Span {
    Span::seconds(n)
}

/// A plain job in `queue`, due at `t0 + due_in`.
pub fn new_job(queue: &str, priority: u8, due_in: i64) -> NewJob {
    NewJob {
        id: JobId::new(),
        org: DEFAULT_ORG.to_owned(),
        queue: queue.to_owned(),
        kind: "deploy".to_owned(),
        target: Some("metis-rpc".to_owned()),
        action: Action::Command(CommandAction {
            program: "true".into(),
            args: vec![],
            cwd: None,
            env: Default::default(),
            stdin: None,
            timeout: None,
        }),
        policy_name: "default".into(),
        policy: Policy::default(),
        priority,
        run_at: t0() + secs(due_in),
        deadline: None,
        labels: [("env".to_owned(), "prod".to_owned())].into(),
        idempotency_key: None,
        created_by: Some("conformance".into()),
        created_at: t0(),
    }
}

pub fn claim_request(now: DateTime<Utc>, limit: usize) -> ClaimRequest {
    ClaimRequest {
        node: "node-a".into(),
        now,
        due_by: now,
        lease_until: now + secs(30),
        limit,
        queue_free: HashMap::new(),
        default_queue_free: limit,
        limits: Arc::new(TargetLimits::default()),
        runnable: Runnable::default(),
    }
}

/// A result of `claimed`'s attempt as its node reports it: a transient failure's details,
/// with `outcome` and `next` as given.
pub fn result(
    claimed: &Claimed,
    now: DateTime<Utc>,
    outcome: AttemptOutcome,
    next: Next,
) -> AttemptResult {
    AttemptResult {
        lease: claimed.lease.clone(),
        fence: Fence::Owner,
        now,
        outcome,
        exit_code: Some(1),
        error: Some("connection refused".into()),
        class: Some(Class::Transient),
        rule: Some("output: connection refused or reset".into()),
        output_dropped_bytes: 0,
        next,
        reason: "test".into(),
        actor: "node-a".into(),
        step: None,
        circuit: None,
        notify: vec![],
        log: LogAppend::default(),
    }
}

/// Waits until a new live stream would start after event `id`. With one writer at a time
/// (SQLite) that is at once; where several commit at once (PostgreSQL) it is once every older
/// transaction on the server has ended, other tests' among them.
pub async fn stream_starts_after(store: &DynStore, id: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let last = store.last_event_id().await.unwrap();
        if last == id {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream starts after {last}, not {id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn insert(store: &DynStore, job: NewJob) -> Job {
    store.insert_job(job).await.expect("insert").job
}

pub async fn insert_and_get_round_trip(store: DynStore) {
    let new = NewJob {
        deadline: Some(t0() + secs(3600)),
        idempotency_key: Some("k".into()),
        ..new_job("default", 50, 0)
    };
    let inserted = store.insert_job(new.clone()).await.unwrap();
    assert!(inserted.created);
    let event = inserted.event.expect("creation event");
    stream_starts_after(&store, event.id).await;
    assert_eq!((event.from, event.to), (None, JobState::Pending));
    let job = store.get_job(new.id).await.unwrap();
    assert_eq!(job, inserted.job);
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.attempt, 0);
    assert_eq!(job.action, new.action);
    assert_eq!(job.policy, new.policy);
    assert_eq!(job.labels, new.labels);
    assert_eq!(job.deadline, new.deadline);
    assert_eq!(job.next_attempt_at, Some(new.run_at));
    assert!(matches!(
        store.get_job(JobId::new()).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn idempotency_key_returns_the_existing_job(store: DynStore) {
    let first = NewJob {
        idempotency_key: Some("deploy-42".into()),
        ..new_job("default", 50, 0)
    };
    let again = NewJob {
        idempotency_key: Some("deploy-42".into()),
        ..new_job("default", 50, 0)
    };
    let other_queue = NewJob {
        idempotency_key: Some("deploy-42".into()),
        ..new_job("other", 50, 0)
    };
    let a = store.insert_job(first).await.unwrap();
    let b = store.insert_job(again).await.unwrap();
    assert!(a.created && !b.created);
    assert_eq!(a.job.id, b.job.id);
    assert!(b.event.is_none());
    let c = store.insert_job(other_queue).await.unwrap();
    assert!(c.created, "keys are scoped to a queue");
}

/// Issue 13: bulk enqueue. One transaction; keys taken by a stored job or by an earlier job
/// of the same batch return that job, and only created jobs get a `submitted` event.
pub async fn a_batch_insert_answers_each_job_in_order_with_its_key_honoured(store: DynStore) {
    let stored = insert(
        &store,
        NewJob {
            idempotency_key: Some("release-1".into()),
            ..new_job("default", 50, 0)
        },
    )
    .await;
    let keyed = |key: &str| NewJob {
        idempotency_key: Some(key.into()),
        ..new_job("default", 50, 0)
    };
    let batch = vec![
        new_job("default", 50, 0),
        keyed("release-1"),
        keyed("release-2"),
        new_job("other", 90, -5),
        keyed("release-2"),
    ];
    let answers = store.insert_jobs(batch.clone()).await.unwrap();
    assert_eq!(answers.len(), batch.len());
    let created: Vec<bool> = answers.iter().map(|a| a.created).collect();
    assert_eq!(created, [true, false, true, true, false]);
    assert_eq!(answers[0].job.id, batch[0].id);
    assert_eq!(answers[1].job.id, stored.id, "a stored key returns its job");
    assert_eq!(answers[2].job.id, batch[2].id);
    assert_eq!(answers[3].job.queue, "other");
    assert_eq!(
        answers[4].job.id, batch[2].id,
        "a key used earlier in the batch returns that job"
    );
    for answer in &answers {
        assert_eq!(answer.event.is_some(), answer.created);
        assert_eq!(store.get_job(answer.job.id).await.unwrap(), answer.job);
    }
    let last = answers
        .iter()
        .filter_map(|a| a.event.as_ref())
        .map(|e| e.id)
        .max()
        .unwrap();
    stream_starts_after(&store, last).await;
    let pending = store.count_by_state(None).await.unwrap()[&JobState::Pending];
    assert_eq!(pending, 4, "one stored before, three created by the batch");
    // A batch is claimable like single jobs: the priority 90 job first.
    let claimed = store.claim_jobs(&claim_request(t0(), 1)).await.unwrap();
    assert_eq!(claimed[0].job.id, batch[3].id);
    assert!(store.insert_jobs(Vec::new()).await.unwrap().is_empty());
}

/// A backend may send a large batch as several statements (PostgreSQL: chunks of 500 rows,
/// pipelined): a key first used in one of them is honoured in a later one, and the created
/// jobs' events stream in the batch's order.
pub async fn a_large_batch_keeps_its_order_and_keys_across_its_statements(store: DynStore) {
    let mut batch: Vec<NewJob> = (0..1_300).map(|_| new_job("default", 50, 0)).collect();
    batch[10].idempotency_key = Some("rollout-7".into());
    batch[1_250].idempotency_key = Some("rollout-7".into());
    let answers = store.insert_jobs(batch.clone()).await.unwrap();
    assert_eq!(answers.len(), batch.len());
    assert!(!answers[1_250].created);
    assert_eq!(
        answers[1_250].job.id, batch[10].id,
        "a key used in an earlier statement of the batch returns that job"
    );
    let created: Vec<&Inserted> = answers.iter().filter(|a| a.created).collect();
    assert_eq!(created.len(), 1_299);
    let ids: Vec<i64> = created
        .iter()
        .map(|a| a.event.as_ref().expect("created jobs have an event").id)
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "events in the batch's order"
    );
    for (answer, job) in answers.iter().zip(&batch).filter(|(a, _)| a.created) {
        assert_eq!(answer.job.id, job.id);
    }
    let pending = store.count_by_state(None).await.unwrap()[&JobState::Pending];
    assert_eq!(pending, 1_299);
}

pub async fn claims_go_by_priority_then_due_time(store: DynStore) {
    let low = insert(&store, new_job("default", 10, -30)).await;
    let high_late = insert(&store, new_job("default", 90, -10)).await;
    let high_early = insert(&store, new_job("default", 90, -20)).await;
    let claimed = store.claim_jobs(&claim_request(t0(), 10)).await.unwrap();
    let order: Vec<JobId> = claimed.iter().map(|c| c.job.id).collect();
    assert_eq!(order, vec![high_early.id, high_late.id, low.id]);
    for c in &claimed {
        assert_eq!(c.job.state, JobState::Running);
        assert_eq!(c.job.attempt, 1, "an attempt counts from its claim");
        assert_eq!(c.lease.attempt, 1);
        assert_eq!(c.job.lease_owner.as_deref(), Some("node-a"));
        assert_eq!(
            (c.event.from, c.event.to),
            (Some(JobState::Pending), JobState::Running)
        );
    }
    let attempts = store.list_attempts(low.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, None);
}

pub async fn jobs_are_not_claimed_before_they_are_due(store: DynStore) {
    let later = insert(&store, new_job("default", 50, 60)).await;
    assert!(
        store
            .claim_jobs(&claim_request(t0(), 10))
            .await
            .unwrap()
            .is_empty()
    );
    // Claimed ahead by `due_by`, not by `now`; the claim says when the job is due.
    let ahead = ClaimRequest {
        due_by: t0() + secs(59),
        ..claim_request(t0(), 10)
    };
    assert!(store.claim_jobs(&ahead).await.unwrap().is_empty());
    let ahead = ClaimRequest {
        due_by: t0() + secs(60),
        ..claim_request(t0() + secs(55), 10)
    };
    let claimed = store.claim_jobs(&ahead).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job.id, later.id);
    assert_eq!(claimed[0].due_at, t0() + secs(60));
    // Its attempt starts at the due time, not at the claim.
    assert_eq!(claimed[0].job.started_at, Some(t0() + secs(60)));
    let attempts = store.list_attempts(later.id).await.unwrap();
    assert_eq!(attempts[0].started_at, t0() + secs(60));
    assert_eq!(claimed[0].event.at, t0() + secs(55));
}

pub async fn concurrent_claims_never_claim_a_job_twice(store: DynStore) {
    for _ in 0..60 {
        insert(&store, new_job("default", 50, 0)).await;
    }
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let mut request = claim_request(t0(), 3);
                request.node = format!("node-{worker}");
                let claimed = store.claim_jobs(&request).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                mine.extend(claimed.into_iter().map(|c| c.job.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, 60, "every job claimed");
    assert_eq!(all.len(), 60, "no job claimed twice");
}

pub async fn claims_respect_queue_slots_and_paused_queues(store: DynStore) {
    for _ in 0..3 {
        insert(&store, new_job("deploy", 50, 0)).await;
        insert(&store, new_job("mail", 50, 0)).await;
        insert(&store, new_job("paused", 90, 0)).await;
    }
    let mut request = claim_request(t0(), 10);
    request.queue_free.insert("deploy".into(), 1);
    request.default_queue_free = 2;
    store
        .set_queue_paused(DEFAULT_ORG, "paused", true, "ops", t0())
        .await
        .unwrap();
    let claimed = store.claim_jobs(&request).await.unwrap();
    let count = |q: &str| claimed.iter().filter(|c| c.job.queue == q).count();
    assert_eq!((count("deploy"), count("mail"), count("paused")), (1, 2, 0));
    let mut full = claim_request(t0(), 10);
    full.queue_free.insert("deploy".into(), 0);
    full.queue_free.insert("mail".into(), 0);
    assert!(store.claim_jobs(&full).await.unwrap().is_empty());
}

pub async fn a_failed_attempt_schedules_the_retry(store: DynStore) {
    let job = insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    let at = t0() + secs(5);
    let next = Next::Retry {
        at,
        delay: std::time::Duration::from_secs(5),
        delay_reason: "backoff".into(),
    };
    let (after, event) = store
        .finish_attempt(&result(&claimed, t0(), AttemptOutcome::Failed, next))
        .await
        .unwrap();
    assert_eq!(after.state, JobState::Retrying);
    assert_eq!(after.next_attempt_at, Some(at));
    assert_eq!(after.last_error_class, Some(Class::Transient));
    assert_eq!(
        after.last_rule.as_deref(),
        Some("output: connection refused or reset")
    );
    assert_eq!(after.lease_owner, None);
    assert_eq!(
        (event.from, event.to),
        (Some(JobState::Running), JobState::Retrying)
    );
    let attempts = store.list_attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Failed));
    assert_eq!(attempts[0].next_delay_ms, Some(5000));
    assert_eq!(attempts[0].delay_reason.as_deref(), Some("backoff"));
    assert!(
        store
            .claim_jobs(&claim_request(t0() + secs(4), 1))
            .await
            .unwrap()
            .is_empty()
    );
    let second = store
        .claim_jobs(&claim_request(at, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.lease.attempt, 2);
    assert_eq!(
        second.due_at, at,
        "the claim reports when the retry was due"
    );
    let (done, _) = store
        .finish_attempt(&AttemptResult {
            exit_code: Some(0),
            error: None,
            class: None,
            rule: None,
            ..result(&second, at, AttemptOutcome::Succeeded, Next::Succeeded)
        })
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert!(done.finished_at.is_some());
    let events: Vec<JobState> = store
        .list_events(job.id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.to)
        .collect();
    assert_eq!(
        events,
        vec![
            JobState::Pending,
            JobState::Running,
            JobState::Retrying,
            JobState::Running,
            JobState::Succeeded
        ]
    );
}

pub async fn late_result_after_rescue_is_refused(store: DynStore) {
    insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    let later = t0() + secs(31);
    let next = Next::Retry {
        at: later,
        delay: std::time::Duration::ZERO,
        delay_reason: "backoff".into(),
    };
    let rescue = AttemptResult {
        fence: Fence::Rescue {
            expired_before: later,
        },
        ..result(&claimed, later, AttemptOutcome::Lost, next)
    };
    store.finish_attempt(&rescue).await.unwrap();
    let late = store
        .finish_attempt(&result(
            &claimed,
            later,
            AttemptOutcome::Succeeded,
            Next::Succeeded,
        ))
        .await;
    assert!(matches!(late, Err(Error::LeaseLost { .. })), "{late:?}");
    let second = store
        .claim_jobs(&claim_request(later, 1))
        .await
        .unwrap()
        .remove(0);
    let stale = store
        .finish_attempt(&result(
            &claimed,
            later,
            AttemptOutcome::Succeeded,
            Next::Succeeded,
        ))
        .await;
    assert!(
        matches!(stale, Err(Error::LeaseLost { .. })),
        "an old lease cannot finish a new attempt"
    );
    let early_rescue = AttemptResult {
        fence: Fence::Rescue {
            expired_before: later,
        },
        ..result(&second, later, AttemptOutcome::Lost, Next::Failed)
    };
    assert!(
        matches!(
            store.finish_attempt(&early_rescue).await,
            Err(Error::LeaseLost { .. })
        ),
        "a live lease is not rescued"
    );
}

pub async fn expired_leases_are_found_and_renewed_ones_are_not(store: DynStore) {
    insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .expired_leases(t0() + secs(29))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.expired_leases(t0() + secs(31)).await.unwrap().len(),
        1
    );
    assert_eq!(
        store
            .renew_leases("node-a", &[], t0() + secs(60))
            .await
            .unwrap(),
        Renewal::default()
    );
    assert_eq!(
        store.expired_leases(t0() + secs(31)).await.unwrap().len(),
        1,
        "only named attempts are renewed"
    );
    assert_eq!(
        store
            .renew_leases("node-a", &[claimed.lease.attempt_id], t0() + secs(60))
            .await
            .unwrap(),
        Renewal::default()
    );
    assert!(
        store
            .expired_leases(t0() + secs(31))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .get_job(claimed.job.id)
            .await
            .unwrap()
            .lease_expires_at,
        Some(t0() + secs(60))
    );
    assert_eq!(
        store
            .renew_leases("node-b", &[claimed.lease.attempt_id], t0() + secs(90))
            .await
            .unwrap()
            .lost,
        vec![claimed.lease.attempt_id],
        "issue 14: node-b learns it does not hold node-a's attempt"
    );
    assert_eq!(
        store.expired_leases(t0() + secs(61)).await.unwrap().len(),
        1,
        "another node's renewal does not count"
    );
}

pub async fn cancel_waiting_job_at_once_and_running_job_by_request(store: DynStore) {
    let waiting = insert(&store, new_job("default", 10, 0)).await;
    let running = insert(&store, new_job("default", 90, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claimed.job.id, running.id);
    let (job, event) = store.cancel_job(waiting.id, "alice", t0()).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(event.unwrap().actor, "alice");
    let (job, event) = store.cancel_job(running.id, "alice", t0()).await.unwrap();
    assert_eq!((job.state, job.cancel_requested), (JobState::Running, true));
    // Issue 19: who asked is on the timeline, once.
    let event = event.expect("the request is an event");
    assert_eq!(
        (event.from, event.to, event.actor.as_str()),
        (Some(JobState::Running), JobState::Running, "alice")
    );
    assert!(event.reason.starts_with("cancel requested by alice"));
    let (_, again) = store.cancel_job(running.id, "bob", t0()).await.unwrap();
    assert!(again.is_none(), "asked again: no second event");
    assert_eq!(
        store
            .renew_leases("node-a", &[claimed.lease.attempt_id], t0() + secs(30))
            .await
            .unwrap()
            .cancelled,
        vec![running.id]
    );
    let (job, _) = store
        .finish_attempt(&result(
            &claimed,
            t0(),
            AttemptOutcome::Cancelled,
            Next::Cancelled,
        ))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Cancelled);
}

pub async fn cancelling_a_finished_job_is_an_invalid_transition(store: DynStore) {
    let job = insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    store
        .finish_attempt(&result(
            &claimed,
            t0(),
            AttemptOutcome::Succeeded,
            Next::Succeeded,
        ))
        .await
        .unwrap();
    let before = store.get_job(job.id).await.unwrap();
    let refused = store.cancel_job(job.id, "bob", t0()).await;
    assert!(matches!(refused, Err(Error::Transition(_))), "{refused:?}");
    assert_eq!(
        store.get_job(job.id).await.unwrap(),
        before,
        "a refused change changes nothing"
    );
    let requeue = Requeue {
        reset: false,
        actor: "bob".into(),
        now: t0(),
        changes: None,
    };
    assert!(matches!(
        store.requeue_job(job.id, &requeue).await,
        Err(Error::Transition(_))
    ));
    assert!(matches!(
        store.cancel_job(JobId::new(), "bob", t0()).await,
        Err(Error::NotFound(_))
    ));
}

pub async fn requeue_with_and_without_reset(store: DynStore) {
    let job = insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    let failed = AttemptResult {
        class: Some(Class::Permanent),
        ..result(&claimed, t0(), AttemptOutcome::Failed, Next::Failed)
    };
    let (dead, _) = store.finish_attempt(&failed).await.unwrap();
    assert_eq!(dead.finish_reason.as_deref(), Some("test"));
    let later = t0() + secs(10);
    let (job1, event) = store
        .requeue_job(
            job.id,
            &Requeue {
                reset: false,
                actor: "carol".into(),
                now: later,
                changes: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (job1.state, job1.attempt, job1.next_attempt_at),
        (JobState::Pending, 1, Some(later))
    );
    assert_eq!(job1.finish_reason, None);
    assert_eq!(event.unwrap().actor, "carol");
    let again = store
        .claim_jobs(&claim_request(later, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.lease.attempt, 2);
    store
        .finish_attempt(&result(&again, later, AttemptOutcome::Failed, Next::Failed))
        .await
        .unwrap();
    let (job2, _) = store
        .requeue_job(
            job.id,
            &Requeue {
                reset: true,
                actor: "carol".into(),
                now: later,
                changes: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(job2.attempt, 0);
    assert_eq!(
        job2.started_at, None,
        "a reset also restarts the time budget"
    );
    let third = store
        .claim_jobs(&claim_request(later, 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(third.lease.attempt, 1, "a reset starts counting again");
    assert_eq!(
        store.list_attempts(job.id).await.unwrap().len(),
        3,
        "history is kept"
    );
    // After a fix: requeued with an edited action and policy, recorded in the event.
    let fixed = Action::Command(CommandAction {
        program: "deploy.sh".into(),
        args: vec!["--retry".into()],
        cwd: None,
        env: Default::default(),
        stdin: None,
        timeout: None,
    });
    let changes = JobChanges {
        action: fixed.clone(),
        policy_name: "upload".into(),
        policy: Policy::builtin("upload").unwrap(),
        deadline: Some(later + secs(3600)),
        summary: "args; policy default → upload".into(),
    };
    let with_changes = Requeue {
        reset: true,
        actor: "dave".into(),
        now: later,
        changes: Some(changes),
    };
    assert!(
        matches!(
            store.requeue_job(job.id, &with_changes).await,
            Err(Error::Conflict(_))
        ),
        "a running job cannot be changed"
    );
    store
        .finish_attempt(&result(&third, later, AttemptOutcome::Failed, Next::Failed))
        .await
        .unwrap();
    let (job3, event) = store.requeue_job(job.id, &with_changes).await.unwrap();
    assert_eq!(job3.state, JobState::Pending);
    assert_eq!(job3.action, fixed);
    assert_eq!(job3.policy_name, "upload");
    assert_eq!(job3.policy, Policy::builtin("upload").unwrap());
    assert_eq!(
        job3.deadline,
        Some(later + secs(3600)),
        "issue 15: a later deadline"
    );
    let reason = event.unwrap().reason;
    assert!(
        reason.contains("changed: args; policy default → upload"),
        "{reason}"
    );
}

pub async fn a_released_attempt_is_not_counted(store: DynStore) {
    let job = insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    let released = AttemptResult {
        class: Some(Class::Transient),
        ..result(
            &claimed,
            t0(),
            AttemptOutcome::Lost,
            Next::Released { at: t0() },
        )
    };
    let (after, event) = store.finish_attempt(&released).await.unwrap();
    assert_eq!(
        (after.state, after.attempt, after.next_attempt_at),
        (JobState::Retrying, 0, Some(t0()))
    );
    assert_eq!(event.to, JobState::Retrying);
    let again = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.lease.attempt, 1);
    let attempts = store.list_attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].outcome, Some(AttemptOutcome::Lost));
    assert_eq!(
        attempts[0].delay_reason.as_deref(),
        Some("released at shutdown")
    );
}

pub async fn deadlines_expire_waiting_jobs(store: DynStore) {
    let soon = insert(
        &store,
        NewJob {
            deadline: Some(t0() + secs(5)),
            ..new_job("default", 50, 60)
        },
    )
    .await;
    let fine = insert(
        &store,
        NewJob {
            deadline: Some(t0() + secs(500)),
            ..new_job("default", 50, 60)
        },
    )
    .await;
    assert!(store.expire_jobs(t0()).await.unwrap().is_empty());
    let expired = store.expire_jobs(t0() + secs(5)).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0.id, soon.id);
    assert_eq!(expired[0].0.state, JobState::Expired);
    assert_eq!(expired[0].1.to, JobState::Expired);
    assert_eq!(
        store.get_job(fine.id).await.unwrap().state,
        JobState::Pending
    );
    assert!(
        store
            .claim_jobs(&claim_request(t0() + secs(60), 10))
            .await
            .unwrap()
            .iter()
            .all(|c| c.job.id != soon.id)
    );
}

pub async fn prune_and_purge_never_touch_live_jobs(store: DynStore) {
    let live = insert(&store, new_job("default", 10, 0)).await;
    let done = insert(&store, new_job("default", 90, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claimed.job.id, done.id);
    store
        .finish_attempt(&result(
            &claimed,
            t0(),
            AttemptOutcome::Succeeded,
            Next::Succeeded,
        ))
        .await
        .unwrap();
    assert_eq!(store.purge_jobs(&[live.id]).await.unwrap(), 0);
    let far = t0() + secs(86_400 * 365);
    let cutoffs: BTreeMap<JobState, DateTime<Utc>> =
        JobState::ALL.into_iter().map(|s| (s, far)).collect();
    assert_eq!(store.prune_jobs(&cutoffs).await.unwrap(), 1);
    assert!(matches!(
        store.get_job(done.id).await,
        Err(Error::NotFound(_))
    ));
    assert!(store.list_events(done.id).await.unwrap().is_empty());
    assert_eq!(
        store.get_job(live.id).await.unwrap().state,
        JobState::Pending
    );
}

pub async fn listing_filters_and_cursor_pagination(store: DynStore) {
    let mut ids = Vec::new();
    for i in 0..25 {
        let mut job = new_job(if i % 2 == 0 { "even" } else { "odd" }, 50, 0);
        job.kind = format!("kind-{}", i % 3);
        if i == 7 {
            job.labels.insert("release".into(), "v2".into());
            job.target = Some("sftp".into());
        }
        ids.push(insert(&store, job).await.id);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_jobs(&JobFilter::default(), cursor, 10)
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(
        seen, newest_first,
        "pages are newest first with no gap or repeat"
    );
    // Oldest first, the cursor walking toward newer jobs: plain, through the (state, id)
    // index, and through the label index.
    for filter in [
        JobFilter::default(),
        JobFilter {
            states: vec![JobState::Pending],
            ..Default::default()
        },
        JobFilter {
            states: vec![JobState::Pending, JobState::Failed],
            queue: Some("even".into()),
            ..Default::default()
        },
    ] {
        let filter = JobFilter {
            oldest_first: true,
            ..filter
        };
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.list_jobs(&filter, cursor, 4).await.unwrap();
            seen.extend(page.jobs.iter().map(|j| j.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected: Vec<JobId> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| filter.queue.is_none() || i % 2 == 0)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(seen, expected, "oldest first, no gap or repeat: {filter:?}");
    }
    let oldest_labelled = store
        .list_jobs(
            &JobFilter {
                label: Some(("release".into(), "v2".into())),
                oldest_first: true,
                ..Default::default()
            },
            Some(ids[3]),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        oldest_labelled
            .jobs
            .iter()
            .map(|j| j.id)
            .collect::<Vec<_>>(),
        vec![ids[7]],
        "a label's index walks oldest first past the cursor too"
    );
    let even = store
        .list_jobs(
            &JobFilter {
                queue: Some("even".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(even.jobs.len(), 13);
    let kind = store
        .list_jobs(
            &JobFilter {
                kind: Some("kind-1".into()),
                queue: Some("odd".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert!(
        kind.jobs
            .iter()
            .all(|j| j.kind == "kind-1" && j.queue == "odd")
    );
    let labelled = store
        .list_jobs(
            &JobFilter {
                label: Some(("release".into(), "v2".into())),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[7]]
    );
    let target = store
        .list_jobs(
            &JobFilter {
                target: Some("sftp".into()),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(target.jobs.len(), 1);
    let pending = store
        .list_jobs(
            &JobFilter {
                states: vec![JobState::Pending, JobState::Failed],
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(pending.jobs.len(), 25);
    let none = store
        .list_jobs(
            &JobFilter {
                states: vec![JobState::Failed],
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert!(none.jobs.is_empty() && none.next_cursor.is_none());
    let depths = store.queue_depths(None).await.unwrap();
    assert_eq!(
        (depths.get("even"), depths.get("odd")),
        (Some(&13), Some(&12))
    );
    let counts = store.count_by_state(None).await.unwrap();
    assert_eq!(counts.get(&JobState::Pending), Some(&25));
}

/// Every page of `filter`, 4 jobs at a time.
async fn all_pages(store: &DynStore, filter: &JobFilter) -> Vec<JobId> {
    let (mut seen, mut cursor) = (Vec::new(), None);
    loop {
        let page = store.list_jobs(filter, cursor, 4).await.unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return seen,
        }
    }
}

/// The dashboard's filters together (issue #6): a label with a state, one state or several,
/// queue, through cursor pages; a purged job leaves every filter, its labels included.
pub async fn listing_combines_labels_states_and_cursors(store: DynStore) {
    let mut jobs = Vec::new();
    for i in 0..30 {
        let mut job = new_job(if i % 2 == 0 { "even" } else { "odd" }, 50, 0);
        let env = if i % 3 == 0 { "prod" } else { "staging" };
        job.labels.insert("env".into(), env.into());
        if i % 5 == 0 {
            job.labels.insert("team".into(), "deploy".into());
        }
        jobs.push(insert(&store, job).await);
    }
    for job in &jobs[20..26] {
        store.cancel_job(job.id, "alice", t0()).await.unwrap();
    }
    let purged = [jobs[21].id, jobs[24].id];
    assert_eq!(store.purge_jobs(&purged).await.unwrap(), 2);
    let expect = |keep: &dyn Fn(usize) -> bool| -> Vec<JobId> {
        (0..30)
            .rev()
            .filter(|&i| !purged.contains(&jobs[i].id) && keep(i))
            .map(|i| jobs[i].id)
            .collect()
    };
    let cancelled = |i: usize| (20..26).contains(&i);
    let label = |k: &str, v: &str| Some((k.to_owned(), v.to_owned()));
    let cases: Vec<(JobFilter, Vec<JobId>)> = vec![
        (
            JobFilter {
                label: label("env", "prod"),
                ..Default::default()
            },
            expect(&|i| i % 3 == 0),
        ),
        (
            JobFilter {
                label: label("team", "deploy"),
                queue: Some("even".into()),
                ..Default::default()
            },
            expect(&|i| i % 5 == 0 && i % 2 == 0),
        ),
        (
            JobFilter {
                label: label("env", "staging"),
                states: vec![JobState::Cancelled],
                ..Default::default()
            },
            expect(&|i| i % 3 != 0 && cancelled(i)),
        ),
        (
            JobFilter {
                states: vec![JobState::Pending],
                queue: Some("odd".into()),
                ..Default::default()
            },
            expect(&|i| !cancelled(i) && i % 2 == 1),
        ),
        (
            JobFilter {
                states: vec![JobState::Pending, JobState::Cancelled],
                ..Default::default()
            },
            expect(&|_| true),
        ),
        (
            JobFilter {
                label: label("env", "nowhere"),
                ..Default::default()
            },
            vec![],
        ),
    ];
    for (filter, expected) in cases {
        assert_eq!(all_pages(&store, &filter).await, expected, "{filter:?}");
    }
}

/// The texts of log lines, in their order.
fn log_texts(lines: Vec<retryd_core::job::LogLine>) -> Vec<String> {
    lines.into_iter().map(|l| l.line).collect()
}

pub async fn logs_append_trim_and_read(store: DynStore) {
    let job = insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    let lines: Vec<NewLogLine> = (0..5)
        .map(|i| NewLogLine {
            at: t0(),
            stream: if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            line: format!("line {i}"),
        })
        .collect();
    store.append_log(&claimed.lease, 0, &lines).await.unwrap();
    let all = store.read_log(job.id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        ["line 0", "line 1", "line 2", "line 3", "line 4"]
    );
    assert_eq!(all[1].stream, Stream::Stderr);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let after = store.read_log(job.id, all[2].seq, 100).await.unwrap();
    assert_eq!(after.len(), 2);
    // Issue 19: a long log's end, and a search, oldest first.
    assert_eq!(
        log_texts(store.read_log_tail(job.id, 2, None, None).await.unwrap()),
        ["line 3", "line 4"]
    );
    // One attempt's lines: these are all of attempt 1.
    assert_eq!(
        log_texts(store.read_log_tail(job.id, 2, None, Some(1)).await.unwrap()),
        ["line 3", "line 4"]
    );
    assert!(
        store
            .read_log_tail(job.id, 10, None, Some(2))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        log_texts(
            store
                .read_log_tail(job.id, 10, Some("LINE 1"), Some(1))
                .await
                .unwrap()
        ),
        ["line 1"]
    );
    assert!(
        store
            .read_log_tail(job.id, 10, Some("nowhere"), None)
            .await
            .unwrap()
            .is_empty()
    );
    store.trim_log(&claimed.lease, 3).await.unwrap();
    let kept = store.read_log(job.id, 0, 100).await.unwrap();
    assert_eq!(
        kept.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        ["line 3", "line 4"]
    );
}

/// Issue 13: a result's opening and closing system lines may be stored on its attempt's row
/// (`rows::ResultLines`); the log reads, resumes, searches and tails exactly as if every line
/// had a row of its own, across attempts and with lines appended while an attempt ran.
pub async fn an_attempts_system_lines_read_back_in_order_around_its_output(store: DynStore) {
    let job = insert(&store, new_job("default", 50, 0)).await;
    let line = |stream: Stream, text: &str| NewLogLine {
        at: t0() + secs(1),
        stream,
        line: text.to_owned(),
    };
    // A result bringing `lines`, numbered from `first_index`.
    let with_log =
        |result: AttemptResult, first_index: u64, lines: Vec<NewLogLine>| AttemptResult {
            log: LogAppend { first_index, lines },
            ..result
        };
    // Attempt 1: its whole log comes with its result, and it fails.
    let first = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    let retry = Next::Retry {
        at: t0() + secs(5),
        delay: Duration::from_secs(5),
        delay_reason: "policy backoff".into(),
    };
    store
        .finish_attempt(&with_log(
            result(&first, t0() + secs(1), AttemptOutcome::Failed, retry),
            0,
            vec![
                line(Stream::System, "attempt 1 of 3 started on node-a"),
                line(Stream::Stdout, "deploying"),
                line(Stream::Stderr, "connection refused"),
                line(Stream::System, "exit code 1 → retrying"),
            ],
        ))
        .await
        .unwrap();
    // Attempt 2: its opening line and first output were appended while it ran.
    let second = store
        .claim_jobs(&claim_request(t0() + secs(6), 1))
        .await
        .unwrap()
        .remove(0);
    store
        .append_log(
            &second.lease,
            0,
            &[
                line(Stream::System, "attempt 2 of 3 started on node-a"),
                line(Stream::Stdout, "deploying again"),
            ],
        )
        .await
        .unwrap();
    store
        .finish_attempt(&with_log(
            result(
                &second,
                t0() + secs(7),
                AttemptOutcome::Succeeded,
                Next::Succeeded,
            ),
            2,
            vec![
                line(Stream::Stdout, "done"),
                line(Stream::System, "exit code 0 → succeeded"),
            ],
        ))
        .await
        .unwrap();
    let all = store.read_log(job.id, 0, 100).await.unwrap();
    let shown: Vec<(u32, Stream, &str)> = all
        .iter()
        .map(|l| (l.attempt, l.stream, l.line.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            (1, Stream::System, "attempt 1 of 3 started on node-a"),
            (1, Stream::Stdout, "deploying"),
            (1, Stream::Stderr, "connection refused"),
            (1, Stream::System, "exit code 1 → retrying"),
            (2, Stream::System, "attempt 2 of 3 started on node-a"),
            (2, Stream::Stdout, "deploying again"),
            (2, Stream::Stdout, "done"),
            (2, Stream::System, "exit code 0 → succeeded"),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(all.iter().all(|l| l.at == t0() + secs(1)));
    // A follow resumes after any line, wherever it is stored, and pages by sequence.
    for (k, seen) in all.iter().enumerate() {
        let rest = store.read_log(job.id, seen.seq, 100).await.unwrap();
        assert_eq!(rest, all[k + 1..], "after line {k}");
    }
    assert_eq!(store.read_log(job.id, 0, 3).await.unwrap(), all[..3]);
    assert_eq!(
        log_texts(store.read_log_tail(job.id, 2, None, None).await.unwrap()),
        ["done", "exit code 0 → succeeded"]
    );
    assert_eq!(
        log_texts(
            store
                .read_log_tail(job.id, 10, Some("started"), None)
                .await
                .unwrap()
        ),
        [
            "attempt 1 of 3 started on node-a",
            "attempt 2 of 3 started on node-a"
        ]
    );
    assert_eq!(
        log_texts(
            store
                .read_log_tail(job.id, 10, None, Some(1))
                .await
                .unwrap()
        ),
        [
            "attempt 1 of 3 started on node-a",
            "deploying",
            "connection refused",
            "exit code 1 → retrying"
        ]
    );
    assert_eq!(
        log_texts(
            store
                .read_log_tail(job.id, 1, Some("EXIT CODE"), Some(1))
                .await
                .unwrap()
        ),
        ["exit code 1 → retrying"]
    );
    // Another job's lines come later in the sequence and stay its own.
    let other = insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0() + secs(8), 1))
        .await
        .unwrap()
        .remove(0);
    store
        .finish_attempt(&with_log(
            result(
                &claimed,
                t0() + secs(9),
                AttemptOutcome::Succeeded,
                Next::Succeeded,
            ),
            0,
            vec![line(Stream::System, "attempt 1 of 3 started on node-a")],
        ))
        .await
        .unwrap();
    let others = store.read_log(other.id, 0, 100).await.unwrap();
    assert_eq!(others.len(), 1);
    assert!(others[0].seq > all.last().unwrap().seq);
    assert_eq!(store.read_log(job.id, 0, 100).await.unwrap(), all);
}

/// Many results at once (a backend may write them in one transaction): each applies exactly
/// once with its log lines, a stale duplicate and a result for a vanished job are refused
/// without harming the others, and the refused attempt's lines are still kept.
pub async fn results_finished_at_once_each_apply_once_with_their_lines(store: DynStore) {
    for _ in 0..12 {
        insert(&store, new_job("default", 50, 0)).await;
    }
    let claimed = store.claim_jobs(&claim_request(t0(), 12)).await.unwrap();
    assert_eq!(claimed.len(), 12);
    let line = |text: String| NewLogLine {
        at: t0(),
        stream: Stream::System,
        line: text,
    };
    let finish = |c: &Claimed, i: usize| {
        let next = if i.is_multiple_of(2) {
            Next::Succeeded
        } else {
            Next::Retry {
                at: t0() + secs(5),
                delay: Duration::from_secs(5),
                delay_reason: "policy backoff".into(),
            }
        };
        let outcome = if i.is_multiple_of(2) {
            AttemptOutcome::Succeeded
        } else {
            AttemptOutcome::Failed
        };
        AttemptResult {
            log: LogAppend {
                first_index: 1,
                lines: vec![
                    line(format!("job {i} out")),
                    line(format!("job {i} closed")),
                ],
            },
            ..result(c, t0() + secs(1), outcome, next)
        }
    };
    // The first job's result twice (the second is stale), and one whose job is gone.
    let mut results: Vec<AttemptResult> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| finish(c, i))
        .collect();
    results.push(finish(&claimed[0], 0));
    let mut ghost = finish(&claimed[1], 1);
    ghost.lease.job_id = JobId::new();
    results.push(ghost);
    let mut running = tokio::task::JoinSet::new();
    for (i, r) in results.into_iter().enumerate() {
        let store = store.clone();
        running.spawn(async move { (i, store.finish_attempt(&r).await) });
    }
    let mut answers: Vec<(usize, Result<(Job, Event)>)> = running.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    let answers: Vec<Result<(Job, Event)>> = answers.into_iter().map(|(_, a)| a).collect();
    let applied = answers[..12]
        .iter()
        .chain(&answers[12..13])
        .filter(|a| a.is_ok())
        .count();
    assert_eq!(applied, 12, "every job's result applies once: {answers:?}");
    assert!(
        answers[..13]
            .iter()
            .any(|a| matches!(a, Err(Error::LeaseLost { .. }))),
        "the duplicate is refused"
    );
    assert!(
        matches!(answers[13], Err(Error::NotFound(_))),
        "{:?}",
        answers[13]
    );
    for (i, c) in claimed.iter().enumerate() {
        let job = store.get_job(c.job.id).await.unwrap();
        let expected = if i.is_multiple_of(2) {
            JobState::Succeeded
        } else {
            JobState::Retrying
        };
        assert_eq!(job.state, expected, "job {i}");
        let events = store.list_events(c.job.id).await.unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.from == Some(JobState::Running))
                .count(),
            1,
            "job {i}: one finishing event"
        );
        let lines: Vec<String> = store
            .read_log(c.job.id, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        let mut expected = vec![format!("job {i} out"), format!("job {i} closed")];
        if i == 0 {
            // The refused duplicate ran too; what it printed is kept.
            expected.extend(expected.clone());
        }
        assert_eq!(lines, expected, "job {i}");
        let attempts = store.list_attempts(c.job.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert!(attempts[0].finished_at.is_some());
    }
}

pub async fn an_attempts_process_is_recorded(store: DynStore) {
    insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        store
            .attempt_process(claimed.lease.attempt_id)
            .await
            .unwrap(),
        None
    );
    let process = Process {
        pid: 4242,
        started: 987_654_321,
        host: Some("boot-1/pid:[4026531836]".into()),
    };
    store
        .record_process(&claimed.lease, &process)
        .await
        .unwrap();
    assert_eq!(
        store
            .attempt_process(claimed.lease.attempt_id)
            .await
            .unwrap(),
        Some(process.clone())
    );
    // Issue 14: once the attempt is rescued, its node may not start a command for it.
    let rescue = AttemptResult {
        fence: Fence::Rescue {
            expired_before: t0() + secs(31),
        },
        ..result(
            &claimed,
            t0() + secs(31),
            AttemptOutcome::Lost,
            Next::Failed,
        )
    };
    store.finish_attempt(&rescue).await.unwrap();
    assert!(matches!(
        store.record_process(&claimed.lease, &process).await,
        Err(Error::LeaseLost { .. })
    ));
    let renewal = store
        .renew_leases("node-a", &[claimed.lease.attempt_id], t0() + secs(60))
        .await
        .unwrap();
    assert_eq!(
        renewal.lost,
        vec![claimed.lease.attempt_id],
        "the node learns the attempt is no longer its own"
    );
}

pub async fn paused_queues_are_remembered(store: DynStore) {
    assert!(store.paused_queues(DEFAULT_ORG).await.unwrap().is_empty());
    for (queue, paused) in [("deploy", true), ("mail", true), ("mail", false)] {
        store
            .set_queue_paused(DEFAULT_ORG, queue, paused, "ops", t0())
            .await
            .unwrap();
    }
    assert_eq!(
        store.paused_queues(DEFAULT_ORG).await.unwrap(),
        vec!["deploy".to_owned()]
    );
    assert!(
        store.paused_queues("acme").await.unwrap().is_empty(),
        "a queue name is the organization's own"
    );
}

pub async fn next_wakeup_is_the_earliest_due_instant(store: DynStore) {
    assert_eq!(
        store.next_wakeup(&[], &Runnable::default()).await.unwrap(),
        Wakeups::default()
    );
    insert(&store, new_job("default", 50, 90)).await;
    insert(&store, new_job("paused", 50, 10)).await;
    assert_eq!(
        store
            .next_wakeup(&["paused".to_owned()], &Runnable::default())
            .await
            .unwrap()
            .earliest(),
        Some(t0() + secs(90))
    );
    insert(
        &store,
        NewJob {
            deadline: Some(t0() + secs(40)),
            ..new_job("default", 50, 60)
        },
    )
    .await;
    let next = store
        .next_wakeup(&["paused".to_owned()], &Runnable::default())
        .await
        .unwrap();
    assert_eq!(
        (next.due, next.deadline, next.lease_expiry),
        (Some(t0() + secs(60)), Some(t0() + secs(40)), None)
    );
    assert_eq!(next.earliest(), Some(t0() + secs(40)));
    assert_eq!(
        store
            .next_wakeup(&[], &Runnable::default())
            .await
            .unwrap()
            .due,
        Some(t0() + secs(10))
    );
    store
        .claim_jobs(&claim_request(t0() + secs(10), 1))
        .await
        .unwrap();
    assert_eq!(
        store
            .next_wakeup(&[], &Runnable::default())
            .await
            .unwrap()
            .lease_expiry,
        Some(t0() + secs(40)),
        "the claim's 30 s lease"
    );
}

fn token(id: &str, name: &str, role: retryd_core::Role) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        org: DEFAULT_ORG.into(),
        instance: false,
        name: name.into(),
        role,
        secret_hash: format!("{:0>64}", id),
        created_at: t0(),
        created_by: "conformance".into(),
        revoked_at: None,
    }
}

pub async fn tokens_are_unique_by_name_and_revocable(store: DynStore) {
    use retryd_core::Role;
    assert!(store.list_tokens().await.unwrap().is_empty());
    store
        .insert_token(&token("a1", "ci", Role::Operator))
        .await
        .unwrap();
    store
        .insert_token(&token("b2", "alice", Role::Admin))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_token(&token("c3", "ci", Role::Viewer)).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        store.get_token("a1").await.unwrap(),
        Some(token("a1", "ci", Role::Operator))
    );
    assert_eq!(store.get_token("zz").await.unwrap(), None);
    // Names are unique per organization: another may have its own "ci".
    let theirs = TokenRecord {
        org: "acme".into(),
        ..token("d4", "ci", Role::Viewer)
    };
    store.insert_token(&theirs).await.unwrap();
    assert_eq!(
        store.revoke_token("other", "ci", t0()).await.unwrap(),
        None,
        "a revoke names the token's organization"
    );
    let revoked = store
        .revoke_token(DEFAULT_ORG, "ci", t0() + secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(t0() + secs(5)));
    // Revoking again keeps the first instant.
    let again = store
        .revoke_token(DEFAULT_ORG, "a1", t0() + secs(9))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(t0() + secs(5)));
    assert_eq!(
        store
            .revoke_token(DEFAULT_ORG, "nobody", t0())
            .await
            .unwrap(),
        None
    );
    let names: Vec<_> = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.revoked_at.is_some()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("ci".into(), true),
            ("alice".into(), false),
            ("ci".into(), false)
        ]
    );
}

pub async fn managed_policies_are_created_updated_and_deactivated(store: DynStore) {
    let mut stored = StoredPolicy {
        org: DEFAULT_ORG.into(),
        name: "rpc".into(),
        policy: Policy {
            max_attempts: 7,
            ..Policy::default()
        },
        active: true,
        updated_at: t0(),
        updated_by: "alice".into(),
    };
    store.put_policy(&stored).await.unwrap();
    assert_eq!(store.list_policies().await.unwrap(), vec![stored.clone()]);
    stored.policy.max_attempts = 9;
    stored.active = false;
    stored.updated_at = t0() + secs(60);
    store.put_policy(&stored).await.unwrap();
    assert_eq!(store.list_policies().await.unwrap(), vec![stored]);
}

pub async fn stats_rows_group_what_happened_in_the_window(store: DynStore) {
    // Three jobs: one succeeds at once, one after a failed attempt, one fails for good;
    // a fourth in another queue is filtered out.
    insert(&store, new_job("default", 50, -5)).await;
    let b = insert(&store, new_job("default", 50, -4)).await;
    insert(&store, new_job("default", 50, -3)).await;
    insert(&store, new_job("other", 50, 600)).await;
    let mut claimed = store.claim_jobs(&claim_request(t0(), 3)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    claimed.sort_by_key(|c| c.job.next_attempt_at);
    let done = |claimed: &Claimed, now| AttemptResult {
        exit_code: Some(0),
        error: None,
        class: None,
        rule: None,
        ..result(claimed, now, AttemptOutcome::Succeeded, Next::Succeeded)
    };
    store
        .finish_attempt(&done(&claimed[0], t0() + secs(1)))
        .await
        .unwrap();
    store
        .finish_attempt(&result(
            &claimed[1],
            t0() + secs(1),
            AttemptOutcome::Failed,
            Next::Retry {
                at: t0() + secs(2),
                delay: Duration::from_secs(1),
                delay_reason: "backoff".into(),
            },
        ))
        .await
        .unwrap();
    store
        .finish_attempt(&result(
            &claimed[2],
            t0() + secs(1),
            AttemptOutcome::Failed,
            Next::Failed,
        ))
        .await
        .unwrap();
    let query = StatsQuery {
        org: None,
        since: t0() - secs(60),
        until: t0() + secs(3600),
        queue: Some("default".into()),
        kind: None,
        target: None,
        bucket: Span::minutes(1),
    };
    let rows = store.stats_rows(&query).await.unwrap();
    assert_eq!(rows.pending_retries, 1);
    assert_eq!(rows.created.get(&JobState::Succeeded), Some(&1));
    assert_eq!(rows.created.get(&JobState::Retrying), Some(&1));
    assert_eq!(rows.created.get(&JobState::Failed), Some(&1));
    assert_eq!(rows.errors.len(), 1);
    assert_eq!(rows.errors[0].count, 2);
    assert_eq!(rows.errors[0].message, "connection refused");
    assert_eq!(rows.series.iter().map(|b| b.attempts).sum::<u64>(), 3);
    assert_eq!(rows.series.iter().map(|b| b.failures).sum::<u64>(), 2);

    let claimed = store
        .claim_jobs(&claim_request(t0() + secs(3), 3))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job.id, b.id);
    store
        .finish_attempt(&done(&claimed[0], t0() + secs(4)))
        .await
        .unwrap();
    let stats = Stats::from_rows(&query, store.stats_rows(&query).await.unwrap());
    assert_eq!(stats.rates.finished, 3);
    assert_eq!(stats.rates.succeeded, 2);
    assert_eq!(stats.rates.first_attempt_success_rate, Some(1.0 / 3.0));
    assert_eq!(stats.rates.mean_attempts, Some(4.0 / 3.0));
    assert_eq!(stats.meets_target, Some(false));
    assert_eq!(stats.pending_retries, 0);
    assert_eq!(stats.totals.len(), 7, "every state is present");
}

/// Issue 15: "Top errors" counted attempts, so that one job retried many times outranked
/// several jobs stopped at once by a permanent error.
pub async fn top_errors_rank_by_jobs_not_attempts(store: DynStore) {
    let retried = insert(&store, new_job("default", 50, -5)).await;
    for n in 0..3 {
        let now = t0() + secs(n * 10);
        let claimed = store.claim_jobs(&claim_request(now, 1)).await.unwrap();
        assert_eq!(claimed[0].job.id, retried.id);
        let next = Next::Retry {
            at: now + secs(1),
            delay: Duration::from_secs(1),
            delay_reason: "backoff".into(),
        };
        store
            .finish_attempt(&result(&claimed[0], now, AttemptOutcome::Failed, next))
            .await
            .unwrap();
    }
    store
        .cancel_job(retried.id, "alice", t0() + secs(40))
        .await
        .unwrap();
    for _ in 0..2 {
        insert(&store, new_job("default", 50, 0)).await;
    }
    let claimed = store
        .claim_jobs(&claim_request(t0() + secs(50), 2))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    for c in &claimed {
        let denied = AttemptResult {
            error: Some("permission denied".into()),
            class: Some(Class::Permanent),
            ..result(c, t0() + secs(51), AttemptOutcome::Failed, Next::Failed)
        };
        store.finish_attempt(&denied).await.unwrap();
    }
    let query = StatsQuery {
        org: None,
        since: t0() - secs(60),
        until: t0() + secs(3600),
        queue: None,
        kind: None,
        target: None,
        bucket: Span::minutes(1),
    };
    let errors = store.stats_rows(&query).await.unwrap().errors;
    let ranked: Vec<(&str, u64, u64)> = errors
        .iter()
        .map(|e| (e.message.as_str(), e.count, e.attempts))
        .collect();
    assert_eq!(
        ranked,
        [("permission denied", 2, 2), ("connection refused", 1, 3)]
    );
}

/// The two retrying jobs (of `org`, or all) a budget held, each due again at `until`.
async fn held_retries(store: &DynStore, org: Option<&str>, until: DateTime<Utc>) -> Vec<Job> {
    let filter = JobFilter {
        org: org.map(str::to_owned),
        states: vec![JobState::Retrying],
        ..Default::default()
    };
    let held = store.list_jobs(&filter, None, 10).await.unwrap().jobs;
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|j| j.next_attempt_at == Some(until)));
    held
}

/// A three-step pipeline job: compile → submit → confirm.
fn pipeline_job() -> NewJob {
    let step = |name: &str| Step {
        name: name.to_owned(),
        command: Some(CommandAction {
            program: "true".into(),
            args: vec![],
            cwd: None,
            env: Default::default(),
            stdin: None,
            timeout: None,
        }),
        http: None,
        policy: None,
        resolved_policy: None,
        timeout: None,
        continue_on_failure: false,
        export: Default::default(),
    };
    NewJob {
        action: Action::Pipeline(PipelineAction {
            steps: vec![step("compile"), step("submit"), step("confirm")],
        }),
        ..new_job("default", 50, 0)
    }
}

fn step_done(name: &str, at: DateTime<Utc>, outputs: &[(&str, &str)]) -> StepRecord {
    StepRecord {
        name: name.to_owned(),
        status: StepStatus::Succeeded,
        attempts: 1,
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        error: None,
        class: None,
        rule: None,
        finished_at: at,
    }
}

pub async fn pipeline_steps_advance_under_one_lease_and_survive_a_requeue(store: DynStore) {
    let inserted = store.insert_job(pipeline_job()).await.unwrap();
    let job = inserted.job;
    // Events name the step they are about.
    assert_eq!(inserted.event.unwrap().step.as_deref(), Some("compile"));
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    assert!(
        claimed
            .event
            .reason
            .starts_with("step compile: attempt 1 of 3"),
        "{}",
        claimed.event.reason
    );
    let success = |lease: &Lease, step: StepRecord| AttemptResult {
        lease: lease.clone(),
        exit_code: Some(0),
        error: None,
        class: None,
        rule: None,
        step: Some(step),
        ..result(&claimed, t0(), AttemptOutcome::Succeeded, Next::Succeeded)
    };
    let (after, lease, step_event) = store
        .advance_step(
            &AttemptResult {
                reason: "step compile succeeded after 1 attempt(s); step submit next".into(),
                ..success(
                    &claimed.lease,
                    step_done("compile", t0(), &[("artifact", "a.bin")]),
                )
            },
            "submit",
        )
        .await
        .unwrap();
    // Issue 15: a step that succeeds and the next that starts are on the timeline (and so on
    // the live stream), though the job stays running.
    assert_eq!(
        (
            step_event.from,
            step_event.to,
            step_event.reason.as_str(),
            step_event.step.as_deref()
        ),
        (
            Some(JobState::Running),
            JobState::Running,
            "step compile succeeded after 1 attempt(s); step submit next",
            Some("submit")
        )
    );
    assert_eq!(
        store.list_events(job.id).await.unwrap().last(),
        Some(&step_event)
    );
    assert_eq!(
        (
            after.state,
            after.attempt,
            after.step_attempt_base,
            lease.attempt
        ),
        (JobState::Running, 2, 1, 2)
    );
    assert_eq!(after.attempt_id, Some(lease.attempt_id));
    assert_eq!(
        after.current_step().map(|(i, s)| (i, s.name.as_str())),
        Some((1, "submit"))
    );
    assert_eq!(after.steps[0].outputs["artifact"], "a.bin");
    // The old attempt's fence is gone: a late write for it is refused.
    let stale = store
        .advance_step(
            &success(&claimed.lease, step_done("compile", t0(), &[])),
            "submit",
        )
        .await;
    assert!(matches!(stale, Err(Error::LeaseLost { .. })), "{stale:?}");
    // The running step's lease is the one renewals extend.
    store
        .renew_leases("node-a", &[lease.attempt_id], t0() + secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.get_job(job.id).await.unwrap().lease_expires_at,
        Some(t0() + secs(60))
    );

    // "submit" fails for good: the job fails there, with "compile" still done.
    let (dead, failed_event) = store
        .finish_attempt(&AttemptResult {
            lease: lease.clone(),
            class: Some(Class::Permanent),
            ..result(&claimed, t0(), AttemptOutcome::Failed, Next::Failed)
        })
        .await
        .unwrap();
    assert_eq!(dead.state, JobState::Failed);
    assert_eq!(failed_event.step.as_deref(), Some("submit"));
    assert_eq!(
        dead.current_step().map(|(_, s)| s.name.as_str()),
        Some("submit")
    );
    let attempts = store.list_attempts(job.id).await.unwrap();
    let steps: Vec<Option<&str>> = attempts.iter().map(|a| a.step.as_deref()).collect();
    assert_eq!(steps, [Some("compile"), Some("submit")]);

    // A requeue resumes at "submit"; a reset restarts the step's count.
    let later = t0() + secs(10);
    let requeue = |reset| Requeue {
        reset,
        actor: "carol".into(),
        now: later,
        changes: None,
    };
    let (again, _) = store.requeue_job(job.id, &requeue(false)).await.unwrap();
    assert_eq!((again.steps.len(), again.step_attempt()), (1, 1));
    let retried = store
        .claim_jobs(&claim_request(later, 1))
        .await
        .unwrap()
        .remove(0);
    assert!(
        retried
            .event
            .reason
            .starts_with("step submit: attempt 2 of 3 started"),
        "{}",
        retried.event.reason
    );
    let (last, lease, _) = store
        .advance_step(
            &AttemptResult {
                lease: retried.lease.clone(),
                ..success(
                    &retried.lease,
                    step_done("submit", later, &[("tx_hash", "0xabc")]),
                )
            },
            "confirm",
        )
        .await
        .unwrap();
    assert_eq!((last.attempt, last.step_attempt()), (4, 1));
    let (done, done_event) = store
        .finish_attempt(&success(&lease, step_done("confirm", later, &[])))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done_event.step.as_deref(), Some("confirm"));
    let steps: Vec<Option<String>> = store
        .list_events(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.step)
        .collect();
    let named = |s: &str| Some(s.to_owned());
    assert_eq!(
        steps,
        [
            named("compile"),
            named("compile"),
            named("submit"),
            named("submit"),
            named("submit"),
            named("submit"),
            named("confirm"),
            named("confirm")
        ],
        "submitted, claimed, submit started, failed, requeued, claimed, confirm started, succeeded"
    );
    let names: Vec<&str> = done.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["compile", "submit", "confirm"]);
    assert_eq!(done.current_step(), None);
}

fn circuit_config() -> CircuitConfig {
    CircuitConfig {
        failure_threshold: 0.5,
        min_attempts: 3,
        window: std::time::Duration::from_secs(60),
        cool_down: std::time::Duration::from_secs(30),
    }
}

fn limited(now: DateTime<Utc>, limit: usize, limits: &TargetLimits) -> ClaimRequest {
    ClaimRequest {
        limits: Arc::new(limits.clone()),
        ..claim_request(now, limit)
    }
}

fn retry_at(at: DateTime<Utc>) -> Next {
    Next::Retry {
        at,
        delay: std::time::Duration::from_secs(1),
        delay_reason: "backoff".into(),
    }
}

pub async fn an_open_circuit_holds_its_target_until_a_probe_closes_it(store: DynStore) {
    let limits = TargetLimits {
        circuit: Some(circuit_config()),
        budget: None,
    };
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(insert(&store, new_job("default", 50, 0)).await.id);
    }
    let first = store.claim_jobs(&limited(t0(), 10, &limits)).await.unwrap();
    assert_eq!(first.len(), 3, "a closed circuit holds nothing");
    for (i, claimed) in first.iter().enumerate() {
        store
            .finish_attempt(&AttemptResult {
                circuit: Some(circuit_config()),
                ..result(
                    claimed,
                    t0(),
                    AttemptOutcome::Failed,
                    retry_at(t0() + secs(1)),
                )
            })
            .await
            .unwrap();
        let open = store.list_circuits(None).await.unwrap();
        assert_eq!(open.len(), usize::from(i == 2), "opens at min_attempts");
    }
    let circuit = store.list_circuits(None).await.unwrap().remove(0);
    assert_eq!(
        (
            circuit.target.as_str(),
            circuit.open_until,
            circuit.failures,
            circuit.attempts
        ),
        ("metis-rpc", t0() + secs(30), 3, 3)
    );
    let other = insert(
        &store,
        NewJob {
            target: Some("sftp".into()),
            ..new_job("default", 50, 0)
        },
    )
    .await;
    let claimed = store
        .claim_jobs(&limited(t0() + secs(2), 10, &limits))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![other.id],
        "other targets are not held"
    );
    for id in &jobs {
        let job = store.get_job(*id).await.unwrap();
        assert_eq!(job.state, JobState::Retrying);
        assert_eq!(job.next_attempt_at, Some(t0() + secs(30)));
        assert_eq!(
            job.hold_reason.as_deref(),
            Some("circuit open for target metis-rpc until 12:00:30")
        );
        // Issue 15: the hold is on the job's timeline, once.
        let holds = |events: Vec<Event>| {
            events
                .into_iter()
                .filter(|e| e.reason.starts_with("circuit open"))
                .map(|e| (e.from, e.to, e.reason))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            holds(store.list_events(*id).await.unwrap()),
            [(
                Some(JobState::Retrying),
                JobState::Retrying,
                "circuit open for target metis-rpc until 12:00:30".to_owned()
            )]
        );
    }

    assert_eq!(
        store
            .next_wakeup(&[], &Runnable::default())
            .await
            .unwrap()
            .due,
        Some(t0() + secs(30)),
        "held jobs wake the engine when the cool-down ends"
    );
    assert_eq!(
        store.held_by_circuits(DEFAULT_ORG).await.unwrap(),
        BTreeMap::from([("metis-rpc".to_owned(), 3)])
    );
    assert!(store.held_by_circuits("acme").await.unwrap().is_empty());
    // Half-open: one probe; it fails and the circuit opens again.
    let half_open = t0() + secs(30);
    let probe = store
        .claim_jobs(&limited(half_open, 10, &limits))
        .await
        .unwrap();
    assert_eq!(probe.len(), 1, "one probe while half-open");
    // The others are held again, in the same episode: no second event on their timelines.
    for id in jobs.iter().filter(|id| **id != probe[0].job.id) {
        let job = store.get_job(*id).await.unwrap();
        assert!(
            job.hold_reason
                .as_deref()
                .unwrap()
                .starts_with("circuit half-open"),
            "{job:?}"
        );
        let reasons: Vec<String> = store
            .list_events(*id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.reason)
            .collect();
        assert!(
            !reasons.iter().any(|r| r.starts_with("circuit half-open")),
            "{reasons:?}"
        );
    }
    assert_eq!(
        store.list_circuits(None).await.unwrap()[0].probe_attempt_id,
        Some(probe[0].lease.attempt_id)
    );
    store
        .finish_attempt(&AttemptResult {
            circuit: Some(circuit_config()),
            ..result(
                &probe[0],
                half_open,
                AttemptOutcome::Failed,
                retry_at(half_open),
            )
        })
        .await
        .unwrap();
    let reopened = store.list_circuits(None).await.unwrap().remove(0);
    assert_eq!(
        (reopened.open_until, reopened.probe_attempt_id),
        (half_open + secs(30), None)
    );
    // The next probe succeeds: the circuit closes and the jobs it held are due at once.
    let later = half_open + secs(30);
    let probe = store
        .claim_jobs(&limited(later, 10, &limits))
        .await
        .unwrap();
    assert_eq!(probe.len(), 1);
    store
        .finish_attempt(&AttemptResult {
            circuit: Some(circuit_config()),
            error: None,
            class: None,
            rule: None,
            ..result(&probe[0], later, AttemptOutcome::Succeeded, Next::Succeeded)
        })
        .await
        .unwrap();
    assert!(
        store.list_circuits(None).await.unwrap().is_empty(),
        "closed"
    );
    let rest = store
        .claim_jobs(&limited(later, 10, &limits))
        .await
        .unwrap();
    assert_eq!(rest.len(), 2, "the held jobs start once it closes");
    assert!(rest.iter().all(|c| c.job.hold_reason.is_none()));
    // The history keeps the outage: one, re-opened once by the failed probe, closed by the
    // probe that succeeded; the organizations whose jobs name the target see it.
    let history = store.circuit_history(Some(DEFAULT_ORG), 10).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    let outage = &history[0];
    assert_eq!(
        (
            outage.target.as_str(),
            outage.closed_at,
            outage.reopened,
            outage.closed_by.as_deref()
        ),
        ("metis-rpc", Some(later), 1, Some("its probe succeeded"))
    );
    assert_eq!(
        (outage.failures, outage.attempts),
        (circuit.failures, circuit.attempts)
    );
    assert!(outage.opened_at < half_open);
    assert!(
        store
            .circuit_history(Some("acme"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_retry_budget_caps_retries_per_target_but_not_first_attempts(store: DynStore) {
    let limits = TargetLimits {
        circuit: None,
        budget: Some(BudgetConfig {
            per_target: Some(2),
            targets: BTreeMap::from([("sftp".to_owned(), 1)]),
            window: std::time::Duration::from_secs(60),
        }),
    };
    for _ in 0..4 {
        insert(&store, new_job("default", 50, 0)).await;
    }
    let first = store.claim_jobs(&limited(t0(), 10, &limits)).await.unwrap();
    assert_eq!(first.len(), 4, "first attempts are not retries");
    for claimed in &first {
        store
            .finish_attempt(&result(
                claimed,
                t0(),
                AttemptOutcome::Failed,
                retry_at(t0() + secs(1)),
            ))
            .await
            .unwrap();
    }
    let fresh = insert(&store, new_job("default", 50, 1)).await;
    let now = t0() + secs(1);
    let claimed = store.claim_jobs(&limited(now, 10, &limits)).await.unwrap();
    let retries = claimed.iter().filter(|c| c.lease.attempt == 2).count();
    assert_eq!(retries, 2, "two retries per window");
    assert!(
        claimed.iter().any(|c| c.job.id == fresh.id),
        "a first attempt is not held"
    );
    let held = held_retries(&store, None, now + secs(60)).await;
    for job in &held {
        assert_eq!(
            job.hold_reason.as_deref(),
            Some("retry budget of target metis-rpc exhausted (2/min), next slot at 12:01:01")
        );
        let last = store.list_events(job.id).await.unwrap().pop().unwrap();
        assert_eq!(
            (last.to, last.reason.as_str()),
            (
                job.state,
                "retry budget of target metis-rpc exhausted (2/min), next slot at 12:01:01"
            ),
            "issue 15: a hold is on the timeline"
        );
    }
    assert!(
        store
            .claim_jobs(&limited(now + secs(59), 10, &limits))
            .await
            .unwrap()
            .is_empty()
    );
    let next = store
        .claim_jobs(&limited(now + secs(60), 10, &limits))
        .await
        .unwrap();
    assert_eq!(next.len(), 2, "the window moved on");
}

pub async fn notifications_are_enqueued_with_the_result_and_delivered_once(store: DynStore) {
    let job = insert(&store, new_job("default", 50, 0)).await;
    let claimed = store
        .claim_jobs(&claim_request(t0(), 1))
        .await
        .unwrap()
        .remove(0);
    let payload = serde_json::json!({ "event": "failed", "job_id": job.id.to_string() });
    store
        .finish_attempt(&AttemptResult {
            class: Some(Class::Permanent),
            notify: vec![NewNotification {
                sink: "ops".into(),
                event: "failed".into(),
                payload: payload.clone(),
            }],
            ..result(&claimed, t0(), AttemptOutcome::Failed, Next::Failed)
        })
        .await
        .unwrap();
    let listed = store
        .list_notifications(Some(job.id), None, 10)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].state,
            listed[0].payload.clone(),
            listed[0].sink.as_str()
        ),
        (DeliveryState::Pending, payload, "ops")
    );
    assert_eq!(store.next_delivery().await.unwrap(), Some(t0()));
    let lease = t0() + secs(30);
    let mut a = store
        .claim_deliveries("node-a", t0(), lease, 10)
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    assert!(
        store
            .claim_deliveries("node-b", t0(), lease, 10)
            .await
            .unwrap()
            .is_empty(),
        "one node delivers"
    );
    let first = a.remove(0);
    store
        .finish_delivery(&DeliveryResult {
            notification_id: first.notification.id,
            attempt_id: first.attempt_id,
            node: "node-a".into(),
            now: t0(),
            ok: false,
            status: Some(500),
            error: Some("HTTP 500".into()),
            next: DeliveryNext::Retry { at: t0() + secs(5) },
        })
        .await
        .unwrap();
    assert!(
        store
            .claim_deliveries("node-b", t0() + secs(4), lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // node-a takes the second try and dies; after its lease node-b delivers.
    let second = store
        .claim_deliveries("node-a", t0() + secs(5), t0() + secs(35), 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.number, 2);
    let third = store
        .claim_deliveries("node-b", t0() + secs(36), t0() + secs(66), 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(third.number, 3);
    let late = store
        .finish_delivery(&DeliveryResult {
            notification_id: second.notification.id,
            attempt_id: second.attempt_id,
            node: "node-a".into(),
            now: t0() + secs(40),
            ok: true,
            status: Some(200),
            error: None,
            next: DeliveryNext::Delivered,
        })
        .await;
    assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
    store
        .finish_delivery(&DeliveryResult {
            notification_id: third.notification.id,
            attempt_id: third.attempt_id,
            node: "node-b".into(),
            now: t0() + secs(37),
            ok: true,
            status: Some(200),
            error: None,
            next: DeliveryNext::Delivered,
        })
        .await
        .unwrap();
    let done = store
        .list_notifications(None, None, 10)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(done.state, DeliveryState::Delivered);
    assert_eq!(done.attempts, 3);
    assert_eq!(
        done.log
            .iter()
            .map(|a| (a.number, a.ok))
            .collect::<Vec<_>>(),
        vec![(1, Some(false)), (2, None), (3, Some(true))]
    );
    assert_eq!(done.log[0].status, Some(500));
    assert_eq!(store.next_delivery().await.unwrap(), None);
    assert_eq!(store.purge_jobs(&[job.id]).await.unwrap(), 1);
    assert!(
        store
            .list_notifications(None, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "a job's notifications go with it"
    );
}

/// A handler job of `kind`, due at `t0 + due_in`.
fn handler_job(kind: &str, due_in: i64) -> NewJob {
    NewJob {
        kind: kind.into(),
        action: Action::Handler(HandlerAction {
            payload: serde_json::json!({"to": "ada@example.com"}),
            timeout: None,
        }),
        ..new_job("default", 50, due_in)
    }
}

pub async fn handler_jobs_go_only_to_nodes_that_registered_their_kind(store: DynStore) {
    let email = insert(&store, handler_job("email", 0)).await;
    let resize = insert(&store, handler_job("resize", 5)).await;
    let command = insert(&store, new_job("default", 50, 10)).await;
    let later = t0() + secs(60);
    let server = Runnable::default();
    let mailer = Runnable {
        builtin: false,
        handler_kinds: vec!["email".into()],
    };

    // A server runs built-in actions only: the handler jobs neither wake nor reach it.
    assert_eq!(
        store.next_wakeup(&[], &server).await.unwrap().due,
        Some(t0() + secs(10))
    );
    let mut request = claim_request(later, 10);
    let claimed = store.claim_jobs(&request).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![command.id]
    );

    // A program with an `email` handler and no built-in executors takes exactly that job.
    assert_eq!(
        store.next_wakeup(&[], &mailer).await.unwrap().due,
        Some(t0())
    );
    request.runnable = mailer;
    let claimed = store.claim_jobs(&request).await.unwrap();
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![email.id]
    );
    assert_eq!(
        claimed[0].job.action, email.action,
        "the payload round-trips"
    );
    assert!(store.claim_jobs(&request).await.unwrap().is_empty());
    assert_eq!(
        store.get_job(resize.id).await.unwrap().state,
        JobState::Pending
    );
}

/// Issue 18: schedules. Names are unique; a fire time moves on only from the one expected
/// (so two nodes cannot both advance it), and progress survives a definition update.
pub async fn schedules_are_unique_by_name_and_advance_only_from_the_expected_fire_time(
    store: DynStore,
) {
    use retryd_core::schedule::{Definition, JobTemplate, Misfire, Overlap, Progress, Schedule};
    let template =
        JobTemplate::from_job(new_job("default", 50, 0), Some(Duration::from_secs(3600)));
    let mut schedule = Schedule {
        id: "s-1".into(),
        org: DEFAULT_ORG.into(),
        name: "nightly".into(),
        definition: Definition {
            cron: "30 2 * * *".into(),
            tz: "Europe/Berlin".into(),
            overlap: Overlap::Skip,
            misfire: Misfire::Once,
            job: template,
        },
        paused: false,
        next_fire: Some(t0() + secs(60)),
        last_fire: None,
        last_job_id: None,
        last_skip: None,
        created_at: t0(),
        created_by: "conformance".into(),
        updated_at: t0(),
    };
    store.insert_schedule(&schedule).await.unwrap();
    let twin = Schedule {
        id: "s-2".into(),
        ..schedule.clone()
    };
    assert!(matches!(
        store.insert_schedule(&twin).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        store.list_schedules().await.unwrap(),
        vec![schedule.clone()]
    );
    let job = JobId::new();
    let progress = Progress {
        next_fire: Some(t0() + secs(120)),
        last_fire: Some(t0() + secs(60)),
        last_job_id: Some(job),
        last_skip: None,
        updated_at: t0() + secs(61),
    };
    assert!(
        store
            .advance_schedule("s-1", Some(t0() + secs(60)), &progress)
            .await
            .unwrap()
    );
    assert!(
        !store
            .advance_schedule("s-1", Some(t0() + secs(60)), &progress)
            .await
            .unwrap(),
        "a second node firing the same time finds it moved on"
    );
    let stored = &store.list_schedules().await.unwrap()[0];
    assert_eq!(
        (stored.next_fire, stored.last_fire, stored.last_job_id),
        (Some(t0() + secs(120)), Some(t0() + secs(60)), Some(job))
    );
    schedule.paused = true;
    schedule.next_fire = None;
    schedule.definition.misfire = Misfire::All;
    assert!(store.update_schedule(&schedule).await.unwrap());
    let stored = &store.list_schedules().await.unwrap()[0];
    assert!(stored.paused && stored.next_fire.is_none());
    assert_eq!(stored.definition.misfire, Misfire::All);
    assert_eq!(stored.last_job_id, Some(job), "progress survives an update");
    assert!(store.delete_schedule("s-1").await.unwrap());
    assert!(!store.delete_schedule("s-1").await.unwrap());
    // One leader at a time; another takes over once its lease has ended.
    assert!(
        store
            .lead_schedules("a", t0(), t0() + secs(10))
            .await
            .unwrap()
    );
    assert!(
        !store
            .lead_schedules("b", t0() + secs(5), t0() + secs(15))
            .await
            .unwrap()
    );
    assert!(
        store
            .lead_schedules("a", t0() + secs(5), t0() + secs(15))
            .await
            .unwrap(),
        "renewed"
    );
    assert!(
        !store
            .lead_schedules("b", t0() + secs(14), t0() + secs(24))
            .await
            .unwrap()
    );
    assert!(
        store
            .lead_schedules("b", t0() + secs(16), t0() + secs(26))
            .await
            .unwrap(),
        "taken over"
    );
    assert!(
        !store
            .lead_schedules("a", t0() + secs(17), t0() + secs(27))
            .await
            .unwrap()
    );
    assert!(store.list_schedules().await.unwrap().is_empty());
}

fn org_job(org: &str, queue: &str) -> NewJob {
    NewJob {
        org: org.into(),
        ..new_job(queue, 50, 0)
    }
}

async fn add_org(store: &DynStore, name: &str, max_running: Option<u32>) {
    store
        .insert_org(&retryd_core::org::Org {
            name: name.into(),
            default_policy: None,
            max_running,
            retry_budget: None,
            created_at: t0(),
            created_by: "conformance".into(),
        })
        .await
        .unwrap();
}

/// Issue 17: what an organization owns is its own: listings, counts, depths, stats and
/// idempotency keys see only it, and a queue paused in one is not paused in another.
pub async fn organizations_own_their_jobs_keys_queues_and_counts(store: DynStore) {
    add_org(&store, "acme", None).await;
    for _ in 0..3 {
        insert(&store, org_job("acme", "deploy")).await;
    }
    insert(&store, org_job(DEFAULT_ORG, "deploy")).await;
    let keyed = |org: &str| NewJob {
        idempotency_key: Some("release-42".into()),
        ..org_job(org, "deploy")
    };
    let ours = store.insert_job(keyed(DEFAULT_ORG)).await.unwrap();
    let theirs = store.insert_job(keyed("acme")).await.unwrap();
    assert!(
        ours.created && theirs.created,
        "a key is unique per organization"
    );
    assert!(!store.insert_job(keyed("acme")).await.unwrap().created);
    let listed = |org: &str| JobFilter {
        org: Some(org.into()),
        ..JobFilter::default()
    };
    let page = store.list_jobs(&listed("acme"), None, 100).await.unwrap();
    assert_eq!(page.jobs.len(), 4);
    assert!(page.jobs.iter().all(|j| j.org == "acme"));
    assert_eq!(
        store.count_by_state(Some("acme")).await.unwrap()[&JobState::Pending],
        4
    );
    assert_eq!(
        store.count_by_state(None).await.unwrap()[&JobState::Pending],
        6
    );
    assert_eq!(
        store.queue_depths(Some(DEFAULT_ORG)).await.unwrap()["deploy"],
        2
    );
    let stats = |org: Option<&str>| StatsQuery {
        org: org.map(str::to_owned),
        since: t0() - secs(60),
        until: t0() + secs(60),
        queue: None,
        kind: None,
        target: None,
        bucket: Span::seconds(60),
    };
    let created = |rows: StatsRows| rows.created.values().sum::<u64>();
    assert_eq!(
        created(store.stats_rows(&stats(Some("acme"))).await.unwrap()),
        4
    );
    assert_eq!(created(store.stats_rows(&stats(None)).await.unwrap()), 6);
    // Pausing acme's deploy queue leaves the default organization's deploy queue running.
    store
        .set_queue_paused("acme", "deploy", true, "ops", t0())
        .await
        .unwrap();
    let claimed = store.claim_jobs(&claim_request(t0(), 10)).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|c| c.job.org == DEFAULT_ORG));
    assert_eq!(
        store
            .next_wakeup(&[], &Runnable::default())
            .await
            .unwrap()
            .due,
        None,
        "a paused queue's jobs wake nobody"
    );
}

/// Issue 17: a claim shares its slots between the organizations with due work, whatever
/// the size of one's backlog.
pub async fn claims_share_free_slots_between_organizations(store: DynStore) {
    add_org(&store, "big", None).await;
    add_org(&store, "small", None).await;
    for _ in 0..40 {
        insert(&store, org_job("big", "default")).await;
    }
    for _ in 0..2 {
        insert(&store, org_job("small", "default")).await;
    }
    let claimed = store.claim_jobs(&claim_request(t0(), 4)).await.unwrap();
    let count = |org: &str| claimed.iter().filter(|c| c.job.org == org).count();
    assert_eq!(
        (count("big"), count("small")),
        (2, 2),
        "the small organization's jobs start beside the big backlog"
    );
}

/// Issue 17: an organization with a running limit is offered no more than it has left,
/// counting its attempts running anywhere; the others still get the slots.
pub async fn an_organizations_running_limit_caps_its_claims(store: DynStore) {
    add_org(&store, "capped", Some(3)).await;
    for _ in 0..10 {
        insert(&store, org_job("capped", "default")).await;
        insert(&store, org_job(DEFAULT_ORG, "default")).await;
    }
    let first = store.claim_jobs(&claim_request(t0(), 4)).await.unwrap();
    let capped = |claimed: &[Claimed]| claimed.iter().filter(|c| c.job.org == "capped").count();
    assert_eq!(capped(&first), 2, "a fair half of four");
    assert_eq!(store.count_running("capped").await.unwrap(), 2);
    let second = store.claim_jobs(&claim_request(t0(), 10)).await.unwrap();
    assert_eq!(capped(&second), 1, "three running at most");
    assert_eq!(store.count_running("capped").await.unwrap(), 3);
    assert_eq!(second.len(), 9);
    let third = store.claim_jobs(&claim_request(t0(), 10)).await.unwrap();
    assert_eq!(capped(&third), 0);
}

/// Issue 17: organizations and their channels are stored, listed and changed.
pub async fn organizations_and_channels_are_kept(store: DynStore) {
    let names = |orgs: Vec<retryd_core::org::Org>| -> Vec<String> {
        orgs.into_iter().map(|o| o.name).collect()
    };
    assert_eq!(
        names(store.list_orgs().await.unwrap()),
        vec![DEFAULT_ORG.to_owned()],
        "the default organization always exists"
    );
    add_org(&store, "acme", None).await;
    let taken = store
        .insert_org(&retryd_core::org::Org {
            name: "acme".into(),
            default_policy: None,
            max_running: None,
            retry_budget: None,
            created_at: t0(),
            created_by: "x".into(),
        })
        .await;
    assert!(matches!(taken, Err(Error::Conflict(_))));
    let mut acme = store
        .list_orgs()
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.name == "acme")
        .unwrap();
    acme.default_policy = Some("rpc".into());
    acme.max_running = Some(5);
    acme.retry_budget = Some(30);
    assert!(store.update_org(&acme).await.unwrap());
    let stored = store.list_orgs().await.unwrap();
    assert_eq!(stored.iter().find(|o| o.name == "acme"), Some(&acme));
    let channel = |org: &str, url: &str| StoredChannel {
        org: org.into(),
        name: "ops".into(),
        config: serde_json::json!({ "kind": "webhook", "url": url }),
        updated_at: t0(),
        updated_by: "admin".into(),
    };
    store
        .put_channel(&channel("acme", "http://a/1"))
        .await
        .unwrap();
    store
        .put_channel(&channel("acme", "http://a/2"))
        .await
        .unwrap();
    store
        .put_channel(&channel(DEFAULT_ORG, "http://d"))
        .await
        .unwrap();
    assert_eq!(
        store.list_channels().await.unwrap(),
        vec![
            channel("acme", "http://a/2"),
            channel(DEFAULT_ORG, "http://d")
        ]
    );
    assert!(store.delete_channel("acme", "ops").await.unwrap());
    assert!(!store.delete_channel("acme", "ops").await.unwrap());
    assert_eq!(store.list_channels().await.unwrap().len(), 1);
}

/// Issue 17: an organization's retry budget caps its retries per minute on all nodes; its
/// first attempts and other organizations' retries go on.
pub async fn an_organizations_retry_budget_caps_its_retries_only(store: DynStore) {
    store
        .insert_org(&retryd_core::org::Org {
            name: "stormy".into(),
            default_policy: None,
            max_running: None,
            retry_budget: Some(2),
            created_at: t0(),
            created_by: "conformance".into(),
        })
        .await
        .unwrap();
    for _ in 0..4 {
        insert(&store, org_job("stormy", "default")).await;
    }
    insert(&store, org_job(DEFAULT_ORG, "default")).await;
    let first = store.claim_jobs(&claim_request(t0(), 10)).await.unwrap();
    assert_eq!(first.len(), 5, "first attempts are not retries");
    for claimed in &first {
        store
            .finish_attempt(&result(
                claimed,
                t0(),
                AttemptOutcome::Failed,
                retry_at(t0() + secs(1)),
            ))
            .await
            .unwrap();
    }
    let fresh = insert(
        &store,
        NewJob {
            run_at: t0() + secs(1),
            ..org_job("stormy", "default")
        },
    )
    .await;
    let now = t0() + secs(1);
    let claimed = store.claim_jobs(&claim_request(now, 10)).await.unwrap();
    let retries = |org: &str| {
        claimed
            .iter()
            .filter(|c| c.job.org == org && c.lease.attempt == 2)
            .count()
    };
    assert_eq!(retries("stormy"), 2, "two retries per minute");
    assert_eq!(
        retries(DEFAULT_ORG),
        1,
        "another organization's retry goes on"
    );
    assert!(
        claimed.iter().any(|c| c.job.id == fresh.id),
        "a first attempt is not held"
    );
    for job in held_retries(&store, Some("stormy"), now + secs(60)).await {
        assert_eq!(
            job.hold_reason.as_deref(),
            Some("retry budget of organization stormy exhausted (2/min), next slot at 12:01:01")
        );
    }
}

/// Issue 19: a search finds jobs by a short id (the end of it), or by text in their kind,
/// target, error or labels, ignoring case, within the organization.
pub async fn listing_searches_ids_kinds_targets_errors_and_labels(store: DynStore) {
    let deploy = insert(
        &store,
        NewJob {
            kind: "Deploy-Frontend".into(),
            target: Some("edge-eu".into()),
            labels: [("team".to_owned(), "payments".to_owned())].into(),
            ..new_job("default", 50, 0)
        },
    )
    .await;
    let other = insert(
        &store,
        NewJob {
            kind: "backup".into(),
            target: None,
            labels: Default::default(),
            ..new_job("default", 50, 0)
        },
    )
    .await;
    let found = |text: &str| {
        let store = store.clone();
        let filter = JobFilter {
            org: Some(DEFAULT_ORG.into()),
            text: Some(text.into()),
            ..JobFilter::default()
        };
        async move {
            let page = store.list_jobs(&filter, None, 10).await.unwrap();
            page.jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
        }
    };
    let short = deploy.id.to_string();
    let short = &short[short.len() - 12..];
    assert_eq!(found(short).await, vec![deploy.id]);
    assert_eq!(found("FRONTEND").await, vec![deploy.id]);
    assert_eq!(found("edge-eu").await, vec![deploy.id]);
    assert_eq!(found("payments").await, vec![deploy.id]);
    assert_eq!(found("backup").await, vec![other.id]);
    assert!(found("nowhere").await.is_empty());
}

/// Issue 19: an operator closes a circuit by hand (the target was fixed): the jobs it held
/// are due at once, without a hold reason.
pub async fn a_circuit_closed_by_hand_frees_what_it_held(store: DynStore) {
    let limits = TargetLimits {
        circuit: Some(circuit_config()),
        budget: None,
    };
    for _ in 0..3 {
        insert(&store, new_job("default", 50, 0)).await;
    }
    for claimed in store.claim_jobs(&limited(t0(), 10, &limits)).await.unwrap() {
        store
            .finish_attempt(&AttemptResult {
                circuit: Some(circuit_config()),
                ..result(
                    &claimed,
                    t0(),
                    AttemptOutcome::Failed,
                    retry_at(t0() + secs(1)),
                )
            })
            .await
            .unwrap();
    }
    let held = store
        .claim_jobs(&limited(t0() + secs(2), 10, &limits))
        .await
        .unwrap();
    assert!(held.is_empty(), "the open circuit holds them");
    let open = store.circuit_history(None, 10).await.unwrap();
    assert_eq!(
        (open.len(), open[0].closed_at, open[0].closed_by.as_deref()),
        (1, None, None),
        "an open outage is in the history"
    );
    assert!(
        store
            .close_circuit("metis-rpc", "ops-alice", t0() + secs(3))
            .await
            .unwrap()
    );
    assert!(store.list_circuits(None).await.unwrap().is_empty());
    assert!(
        !store
            .close_circuit("metis-rpc", "ops-alice", t0() + secs(3))
            .await
            .unwrap()
    );
    let closed = store.circuit_history(None, 10).await.unwrap();
    assert_eq!(
        (
            closed.len(),
            closed[0].closed_at,
            closed[0].closed_by.as_deref()
        ),
        (1, Some(t0() + secs(3)), Some("closed by ops-alice"))
    );
    let freed = store
        .claim_jobs(&limited(t0() + secs(3), 10, &limits))
        .await
        .unwrap();
    assert_eq!(freed.len(), 3, "every held job starts at once");
    assert!(freed.iter().all(|c| c.job.hold_reason.is_none()));
}

/// A claim and a result answer their jobs as they derive them, not as read back: exactly as
/// stored, instants cut to the backend's precision included.
pub async fn claims_and_results_answer_each_job_as_stored(store: DynStore) {
    let job = insert(&store, new_job("default", 50, 0)).await;
    let odd = |ms: i64| t0() + Span::milliseconds(ms) + Span::nanoseconds(456_789);
    let stored = |id| {
        let store = store.clone();
        async move { store.get_job(id).await.unwrap() }
    };
    let mut request = claim_request(odd(1_123), 1);
    request.lease_until = odd(31_123);
    let claimed = store.claim_jobs(&request).await.unwrap().remove(0);
    assert_eq!(claimed.job, stored(job.id).await, "a first claim");
    let next = Next::Retry {
        at: odd(6_001),
        delay: Duration::from_secs(5),
        delay_reason: "backoff".into(),
    };
    let (after, _) = store
        .finish_attempt(&result(&claimed, odd(1_200), AttemptOutcome::Failed, next))
        .await
        .unwrap();
    assert_eq!(after, stored(job.id).await, "a failure that retries");
    let claimed = store
        .claim_jobs(&claim_request(odd(6_001), 1))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(claimed.job, stored(job.id).await, "a retry's claim");
    let (after, _) = store
        .finish_attempt(&result(
            &claimed,
            odd(6_050),
            AttemptOutcome::Lost,
            Next::Released { at: odd(6_050) },
        ))
        .await
        .unwrap();
    assert_eq!(after, stored(job.id).await, "a release, not counted");
    assert_eq!(after.attempt, 1);
    let claimed = store
        .claim_jobs(&claim_request(odd(6_051), 1))
        .await
        .unwrap()
        .remove(0);
    let (after, _) = store
        .finish_attempt(&AttemptResult {
            error: None,
            class: None,
            rule: None,
            ..result(
                &claimed,
                odd(7_000),
                AttemptOutcome::Succeeded,
                Next::Succeeded,
            )
        })
        .await
        .unwrap();
    assert_eq!(after, stored(job.id).await, "a success");
    assert_eq!(
        after.last_error.as_deref(),
        Some("connection refused"),
        "a success keeps the last error"
    );
}
