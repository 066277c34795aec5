//! Circuits per target that are open or half-open (a closed circuit is not listed), with why
//! each opened and how many of the organization's jobs it holds; admins close one by hand once
//! its target is fixed.

use crate::AppState;
use crate::auth::{Admin, Principal, Viewer};
use crate::error::Error;
use crate::extract::ApiQuery;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use retryd_store::{Circuit, CircuitOutage, CircuitState};
use serde::Deserialize;
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
    /// Why it opened, as a sentence.
    pub reason: String,
    /// The organization's waiting jobs it holds.
    pub held: u64,
}

fn view(c: Circuit, now: DateTime<Utc>, held: u64) -> CircuitView {
    CircuitView {
        state: c.state(now),
        reason: format!(
            "{} of the last {} attempts against {} failed transiently",
            c.failures, c.attempts, c.target
        ),
        target: c.target,
        opened_at: c.opened_at,
        open_until: c.open_until,
        probing: c.probe_attempt_id.is_some(),
        failures: c.failures,
        attempts: c.attempts,
        held,
    }
}

/// The circuits of targets the organization's jobs name: a target is shared, its circuit
/// too, but another organization's targets are not shown.
async fn visible(state: &AppState, principal: &Principal) -> Result<Vec<Circuit>, Error> {
    Ok(state
        .control
        .store()
        .list_circuits(Some(&principal.org))
        .await?)
}

#[utoipa::path(get, path = "/circuits", tag = "circuits", responses((status = 200, description = "Circuits that are open or half-open", body = Vec<CircuitView>)))]
pub async fn list(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
) -> Result<Json<Vec<CircuitView>>, Error> {
    let now = state.control.now();
    let circuits = visible(&state, &principal).await?;
    let held = state
        .control
        .store()
        .held_by_circuits(&principal.org)
        .await?;
    Ok(Json(
        circuits
            .into_iter()
            .map(|c| {
                let n = held.get(&c.target).copied().unwrap_or(0);
                view(c, now, n)
            })
            .collect(),
    ))
}

/// Closes a circuit by hand: the jobs it held (of every organization: the target is shared)
/// start at once. A failure afterwards counts towards a new circuit as usual.
#[utoipa::path(post, path = "/circuits/{target}/close", tag = "circuits", params(("target" = String, Path)), responses((status = 200, description = "Closed; what it was", body = CircuitView)))]
pub async fn close(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(target): Path<String>,
) -> Result<Json<CircuitView>, Error> {
    let now = state.control.now();
    let circuit = visible(&state, &admin)
        .await?
        .into_iter()
        .find(|c| c.target == target)
        .ok_or_else(|| Error::NotFound(format!("no open circuit for target '{target}'")))?;
    let held = state
        .control
        .store()
        .held_by_circuits(&admin.org)
        .await?
        .get(&target)
        .copied()
        .unwrap_or(0);
    state.control.close_circuit(&target, &admin.name).await?;
    tracing::info!(target = %target, by = %admin.name, "circuit closed by hand");
    Ok(Json(view(circuit, now, held)))
}

/// Outages listed at most.
const HISTORY_MAX: usize = 200;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Outages to list, newest first: 1–200 [default: 50].
    pub limit: Option<usize>,
}

/// The latest outages of the organization's targets, open ones included, newest first: when
/// each circuit opened, how often a failed probe opened it again, and when and how it closed.
#[utoipa::path(get, path = "/circuits/history", tag = "circuits", params(HistoryQuery), responses((status = 200, body = Vec<CircuitOutage>)))]
pub async fn history(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<Vec<CircuitOutage>>, Error> {
    let limit = crate::extract::limit(query.limit, 50, HISTORY_MAX)?;
    Ok(Json(
        state
            .control
            .store()
            .circuit_history(Some(&principal.org), limit)
            .await?,
    ))
}
