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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    output::init_color(cli.no_color);
    match commands::dispatch(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("{} {error:#}", output::red("error:"));
            ExitCode::from(exit::ERROR)
        }
    }
}
