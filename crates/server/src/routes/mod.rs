pub mod channels;
pub mod circuits;
pub mod dlq;
pub mod events;
pub mod health;
pub mod jobs;
pub mod notifications;
pub mod orgs;
pub mod policies;
pub mod queues;
pub mod schedules;
pub mod session;
pub mod stats;
pub mod tokens;

use crate::error::Error;
use axum::extract::OriginalUri;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use retryd_core::JobId;

/// An unknown path: the API's JSON 404, or for a browser asking for a page (not under
/// `/api/`), the dashboard with its own "Not found" page, still answered 404.
pub async fn not_found(
    OriginalUri(uri): OriginalUri,
    method: Method,
    headers: axum::http::HeaderMap,
) -> Response {
    let wants_page = method == Method::GET
        && !uri.path().starts_with("/api/")
        && headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
    if wants_page {
        let mut page = crate::dashboard::index_page(&headers);
        *page.status_mut() = axum::http::StatusCode::NOT_FOUND;
        return page;
    }
    Error::NotFound(format!("no route for {}", uri.path())).into_response()
}

pub async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> Response {
    let body = serde_json::json!({ "error": {
        "code": "method_not_allowed",
        "message": format!("{method} is not allowed on {}", uri.path()),
        "details": null,
    }});
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

/// A job id from the path; a malformed one cannot name a job, so it is a 404 like any
/// unknown id, with a message that says why.
pub fn job_id(raw: &str) -> Result<JobId, Error> {
    raw.parse()
        .map_err(|message: String| Error::NotFound(message))
}
