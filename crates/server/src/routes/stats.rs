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
/// Buckets in the attempts-over-time series, unless `bucket` says otherwise.
const BUCKETS: u32 = 48;
/// The finest `bucket` a window may be cut into: the series stays small.
const MAX_BUCKETS: u32 = 1_000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsParams {
    /// How far back from now, e.g. 1h, 24h, 7d [default: 24h].
    pub window: Option<String>,
    pub queue: Option<String>,
    pub kind: Option<String>,
    pub target: Option<String>,
    /// Width of one point of `series`, e.g. 1m [default: the window / 48]; between the
    /// window / 1000 (and 1s) and the window.
    pub bucket: Option<String>,
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
    let bucket = match &params.bucket {
        None => (window / BUCKETS as i32).max(chrono::Duration::seconds(1)),
        Some(text) => {
            let bucket = retryd_core::duration::parse(text)
                .ok()
                .and_then(|b| chrono::Duration::from_std(b).ok())
                .ok_or_else(|| {
                    Error::invalid("bucket", "must be a duration, e.g. 30s, 5m or 1h")
                })?;
            // The window / MAX_BUCKETS in whole seconds, rounded up.
            let finest = (window.num_milliseconds() + 999_999) / 1_000_000;
            if bucket < chrono::Duration::seconds(finest.max(1)) || bucket > window {
                return Err(Error::invalid(
                    "bucket",
                    format!(
                        "must be between {}s (the window / {MAX_BUCKETS}, at least 1s) and the window",
                        finest.max(1)
                    ),
                ));
            }
            bucket
        }
    };
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
