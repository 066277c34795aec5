//! retryd's HTTP API. [`app`] builds the router apart from serving it, so that tests can
//! drive it in-process or on a real port.
//!
//! # Layout
//!
//! - [`auth`]: tokens, sessions, CSRF, rate limits and the role extractors every handler
//!   names.
//! - [`cross_site`]: refuses what a page on another site could send (Host, Origin, body type).
//! - [`error`]: `api::Error`, the one variant-to-status table.
//! - [`extract`]: JSON and query extractors whose rejections speak that error shape.
//! - [`dto`]: requests (validated into domain values here) and responses.
//! - `routes/`: one module per resource.
//! - `dashboard`: the embedded web dashboard (static files; a client of this API).
//!
//! Invariants: only this crate knows HTTP and the API's JSON shapes; every handler under
//! `/api/v1` except login takes a role extractor (the authorization matrix test checks it);
//! handlers ask the store (through [`Control`]), never the engine: this crate does not
//! depend on `retryd-worker`.

pub mod auth;
pub mod cross_site;
mod dashboard;
pub mod dto;
pub mod error;
pub mod extract;
mod openapi;
mod routes;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use retryd_core::JobState;
use retryd_store::{Circuit, Control};
use std::collections::BTreeMap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What handlers share: the store's client handle (changes, policies, signals), the node
/// it runs on, and authentication.
#[derive(Debug, Clone)]
pub struct AppState {
    pub control: Control,
    pub node: std::sync::Arc<dyn Node>,
    pub auth: std::sync::Arc<auth::Auth>,
}

/// What the API reports of the node it runs on, beyond the store. The engine provides it;
/// the API never changes anything through it (changes go through [`Control`]).
pub trait Node: Send + Sync + std::fmt::Debug {
    /// Attempts this node is executing now.
    fn running(&self) -> usize;
    /// This node's Prometheus exposition, with the store's counts as of `now`.
    fn metrics(
        &self,
        by_state: &BTreeMap<JobState, u64>,
        depths: &BTreeMap<String, u64>,
        circuits: &[Circuit],
        now: chrono::DateTime<chrono::Utc>,
    ) -> String;
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
        .routes(routes!(jobs::counts))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::attempts))
        .routes(routes!(jobs::events))
        .routes(routes!(jobs::log))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(notifications::of_job))
        .routes(routes!(notifications::list))
        .routes(routes!(circuits::list))
        .routes(routes!(circuits::close))
        .routes(routes!(circuits::history))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::requeue))
        .routes(routes!(dlq::purge))
        .routes(routes!(queues::list))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(policies::list, policies::create))
        .routes(routes!(policies::active, policies::set_active))
        .routes(routes!(policies::simulate))
        .routes(routes!(
            policies::show,
            policies::update,
            policies::patch,
            policies::deactivate
        ))
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(
            schedules::show,
            schedules::replace,
            schedules::delete
        ))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(schedules::trigger))
        .routes(routes!(events::stream))
        .routes(routes!(events::websocket))
        .routes(routes!(stats::stats))
        .routes(routes!(session::login, session::show, session::logout))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(orgs::list, orgs::create))
        .routes(routes!(orgs::show, orgs::update))
        .routes(routes!(channels::list))
        .routes(routes!(channels::put, channels::delete));
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
    let cross_site = std::sync::Arc::new(cross_site::CrossSite {
        allowed: cross_site::AllowedHosts::new(&state.auth.config.allowed_hosts),
        auth_enabled: state.auth.config.enabled,
    });
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
        .layer(axum::middleware::from_fn_with_state(
            cross_site,
            cross_site::refuse_cross_site,
        ))
        .with_state(state)
}

/// How the API is served: TLS, and the bounds that keep slow or idle clients from holding
/// the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// HTTPS with this certificate and key; plain HTTP when `None`.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A request's headers (and an idle kept-alive connection's next request, and a TLS
    /// handshake) must arrive within this.
    pub header_timeout: std::time::Duration,
}

pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// Reads a PEM certificate chain and private key into a TLS configuration.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("tls_cert: cannot read {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert: {} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls_key: cannot read {}: {e}", key.display()))?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("tls_key: does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves the API until `shutdown` fires, with the default options (plain HTTP).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, ServeOptions::default()).await
}

/// Serves the API until `shutdown` fires: at most `max_connections` at once, each closed when
/// its headers (or its handshake) do not arrive in time; connections finish their requests
/// at shutdown.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let app = app(state);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let acceptor = options.tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = std::sync::Arc::new(builder);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: the next accept may work.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let (builder, acceptor, stop) = (builder.clone(), acceptor.clone(), shutdown.clone());
        let header_timeout = options.header_timeout;
        connections.spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            // A client that connects and sends nothing holds a slot: it gets the header
            // timeout to start (hyper's own timer starts with the first byte).
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1..))
            ) {
                return;
            }
            match acceptor {
                None => drive(&builder, TokioIo::new(stream), service, stop).await,
                // A failed or slow handshake leaves nothing to serve.
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(tls)) = tokio::time::timeout(header_timeout, handshake).await {
                        drive(&builder, TokioIo::new(tls), service, stop).await;
                    }
                }
            }
        });
        // Finished connections are reaped as we go.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One connection until it ends; at shutdown it finishes its request, then closes.
async fn drive<I, S>(
    builder: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    io: I,
    service: S,
    stop: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
