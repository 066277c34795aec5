//! Circuits per target that are open or half-open (a closed circuit is not listed).

use crate::AppState;
use crate::auth::Viewer;
use crate::error::Error;
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use retryd_store::CircuitState;
use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CircuitView {
    pub target: String,
    /// `open` until `open_until`, then `half_open` (one probe attempt goes through).
    pub state: CircuitState,
    pub opened_at: DateTime<Utc>,
    pub open_until: DateTime<Utc>,
    /// Whether the half-open circuit's probe attempt is running.
    pub probing: bool,
    /// The counts in the window that opened it.
    pub failures: u32,
    pub attempts: u32,
}

#[utoipa::path(get, path = "/circuits", tag = "circuits", responses((status = 200, description = "Circuits that are open or half-open", body = Vec<CircuitView>)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<Json<Vec<CircuitView>>, Error> {
    let now = state.control.now();
    // The circuits of targets the organization's jobs name: a target is shared, its
    // circuit too, but another organization's targets are not shown.
    let circuits = state
        .control
        .store()
        .list_circuits(Some(&principal.org))
        .await?;
    Ok(Json(
        circuits
            .into_iter()
            .map(|c| CircuitView {
                state: c.state(now),
                target: c.target,
                opened_at: c.opened_at,
                open_until: c.open_until,
                probing: c.probe_attempt_id.is_some(),
                failures: c.failures,
                attempts: c.attempts,
            })
            .collect(),
    ))
}
