//! The web dashboard: plain HTML, CSS and ES modules from `crates/server/dashboard/`,
//! embedded in the binary (no build step). It is a thin client of the public JSON API and
//! the event stream; this module only serves the files.
//!
//! Every client-side route answers with the same page; the browser routes. Responses carry
//! a strict Content-Security-Policy (no inline script or style, same-origin only), so that
//! even a rendering bug cannot run a job's output as code.

use crate::AppState;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::LazyLock;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../dashboard/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
const ASSETS: &[Asset] = &[
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("overview.js", JS),
    asset!("circuits.js", JS),
    asset!("jobs.js", JS),
    asset!("job.js", JS),
    asset!("dlq.js", JS),
    asset!("policies.js", JS),
    asset!("schedules.js", JS),
    asset!("queues.js", JS),
    asset!("tokens.js", JS),
    asset!("notifications.js", JS),
    asset!("login.js", JS),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Content hashes as ETags: file names carry no version, so browsers revalidate (cheaply,
/// with a 304) instead of keeping an old dashboard after an upgrade.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS)
        .map(|asset| format!("\"{:016x}\"", fnv1a(asset.body)))
        .collect()
});

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The dashboard's routes, merged into the API router by [`crate::app`].
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/login", get(index))
        .route("/jobs", get(index))
        .route("/jobs/{id}", get(index))
        .route("/dlq", get(index))
        .route("/policies", get(index))
        .route("/schedules", get(index))
        .route("/queues", get(index))
        .route("/circuits", get(index))
        .route("/notifications", get(index))
        .route("/tokens", get(index))
        .route("/assets/{file}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    index_page(&headers)
}

/// The dashboard's page (it routes in the browser, "Not found" included).
pub(crate) fn index_page(headers: &HeaderMap) -> Response {
    serve(&INDEX, &ETAGS[0], headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|asset| asset.name == file) {
        Some(i) => serve(&ASSETS[i], &ETAGS[i + 1], &headers),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard asset named {file:?}"),
        )
            .into_response(),
    }
}

fn serve(asset: &Asset, etag: &str, request: &HeaderMap) -> Response {
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        for asset in std::iter::once(&INDEX).chain(ASSETS) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for (_, rest) in text
                .match_indices("from './")
                .map(|(i, _)| text.split_at(i + 8))
            {
                let name = rest.split('\'').next().unwrap_or_default();
                assert!(
                    names.contains(&name),
                    "{} imports {name}, which is not embedded",
                    asset.name
                );
            }
            for reference in ["/assets/app.js", "/assets/style.css", "/assets/favicon.svg"] {
                if asset.name == "index.html" {
                    assert!(text.contains(reference), "index.html lost {reference}");
                }
            }
        }
    }

    #[test]
    fn no_module_writes_markup_from_strings() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).expect("utf-8");
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!text.contains(sink), "{} uses {sink}", asset.name);
            }
        }
    }
}
