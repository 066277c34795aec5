//! Recurring jobs: everyone reads schedules with their next fire times and last runs;
//! operators pause, resume and trigger them; admins create, replace and delete them. The
//! engine's scheduler fires them (see `retryd_worker`'s `maintenance/scheduler.rs`); a change
//! here reaches every node's scheduler as a notice.

use crate::AppState;
use crate::auth::{Admin, Operator, Principal, Viewer};
use crate::dto::SubmitRequest;
use crate::error::Error;
use crate::extract::ApiJson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use retryd_core::schedule::{
    Cron, Definition, JobTemplate, Misfire, Overlap, SCHEDULE_LABEL, Schedule,
};
use retryd_core::{JobId, JobState};
use retryd_store::{JobFilter, schedules::valid_name};
use serde::{Deserialize, Serialize};

/// How many fire times a view lists ahead, and how many runs `GET /schedules/{name}` shows.
const UPCOMING: usize = 5;
const RUNS: usize = 10;

/// A schedule to create, or the whole new definition of one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// 1–64 of letters, digits and `_ - . :`; unique. (In a replacement, the path names it.)
    #[serde(default)]
    pub name: Option<String>,
    /// Five fields (minute hour day month weekday), or six with seconds first.
    pub cron: String,
    /// An IANA time zone; default `UTC`.
    #[serde(default)]
    pub tz: Option<String>,
    /// While the previous run is live: `skip` (default) or `allow`.
    #[serde(default)]
    pub overlap: Option<Overlap>,
    /// Fire times missed by more than a minute: `skip`, `once` (default) or `all`.
    #[serde(default)]
    pub misfire: Option<Misfire>,
    #[serde(default)]
    pub paused: Option<bool>,
    /// Each run's deadline after its fire time, e.g. `1h`.
    #[serde(default)]
    pub deadline: Option<String>,
    /// What each run is, as `POST /jobs` takes it, without `run_at`, `deadline` or
    /// `idempotency_key` (each fire time sets them).
    pub job: SubmitRequest,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub job_id: JobId,
    pub state: JobState,
    pub run_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub name: String,
    pub cron: String,
    pub tz: String,
    pub overlap: Overlap,
    pub misfire: Misfire,
    pub paused: bool,
    /// Each run's deadline after its fire time.
    pub deadline: Option<String>,
    /// What each run is (secrets redacted): queue, kind, target, action, policy, priority, labels.
    #[schema(value_type = Object)]
    pub job: serde_json::Value,
    /// The next fire times (none while paused).
    pub next_fires: Vec<DateTime<Utc>>,
    pub last_fire: Option<DateTime<Utc>>,
    pub last_job_id: Option<JobId>,
    /// Why fire times were last skipped (overlap or misfire), if they were.
    pub last_skip: Option<String>,
    /// The latest runs, newest first (`GET /schedules/{name}` only).
    pub runs: Vec<RunView>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

fn view(s: &Schedule, now: DateTime<Utc>) -> ScheduleView {
    let d = &s.definition;
    let next_fires = match (s.paused, s.next_fire) {
        (false, Some(next)) => {
            let mut fires = vec![next];
            if let Ok(cron) = Cron::parse(&d.cron, &d.tz) {
                fires.extend(cron.upcoming(next.max(now), UPCOMING - 1));
            }
            fires.dedup();
            fires
        }
        _ => Vec::new(),
    };
    let mut job = d.job.clone();
    job.action = job.action.redacted();
    ScheduleView {
        id: s.id.clone(),
        name: s.name.clone(),
        cron: d.cron.clone(),
        tz: d.tz.clone(),
        overlap: d.overlap,
        misfire: d.misfire,
        paused: s.paused,
        deadline: job
            .deadline_after_ms
            .map(|ms| retryd_core::duration::format(std::time::Duration::from_millis(ms))),
        job: serde_json::json!({
            "queue": job.queue, "kind": job.kind, "target": job.target, "action": job.action,
            "policy_name": job.policy_name, "priority": job.priority, "labels": job.labels,
        }),
        next_fires,
        last_fire: s.last_fire,
        last_job_id: s.last_job_id,
        last_skip: s.last_skip.clone(),
        runs: Vec::new(),
        created_at: s.created_at,
        created_by: s.created_by.clone(),
        updated_at: s.updated_at,
    }
}

/// The organization's schedules, by name.
async fn of_org(state: &AppState, org: &str) -> Result<Vec<Schedule>, Error> {
    let mut schedules = state.control.store().list_schedules().await?;
    schedules.retain(|s| s.org == org);
    Ok(schedules)
}

async fn find(state: &AppState, principal: &Principal, name: &str) -> Result<Schedule, Error> {
    let schedules = of_org(state, &principal.org).await?;
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    let known = if names.is_empty() {
        "there are none".to_owned()
    } else {
        format!("known: {}", names.join(", "))
    };
    schedules
        .iter()
        .find(|s| s.name == name)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("no schedule named '{name}' ({known})")))
}

/// Validates a request into a definition; field names are the request's.
fn definition(
    state: &AppState,
    request: ScheduleRequest,
    admin: &Principal,
) -> Result<Definition, Error> {
    let tz = request.tz.unwrap_or_else(|| "UTC".into());
    let now = state.control.now();
    let cron = Cron::parse(&request.cron, &tz).map_err(|e| Error::invalid(e.field, e.message))?;
    if cron.next_after(now).is_none() {
        return Err(Error::invalid(
            "cron",
            format!("{:?} never fires again", request.cron),
        ));
    }
    for (field, set) in [
        ("job.run_at", request.job.run_at.is_some()),
        ("job.deadline", request.job.deadline.is_some()),
        ("job.idempotency_key", request.job.idempotency_key.is_some()),
    ] {
        if set {
            return Err(Error::invalid(
                field,
                "set by each fire time; give the schedule's `deadline` (relative, e.g. 1h) instead of an absolute one",
            ));
        }
    }
    let deadline = request
        .deadline
        .as_deref()
        .map(retryd_core::duration::parse)
        .transpose()
        .map_err(|m| Error::invalid("deadline", m))?;
    if request.job.labels.contains_key(SCHEDULE_LABEL) {
        return Err(Error::invalid(
            "job.labels.schedule",
            "reserved: every run carries its schedule's name under it",
        ));
    }
    let mut job = request
        .job
        .into_new_job(
            &admin.org,
            &state.control.policies(&admin.org),
            now,
            &admin.name,
        )
        .map_err(|e| match e {
            Error::Invalid { field, message } => Error::invalid(format!("job.{field}"), message),
            other => other,
        })?;
    state.control.seal_action(&mut job.action)?;
    Ok(Definition {
        cron: request.cron,
        tz,
        overlap: request.overlap.unwrap_or_default(),
        misfire: request.misfire.unwrap_or_default(),
        job: JobTemplate::from_job(job, deadline),
    })
}

fn first_fire(d: &Definition, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Cron::parse(&d.cron, &d.tz).ok()?.next_after(now)
}

#[utoipa::path(get, path = "/schedules", tag = "schedules", responses((status = 200, body = Vec<ScheduleView>)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<Json<Vec<ScheduleView>>, Error> {
    let now = state.control.now();
    let schedules = of_org(&state, &principal.org).await?;
    Ok(Json(schedules.iter().map(|s| view(s, now)).collect()))
}

#[utoipa::path(get, path = "/schedules/{name}", tag = "schedules", params(("name" = String, Path)), responses((status = 200, body = ScheduleView)))]
pub async fn show(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Error> {
    let schedule = find(&state, &principal, &name).await?;
    let mut shown = view(&schedule, state.control.now());
    let filter = JobFilter {
        org: Some(schedule.org.clone()),
        label: Some((SCHEDULE_LABEL.into(), schedule.name.clone())),
        ..JobFilter::default()
    };
    let page = state.control.store().list_jobs(&filter, None, RUNS).await?;
    shown.runs = page
        .jobs
        .into_iter()
        .map(|job| RunView {
            job_id: job.id,
            state: job.state,
            run_at: job.run_at,
            finished_at: job.finished_at,
            last_error: job.last_error,
        })
        .collect();
    Ok(Json(shown))
}

#[utoipa::path(post, path = "/schedules", tag = "schedules", request_body = ScheduleRequest, responses((status = 201, body = ScheduleView)))]
pub async fn create(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(request): ApiJson<ScheduleRequest>,
) -> Result<(StatusCode, Json<ScheduleView>), Error> {
    let Some(name) = request.name.clone() else {
        return Err(Error::invalid(
            "name",
            "required: 1–64 of letters, digits and _ - . :",
        ));
    };
    if !valid_name(&name) {
        return Err(Error::invalid(
            "name",
            "must be 1–64 of letters, digits and _ - . :",
        ));
    }
    let paused = request.paused.unwrap_or(false);
    let definition = definition(&state, request, &admin)?;
    let now = state.control.now();
    let schedule = Schedule {
        id: JobId::new().to_string(),
        org: admin.org.clone(),
        name,
        next_fire: first_fire(&definition, now),
        definition,
        paused,
        last_fire: None,
        last_job_id: None,
        last_skip: None,
        created_at: now,
        created_by: admin.name.clone(),
        updated_at: now,
    };
    state.control.store().insert_schedule(&schedule).await?;
    state.control.schedules_changed();
    Ok((StatusCode::CREATED, Json(view(&schedule, now))))
}

#[utoipa::path(put, path = "/schedules/{name}", tag = "schedules", params(("name" = String, Path)), request_body = ScheduleRequest, responses((status = 200, body = ScheduleView)))]
pub async fn replace(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<ScheduleRequest>,
) -> Result<Json<ScheduleView>, Error> {
    if request.name.as_deref().is_some_and(|n| n != name) {
        return Err(Error::invalid(
            "name",
            "a schedule is renamed by deleting and creating it",
        ));
    }
    let mut schedule = find(&state, &admin, &name).await?;
    let paused = request.paused.unwrap_or(schedule.paused);
    schedule.definition = definition(&state, request, &admin)?;
    save(&state, schedule, paused).await
}

/// Stores a schedule's new definition or paused flag; its next fire time is computed anew
/// from now (a paused schedule has none).
async fn save(
    state: &AppState,
    mut schedule: Schedule,
    paused: bool,
) -> Result<Json<ScheduleView>, Error> {
    let now = state.control.now();
    schedule.paused = paused;
    schedule.next_fire = first_fire(&schedule.definition, now);
    schedule.updated_at = now;
    if !state.control.store().update_schedule(&schedule).await? {
        return Err(Error::NotFound(format!(
            "no schedule named '{}' (deleted meanwhile)",
            schedule.name
        )));
    }
    state.control.schedules_changed();
    Ok(Json(view(&schedule, now)))
}

/// Deletes a schedule (its runs stay); answers what it was.
#[utoipa::path(delete, path = "/schedules/{name}", tag = "schedules", params(("name" = String, Path)), responses((status = 200, body = ScheduleView)))]
pub async fn delete(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Error> {
    let schedule = find(&state, &admin, &name).await?;
    state.control.store().delete_schedule(&schedule.id).await?;
    state.control.schedules_changed();
    Ok(Json(view(&schedule, state.control.now())))
}

#[utoipa::path(post, path = "/schedules/{name}/pause", tag = "schedules", params(("name" = String, Path)), responses((status = 200, body = ScheduleView)))]
pub async fn pause(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Error> {
    let schedule = find(&state, &operator, &name).await?;
    save(&state, schedule, true).await
}

#[utoipa::path(post, path = "/schedules/{name}/resume", tag = "schedules", params(("name" = String, Path)), responses((status = 200, body = ScheduleView)))]
pub async fn resume(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Error> {
    let schedule = find(&state, &operator, &name).await?;
    save(&state, schedule, false).await
}

/// Runs the schedule's job now, once, beside its fire times (paused or not).
#[utoipa::path(post, path = "/schedules/{name}/trigger", tag = "schedules", params(("name" = String, Path)), responses((status = 201, body = crate::dto::JobView)))]
pub async fn trigger(
    State(state): State<AppState>,
    Operator(operator): Operator,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<crate::dto::JobView>), Error> {
    let schedule = find(&state, &operator, &name).await?;
    let now = state.control.now();
    let mut run = schedule.definition.job.run(
        &schedule.org,
        &schedule.name,
        now,
        None,
        &operator.name,
        now,
    );
    run.labels.insert("trigger".into(), "manual".into());
    let inserted = state.control.submit(run).await?;
    let paused = state.control.store().paused_queues(&schedule.org).await?;
    let policies = state.control.policies(&schedule.org);
    Ok((
        StatusCode::CREATED,
        Json(crate::dto::JobView::new(
            inserted.job,
            now,
            &paused,
            Default::default(),
            &policies,
        )),
    ))
}
