mod channel;
mod circuits;
mod dlq;
mod jobs;
mod notifications;
mod org;
mod policy;
mod queue;
mod run;
mod schedule;
mod serve;
mod stats;
mod submit;
mod token;

use crate::cli::{Cli, Command};
use crate::client::Client;
use anyhow::Result;

/// Runs a command; the value is the process exit code.
pub async fn dispatch(cli: Cli) -> Result<u8> {
    // Only the commands that talk to a server build an HTTP client (TLS roots, proxies).
    let client = || {
        Client::new(&cli.server, cli.token.as_deref(), cli.org.as_deref())
            .keeping_raw_strings(cli.json)
    };
    let json = cli.json;
    match cli.command {
        Command::Serve(flags) => serve::serve(flags).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "retryd", &mut script);
            print_all(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut page)?;
            print_all(&page)
        }
        Command::Run(args) => run::run(args, json).await,
        Command::Submit(args) => submit::submit(&client(), *args, json).await,
        Command::Jobs(args) => jobs::list(&client(), args, json).await,
        Command::Show(args) => jobs::show(&client(), &args.id, json).await,
        Command::Logs(args) => jobs::logs(&client(), &args.id, args.follow, json).await,
        Command::Cancel(args) => jobs::cancel(&client(), &args.id, json).await,
        Command::Retry(args) => jobs::retry(&client(), args, json).await,
        Command::Dlq(command) => dlq::dlq(&client(), command, json).await,
        Command::Policy(command) => policy::policy(&client(), command, json).await,
        Command::Queue(command) => queue::queue(&client(), command, json).await,
        Command::Schedule(command) => schedule::schedule(&client(), command, json).await,
        Command::Stats(args) => stats::stats(&client(), args, json).await,
        Command::Token(command) => token::token(&client(), command, json).await,
        Command::Org(command) => org::org(&client(), command, json).await,
        Command::Channel(command) => channel::channel(&client(), command, json).await,
        Command::Circuits(args) if args.history => circuits::history(&client(), json).await,
        Command::Circuits(_) => circuits::list(&client(), json).await,
        Command::Notifications(args) => notifications::list(&client(), args, json).await,
    }
}

/// Writes generated text to stdout; a reader that stopped early (`| head`) is not an error.
fn print_all(text: &[u8]) -> Result<u8> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(crate::exit::OK),
    }
}
