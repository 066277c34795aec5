//! retryd's HTTP API. [`app`] builds the router apart from serving it, so that tests can
//! drive it in-process or on a real port.
//!
//! # Layout
//!
//! - [`auth`]: tokens, sessions, CSRF, rate limits and the role extractors every handler
//!   names.
//! - [`error`]: `api::Error`, the one variant-to-status table.
//! - [`extract`]: JSON and query extractors whose rejections speak that error shape.
//! - [`dto`]: requests (validated into domain values here) and responses.
//! - `routes/`: one module per resource.
//!
//! Invariants: only this crate knows HTTP and the API's JSON shapes; every handler under
//! `/api/v1` except login takes a role extractor (the authorization matrix test checks it).

pub mod auth;
pub mod dto;
pub mod error;
pub mod extract;
mod routes;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use retryd_worker::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What handlers share: the engine (store, policies, event stream) and authentication.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Engine,
    pub auth: std::sync::Arc<auth::Auth>,
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/jobs", post(routes::jobs::submit).get(routes::jobs::list))
        .route("/jobs/{id}", get(routes::jobs::get))
        .route("/jobs/{id}/attempts", get(routes::jobs::attempts))
        .route("/jobs/{id}/events", get(routes::jobs::events))
        .route("/jobs/{id}/log", get(routes::jobs::log))
        .route("/jobs/{id}/cancel", post(routes::jobs::cancel))
        .route("/jobs/{id}/retry", post(routes::jobs::retry))
        .route("/dlq", get(routes::dlq::list))
        .route("/dlq/requeue", post(routes::dlq::requeue))
        .route("/dlq/purge", post(routes::dlq::purge))
        .route("/queues", get(routes::queues::list))
        .route("/queues/{name}/pause", post(routes::queues::pause))
        .route("/queues/{name}/resume", post(routes::queues::resume))
        .route(
            "/policies",
            get(routes::policies::list).post(routes::policies::create),
        )
        .route(
            "/policies/{name}",
            get(routes::policies::show)
                .put(routes::policies::update)
                .delete(routes::policies::deactivate),
        )
        .route("/events", get(routes::events::stream))
        .route("/ws", get(routes::events::websocket))
        .route("/stats", get(routes::stats::stats))
        .route(
            "/session",
            post(routes::session::login)
                .get(routes::session::show)
                .delete(routes::session::logout),
        )
        .route(
            "/tokens",
            get(routes::tokens::list).post(routes::tokens::create),
        )
        .route("/tokens/{id}", delete(routes::tokens::revoke))
        .fallback(routes::not_found);
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}

/// Serves the API until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
