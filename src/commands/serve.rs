//! `retryd serve`: the API, the engine and the shutdown path.

use crate::config::{Database, LogFormat, ServeOverrides, Settings, SyncMode};
use anyhow::{Context, Result};
use retryd_core::{Clock, SystemClock};
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

/// The file a SQLite server keeps its generated key ring in, beside the database.
pub const SECRET_KEY_FILE: &str = "retryd.secret-key";

/// The key ring that seals secret values: `RETRYD_SECRET_KEY`, else `--secret-key-file`, else
/// (SQLite) `retryd.secret-key` beside the database, generated on first start. PostgreSQL
/// nodes must share a key, so none is made up for them.
fn secret_keys(
    flags: &ServeOverrides,
    database: &Database,
) -> Result<Option<retryd_store::sealing::SecretKeys>> {
    use retryd_store::sealing::SecretKeys;
    if let Some(ring) = std::env::var("RETRYD_SECRET_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        return SecretKeys::parse(&ring)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("RETRYD_SECRET_KEY: {e}"));
    }
    let path = match (&flags.secret_key_file, database) {
        (Some(path), _) => path.clone(),
        (None, Database::Sqlite(db)) => db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join(SECRET_KEY_FILE),
        (None, Database::Postgres(_)) => {
            tracing::warn!(
                "no RETRYD_SECRET_KEY or --secret-key-file: secret values are stored unsealed"
            );
            return Ok(None);
        }
    };
    if flags.secret_key_file.is_none() && !path.exists() {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create the secret key file {}", path.display()))?;
        writeln!(file, "{}", SecretKeys::generate())?;
        tracing::info!(path = %path.display(), "generated the key that seals secret values; back it up with the database");
    }
    let ring = std::fs::read_to_string(&path)
        .with_context(|| format!("secret_key_file: cannot read {}", path.display()))?;
    SecretKeys::parse(&ring)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("secret_key_file {}: {e}", path.display()))
}

pub async fn serve(flags: ServeOverrides) -> Result<u8> {
    let mut settings = Settings::resolve(&flags)?;
    init_tracing(settings.log_format, &settings.log_level)?;
    settings.engine.secret_keys = secret_keys(&flags, &settings.database)?.map(std::sync::Arc::new);
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
    let scheme = if settings.serve.tls.is_some() {
        "https"
    } else {
        "http"
    };
    {
        let mut out = std::io::stdout().lock();
        if settings.auth.enabled {
            first_admin_token(&engine, scheme, address, &mut out).await?;
        } else {
            writeln!(
                out,
                "authentication is disabled: every local caller is admin"
            )?;
        }
        writeln!(
            out,
            "retryd {} listening on {scheme}://{address} (database {})",
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
    let http = tokio::spawn(retryd_server::serve_with(
        listener,
        retryd_embed::api_state(&engine, settings.auth),
        http_stop.clone(),
        settings.serve,
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
    scheme: &str,
    address: std::net::SocketAddr,
    out: &mut impl Write,
) -> Result<()> {
    let store = engine.store();
    if !store.list_tokens().await?.is_empty() {
        return Ok(());
    }
    // The first token is the instance's: it acts in any organization and creates them.
    let grant = retryd_server::auth::Grant {
        role: retryd_core::Role::Admin,
        org: retryd_core::org::default_org(),
        instance: true,
    };
    let minted = retryd_server::auth::mint("admin", grant, "retryd serve", engine.now());
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
         token:     {token}\n  dashboard: {scheme}://{address}/login#token={token}\n  CLI:       export RETRYD_TOKEN={token}\n\n\
         More tokens: retryd token create NAME --role viewer|operator|admin\n"
    )?;
    tracing::info!("created the first admin token (printed on stdout, not logged)");
    Ok(())
}
