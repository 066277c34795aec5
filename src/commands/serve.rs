//! `retryd serve`: the API, the engine and the shutdown path.

use crate::config::{Database, LogFormat, ServeOverrides, Settings, SyncMode};
use anyhow::{Context, Result};
use retryd_core::{Clock, SystemClock};
use retryd_server::AppState;
use retryd_store::Store;
use retryd_store_postgres::PostgresStore;
use retryd_store_sqlite::{SqliteStore, Synchronous};
use retryd_worker::Engine;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat, level: &str) -> Result<()> {
    let filter = EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("log_level: {e}"))?;
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        // Span fields (job_id, queue, kind, target, attempt, step, state) go on every line.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
    Ok(())
}

pub async fn serve(flags: ServeOverrides) -> Result<u8> {
    let settings = Settings::resolve(&flags)?;
    init_tracing(settings.log_format, &settings.log_level)?;
    let synchronous = match settings.synchronous {
        SyncMode::Full => Synchronous::Full,
        SyncMode::Normal => Synchronous::Normal,
    };
    // Before the database: a node waiting for PostgreSQL stops on a signal too.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (store, clock): (Arc<dyn Store>, Arc<dyn Clock>) = match &settings.database {
        Database::Sqlite(path) => {
            let store = SqliteStore::open(path, synchronous)
                .with_context(|| format!("database: cannot open {}", path.display()))?;
            (Arc::new(store), Arc::new(SystemClock))
        }
        Database::Postgres(url) => {
            let Some(store) =
                connect_waiting(url, &settings.engine.node, &mut interrupt, &mut terminate)
                    .await
                    .with_context(|| format!("database: cannot use {}", settings.database))?
            else {
                return Ok(crate::exit::OK);
            };
            let clock = store.clock();
            tracing::info!(
                offset_ms = clock.offset().num_milliseconds(),
                "using the database's clock"
            );
            (Arc::new(store), Arc::new(clock))
        }
    };
    let engine = Engine::new(store, clock, settings.policies, settings.engine);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", settings.listen))?;
    let address = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        if settings.auth.enabled {
            first_admin_token(&engine, address, &mut out).await?;
        } else {
            writeln!(
                out,
                "authentication is disabled: every local caller is admin"
            )?;
        }
        writeln!(
            out,
            "retryd {} listening on http://{address} (database {})",
            env!("CARGO_PKG_VERSION"),
            settings.database
        )?;
        out.flush()?;
    }
    tracing::info!(%address, database = %settings.database, config = ?settings.config_file, "retryd started");

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("signal received: stopping claims, letting running attempts finish");
        on_signal.cancel();
    });

    let http_stop = CancellationToken::new();
    let http = tokio::spawn(retryd_server::serve(
        listener,
        AppState {
            engine: engine.clone(),
            auth: retryd_server::auth::Auth::new(settings.auth),
        },
        http_stop.clone(),
    ));
    engine.run(shutdown).await;
    // The API keeps answering until the engine is done, so that clients see the shutdown.
    http_stop.cancel();
    http.await
        .context("HTTP server task")?
        .context("HTTP server")?;
    Ok(crate::exit::OK)
}

/// Connects to PostgreSQL, waiting with backoff while its server cannot be reached (and
/// saying why: the name did not resolve, the connection was refused), so that a node started
/// before its database, or during an outage, comes up with it. Other failures (a bad URL,
/// authentication) end the start. `None` when a signal came first.
async fn connect_waiting(
    url: &str,
    node: &str,
    interrupt: &mut tokio::signal::unix::Signal,
    terminate: &mut tokio::signal::unix::Signal,
) -> Result<Option<PostgresStore>> {
    let mut wait = std::time::Duration::from_millis(500);
    loop {
        let error = match PostgresStore::connect_as(url, Some(node)).await {
            Ok(store) => return Ok(Some(store)),
            Err(e) => e,
        };
        let Some(why) = PostgresStore::unreachable_because(url).await else {
            return Err(error.into());
        };
        tracing::warn!(reason = %why, retry_in = ?wait, "PostgreSQL cannot be reached; waiting for it");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = interrupt.recv() => return Ok(None),
            _ = terminate.recv() => return Ok(None),
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(10));
    }
}

/// On first start (no token at all), creates the admin token and prints it, once, with a
/// dashboard link that logs in. Only the printout ever holds it: not the log, not the database.
async fn first_admin_token(
    engine: &Engine,
    address: std::net::SocketAddr,
    out: &mut impl Write,
) -> Result<()> {
    let store = engine.store();
    if !store.list_tokens().await?.is_empty() {
        return Ok(());
    }
    let minted = retryd_server::auth::mint(
        "admin",
        retryd_core::Role::Admin,
        "retryd serve",
        engine.now(),
    );
    match store.insert_token(&minted.record).await {
        Ok(()) => {}
        // Another node of the same database got there first.
        Err(retryd_store::Error::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let token = &minted.plaintext;
    writeln!(
        out,
        "\nretryd created the first admin token. It is shown only now: keep it somewhere safe.\n\n  \
         token:     {token}\n  dashboard: http://{address}/login#token={token}\n  CLI:       export RETRYD_TOKEN={token}\n\n\
         More tokens: retryd token create NAME --role viewer|operator|admin\n"
    )?;
    tracing::info!("created the first admin token (printed on stdout, not logged)");
    Ok(())
}
