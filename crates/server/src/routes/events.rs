//! The live stream of state changes, as server-sent events. The store is the source of
//! truth (so a reconnecting client resumes with `Last-Event-ID` without a gap); the
//! in-process broadcast only wakes the stream up.

use crate::AppState;
use crate::error::Error;
use crate::extract::ApiQuery;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use retryd_core::JobId;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only this job's events.
    pub job: Option<String>,
    /// Resume after this event id (same as the `Last-Event-ID` header).
    pub after: Option<i64>,
}

pub async fn stream(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Error> {
    let job: Option<JobId> = query.job.as_deref().map(super::job_id).transpose()?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.after);
    let store = state.engine.store().clone();
    // Without a resume point the stream starts now, not at the beginning of history.
    let start = match resume {
        Some(after) => after,
        None => latest_event_id(&state).await?,
    };
    let wake = state.engine.subscribe();
    let events = futures::stream::unfold(
        (start, Vec::new(), wake),
        move |(mut after, mut buffer, mut wake)| {
            let store = store.clone();
            async move {
                loop {
                    if let Some(event) = buffer.pop() {
                        let event: retryd_core::job::Event = event;
                        let data = serde_json::to_string(&event).unwrap_or_default();
                        let sse = SseEvent::default()
                            .id(event.id.to_string())
                            .event("state")
                            .data(data);
                        return Some((Ok(sse), (after, buffer, wake)));
                    }
                    match store.events_after(after, 500).await {
                        Ok(batch) if !batch.is_empty() => {
                            after = batch.last().map_or(after, |e| e.id);
                            buffer = batch
                                .into_iter()
                                .filter(|e| job.is_none_or(|j| e.job_id == j))
                                .rev()
                                .collect();
                        }
                        // Nothing new, or the database is briefly unavailable: wait for a wake-up.
                        _ => {
                            let _ = tokio::time::timeout(Duration::from_secs(1), wake.recv()).await;
                        }
                    }
                }
            }
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn latest_event_id(state: &AppState) -> Result<i64, Error> {
    Ok(state.engine.store().last_event_id().await?)
}
