//! Queues: how many jobs wait in each, and pausing and resuming them.

use crate::AppState;
use crate::auth::{Operator, Principal, Viewer};
use crate::error::Error;
use axum::Json;
use axum::extract::{Path, State};
use retryd_core::job::validate_name;
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    /// Pending or retrying jobs.
    pub waiting: u64,
}

/// Every queue of the organization that has waiting jobs or is paused.
#[utoipa::path(get, path = "/queues", tag = "queues", responses((status = 200, body = Vec<QueueView>)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<Json<Vec<QueueView>>, Error> {
    let org = &principal.org;
    let depths = state.control.store().queue_depths(Some(org)).await?;
    let paused = state.control.store().paused_queues(org).await?;
    let names: BTreeSet<&String> = depths.keys().chain(paused.iter()).collect();
    Ok(Json(
        names
            .into_iter()
            .map(|name| QueueView {
                name: name.clone(),
                paused: paused.contains(name),
                waiting: depths.get(name).copied().unwrap_or(0),
            })
            .collect(),
    ))
}

async fn set(
    state: &AppState,
    principal: &Principal,
    name: &str,
    paused: bool,
) -> Result<Json<QueueView>, Error> {
    validate_name("queue", name).map_err(|message| Error::invalid("queue", message))?;
    let org = &principal.org;
    state
        .control
        .set_queue_paused(org, name, paused, &principal.name)
        .await?;
    let waiting = state
        .control
        .store()
        .queue_depths(Some(org))
        .await?
        .get(name)
        .copied()
        .unwrap_or(0);
    Ok(Json(QueueView {
        name: name.to_owned(),
        paused,
        waiting,
    }))
}

/// Running attempts finish; nothing new is claimed from the queue until it is resumed.
#[utoipa::path(post, path = "/queues/{name}/pause", tag = "queues", params(("name" = String, Path)), responses((status = 200, body = QueueView)))]
pub async fn pause(
    State(state): State<AppState>,
    Operator(principal): Operator,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, Error> {
    set(&state, &principal, &name, true).await
}

#[utoipa::path(post, path = "/queues/{name}/resume", tag = "queues", params(("name" = String, Path)), responses((status = 200, body = QueueView)))]
pub async fn resume(
    State(state): State<AppState>,
    Operator(principal): Operator,
    Path(name): Path<String>,
) -> Result<Json<QueueView>, Error> {
    set(&state, &principal, &name, false).await
}
