//! The `command` action: a child process in its own process group, output captured line by
//! line, SIGTERM then SIGKILL to the whole group on timeout or stop.

use super::{Outcome, OutputLine, Stopped};
use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use retryd_core::job::{CommandAction, Stream};
use retryd_core::redact::{RedactingLines, Redactor};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A line longer than this is split: one runaway line must not hold the whole log.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// Limits for one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

/// Runs the command to its end, a timeout or `stop`, sending each output line to `lines`.
/// `spawned` learns the pid of the process group leader as soon as it exists.
pub async fn run(
    action: &CommandAction,
    limits: Limits,
    stop: CancellationToken,
    lines: mpsc::Sender<OutputLine>,
    spawned: impl FnOnce(u32),
) -> Outcome {
    let redactor = Redactor::new(&action.secrets());
    let mut command = Command::new(&action.program);
    command
        .args(&action.args)
        .process_group(0)
        .stdin(if action.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The server's own settings (tokens, database URL) are not the job's business.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RETRYD_") {
            command.env_remove(key);
        }
    }
    for (key, value) in &action.env {
        command.env(key, value.value());
    }
    if let Some(cwd) = &action.cwd {
        command.current_dir(cwd);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return spawn_failure(action, &error),
    };
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    if let Some(pid) = child.id() {
        spawned(pid);
    }
    if let (Some(input), Some(mut stdin)) = (action.stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            // A child that exits without reading its input is not an error of ours.
            let _ = stdin.write_all(input.as_bytes()).await;
        });
    }
    let readers =
        [
            child.stdout.take().map(|out| {
                tokio::spawn(pump(out, Stream::Stdout, lines.clone(), redactor.clone()))
            }),
            child.stderr.take().map(|err| {
                tokio::spawn(pump(err, Stream::Stderr, lines.clone(), redactor.clone()))
            }),
        ];
    let timeout = async {
        match limits.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let (status, stopped) = tokio::select! {
        status = child.wait() => (status.ok(), None),
        _ = timeout => (terminate(&mut child, pgid, limits.kill_grace).await, Some(Stopped::Timeout)),
        _ = stop.cancelled() => (terminate(&mut child, pgid, limits.kill_grace).await, Some(Stopped::Requested)),
    };
    // Whatever the leader did, nothing of the group outlives the attempt.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    for reader in readers.into_iter().flatten() {
        let _ = reader.await;
    }
    let (exit_code, signal) = split_status(status);
    Outcome {
        ok: exit_code == Some(0) && stopped.is_none(),
        exit_code,
        signal,
        stopped,
        ..Outcome::default()
    }
}

fn split_status(status: Option<ExitStatus>) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => (status.code(), status.signal()),
        None => (None, None),
    }
}

/// SIGTERM to the group, then SIGKILL after the grace period.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: Option<Pid>,
    grace: Duration,
) -> Option<ExitStatus> {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            child.wait().await.ok()
        }
    }
}

/// Maps a failure to start onto the exit codes a shell would give, so that the same
/// classification rules apply (127: not found, 126: not executable); a start that can never
/// succeed as written (a missing working directory, an argument list over the kernel's
/// limit, a NUL in a path) is an invalid action: permanent, with a message that says why.
fn spawn_failure(action: &CommandAction, error: &std::io::Error) -> Outcome {
    use std::io::ErrorKind;
    let cwd_missing = action
        .cwd
        .as_ref()
        .is_some_and(|c| !std::path::Path::new(c).is_dir());
    let (exit_code, invalid, what) = match (error.kind(), error.raw_os_error()) {
        _ if cwd_missing => (None, true, "the working directory does not exist"),
        (ErrorKind::NotFound, _) => (Some(127), false, "command not found"),
        (ErrorKind::PermissionDenied, _) => {
            (Some(126), false, "permission denied (not executable)")
        }
        (_, Some(code)) if code == nix::libc::E2BIG => (
            None,
            true,
            "the arguments and environment are over the kernel's size limit (E2BIG)",
        ),
        (ErrorKind::InvalidInput, _) => (None, true, "invalid program, argument or path"),
        (_, Some(code)) if code == nix::libc::ENOEXEC || code == nix::libc::ENAMETOOLONG => {
            (None, true, "the program cannot be executed as given")
        }
        _ => (None, false, "cannot start"),
    };
    let cwd = action
        .cwd
        .as_ref()
        .map(|c| format!(" in {c}"))
        .unwrap_or_default();
    Outcome {
        exit_code,
        invalid_action: invalid,
        start_error: Some(format!("{}: {what}{cwd}: {error}", action.program)),
        ..Outcome::default()
    }
}

/// Reads a stream, splitting it into lines (long ones in pieces), secrets hidden on the
/// stream before it is cut so that none shows across a cut.
async fn pump(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    lines: mpsc::Sender<OutputLine>,
    redactor: Redactor,
) {
    let mut cutter = RedactingLines::new(redactor, MAX_LINE_BYTES);
    let mut buf = vec![0u8; 8192];
    let emit = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        OutputLine {
            at: Utc::now(),
            stream,
            line: text.strip_suffix('\r').unwrap_or(&text).to_owned(),
        }
    };
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for line in cutter.push(&buf[..n]) {
            if lines.send(emit(&line)).await.is_err() {
                return;
            }
        }
    }
    for line in cutter.finish() {
        if lines.send(emit(&line)).await.is_err() {
            return;
        }
    }
}
