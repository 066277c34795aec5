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
    /// The organization client commands act in (an instance token may name any; default:
    /// the token's own)
    #[arg(long, global = true, env = "RETRYD_ORG")]
    pub org: Option<String>,
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
    /// Print a shell completion script: `source <(retryd completions bash)`
    Completions {
        /// bash, zsh, fish, powershell or elvish
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `retryd man > retryd.1; man ./retryd.1`
    Man,
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
    /// Recurring jobs: create (cron), list, show, pause, resume, update, delete, trigger
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// How jobs went over a window: rates against the 80 % line, top errors, per kind and target
    Stats(StatsArgs),
    /// API tokens (admin): create, list, revoke
    #[command(subcommand)]
    Token(TokenCommand),
    /// Organizations: create (instance admin), list, show, set a running limit
    #[command(subcommand)]
    Org(OrgCommand),
    /// The organization's notification channels (admin): webhook, Slack or e-mail
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Circuits per target that are open or half-open; with --history, past outages
    Circuits(CircuitsArgs),
    /// The notification log: deliveries and each of their tries (of one job, or all)
    Notifications(NotificationsArgs),
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// How far back, e.g. 1h, 24h, 7d
    #[arg(long, default_value = "24h")]
    pub window: String,
    /// Only jobs of this queue
    #[arg(long)]
    pub queue: Option<String>,
    /// Only jobs of this kind
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs against this target
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
        /// An instance token: acts in every organization and manages them (instance admins only)
        #[arg(long)]
        instance: bool,
    },
    /// List tokens (never their secrets)
    List,
    /// Revoke a token by id or name; it stops working at once
    Revoke {
        /// The token's id or name
        id_or_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChannelCommand {
    /// The organization's channels (never their secrets)
    List,
    /// Create or replace a channel (admin)
    Set(Box<ChannelArgs>),
    /// Delete a channel (admin)
    Delete {
        /// The channel's name
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ChannelArgs {
    /// The channel's name: ops, oncall
    pub name: String,
    /// webhook (JSON POST), slack (incoming webhook) or email (SMTP)
    #[arg(long, value_parser = ["webhook", "slack", "email"])]
    pub kind: String,
    /// webhook and slack: where to POST (kept secret)
    #[arg(long)]
    pub url: Option<String>,
    /// webhook: an extra header NAME=VALUE (repeatable; values kept secret)
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Events, comma-separated: failed, succeeded, retrying [default: failed]
    #[arg(long, value_delimiter = ',')]
    pub on: Vec<String>,
    /// The policy deliveries are retried under [default: default]
    #[arg(long)]
    pub policy: Option<String>,
    /// A delivery's time limit, e.g. 10s
    #[arg(long)]
    pub timeout: Option<String>,
    /// email: the SMTP server as host:port
    #[arg(long)]
    pub smtp: Option<String>,
    /// email: the sender's address
    #[arg(long)]
    pub from: Option<String>,
    /// email: a recipient (repeatable)
    #[arg(long)]
    pub to: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization (instance admin)
    Create {
        /// Lowercase letters, digits and -, starting with a letter: acme, team-7
        name: String,
        /// Attempts of its jobs running at once on all nodes (default: its fair share only)
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        max_running: Option<u32>,
        /// Retries of its jobs that may start per minute on all nodes (default: no limit)
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        retry_budget: Option<u32>,
    },
    /// Organizations: all of them with an instance token, else your own
    List,
    /// One organization: its default policy and running limit
    Show {
        /// The organization's name
        name: String,
    },
    /// Set or lift an organization's limits (instance admin); limits not named stay
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Update {
        /// The organization's name
        name: String,
        /// Attempts of its jobs running at once on all nodes
        #[arg(long, group = "change", value_parser = clap::value_parser!(u32).range(1..=100_000), conflicts_with = "no_limit")]
        max_running: Option<u32>,
        /// Lift the running limit: its fair share only
        #[arg(long, group = "change")]
        no_limit: bool,
        /// Retries of its jobs that may start per minute on all nodes
        #[arg(long, group = "change", value_parser = clap::value_parser!(u32).range(1..=1_000_000), conflicts_with = "no_retry_budget")]
        retry_budget: Option<u32>,
        /// Lift the retry budget
        #[arg(long, group = "change")]
        no_retry_budget: bool,
    },
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
    Pause {
        /// The queue's name
        name: String,
    },
    /// Claim from a paused queue again
    Resume {
        /// The queue's name
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: `retryd schedule create nightly --cron '30 2 * * *' --tz Europe/Berlin -- ./backup.sh`
    Create(Box<ScheduleArgs>),
    /// Replace a schedule's definition (the same flags as create)
    Update(Box<ScheduleArgs>),
    /// Schedules with their next fire time and last run
    List,
    /// A schedule: its next fire times and its last runs with their outcomes
    Show {
        /// The schedule's name
        name: String,
    },
    /// Stop firing (fire times while paused are not caught up)
    Pause {
        /// The schedule's name
        name: String,
    },
    /// Fire again, from the next fire time on
    Resume {
        /// The schedule's name
        name: String,
    },
    /// Run the schedule's job now, once
    Trigger {
        /// The schedule's name
        name: String,
    },
    /// Delete a schedule (its runs stay)
    Delete {
        /// The schedule's name
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// A unique name: 1–64 of letters, digits and _ - . :
    pub name: String,
    /// Five fields (minute hour day month weekday), or six with seconds first: '*/2 * * * * *'
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the expression is read in [default: UTC]
    #[arg(long)]
    pub tz: Option<String>,
    /// While the previous run is live: skip the fire time, or allow another run [default: skip]
    #[arg(long, value_parser = ["skip", "allow"])]
    pub overlap: Option<String>,
    /// Fire times missed by more than a minute (nodes down): skip them, run once, or run all
    /// (up to 100) [default: once]
    #[arg(long, value_parser = ["skip", "once", "all"])]
    pub misfire: Option<String>,
    /// Create it paused
    #[arg(long)]
    pub paused: bool,
    /// Every submit option; --deadline is a duration after each fire time (e.g. 1h)
    #[command(flatten)]
    pub job: SubmitArgs,
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
    /// Secret environment variable, its value from this environment (KEY) or a file
    /// (KEY=@FILE), never the command line: passed to the command, never shown or logged
    #[arg(long = "secret-env", value_name = "KEY|KEY=@FILE")]
    pub secret_env: Vec<String>,
    /// Working directory of the command
    #[arg(long)]
    pub cwd: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub options: JobOptions,
    /// Queue to run in [default: default, or the configured default queue]
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
pub struct CircuitsArgs {
    /// The latest outages instead, newest first: when each opened, how long it lasted, how
    /// it closed
    #[arg(long)]
    pub history: bool,
}

pub const DEFAULT_JOBS_LIMIT: usize = 50;

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only these states, comma-separated (e.g. failed,retrying)
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this queue
    #[arg(long)]
    pub queue: Option<String>,
    /// Only jobs of this kind
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs against this target
    #[arg(long)]
    pub target: Option<String>,
    /// key=value
    #[arg(long)]
    pub label: Option<String>,
    /// Jobs per page (1–500)
    #[arg(long, default_value_t = DEFAULT_JOBS_LIMIT)]
    pub limit: usize,
    /// Continue from a previous page
    #[arg(long)]
    pub cursor: Option<String>,
    /// Oldest jobs first (newest first otherwise)
    #[arg(long)]
    pub oldest: bool,
    /// Show STATUS and ERROR whole instead of cut to the terminal's width
    #[arg(long)]
    pub wide: bool,
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
    /// After a fix: set a secret environment variable from this environment (KEY) or a
    /// file (KEY=@FILE), never shown or logged
    #[arg(long = "secret-env", value_name = "KEY|KEY=@FILE")]
    pub secret_env: Vec<String>,
    /// After a fix: remove an environment variable (repeatable)
    #[arg(long = "unset-env", value_name = "KEY")]
    pub unset_env: Vec<String>,
    /// After a fix: another policy, by name or as inline JSON
    #[arg(long)]
    pub policy: Option<String>,
    /// A new deadline: an RFC 3339 instant, or a duration from now such as 1h (an expired
    /// job needs one to run again)
    #[arg(long)]
    pub deadline: Option<String>,
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
    /// Only dead jobs of this queue
    #[arg(long)]
    pub queue: Option<String>,
    /// Only dead jobs of this kind
    #[arg(long)]
    pub kind: Option<String>,
    /// Only dead jobs against this target
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

/// A policy's fields as flags, or as JSON. `create` fills what is not given with the
/// defaults shown; `update` changes only what is given.
#[derive(Debug, Args)]
pub struct PolicyEdit {
    /// The policy's name
    pub name: String,
    /// Attempts in all, 1–100 [create default: 3; update: unchanged]
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Wait before the first retry, e.g. 1s [create default: 2s; update: unchanged]
    #[arg(long)]
    pub initial_delay: Option<String>,
    /// Growth of the wait per retry, at least 1 [create default: 2; update: unchanged]
    #[arg(long)]
    pub multiplier: Option<f64>,
    /// Cap of one wait, e.g. 5m [create default: 60s; update: unchanged]
    #[arg(long)]
    pub max_delay: Option<String>,
    /// none, full, equal or decorrelated [create default: full; update: unchanged]
    #[arg(long)]
    pub jitter: Option<String>,
    /// Give up this long after the first attempt started, e.g. 1h [create default: none]
    #[arg(long)]
    pub max_elapsed: Option<String>,
    /// Time limit of one attempt, e.g. 30s [create default: none]
    #[arg(long)]
    pub attempt_timeout: Option<String>,
    /// Policy fields as JSON, e.g. '{"rules": [...]}' (flags override its fields)
    #[arg(long, value_name = "JSON")]
    pub json_policy: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Named policies on the server
    List,
    /// One policy and its schedule
    Show {
        /// The policy's name
        name: String,
    },
    /// Create a policy on the server (admin); unset fields take the defaults
    Create(PolicyEdit),
    /// Change a policy created with `create` (admin); applies to attempts scheduled after it
    Update(PolicyEdit),
    /// Deactivate a policy created with `create` (admin): jobs using it keep it
    Deactivate {
        /// The policy's name
        name: String,
    },
    /// The organization's active default policy (jobs naming none get it); with a name, set it (admin)
    Active {
        /// The policy to make the organization's default
        name: Option<String>,
        /// Go back to the instance's rules (per kind, per priority, else `default`)
        #[arg(long, conflicts_with = "name")]
        clear: bool,
    },
    /// The schedule a policy gives: wait ranges and cumulative time per attempt
    Simulate {
        /// A policy name on the server
        name: Option<String>,
        /// An inline policy as JSON, simulated locally
        #[arg(long, conflicts_with = "name")]
        inline: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn undocumented(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            if sub.get_about().is_none() && sub.get_name() != "help" {
                missing.push(format!("{path} {} (command)", sub.get_name()));
            }
            undocumented(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }

    /// Issue 15: several flags and arguments had no help text.
    #[test]
    fn issue_15_every_flag_and_argument_has_help_text() {
        let mut missing = Vec::new();
        undocumented(&Cli::command(), "retryd", &mut missing);
        assert_eq!(missing, Vec::<String>::new());
    }
}
