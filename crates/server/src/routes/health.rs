use crate::AppState;
use crate::auth::Viewer;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "The process answers", body = Object)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus text exposition: this node's counters and histograms, and the store's
/// counts of jobs by state and waiting jobs by queue as of now, over every organization
/// (instance tokens only).
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "application/openmetrics-text")))]
pub async fn metrics(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<impl axum::response::IntoResponse, crate::error::Error> {
    principal.instance_only()?;
    let store = state.control.store();
    let by_state = store.count_by_state(None).await?;
    let depths = store.queue_depths(None).await?;
    let circuits = store.list_circuits(None).await?;
    let body = state
        .node
        .metrics(&by_state, &depths, &circuits, state.control.now());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

/// The process can do its work: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses((status = 200, description = "The database answers", body = Object), (status = 503, description = "The database does not answer", body = Object)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.control.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "running": state.node.running() })),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": e.to_string() })),
        ),
    }
}
