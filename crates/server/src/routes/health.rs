use crate::AppState;
use crate::auth::Viewer;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// The process answers.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Prometheus text exposition: this node's counters and histograms, and the store's
/// counts of jobs by state and waiting jobs by queue as of now.
pub async fn metrics(
    State(state): State<AppState>,
    Viewer(_): Viewer,
) -> Result<impl axum::response::IntoResponse, crate::error::Error> {
    let store = state.engine.store();
    let by_state = store.count_by_state().await?;
    let depths = store.queue_depths().await?;
    let body = state.engine.metrics().render(&by_state, &depths);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

/// The process can do its work: the database answers.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.engine.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "running": state.engine.running_count() })),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": e.to_string() })),
        ),
    }
}
