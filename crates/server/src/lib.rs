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
//! - `dashboard`: the embedded web dashboard (static files; a client of this API).
//!
//! Invariants: only this crate knows HTTP and the API's JSON shapes; every handler under
//! `/api/v1` except login takes a role extractor (the authorization matrix test checks it).

pub mod auth;
mod dashboard;
pub mod dto;
pub mod error;
pub mod extract;
mod openapi;
mod routes;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use retryd_worker::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What handlers share: the engine (store, policies, event stream) and authentication.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Engine,
    pub auth: std::sync::Arc<auth::Auth>,
}

/// The whole API and its OpenAPI document, built from the same route table so that the
/// document lists exactly what the router serves.
fn routes() -> (Router<AppState>, serde_json::Value) {
    use routes::*;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let api = OpenApiRouter::<AppState>::new()
        .routes(routes!(jobs::submit, jobs::list))
        .merge(
            // A batch may be larger than any other body.
            OpenApiRouter::new()
                .routes(routes!(jobs::submit_batch))
                .layer(DefaultBodyLimit::max(jobs::BATCH_BODY_LIMIT)),
        )
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::attempts))
        .routes(routes!(jobs::events))
        .routes(routes!(jobs::log))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(notifications::of_job))
        .routes(routes!(notifications::list))
        .routes(routes!(circuits::list))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::requeue))
        .routes(routes!(dlq::purge))
        .routes(routes!(queues::list))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(policies::list, policies::create))
        .routes(routes!(
            policies::show,
            policies::update,
            policies::deactivate
        ))
        .routes(routes!(events::stream))
        .routes(routes!(events::websocket))
        .routes(routes!(stats::stats))
        .routes(routes!(session::login, session::show, session::logout))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke));
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::base())
        .nest("/api/v1", api)
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .split_for_parts();
    openapi::finish(&mut doc);
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    openapi::admit_tags(&mut doc);
    (router, doc)
}

/// The OpenAPI document, as served at `/api/v1/openapi.json`.
pub fn openapi_document() -> serde_json::Value {
    routes().1
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let (router, doc) = routes();
    let doc = std::sync::Arc::new(doc);
    router
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .merge(dashboard::router())
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
