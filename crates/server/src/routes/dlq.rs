//! The dead-letter queue: failed jobs, grouped by failure fingerprint.

use crate::AppState;
use crate::auth::{Admin, Operator, Principal, Viewer};
use crate::dto::{BulkResult, Dlq, DlqGroup, DlqSelection, JobView};
use crate::error::Error;
use crate::extract::{ApiJson, ApiQuery};
use axum::Json;
use axum::extract::State;
use retryd_core::explain::{dlq_advice, fingerprint};
use retryd_core::job::Job;
use retryd_core::{JobId, JobState};
use retryd_store::JobFilter;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Grouping looks at this many of the newest dead jobs: enough to read an incident, bounded
/// so that a huge dead-letter queue cannot make the page slow.
const SCAN_LIMIT: usize = 10_000;
const SAMPLE: usize = 5;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DlqQuery {
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub target: Option<String>,
    /// Jobs listed beside the groups (default 50, at most 500).
    pub limit: Option<usize>,
}

fn job_fingerprint(job: &Job) -> String {
    fingerprint(
        job.last_error_class,
        job.last_error.as_deref().unwrap_or(""),
    )
}

/// The organization's newest dead jobs matching the filter, up to the scan limit.
async fn dead_jobs(
    state: &AppState,
    org: &str,
    queue: Option<String>,
    kind: Option<String>,
    target: Option<String>,
) -> Result<Vec<Job>, Error> {
    let filter = JobFilter {
        org: Some(org.to_owned()),
        states: vec![JobState::Failed],
        queue,
        kind,
        target,
        ..Default::default()
    };
    let store = state.control.store();
    let mut jobs = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_jobs(&filter, cursor, crate::dto::MAX_PAGE)
            .await?;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) if jobs.len() < SCAN_LIMIT => cursor = Some(next),
            _ => return Ok(jobs),
        }
    }
}

#[utoipa::path(get, path = "/dlq", tag = "dead-letter queue", params(DlqQuery), responses((status = 200, body = Dlq)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    ApiQuery(query): ApiQuery<DlqQuery>,
) -> Result<Json<Dlq>, Error> {
    let limit = crate::extract::limit(query.limit, crate::dto::DEFAULT_PAGE, crate::dto::MAX_PAGE)?;
    let org = &principal.org;
    let jobs = dead_jobs(&state, org, query.queue, query.kind, query.target).await?;
    let mut groups: BTreeMap<String, DlqGroup> = BTreeMap::new();
    for job in &jobs {
        let seen = job.finished_at.unwrap_or(job.updated_at);
        let group = groups
            .entry(job_fingerprint(job))
            .or_insert_with_key(|key| DlqGroup {
                fingerprint: key.clone(),
                class: job.last_error_class.map(|c| c.as_str().to_owned()),
                rule: job.last_rule.clone(),
                advice: dlq_advice(job.last_error_class, job.last_rule.as_deref(), key),
                message: job.last_error.clone().unwrap_or_default(),
                count: 0,
                first_seen: seen,
                last_seen: seen,
                queues: vec![],
                kinds: vec![],
                targets: vec![],
                sample_job_ids: vec![],
            });
        group.count += 1;
        group.first_seen = group.first_seen.min(seen);
        group.last_seen = group.last_seen.max(seen);
        for (list, value) in [
            (&mut group.queues, Some(&job.queue)),
            (&mut group.kinds, Some(&job.kind)),
            (&mut group.targets, job.target.as_ref()),
        ] {
            if let Some(value) = value
                && !list.contains(value)
            {
                list.push(value.clone());
            }
        }
        if group.sample_job_ids.len() < SAMPLE {
            group.sample_job_ids.push(job.id);
        }
    }
    let mut groups: Vec<DlqGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.last_seen.cmp(&a.last_seen)));
    let now = state.control.now();
    let policies = state.control.policies(org);
    Ok(Json(Dlq {
        total: jobs.len() as u64,
        groups,
        jobs: jobs
            .into_iter()
            .take(limit)
            .map(|job| JobView::new(job, now, &[], Default::default(), &policies))
            .collect(),
    }))
}

/// The selected jobs of the caller's organization: ids of another's are dropped here, so
/// that they are answered as unknown ones are.
async fn select(
    state: &AppState,
    principal: &Principal,
    selection: &DlqSelection,
) -> Result<Vec<JobId>, Error> {
    let filtered = selection.fingerprint.is_some()
        || selection.queue.is_some()
        || selection.kind.is_some()
        || selection.target.is_some();
    if selection.ids.is_empty() && !filtered && !selection.all {
        return Err(Error::invalid(
            "selection",
            "name the jobs: ids, fingerprint, queue, kind, target, or all: true",
        ));
    }
    if !selection.ids.is_empty() {
        let mut own = Vec::new();
        for &id in &selection.ids {
            match state.control.store().get_job(id).await {
                Ok(job) if job.org == principal.org => own.push(id),
                Ok(_) | Err(retryd_store::Error::NotFound(_)) => {
                    return Err(Error::NotFound(format!("job {id} not found")));
                }
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(own);
    }
    let jobs = dead_jobs(
        state,
        &principal.org,
        selection.queue.clone(),
        selection.kind.clone(),
        selection.target.clone(),
    )
    .await?;
    Ok(jobs
        .into_iter()
        .filter(|job| {
            selection
                .fingerprint
                .as_ref()
                .is_none_or(|f| *f == job_fingerprint(job))
        })
        .map(|job| job.id)
        .collect())
}

#[utoipa::path(post, path = "/dlq/requeue", tag = "dead-letter queue", request_body = DlqSelection, responses((status = 200, body = BulkResult)))]
pub async fn requeue(
    State(state): State<AppState>,
    Operator(principal): Operator,
    ApiJson(selection): ApiJson<DlqSelection>,
) -> Result<Json<BulkResult>, Error> {
    let ids = select(&state, &principal, &selection).await?;
    let mut done = Vec::new();
    for id in ids {
        let job = state.control.store().get_job(id).await?;
        if job.state != JobState::Failed {
            continue;
        }
        state
            .control
            .requeue(id, selection.reset, None, &principal.name)
            .await?;
        done.push(id);
    }
    Ok(Json(BulkResult {
        count: done.len() as u64,
        job_ids: done,
    }))
}

#[utoipa::path(post, path = "/dlq/purge", tag = "dead-letter queue", request_body = DlqSelection, responses((status = 200, body = BulkResult)))]
pub async fn purge(
    State(state): State<AppState>,
    Admin(principal): Admin,
    ApiJson(selection): ApiJson<DlqSelection>,
) -> Result<Json<BulkResult>, Error> {
    if selection.reset {
        return Err(Error::invalid("reset", "applies to requeue only"));
    }
    let ids = select(&state, &principal, &selection).await?;
    let mut dead = Vec::new();
    for id in ids {
        match state.control.store().get_job(id).await {
            Ok(job) if job.state == JobState::Failed => dead.push(id),
            // A job named by its id that is not dead is refused, before anything is purged
            // (issue 15: "purged 0" with success); a filter just does not select it.
            Ok(job) if !selection.ids.is_empty() => {
                return Err(Error::Conflict(format!(
                    "job {id} is {}, not in the dead-letter queue: only failed jobs can be purged{}",
                    job.state,
                    if job.state.is_terminal() {
                        ""
                    } else {
                        " (cancel it first)"
                    }
                )));
            }
            Err(retryd_store::Error::NotFound(_)) if !selection.ids.is_empty() => {
                return Err(Error::NotFound(format!("job {id} not found")));
            }
            Ok(_) | Err(retryd_store::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let count = state.control.store().purge_jobs(&dead).await?;
    Ok(Json(BulkResult {
        count,
        job_ids: dead,
    }))
}
