//! Command-line arguments, as typed. `main` turns them into validated values.

use crate::config::ServeOverrides;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "retryd",
    version,
    about = "Runs deployments and background jobs to completion: honest retries, live state, a dead-letter queue you can read."
)]
#[command(
    after_help = "Exit codes: 0 success; 1 error (server unreachable, refused request); 2 usage error;\n\
    3 job failed; 4 job cancelled; 5 job expired. `run` exits with the command's last exit code."
)]
pub struct Cli {
    /// Server address for client commands
    #[arg(long, global = true, env = "RETRYD_SERVER", default_value = crate::client::DEFAULT_SERVER)]
    pub server: String,
    /// API token for client commands (prefer the environment variable: flags show in `ps`)
    #[arg(long, global = true, env = "RETRYD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print machine-readable JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    /// Never use colours (NO_COLOR is honoured too)
    #[arg(long, global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: HTTP API, workers and scheduler
    Serve(ServeOverrides),
    /// Submit a job to the server
    Submit(Box<SubmitArgs>),
    /// Run a command under a retry policy, here and now, without a server
    Run(RunArgs),
    /// List jobs
    Jobs(JobsArgs),
    /// Show a job: diagnosis, attempts, timeline and last output
    Show(IdArg),
    /// Print a job's output
    Logs(LogsArgs),
    /// Cancel a job (a running attempt is stopped)
    Cancel(IdArg),
    /// Retry a job now, or requeue a finished one
    Retry(RetryArgs),
    /// The dead-letter queue: jobs that finally failed
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Retry policies
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Queues: waiting jobs, pause and resume
    #[command(subcommand)]
    Queue(QueueCommand),
    /// How jobs went over a window: rates against the 80 % line, top errors, per kind and target
    Stats(StatsArgs),
    /// API tokens (admin): create, list, revoke
    #[command(subcommand)]
    Token(TokenCommand),
    /// Circuits per target that are open or half-open
    Circuits,
    /// The notification log: deliveries and each of their tries (of one job, or all)
    Notifications(NotificationsArgs),
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How far back, e.g. 1h, 24h, 7d
    #[arg(long, default_value = "24h")]
    pub window: String,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once
    Create {
        /// A unique name for people: ci, alice, grafana
        name: String,
        /// viewer (read), operator (submit, cancel, retry, requeue) or admin (policies, tokens, purge)
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
    /// List tokens (never their secrets)
    List,
    /// Revoke a token by id or name; it stops working at once
    Revoke { id_or_name: String },
}

#[derive(Debug, Args)]
pub struct NotificationsArgs {
    /// Only this job's notifications
    pub job: Option<String>,
    /// At most this many deliveries, newest first (1–1000)
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Queues with waiting jobs, and paused ones
    List,
    /// Stop claiming from a queue (running attempts finish)
    Pause { name: String },
    /// Claim from a paused queue again
    Resume { name: String },
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// Job id
    pub id: String,
}

#[derive(Debug, Args)]
pub struct JobOptions {
    /// Policy name, or an inline policy as JSON
    #[arg(long)]
    pub policy: Option<String>,
    /// Attempt time limit, e.g. 30s (overrides the policy's)
    #[arg(long)]
    pub timeout: Option<String>,
    /// Environment variable for the command, KEY=VALUE (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Secret environment variable: passed to the command, never shown or logged
    #[arg(long = "secret-env", value_name = "KEY=VALUE")]
    pub secret_env: Vec<String>,
    /// Working directory of the command
    #[arg(long)]
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub options: JobOptions,
    #[arg(long)]
    pub queue: Option<String>,
    /// A free name for this kind of job, e.g. wordpress-deploy
    #[arg(long)]
    pub kind: Option<String>,
    /// The system acted upon, e.g. metis-rpc
    #[arg(long)]
    pub target: Option<String>,
    /// 0–100, higher runs first [default: 50]
    #[arg(long)]
    pub priority: Option<i64>,
    /// Give up after this: an RFC 3339 instant, or a duration from now such as 10m
    #[arg(long)]
    pub deadline: Option<String>,
    /// Not before this: an RFC 3339 instant, or a duration from now such as 30s
    #[arg(long)]
    pub run_at: Option<String>,
    /// Submitting the same key again in the queue returns the existing job
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Label, key=value (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Follow the job live; exit 0 if it succeeds, 3 failed, 4 cancelled, 5 expired
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub http: HttpOptions,
    /// Run the pipeline in this TOML or YAML file instead of a command
    #[arg(long, value_name = "FILE", conflicts_with_all = ["command", "http"])]
    pub pipeline: Option<PathBuf>,
    /// Submit many jobs from an NDJSON file (`-` reads stdin): one JSON object per line, shaped
    /// like the body of POST /api/v1/jobs. --queue, --kind, --target, --priority, --policy and
    /// --label apply to lines that do not set them. Sent in batches of 10,000, each stored
    /// whole or not at all.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["command", "http", "pipeline", "wait", "idempotency_key", "deadline", "run_at"])]
    pub file: Option<PathBuf>,
    /// The command and its arguments, after -- (or --http URL, --pipeline FILE or --file FILE instead)
    #[arg(
        last = true,
        required_unless_present_any = ["http", "pipeline", "file"],
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// An HTTP request instead of a command.
#[derive(Debug, Args)]
pub struct HttpOptions {
    /// Call this URL instead of running a command (2xx is success)
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    pub http: Option<String>,
    /// HTTP method [default: GET]
    #[arg(long, requires = "http")]
    pub method: Option<String>,
    /// Request header, "Name: value" (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "http")]
    pub headers: Vec<String>,
    /// Secret request header: sent, never shown or logged
    #[arg(long = "secret-header", value_name = "NAME: VALUE", requires = "http")]
    pub secret_headers: Vec<String>,
    /// Request body
    #[arg(long, requires = "http")]
    pub body: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub options: JobOptions,
    /// Read named policies from this config file [default: ./retryd.toml when present]
    #[arg(long, env = "RETRYD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The command and its arguments, after --
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only these states, comma-separated (e.g. failed,retrying)
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    /// key=value
    #[arg(long)]
    pub label: Option<String>,
    /// Jobs per page (1–500)
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Continue from a previous page
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Job id
    pub id: String,
    /// Keep printing new output until the job finishes
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// Job id
    pub id: String,
    /// Start counting attempts from zero again
    #[arg(long)]
    pub reset: bool,
    /// After a fix: new arguments for the command, in order (repeatable; replaces them all)
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// After a fix: set an environment variable, KEY=VALUE (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// After a fix: set a secret environment variable, never shown or logged
    #[arg(long = "secret-env", value_name = "KEY=VALUE")]
    pub secret_env: Vec<String>,
    /// After a fix: remove an environment variable (repeatable)
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
    /// After a fix: another policy, by name or as inline JSON
    #[arg(long)]
    pub policy: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead jobs grouped by failure fingerprint
    List(DlqFilter),
    /// Requeue dead jobs by id, fingerprint or filter
    Requeue(DlqAction),
    /// Delete dead jobs by id, fingerprint or filter
    Purge(DlqAction),
}

#[derive(Debug, Args)]
pub struct DlqFilter {
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
}

#[derive(Debug, Args)]
pub struct DlqAction {
    /// Job ids
    pub ids: Vec<String>,
    /// Every dead job with this fingerprint (see `dlq list`)
    #[arg(long)]
    pub fingerprint: Option<String>,
    #[command(flatten)]
    pub filter: DlqFilter,
    /// Every dead job
    #[arg(long)]
    pub all: bool,
    /// Requeue only: start counting attempts from zero again
    #[arg(long)]
    pub reset: bool,
}

/// A policy's fields as flags, or all of it as JSON.
#[derive(Debug, Args)]
pub struct PolicyEdit {
    pub name: String,
    /// Attempts in all, 1–100 [default: 5]
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry, e.g. 1s [default: 1s]
    #[arg(long)]
    pub initial_delay: Option<String>,
    /// Growth of the wait per retry, at least 1 [default: 2]
    #[arg(long)]
    pub multiplier: Option<f64>,
    /// Cap of one wait, e.g. 5m [default: 5m]
    #[arg(long)]
    pub max_delay: Option<String>,
    /// none, full, equal or decorrelated [default: full]
    #[arg(long)]
    pub jitter: Option<String>,
    /// Give up this long after the first attempt started, e.g. 1h
    #[arg(long)]
    pub max_elapsed: Option<String>,
    /// Time limit of one attempt, e.g. 30s
    #[arg(long)]
    pub attempt_timeout: Option<String>,
    /// The whole policy as JSON (flags override its fields)
    #[arg(long, value_name = "JSON")]
    pub json_policy: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Named policies on the server
    List,
    /// One policy and its schedule
    Show { name: String },
    /// Create a policy on the server (admin); unset fields take the defaults
    Create(PolicyEdit),
    /// Change a policy created with `create` (admin); applies to attempts scheduled after it
    Update(PolicyEdit),
    /// Deactivate a policy created with `create` (admin): jobs using it keep it
    Deactivate { name: String },
    /// The schedule a policy gives: wait ranges and cumulative time per attempt
    Simulate {
        /// A policy name on the server
        name: Option<String>,
        /// An inline policy as JSON, simulated locally
        #[arg(long, conflicts_with = "name")]
        inline: Option<String>,
    },
}
