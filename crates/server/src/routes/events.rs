//! The live stream of state changes, as server-sent events and over a WebSocket. The store
//! is the source of truth (so a reconnecting client resumes with `Last-Event-ID` or `after`
//! without a gap); the in-process broadcast only wakes the stream up.

use crate::AppState;
use crate::auth::{Principal, Viewer};
use crate::error::Error;
use crate::extract::ApiQuery;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use retryd_core::JobId;
use retryd_core::job::Event;
use retryd_store::Store;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Jobs whose queue, kind and target a stream remembers; cleared when full.
const JOB_CACHE: usize = 10_000;
/// How long an idle stream waits for a wake-up before it looks at the store anyway.
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// How soon a stream looks again after a wake-up that found nothing deliverable: on
/// PostgreSQL a committed event waits until every older transaction has ended.
const WOKEN_RECHECK: Duration = Duration::from_millis(5);

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this job's events.
    pub job: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    /// Resume after this event id (same as the `Last-Event-ID` header).
    pub after: Option<i64>,
}

/// A state change with the job's queue, kind and target, as streamed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamedEvent {
    #[serde(flatten)]
    pub event: Event,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Filter {
    /// The caller's organization: no other's events are streamed.
    org: String,
    job: Option<JobId>,
    queue: Option<String>,
    kind: Option<String>,
}

/// A job's organization, queue, kind and target.
type JobInfo = (String, String, String, Option<String>);

/// Events after `start` that match `filter`, forever, in the store's stream order.
fn events(
    state: &AppState,
    start: i64,
    filter: Filter,
) -> impl Stream<Item = StreamedEvent> + Send + use<> {
    let store: Arc<dyn Store> = state.control.store().clone();
    let wake = state.control.store().signals().events();
    let jobs: HashMap<JobId, Option<JobInfo>> = HashMap::new();
    futures::stream::unfold(
        (start, Vec::new(), wake, jobs, IDLE_RECHECK),
        move |(mut after, mut buffer, mut wake, mut jobs, mut recheck)| {
            let (store, filter) = (store.clone(), filter.clone());
            async move {
                loop {
                    if let Some(event) = buffer.pop() {
                        let event: Event = event;
                        let info = match jobs.get(&event.job_id) {
                            Some(info) => info.clone(),
                            None => {
                                let info = store
                                    .get_job(event.job_id)
                                    .await
                                    .ok()
                                    .map(|j| (j.org, j.queue, j.kind, j.target));
                                if jobs.len() >= JOB_CACHE {
                                    jobs.clear();
                                }
                                jobs.insert(event.job_id, info.clone());
                                info
                            }
                        };
                        let wanted = |want: &Option<String>, have: Option<&String>| {
                            want.as_ref().is_none_or(|w| Some(w) == have)
                        };
                        // A job gone (purged) may have been any organization's: not shown.
                        if info.as_ref().is_none_or(|i| i.0 != filter.org)
                            || !wanted(&filter.queue, info.as_ref().map(|i| &i.1))
                            || !wanted(&filter.kind, info.as_ref().map(|i| &i.2))
                        {
                            continue;
                        }
                        let (queue, kind, target) = match info {
                            Some((_, q, k, t)) => (Some(q), Some(k), t),
                            None => (None, None, None),
                        };
                        let streamed = StreamedEvent {
                            event,
                            queue,
                            kind,
                            target,
                        };
                        return Some((streamed, (after, buffer, wake, jobs, recheck)));
                    }
                    match store.events_after(after, 500).await {
                        Ok(batch) if !batch.is_empty() => {
                            recheck = IDLE_RECHECK;
                            after = batch.last().map_or(after, |e| e.id);
                            buffer = batch
                                .into_iter()
                                .filter(|e| filter.job.is_none_or(|j| e.job_id == j))
                                .rev()
                                .collect();
                        }
                        // Nothing deliverable, or the database is briefly unavailable: wait for
                        // a wake-up. One that finds nothing is soon followed by another look,
                        // backing off to the idle interval.
                        _ => {
                            use tokio::sync::broadcast::error::RecvError;
                            let woken = match tokio::time::timeout(recheck, wake.recv()).await {
                                Ok(Ok(_) | Err(RecvError::Lagged(_))) => true,
                                Ok(Err(RecvError::Closed)) => {
                                    tokio::time::sleep(recheck).await;
                                    false
                                }
                                Err(_) => false,
                            };
                            recheck = if woken {
                                WOKEN_RECHECK
                            } else {
                                (recheck * 2).min(IDLE_RECHECK)
                            };
                        }
                    }
                }
            }
        },
    )
}

/// Where a stream starts: after the client's last seen event, else now (not at the
/// beginning of history).
async fn start(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    query: &EventQuery,
) -> Result<(i64, Filter), Error> {
    let filter = Filter {
        org: principal.org.clone(),
        job: query.job.as_deref().map(super::job_id).transpose()?,
        queue: query.queue.clone(),
        kind: query.kind.clone(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.after);
    let start = match resume {
        Some(after) if after >= 0 => after,
        Some(after) => {
            return Err(Error::invalid(
                "after",
                format!("must be an event id (0 or more), got {after}"),
            ));
        }
        None => state.control.store().last_event_id().await?,
    };
    Ok((start, filter))
}

#[utoipa::path(get, path = "/events", tag = "events", params(EventQuery, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")), responses((status = 200, description = "Server-sent events named `state`, data a StreamedEvent", body = StreamedEvent, content_type = "text/event-stream")))]
pub async fn stream(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Error> {
    let (start, filter) = start(&state, &principal, &headers, &query).await?;
    let events = events(&state, start, filter).map(|streamed| {
        Ok(SseEvent::default()
            .id(streamed.event.id.to_string())
            .event("state")
            .data(serde_json::to_string(&streamed).unwrap_or_default()))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The same events as JSON text messages over a WebSocket; resume with `?after=ID`.
#[utoipa::path(get, path = "/ws", tag = "events", params(EventQuery), responses((status = 101, description = "WebSocket: one StreamedEvent per text message")))]
pub async fn websocket(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Error> {
    let (start, filter) = start(&state, &principal, &headers, &query).await?;
    let events = events(&state, start, filter);
    Ok(upgrade.on_upgrade(move |socket| forward(socket, events)))
}

async fn forward(mut socket: WebSocket, events: impl Stream<Item = StreamedEvent> + Send) {
    let mut events = std::pin::pin!(events);
    loop {
        tokio::select! {
            next = events.next() => {
                let Some(streamed) = next else { return };
                let text = serde_json::to_string(&streamed).unwrap_or_default();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Pings are answered by axum; anything else from the client is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }
}
