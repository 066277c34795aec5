//! The `command` action: a child process in its own process group, output captured line by
//! line, SIGTERM then SIGKILL to the whole group on timeout or stop.
//!
//! The command never starts before its process is known: the child is a `/bin/sh` that
//! waits for one line on its standard input, then `exec`s the command in the same process
//! (same pid, same group, so the job's `$PPID` is still retryd). retryd sends that line only
//! once `record` has stored the pid, so a node killed in between leaves a shell that reads
//! end-of-file and exits without running anything.

use super::{Outcome, OutputLine, Stopped};
use chrono::Utc;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use retryd_core::job::{CommandAction, Stream, redact};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
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

/// Between SIGTERM and SIGKILL when the attempt's lease was lost: another node may be
/// running the job already, so the command gets little time to clean up.
pub const FENCED_GRACE: Duration = Duration::from_millis(500);

/// What stops a run early.
#[derive(Debug, Clone, Default)]
pub struct Stops {
    /// A cancel or a shutdown: SIGTERM, then SIGKILL after the kill grace.
    pub stop: CancellationToken,
    /// This node no longer holds the attempt's lease: SIGTERM, then SIGKILL after
    /// [`FENCED_GRACE`].
    pub fenced: CancellationToken,
}

/// The gate: one line on stdin, then the command replaces the shell. End-of-file (retryd
/// died, or refused to start it) exits with 125 and runs nothing.
const GATE: &str = "IFS= read -r _ || exit 125; exec \"$@\"";

/// Runs the command to its end, a timeout or `stop`, sending each output line to `lines`.
/// `record` learns the pid of the process group leader as soon as it exists, before the
/// command can do anything; the command starts only once it returns `Ok`, and an `Err` (why
/// the pid could not be recorded) ends the attempt unstarted.
pub async fn run<R, F>(
    action: &CommandAction,
    limits: Limits,
    stops: Stops,
    lines: mpsc::Sender<OutputLine>,
    record: R,
) -> Outcome
where
    R: FnOnce(u32) -> F,
    F: Future<Output = Result<(), String>>,
{
    // The shell would report these too, but only as an exit code: found here first, they
    // keep their plain message.
    if let Err(error) = locate(action) {
        return spawn_failure(action, &error);
    }
    let secrets: Arc<[String]> = action.secrets().into();
    let mut command = Command::new("/bin/sh");
    command
        .args(["-c", GATE, "retryd-gate", &action.program])
        .args(&action.args)
        .process_group(0)
        .stdin(Stdio::piped())
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
    let mut stdin = child.stdin.take();
    let recorded = match child.id() {
        Some(pid) => record(pid).await,
        None => Err("the shell exited before it could be recorded".to_owned()),
    };
    if let Err(message) = recorded {
        // The gate reads end-of-file: the shell exits without running the command.
        drop(stdin);
        let _ = child.wait().await;
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        return Outcome {
            start_error: Some(format!("{}: not started: {message}", action.program)),
            class: Some(retryd_core::Class::Transient),
            ..Outcome::default()
        };
    }
    if let Some(mut stdin) = stdin.take() {
        let input = action.stdin.clone().unwrap_or_default();
        tokio::spawn(async move {
            // A child that exits without reading its input is not an error of ours.
            if stdin.write_all(b"\n").await.is_ok() {
                let _ = stdin.write_all(input.as_bytes()).await;
            }
        });
    }
    let readers = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(pump(out, Stream::Stdout, lines.clone(), secrets.clone()))),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(pump(err, Stream::Stderr, lines.clone(), secrets.clone()))),
    ];
    let timeout = async {
        match limits.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let grace = limits.kill_grace;
    let (status, stopped) = tokio::select! {
        // A lost lease wins over the stop that comes with it: it gets the shorter grace.
        biased;
        _ = stops.fenced.cancelled() => (terminate(&mut child, pgid, grace.min(FENCED_GRACE)).await, Some(Stopped::Requested)),
        status = child.wait() => (status.ok(), None),
        _ = timeout => (terminate(&mut child, pgid, grace).await, Some(Stopped::Timeout)),
        _ = stops.stop.cancelled() => (terminate(&mut child, pgid, grace).await, Some(Stopped::Requested)),
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

/// Finds the program as `exec` will (in `cwd`, or on the job's `PATH`): not there is
/// `NotFound`, there but not executable is `PermissionDenied`.
fn locate(action: &CommandAction) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let cwd = action.cwd.as_deref().map(Path::new);
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .ok()
    };
    let candidates: Vec<PathBuf> = if action.program.contains('/') {
        let path = Path::new(&action.program);
        vec![match cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_path_buf(),
        }]
    } else {
        let path_var = action
            .env
            .get("PATH")
            .map(|v| v.value().to_owned())
            .or_else(|| std::env::var("PATH").ok())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
        std::env::split_paths(&path_var)
            .map(|dir| dir.join(&action.program))
            .collect()
    };
    let found: Vec<Option<bool>> = candidates.iter().map(|c| executable(c)).collect();
    if found.contains(&Some(true)) {
        Ok(())
    } else if found.contains(&Some(false)) {
        Err(std::io::Error::from_raw_os_error(
            nix::errno::Errno::EACCES as i32,
        ))
    } else {
        Err(std::io::Error::from_raw_os_error(
            nix::errno::Errno::ENOENT as i32,
        ))
    }
}

/// Maps a failure to start onto the exit codes a shell would give, so that the same
/// classification rules apply (127: not found, 126: not executable).
fn spawn_failure(action: &CommandAction, error: &std::io::Error) -> Outcome {
    let (exit_code, what) = match error.kind() {
        std::io::ErrorKind::NotFound => (Some(127), "command not found"),
        std::io::ErrorKind::PermissionDenied => (Some(126), "permission denied (not executable)"),
        _ => (None, "cannot start"),
    };
    let cwd = action
        .cwd
        .as_ref()
        .map(|c| format!(" in {c}"))
        .unwrap_or_default();
    Outcome {
        exit_code,
        start_error: Some(format!("{}: {what}{cwd}: {error}", action.program)),
        ..Outcome::default()
    }
}

/// Reads a stream, splitting it into lines (long ones in pieces), redacting secrets.
async fn pump(
    mut reader: impl AsyncRead + Unpin,
    stream: Stream,
    lines: mpsc::Sender<OutputLine>,
    secrets: Arc<[String]>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    let emit = |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        OutputLine {
            at: Utc::now(),
            stream,
            line: redact(text, &secrets),
        }
    };
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            if lines.send(emit(&line[..line.len() - 1])).await.is_err() {
                return;
            }
        }
        while pending.len() >= MAX_LINE_BYTES {
            let piece: Vec<u8> = pending.drain(..MAX_LINE_BYTES).collect();
            if lines.send(emit(&piece)).await.is_err() {
                return;
            }
        }
    }
    if !pending.is_empty() {
        let _ = lines.send(emit(&pending)).await;
    }
}
