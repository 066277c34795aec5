//! `retryd`: the server, the CLI and the one-shot runner in one binary.
//!
//! # Layout
//!
//! - [`cli`]: arguments as typed (clap).
//! - [`config`]: layered settings for `serve` and `run`.
//! - [`client`]: the HTTP API client the other commands use.
//! - [`output`]: colours, tables, status line.
//! - [`pipeline_file`]: TOML and YAML pipeline files for `submit --pipeline`.
//! - `commands/`: one module per command group.
//!
//! This is the only place where `anyhow` reaches the top: `main` maps errors to exit codes.

mod cli;
mod client;
mod commands;
mod config;
mod output;
mod pipeline_file;

use clap::Parser;
use std::process::ExitCode;

/// Exit codes scripts can rely on.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const FAILED: u8 = 3;
    pub const CANCELLED: u8 = 4;
    pub const EXPIRED: u8 = 5;
}

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = cli::Cli::parse();
    output::init_color(cli.no_color);
    let result =
        runtime(&cli.command).and_then(|runtime| runtime.block_on(commands::dispatch(cli)));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{} {error:#}", output::red("error:"));
            ExitCode::from(exit::ERROR)
        }
    }
}

/// `retryd show ID | head -1`: once the reader has gone, printing fails with EPIPE and
/// `println!` panics. The output is not wanted any more, so the process ends quietly with
/// success, as ripgrep does (issue 15), whichever command was printing. Resetting SIGPIPE to
/// its default instead would also kill `serve` when a child closes the stdin it is fed.
fn quiet_on_closed_pipe() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to std") && message.contains("Broken pipe") {
            std::process::exit(i32::from(exit::OK));
        }
        default_hook(info);
    }));
}

/// `retryd run` waits on one child at a time, so one thread does: starting worker threads
/// (and handing every wake-up between them) was most of what it added to the command's own
/// time (issue #8). Nothing beside the command may block that thread (see `run.rs`).
/// Everything else gets the multi-threaded runtime.
fn runtime(command: &cli::Command) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match command {
        cli::Command::Run(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(builder.enable_all().build()?)
}
