use super::job_id;
use crate::AppState;
use crate::auth::{Operator, Principal, Viewer};
use crate::dto::{
    BatchItem, BatchRequest, BatchSubmitted, JobPage, JobView, ListQuery, LogPage, LogQuery,
    RetryRequest, SubmitRequest, Submitted,
};
use crate::error::Error;
use crate::extract::{ApiJson, ApiQuery};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use retryd_core::JobState;
use retryd_core::explain::Around;
use retryd_core::job::{Attempt, Event, Job};
use std::collections::BTreeMap;
use std::time::Duration;

const MAX_LOG_PAGE: usize = 5000;
/// Live log follows served at once; more are answered 429.
const MAX_FOLLOWS: usize = 2048;
/// A follow re-reads the store this often without a wake-up: output another node stored.
const FOLLOW_RECHECK: Duration = Duration::from_secs(10);
static FOLLOWS: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_FOLLOWS)));

/// The job as its organization's callers see it.
async fn view(state: &AppState, job: Job) -> Result<JobView, Error> {
    let now = state.control.now();
    let due = job.state.is_waiting() && job.next_attempt_at.is_some_and(|t| t <= now);
    let ahead = if due {
        Some(state.control.store().count_ahead(&job, now).await?)
    } else {
        None
    };
    let paused = state.control.store().paused_queues(&job.org).await?;
    let policies = state.control.policies(&job.org);
    let around = Around {
        ahead,
        org_full: org_full(state, &job.org).await?,
        ..Around::default()
    };
    Ok(JobView::new(job, now, &paused, around, &policies))
}

/// The organization's running limit when it runs that many now: its due jobs wait for its
/// share, whatever the free workers.
pub(crate) async fn org_full(state: &AppState, org: &str) -> Result<Option<u32>, Error> {
    let store = state.control.store();
    let limit = store
        .list_orgs()
        .await?
        .into_iter()
        .find(|o| o.name == org)
        .and_then(|o| o.max_running);
    Ok(match limit {
        Some(limit) if store.count_running(org).await? >= u64::from(limit) => Some(limit),
        _ => None,
    })
}

/// The job with this id, if it belongs to the caller's organization (404 otherwise, as for
/// an id that does not exist).
pub(crate) async fn visible_job(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Job, Error> {
    let id = job_id(id)?;
    let job = state.control.store().get_job(id).await?;
    principal.owns(&job.org, format_args!("job {id}"))?;
    Ok(job)
}

#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = SubmitRequest, responses((status = 201, description = "Created", body = Submitted), (status = 200, description = "An existing job with the same idempotency key", body = Submitted)))]
pub async fn submit(
    State(state): State<AppState>,
    Operator(principal): Operator,
    ApiJson(request): ApiJson<SubmitRequest>,
) -> Result<Response, Error> {
    let control = &state.control;
    let org = &principal.org;
    let new = request.into_new_job(org, &control.policies(org), control.now(), &principal.name)?;
    let inserted = control.submit(new).await?;
    let status = if inserted.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = Submitted {
        view: view(&state, inserted.job).await?,
        created: inserted.created,
    };
    Ok((status, Json(body)).into_response())
}

/// The largest batch body: 10,000 jobs of a few KiB each.
pub const BATCH_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Submits up to 10,000 jobs in one transaction: all are stored, or (any item invalid) none,
/// and the answer lists each item's job in order.
#[utoipa::path(post, path = "/jobs/batch", tag = "jobs", request_body = BatchRequest, responses((status = 201, description = "Stored; at least one job was created", body = BatchSubmitted), (status = 200, description = "Every job already existed (idempotency keys)", body = BatchSubmitted)))]
pub async fn submit_batch(
    State(state): State<AppState>,
    Operator(principal): Operator,
    request: Result<ApiJson<BatchRequest>, Error>,
) -> Result<Response, Error> {
    let ApiJson(request) = request.map_err(|e| match e {
        Error::TooLarge { .. } => Error::TooLarge {
            limit: BATCH_BODY_LIMIT,
        },
        other => other,
    })?;
    let control = &state.control;
    let org = &principal.org;
    let jobs =
        request.into_new_jobs(org, &control.policies(org), control.now(), &principal.name)?;
    let inserted = control.submit_many(jobs).await?;
    let created = inserted.iter().filter(|i| i.created).count();
    let status = if created > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let jobs = inserted
        .into_iter()
        .map(|i| BatchItem {
            id: i.job.id,
            state: i.job.state,
            queue: i.job.queue,
            kind: i.job.kind,
            created: i.created,
        })
        .collect();
    Ok((status, Json(BatchSubmitted { jobs, created })).into_response())
}

/// Jobs read from the store at a time while a list is built: a list of fat jobs (large
/// stdin, bodies) holds only this many in memory at once.
const LIST_CHUNK: usize = 8;
/// A list answer stops growing past this many bytes of JSON; `next_cursor` continues it.
const LIST_ANSWER_BYTES: usize = 2 * 1024 * 1024;

/// How many of the organization's jobs are in each state now (every state present): the
/// job list's state chips.
#[utoipa::path(get, path = "/jobs/counts", tag = "jobs", responses((status = 200, body = BTreeMap<String, u64>)))]
pub async fn counts(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<Json<BTreeMap<JobState, u64>>, Error> {
    let counts = state
        .control
        .store()
        .count_by_state(Some(&principal.org))
        .await?;
    Ok(Json(retryd_store::stats::every_state(counts)))
}

/// Summaries only (see [`retryd_core::job::Action::summarized`]); `GET /jobs/{id}` has it all.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery), responses((status = 200, body = JobPage)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<JobPage>, Error> {
    let org = &principal.org;
    let (filter, limit) = (query.filter(org)?, query.limit()?);
    let mut cursor = query.cursor()?;
    let now = state.control.now();
    let paused = state.control.store().paused_queues(org).await?;
    let policies = state.control.policies(org);
    let around = Around {
        org_full: org_full(&state, org).await?,
        ..Around::default()
    };
    let (mut jobs, mut bytes) = (Vec::new(), 0);
    loop {
        let want = LIST_CHUNK.min(limit - jobs.len());
        let page = state
            .control
            .store()
            .list_jobs(&filter, cursor, want)
            .await?;
        let more = page.next_cursor.is_some();
        for mut job in page.jobs {
            job.action = job.action.summarized();
            let view = JobView::new(job, now, &paused, around, &policies);
            bytes += serde_json::to_vec(&view).map_or(0, |v| v.len());
            cursor = Some(view.job.id);
            jobs.push(view);
            if bytes >= LIST_ANSWER_BYTES {
                break;
            }
        }
        if !more || jobs.len() >= limit || bytes >= LIST_ANSWER_BYTES {
            // A page cut short by size continues after its last job.
            let next_cursor = (more || bytes >= LIST_ANSWER_BYTES)
                .then_some(cursor)
                .flatten();
            return Ok(Json(JobPage { jobs, next_cursor }));
        }
    }
}

#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "Job id (UUID)")), responses((status = 200, body = JobView)))]
pub async fn get(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    Path(id): Path<String>,
) -> Result<Json<JobView>, Error> {
    let job = visible_job(&state, &principal, &id).await?;
    Ok(Json(view(&state, job).await?))
}

#[utoipa::path(get, path = "/jobs/{id}/attempts", tag = "jobs", params(("id" = String, Path, description = "Job id (UUID)")), responses((status = 200, body = Vec<Attempt>)))]
pub async fn attempts(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    Path(id): Path<String>,
) -> Result<Json<Vec<Attempt>>, Error> {
    let job = visible_job(&state, &principal, &id).await?;
    Ok(Json(state.control.store().list_attempts(job.id).await?))
}

#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", params(("id" = String, Path, description = "Job id (UUID)")), responses((status = 200, body = Vec<Event>)))]
pub async fn events(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    Path(id): Path<String>,
) -> Result<Json<Vec<Event>>, Error> {
    let job = visible_job(&state, &principal, &id).await?;
    Ok(Json(state.control.store().list_events(job.id).await?))
}

#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "Job id (UUID)")), responses((status = 200, body = JobView)))]
pub async fn cancel(
    State(state): State<AppState>,
    Operator(principal): Operator,
    Path(id): Path<String>,
) -> Result<Json<JobView>, Error> {
    let id = visible_job(&state, &principal, &id).await?.id;
    let job = state.control.cancel(id, &principal.name).await?;
    Ok(Json(view(&state, job).await?))
}

/// Retry now / requeue. The body is optional: `{"reset": true}` restarts the attempt count.
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "Job id (UUID)")), request_body(content = Option<RetryRequest>, description = "Optional: reset and changes"), responses((status = 200, body = JobView)))]
pub async fn retry(
    State(state): State<AppState>,
    Operator(principal): Operator,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<JobView>, Error> {
    let request: RetryRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RetryRequest::default()
    } else {
        let mut parser = serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(&mut parser).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => Error::invalid(
                    if field == "." {
                        "body".to_owned()
                    } else {
                        field
                    },
                    inner.to_string(),
                ),
                _ => Error::Malformed(format!("body is not valid JSON: {inner}")),
            }
        })?
    };
    let current = visible_job(&state, &principal, &id).await?;
    let id = current.id;
    let policies = state.control.policies(&current.org);
    let changes = request.changes(&current, &policies, state.control.now())?;
    let job = state
        .control
        .requeue(id, request.reset, changes, &principal.name)
        .await?;
    Ok(Json(view(&state, job).await?))
}

/// A page of the job's output; with `tail=true` its last lines, with `q` the last lines that
/// contain a text; with `follow=true`, a stream of NDJSON lines that ends when the job is
/// finished and its output drained; with `download=true`, every line as a text file.
#[utoipa::path(get, path = "/jobs/{id}/log", tag = "jobs", params(("id" = String, Path, description = "Job id (UUID)"), LogQuery), responses((status = 200, description = "A page of output (NDJSON stream of LogLine with follow=true, a text file with download=true)", content((LogPage = "application/json"), (retryd_core::job::LogLine = "application/x-ndjson"), (String = "text/plain")))))]
pub async fn log(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Response, Error> {
    let store = state.control.store().clone();
    let limit = crate::extract::limit(query.limit, 1000, MAX_LOG_PAGE)?;
    let modes = [
        query.follow,
        query.tail || query.q.is_some(),
        query.download,
    ];
    if modes.into_iter().filter(|on| *on).count() > 1 {
        return Err(Error::invalid(
            "follow",
            "follow, tail (or q) and download are each a way to read the log: choose one",
        ));
    }
    if query
        .q
        .as_deref()
        .is_some_and(|q| q.is_empty() || q.len() > 200)
    {
        return Err(Error::invalid("q", "must be 1–200 characters"));
    }
    if query.attempt.is_some() && !(query.tail || query.q.is_some()) {
        return Err(Error::invalid(
            "attempt",
            "one attempt's lines are read with tail=true or q: add one of them",
        ));
    }
    if query.attempt == Some(0) {
        return Err(Error::invalid("attempt", "attempts are numbered from 1"));
    }
    let job = visible_job(&state, &principal, &id).await?;
    let id = job.id;
    if query.download {
        return Ok(download(store, id));
    }
    if query.tail || query.q.is_some() {
        let lines = store
            .read_log_tail(id, limit, query.q.as_deref(), query.attempt)
            .await?;
        let next_after = lines.last().map_or(0, |l| l.seq);
        return Ok(Json(LogPage {
            lines,
            next_after,
            complete: job.state.is_terminal(),
        })
        .into_response());
    }
    if !query.follow {
        let lines = store.read_log(id, query.after, limit).await?;
        let next_after = lines.last().map_or(query.after, |l| l.seq);
        let complete = job.state.is_terminal() && lines.len() < limit;
        return Ok(Json(LogPage {
            lines,
            next_after,
            complete,
        })
        .into_response());
    }
    let Ok(permit) = FOLLOWS.clone().try_acquire_owned() else {
        return Err(Error::RateLimited {
            retry_after_secs: 5,
        });
    };
    let (events, logs) = (
        state.control.store().signals().events(),
        state.control.store().signals().logs(),
    );
    let stream = futures::stream::unfold((query.after, false), move |(after, done)| {
        let store = store.clone();
        let (mut events, mut logs) = (events.resubscribe(), logs.resubscribe());
        let _held = &permit;
        async move {
            if done {
                return None;
            }
            loop {
                let lines = match store.read_log(id, after, 500).await {
                    Ok(lines) => lines,
                    Err(_) => return None,
                };
                if let Some(last) = lines.last() {
                    let mut chunk = String::new();
                    for line in &lines {
                        chunk.push_str(&serde_json::to_string(line).unwrap_or_default());
                        chunk.push('\n');
                    }
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(chunk)),
                        (last.seq, false),
                    ));
                }
                let finished = store
                    .get_job(id)
                    .await
                    .map(|j| j.state.is_terminal())
                    .unwrap_or(true);
                if finished {
                    // One last read: lines written just before the final state change.
                    let rest = store.read_log(id, after, 500).await.unwrap_or_default();
                    if rest.is_empty() {
                        return None;
                    }
                    continue;
                }
                // Woken by this job's stored output or state change; another node's writes
                // are picked up by the slow re-check.
                let this_job = async {
                    loop {
                        tokio::select! {
                            logged = logs.recv() => match logged {
                                Ok(job) if job != id => continue,
                                _ => return,
                            },
                            event = events.recv() => match event {
                                Ok(event) if event.job_id != id => continue,
                                _ => return,
                            },
                        }
                    }
                };
                let _ = tokio::time::timeout(FOLLOW_RECHECK, this_job).await;
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Every line of a job's output as a text file, read a page at a time.
fn download(store: std::sync::Arc<dyn retryd_store::Store>, id: retryd_core::JobId) -> Response {
    let pages = futures::stream::unfold(Some(0i64), move |after| {
        let store = store.clone();
        async move {
            let after = after?;
            match store.read_log(id, after, MAX_LOG_PAGE).await {
                Ok(lines) if lines.is_empty() => None,
                Ok(lines) => {
                    let mut text = String::new();
                    for line in &lines {
                        text.push_str(&format!(
                            "{} {} {}\n",
                            line.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                            line.stream.as_str(),
                            line.line
                        ));
                    }
                    let next = (lines.len() == MAX_LOG_PAGE).then(|| lines[lines.len() - 1].seq);
                    Some((Ok::<_, std::io::Error>(Bytes::from(text)), next))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"retryd-job-{id}.log\""),
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response()
}
