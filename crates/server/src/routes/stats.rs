//! Stats over a window: totals, success rates against the 80 % line, mean attempts, top
//! errors, per kind and per target, and attempts over time.

use crate::AppState;
use crate::auth::Viewer;
use crate::error::Error;
use crate::extract::ApiQuery;
use axum::Json;
use axum::extract::State;
use retryd_store::{Stats, StatsQuery};
use serde::Deserialize;
use std::time::Duration;

const DEFAULT_WINDOW: Duration = Duration::from_secs(24 * 3600);
const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);
/// Buckets in the attempts-over-time series.
const BUCKETS: u32 = 48;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// How far back from now, e.g. 1h, 24h, 7d [default: 24h].
    pub window: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub target: Option<String>,
}

#[utoipa::path(get, path = "/stats", tag = "stats", params(StatsParams), responses((status = 200, body = Stats)))]
pub async fn stats(
    State(state): State<AppState>,
    Viewer(principal): Viewer,
    ApiQuery(params): ApiQuery<StatsParams>,
) -> Result<Json<Stats>, Error> {
    let window = match &params.window {
        None => DEFAULT_WINDOW,
        Some(text) => {
            retryd_core::duration::parse(text).map_err(|m| Error::invalid("window", m))?
        }
    };
    if window.is_zero() || window > MAX_WINDOW {
        return Err(Error::invalid(
            "window",
            "must be between 1s and 366d, e.g. 1h, 24h or 7d",
        ));
    }
    let window =
        chrono::Duration::from_std(window).map_err(|e| Error::invalid("window", e.to_string()))?;
    let until = state.control.now();
    let bucket = (window / BUCKETS as i32).max(chrono::Duration::seconds(1));
    let query = StatsQuery {
        org: Some(principal.org),
        since: until - window,
        // Jobs and attempts stamped in this very millisecond count.
        until: until + chrono::Duration::milliseconds(1),
        queue: params.queue,
        kind: params.kind,
        target: params.target,
        bucket,
    };
    let rows = state.control.store().stats_rows(&query).await?;
    Ok(Json(Stats::from_rows(&query, rows)))
}
