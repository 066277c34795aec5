//! The notification log: every delivery with each of its tries.

use crate::AppState;
use crate::auth::Viewer;
use crate::error::Error;
use crate::extract::ApiQuery;
use axum::Json;
use axum::extract::{Path, State};
use retryd_store::Notification;
use serde::Deserialize;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NotificationQuery {
    /// Deliveries to return, newest first (1–1000, default 100).
    pub limit: Option<usize>,
}

fn limit(query: &NotificationQuery) -> Result<usize, Error> {
    crate::extract::limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)
}

/// Newest deliveries first, of all jobs.
#[utoipa::path(get, path = "/notifications", tag = "notifications", params(NotificationQuery), responses((status = 200, body = Vec<Notification>)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> Result<Json<Vec<Notification>>, Error> {
    let limit = limit(&query)?;
    Ok(Json(
        state
            .control
            .store()
            .list_notifications(None, Some(&principal.org), limit)
            .await?,
    ))
}

/// The deliveries of one job.
#[utoipa::path(get, path = "/jobs/{id}/notifications", tag = "notifications", params(("id" = String, Path, description = "Job id (UUID)"), NotificationQuery), responses((status = 200, body = Vec<Notification>)))]
pub async fn of_job(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<NotificationQuery>,
) -> Result<Json<Vec<Notification>>, Error> {
    let limit = limit(&query)?;
    let job = super::jobs::visible_job(&state, &principal, &id).await?;
    let store = state.control.store();
    Ok(Json(
        store.list_notifications(Some(job.id), None, limit).await?,
    ))
}
