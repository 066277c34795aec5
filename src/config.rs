//! Settings in layers: defaults < `retryd.toml` < `RETRYD_*` environment < flags. The file
//! is parsed strictly (an unknown key is an error that names it); every value is validated
//! with a message that names its field.

use anyhow::{Context, Result, bail};
use retryd_core::policy::PriorityRule;
use retryd_core::{JobState, Policy};
use retryd_store::channels::{Sink, SinkSpec};
use retryd_store::{BudgetConfig, CircuitConfig, TargetLimits};
use retryd_worker::engine::EngineConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
pub const DEFAULT_DATABASE: &str = "retryd.db";
pub const DEFAULT_CONFIG_FILE: &str = "retryd.toml";

/// `retryd.toml`, as written. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub database: Option<String>,
    pub listen: Option<String>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub synchronous: Option<SyncMode>,
    #[serde(default)]
    pub engine: EngineFile,
    #[serde(default)]
    pub queues: BTreeMap<String, QueueFile>,
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    #[serde(default)]
    pub kinds: BTreeMap<String, String>,
    pub priority_rule: Option<PriorityRule>,
    #[serde(default)]
    pub retention: RetentionFile,
    #[serde(default)]
    pub http: HttpFile,
    #[serde(default)]
    pub auth: AuthFile,
    #[serde(default)]
    pub server: ServerFile,
    /// Circuit breaking per target; off unless the table is present.
    pub circuits: Option<CircuitsFile>,
    /// Retry budgets per target; off unless the table is present.
    pub budgets: Option<BudgetsFile>,
    #[serde(default)]
    pub notifications: Vec<SinkSpec>,
}

/// API authentication.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Require API tokens [default: true]. Off is refused on a non-loopback address.
    pub enabled: Option<bool>,
    /// Sustained requests per second per token [default: 100].
    pub rate_limit: Option<u32>,
    /// Requests a token may send at once above that rate [default: 500].
    pub rate_burst: Option<u32>,
}

/// The HTTP server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Host names (`retryd.example.com`, `*.example.com`) the server answers to besides IP
    /// addresses and localhost; any other `Host` is refused (DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// HTTPS: a PEM certificate chain and its private key (both, or neither).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Connections served at once [default: 4096].
    pub max_connections: Option<usize>,
    /// Time a client has to send a request's headers, also on an idle kept-alive
    /// connection [default: 30s].
    #[serde(default, with = "retryd_core::duration::option")]
    pub header_timeout: Option<Duration>,
}

pub const DEFAULT_FAILURE_THRESHOLD: f64 = 0.5;
pub const DEFAULT_MIN_ATTEMPTS: u32 = 10;
pub const DEFAULT_CIRCUIT_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(30);
/// Budgets count retries per minute unless told otherwise.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// `[circuits]`: when a target's circuit opens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitsFile {
    /// Share of transient failures among the window's attempts that opens it [default: 0.5].
    pub failure_threshold: Option<f64>,
    /// Attempts the window needs before it can open [default: 10].
    pub min_attempts: Option<u32>,
    #[serde(default, with = "retryd_core::duration::option")]
    pub window: Option<Duration>,
    #[serde(default, with = "retryd_core::duration::option")]
    pub cool_down: Option<Duration>,
}

/// `[budgets]`: retries per target per window.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsFile {
    pub per_target: Option<u32>,
    #[serde(default, with = "retryd_core::duration::option")]
    pub window: Option<Duration>,
    /// Caps of particular targets.
    #[serde(default)]
    pub targets: BTreeMap<String, u32>,
}

/// Settings of `http` actions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// Hosts (`api.example.com`, `*.example.com`) and IP addresses that `http` actions may
    /// call. Empty: any public host.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// The SSRF guard's opt-out: hosts and IP addresses that may be internal (loopback,
    /// private, link-local, metadata). Empty: no internal address is called.
    #[serde(default)]
    pub allow_internal: Vec<String>,
}

/// How long finished jobs are kept before the purge deletes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Succeeded, cancelled and expired jobs [default: 14 days].
    #[serde(default, with = "retryd_core::duration::option")]
    pub finished: Option<Duration>,
    /// Failed jobs, the dead-letter queue [default: 30 days].
    #[serde(default, with = "retryd_core::duration::option")]
    pub failed: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFile {
    pub node: Option<String>,
    pub concurrency: Option<usize>,
    pub default_queue_concurrency: Option<usize>,
    #[serde(default, with = "retryd_core::duration::option")]
    pub lease: Option<Duration>,
    #[serde(default, with = "retryd_core::duration::option")]
    pub kill_grace: Option<Duration>,
    #[serde(default, with = "retryd_core::duration::option")]
    pub shutdown_grace: Option<Duration>,
    pub log_tail_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    pub concurrency: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Full,
    Normal,
}

/// Values given on the command line or in the environment (clap reads both).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeOverrides {
    /// Configuration file [default: ./retryd.toml when present]
    #[arg(long, env = "RETRYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// SQLite file (or sqlite:// URL) [default: retryd.db]
    #[arg(long, env = "RETRYD_DATABASE_URL")]
    pub database: Option<String>,
    /// Address to listen on [default: 127.0.0.1:7878]; port 0 picks a free port
    #[arg(long, env = "RETRYD_LISTEN")]
    pub listen: Option<String>,
    /// Server log format [default: text]
    #[arg(long, env = "RETRYD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. info or retryd_worker=debug [default: info]
    #[arg(long, env = "RETRYD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Attempts run at once on this node; 0 serves only the API [default: 16]
    #[arg(long, env = "RETRYD_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Lease of a running attempt, renewed every third of it [default: 30s]
    #[arg(long, env = "RETRYD_LEASE", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// Time running attempts get to finish at shutdown [default: 30s]
    #[arg(long, env = "RETRYD_SHUTDOWN_GRACE", value_parser = parse_duration)]
    pub shutdown_grace: Option<Duration>,
    /// This node's name [default: host-pid]
    #[arg(long, env = "RETRYD_NODE")]
    pub node: Option<String>,
    /// fsync every commit (full) or rely on WAL checkpoints (normal) [default: full]
    #[arg(long, env = "RETRYD_SYNCHRONOUS", value_enum)]
    pub synchronous: Option<SyncMode>,
    /// Require API tokens [default: true]; false is refused on a non-loopback address
    #[arg(long, env = "RETRYD_AUTH", value_name = "true|false")]
    pub auth: Option<bool>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key)
    #[arg(long, env = "RETRYD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "RETRYD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// File holding the key ring that seals secret values in the database [default: the
    /// RETRYD_SECRET_KEY variable, else retryd.secret-key beside a SQLite database]
    #[arg(long, env = "RETRYD_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Internal hosts `http` actions may call, comma-separated (added to http.allow_internal)
    #[arg(
        long,
        env = "RETRYD_HTTP_ALLOW_INTERNAL",
        value_delimiter = ',',
        value_name = "HOSTS"
    )]
    pub http_allow_internal: Option<Vec<String>>,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    retryd_core::duration::parse(text)
}

/// Where jobs live.
#[derive(Debug, Clone)]
pub enum Database {
    /// One node, one file.
    Sqlite(PathBuf),
    /// Several nodes sharing one database.
    Postgres(String),
}

impl std::fmt::Display for Database {
    /// Never shows a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let credentials = &url[scheme + 3..at];
                    let user = credentials.split(':').next().unwrap_or_default();
                    let hidden = if credentials.contains(':') {
                        ":***"
                    } else {
                        ""
                    };
                    write!(f, "{}{user}{hidden}{}", &url[..scheme + 3], &url[at..])
                }
                _ => f.write_str(url),
            },
        }
    }
}

/// The validated settings the server runs with.
#[derive(Debug)]
pub struct Settings {
    pub database: Database,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub log_level: String,
    pub synchronous: SyncMode,
    pub engine: EngineConfig,
    pub policies: retryd_store::Policies,
    pub auth: retryd_server::auth::AuthConfig,
    pub serve: retryd_server::ServeOptions,
    /// Where the file layer came from, if any.
    pub config_file: Option<PathBuf>,
}

/// Reads the file layer: the given path (which must exist), else `./retryd.toml` if present.
pub fn load_file(path: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>)> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => PathBuf::from(DEFAULT_CONFIG_FILE),
        None => return Ok((FileConfig::default(), None)),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((file, Some(path)))
}

fn database(value: &str) -> Result<Database> {
    if value.starts_with("postgres://") || value.starts_with("postgresql://") {
        return Ok(Database::Postgres(value.to_owned()));
    }
    if value.contains("://") && !value.starts_with("sqlite://") {
        bail!(
            "database: {value:?} is neither a SQLite file (retryd.db, sqlite://retryd.db) nor a postgres:// URL"
        );
    }
    let path = value.strip_prefix("sqlite://").unwrap_or(value);
    if path.is_empty() {
        bail!("database: must be a file path such as retryd.db, or a postgres:// URL");
    }
    Ok(Database::Sqlite(PathBuf::from(path)))
}

impl Settings {
    pub fn resolve(flags: &ServeOverrides) -> Result<Settings> {
        let (file, config_file) = load_file(flags.config.as_deref())?;
        let database = database(
            flags
                .database
                .as_deref()
                .or(file.database.as_deref())
                .unwrap_or(DEFAULT_DATABASE),
        )?;
        let listen_text = flags
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            anyhow::anyhow!(
                "listen: {listen_text:?} is not an address; write host:port such as 127.0.0.1:7878"
            )
        })?;
        let defaults = EngineConfig::default();
        let concurrency = flags
            .concurrency
            .or(file.engine.concurrency)
            .unwrap_or(defaults.concurrency);
        let engine = EngineConfig {
            node: flags
                .node
                .clone()
                .or(file.engine.node)
                .unwrap_or(defaults.node),
            concurrency,
            queue_concurrency: file
                .queues
                .iter()
                .filter_map(|(q, c)| c.concurrency.map(|n| (q.clone(), n)))
                .collect(),
            // A queue without its own cap may use every slot unless told otherwise.
            default_queue_concurrency: file
                .engine
                .default_queue_concurrency
                .unwrap_or(concurrency.max(1)),
            lease: flags.lease.or(file.engine.lease).unwrap_or(defaults.lease),
            kill_grace: file.engine.kill_grace.unwrap_or(defaults.kill_grace),
            shutdown_grace: flags
                .shutdown_grace
                .or(file.engine.shutdown_grace)
                .unwrap_or(defaults.shutdown_grace),
            log_tail_bytes: file
                .engine
                .log_tail_bytes
                .unwrap_or(defaults.log_tail_bytes),
            retention: retention(&file.retention, defaults.retention)?,
            http_allow_hosts: allow_hosts("http.allow_hosts", &file.http.allow_hosts)?,
            http_allow_internal: allow_hosts(
                "http.allow_internal",
                &[
                    file.http.allow_internal,
                    flags.http_allow_internal.clone().unwrap_or_default(),
                ]
                .concat(),
            )?,
            limits: TargetLimits {
                circuit: file.circuits.as_ref().map(circuits).transpose()?,
                budget: file.budgets.as_ref().map(budgets).transpose()?,
            },
            notifications: Vec::new(),
            // Read by `serve` (it may generate the key file), not here.
            secret_keys: None,
            run_builtin: true,
        };
        validate_engine(&engine)?;
        let policies = retryd_store::Policies::new(
            file.policies,
            file.kinds,
            file.priority_rule.unwrap_or_default(),
        )
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.message))?;
        let mut auth = auth_config(flags.auth, &file.auth, &file.server)?;
        let serve = serve_options(flags, &file.server)?;
        auth.secure_cookies = serve.tls.is_some();
        if !auth.enabled && !listen.ip().is_loopback() {
            bail!(
                "auth: refusing to serve on {listen} with authentication disabled: anyone who can reach that \
                 address could run commands. Enable it (remove `auth = false` / RETRYD_AUTH=false) or listen on \
                 127.0.0.1."
            );
        }
        let mut engine = engine;
        engine.notifications = sinks(&file.notifications, &policies)?;
        Ok(Settings {
            auth,
            serve,
            database,
            listen,
            log_format: flags
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            log_level: flags
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_owned()),
            synchronous: flags
                .synchronous
                .or(file.synchronous)
                .unwrap_or(SyncMode::Full),
            engine,
            policies,
            config_file,
        })
    }
}

fn auth_config(
    flag: Option<bool>,
    file: &AuthFile,
    server: &ServerFile,
) -> Result<retryd_server::auth::AuthConfig> {
    let defaults = retryd_server::auth::AuthConfig::default();
    let positive = |field: &str, value: Option<u32>, default: std::num::NonZeroU32| match value {
        None => Ok(default),
        Some(n) => std::num::NonZeroU32::new(n)
            .filter(|n| n.get() <= 1_000_000)
            .ok_or_else(|| anyhow::anyhow!("auth.{field}: must be between 1 and 1000000, got {n}")),
    };
    Ok(retryd_server::auth::AuthConfig {
        enabled: flag.or(file.enabled).unwrap_or(defaults.enabled),
        rate_per_second: positive("rate_limit", file.rate_limit, defaults.rate_per_second)?,
        burst: positive("rate_burst", file.rate_burst, defaults.burst)?,
        allowed_hosts: server_hosts(&server.allowed_hosts)?,
        secure_cookies: false,
    })
}

fn serve_options(flags: &ServeOverrides, file: &ServerFile) -> Result<retryd_server::ServeOptions> {
    let defaults = retryd_server::ServeOptions::default();
    let cert = flags.tls_cert.as_ref().or(file.tls_cert.as_ref());
    let key = flags.tls_key.as_ref().or(file.tls_key.as_ref());
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(std::sync::Arc::new(
            retryd_server::tls_config(cert, key).map_err(|e| anyhow::anyhow!(e))?,
        )),
        (None, None) => None,
        _ => bail!("server.tls_cert and server.tls_key: give both, or neither"),
    };
    let max_connections = file.max_connections.unwrap_or(defaults.max_connections);
    if max_connections == 0 {
        bail!("server.max_connections: must be at least 1");
    }
    let header_timeout = file.header_timeout.unwrap_or(defaults.header_timeout);
    if header_timeout.is_zero() {
        bail!("server.header_timeout: must be more than 0s, e.g. 30s");
    }
    Ok(retryd_server::ServeOptions {
        tls,
        max_connections,
        header_timeout,
    })
}

fn server_hosts(hosts: &[String]) -> Result<Vec<String>> {
    for host in hosts {
        let name = host.strip_prefix("*.").unwrap_or(host);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            bail!("server.allowed_hosts: {host:?} is not a host name or *.domain");
        }
    }
    Ok(hosts.to_vec())
}

fn retention(
    file: &RetentionFile,
    mut retention: BTreeMap<JobState, Duration>,
) -> Result<BTreeMap<JobState, Duration>> {
    for (field, value) in [
        ("retention.finished", file.finished),
        ("retention.failed", file.failed),
    ] {
        if value.is_some_and(|v| v < Duration::from_secs(1)) {
            bail!("{field}: must be at least 1s");
        }
    }
    if let Some(keep) = file.finished {
        for state in [JobState::Succeeded, JobState::Cancelled, JobState::Expired] {
            retention.insert(state, keep);
        }
    }
    if let Some(keep) = file.failed {
        retention.insert(JobState::Failed, keep);
    }
    Ok(retention)
}

fn within(field: &str, value: Duration, min: Duration, max: Duration) -> Result<Duration> {
    if value < min || value > max {
        bail!(
            "{field}: must be between {} and {}, got {}",
            retryd_core::duration::format(min),
            retryd_core::duration::format(max),
            retryd_core::duration::format(value)
        );
    }
    Ok(value)
}

const HOUR: Duration = Duration::from_secs(3600);

fn circuits(file: &CircuitsFile) -> Result<CircuitConfig> {
    let failure_threshold = file.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD);
    if !(failure_threshold > 0.0 && failure_threshold <= 1.0) {
        bail!("circuits.failure_threshold: must be above 0 and at most 1, got {failure_threshold}");
    }
    let min_attempts = file.min_attempts.unwrap_or(DEFAULT_MIN_ATTEMPTS);
    if !(1..=100_000).contains(&min_attempts) {
        bail!("circuits.min_attempts: must be between 1 and 100000, got {min_attempts}");
    }
    Ok(CircuitConfig {
        failure_threshold,
        min_attempts,
        window: within(
            "circuits.window",
            file.window.unwrap_or(DEFAULT_CIRCUIT_WINDOW),
            Duration::from_secs(1),
            HOUR,
        )?,
        cool_down: within(
            "circuits.cool_down",
            file.cool_down.unwrap_or(DEFAULT_COOL_DOWN),
            Duration::from_millis(100),
            HOUR,
        )?,
    })
}

fn budgets(file: &BudgetsFile) -> Result<BudgetConfig> {
    let cap = |field: String, n: u32| {
        if (1..=1_000_000).contains(&n) {
            Ok(n)
        } else {
            Err(anyhow::anyhow!(
                "{field}: must be between 1 and 1000000 retries per window, got {n}"
            ))
        }
    };
    let per_target = file
        .per_target
        .map(|n| cap("budgets.per_target".into(), n))
        .transpose()?;
    let mut targets = BTreeMap::new();
    for (target, n) in &file.targets {
        retryd_core::job::validate_name("target", target)
            .map_err(|e| anyhow::anyhow!("budgets.targets.{target}: {e}"))?;
        targets.insert(
            target.clone(),
            cap(format!("budgets.targets.{target}"), *n)?,
        );
    }
    if per_target.is_none() && targets.is_empty() {
        bail!(
            "budgets: set per_target (retries per window for every target) or targets (per-target caps)"
        );
    }
    Ok(BudgetConfig {
        per_target,
        targets,
        window: within(
            "budgets.window",
            file.window.unwrap_or(DEFAULT_BUDGET_WINDOW),
            Duration::from_secs(1),
            HOUR,
        )?,
    })
}

fn sinks(files: &[SinkSpec], policies: &retryd_store::Policies) -> Result<Vec<Sink>> {
    let mut sinks: Vec<Sink> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let at = format!("notifications[{i}]");
        let sink = file.to_sink(&at, policies).map_err(anyhow::Error::msg)?;
        if sinks.iter().any(|s| s.name == sink.name) {
            bail!(
                "{at}.name: {:?} is used by another sink; names must be unique",
                sink.name
            );
        }
        sinks.push(sink);
    }
    Ok(sinks)
}

fn allow_hosts(field: &str, hosts: &[String]) -> Result<Vec<String>> {
    for host in hosts {
        let name = host.strip_prefix("*.").unwrap_or(host);
        let valid = !name.is_empty()
            && name.len() <= 253
            && (name.parse::<std::net::IpAddr>().is_ok()
                || name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        if !valid {
            bail!("{field}: {host:?} is not a host name, *.domain or IP address");
        }
    }
    Ok(hosts.to_vec())
}

fn validate_engine(engine: &EngineConfig) -> Result<()> {
    // 0 makes an API-only node: it serves the API and dashboard and runs no attempt.
    if engine.concurrency > 10_000 {
        bail!(
            "engine.concurrency: must be between 0 (API only) and 10000, got {}",
            engine.concurrency
        );
    }
    if !(1..=10_000).contains(&engine.default_queue_concurrency) {
        bail!(
            "engine.default_queue_concurrency: must be between 1 and 10000, got {}",
            engine.default_queue_concurrency
        );
    }
    for (queue, n) in &engine.queue_concurrency {
        retryd_core::job::validate_name("queue", queue)
            .map_err(|e| anyhow::anyhow!("queues.{queue}: {e}"))?;
        if !(1..=10_000).contains(n) {
            bail!("queues.{queue}.concurrency: must be between 1 and 10000, got {n}");
        }
    }
    if engine.lease < Duration::from_secs(1) || engine.lease > Duration::from_secs(3600) {
        bail!(
            "engine.lease: must be between 1s and 1h, got {}",
            retryd_core::duration::format(engine.lease)
        );
    }
    if engine.shutdown_grace > Duration::from_secs(3600) {
        bail!("engine.shutdown_grace: must be at most 1h");
    }
    if engine.kill_grace > Duration::from_secs(600) {
        bail!("engine.kill_grace: must be at most 10m");
    }
    if !(1024..=64 * 1024 * 1024).contains(&engine.log_tail_bytes) {
        bail!(
            "engine.log_tail_bytes: must be between 1024 and 67108864, got {}",
            engine.log_tail_bytes
        );
    }
    if engine.node.is_empty() || engine.node.len() > 128 {
        bail!("engine.node: must be 1–128 characters");
    }
    Ok(())
}
