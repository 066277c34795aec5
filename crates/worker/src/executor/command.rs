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
use retryd_core::job::{CommandAction, Stream};
use retryd_core::redact::{RedactingLines, Redactor};
use std::future::Future;
use std::path::{Path, PathBuf};
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

/// When a command may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Once its pid is recorded: a shell holds it at [`GATE`] until then. An engine's
    /// attempts, so that a rescuer always knows the process it must stop.
    Recorded,
    /// At once, with no shell in between (`retryd run`: no node records it, and the shell
    /// was a third of the command's overhead).
    Now,
}

/// Runs the command to its end, a timeout or `stop`, sending each output line to `lines`.
/// `record` learns the pid of the process group leader as soon as it exists. With
/// [`Start::Recorded`] that is before the command can do anything: it starts only once
/// `record` returns `Ok`, and an `Err` (why the pid could not be recorded) ends the attempt
/// unstarted.
pub async fn run<R, F>(
    action: &CommandAction,
    limits: Limits,
    stops: Stops,
    lines: mpsc::Sender<OutputLine>,
    start: Start,
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
    let redactor = Redactor::new(&action.secrets());
    let mut command = match start {
        Start::Recorded => {
            let mut shell = Command::new("/bin/sh");
            shell.args(["-c", GATE, "retryd-gate", &action.program]);
            shell
        }
        Start::Now => Command::new(&action.program),
    };
    command
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
            let gate: &[u8] = match start {
                Start::Recorded => b"\n",
                Start::Now => b"",
            };
            if stdin.write_all(gate).await.is_ok() {
                let _ = stdin.write_all(input.as_bytes()).await;
            }
        });
    }
    let reader = tokio::spawn(read_output(
        child.stdout.take(),
        child.stderr.take(),
        lines,
        redactor,
    ));
    let timeout = async {
        match limits.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let grace = limits.kill_grace;
    let ((status, escalated), stopped) = tokio::select! {
        // A lost lease wins over the stop that comes with it: it gets the shorter grace.
        biased;
        _ = stops.fenced.cancelled() => (terminate(&mut child, pgid, grace.min(FENCED_GRACE)).await, Some(Stopped::Requested)),
        status = child.wait() => ((status.ok(), false), None),
        _ = timeout => (terminate(&mut child, pgid, grace).await, Some(Stopped::Timeout)),
        _ = stops.stop.cancelled() => (terminate(&mut child, pgid, grace).await, Some(Stopped::Requested)),
    };
    // Whatever the leader did, nothing of the group outlives the attempt.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    let _ = reader.await;
    let (exit_code, signal) = split_status(status);
    Outcome {
        ok: exit_code == Some(0) && stopped.is_none(),
        exit_code,
        signal,
        stopped,
        killed_after_grace: escalated.then_some(limits.kill_grace),
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

/// SIGTERM to the group, then SIGKILL after the grace period. Says whether SIGKILL was
/// needed.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: Option<Pid>,
    grace: Duration,
) -> (Option<ExitStatus>, bool) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            (child.wait().await.ok(), true)
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

/// Splits one stream's bytes into lines (long ones in pieces), secrets hidden on the stream
/// before it is cut so that none shows across a cut.
struct Lines {
    stream: Stream,
    cutter: RedactingLines,
    open: bool,
}

impl Lines {
    fn new(stream: Stream, open: bool, redactor: Redactor) -> Self {
        Lines {
            stream,
            cutter: RedactingLines::new(redactor, MAX_LINE_BYTES),
            open,
        }
    }

    /// Takes bytes just read (none: the stream ended) and sends on the lines they complete;
    /// false when nobody listens any more.
    async fn take(&mut self, read: &[u8], lines: &mpsc::Sender<OutputLine>) -> bool {
        let done = if read.is_empty() {
            self.open = false;
            self.rest()
        } else {
            self.complete(read)
        };
        for line in done {
            if lines.send(line).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Adds bytes just read and takes the lines they complete.
    fn complete(&mut self, bytes: &[u8]) -> Vec<OutputLine> {
        let done = self.cutter.push(bytes);
        done.iter().map(|line| self.line(line)).collect()
    }

    /// What is left once the stream ended.
    fn rest(&mut self) -> Vec<OutputLine> {
        let done = self.cutter.finish();
        done.iter().map(|line| self.line(line)).collect()
    }

    fn line(&self, bytes: &[u8]) -> OutputLine {
        let text = String::from_utf8_lossy(bytes);
        OutputLine {
            at: Utc::now(),
            stream: self.stream,
            line: text.strip_suffix('\r').unwrap_or(&text).to_owned(),
        }
    }
}

async fn read_some(pipe: &mut Option<impl AsyncRead + Unpin>, buf: &mut [u8]) -> usize {
    match pipe {
        Some(pipe) => pipe.read(buf).await.unwrap_or(0),
        None => 0,
    }
}

/// After this many chunks of stdout in a row (128 KiB), the reader looks whether stderr holds
/// something: a command that floods stdout must not hold back the error it writes meanwhile
/// until its stdout pauses, which may be never before it is killed.
const STDOUT_STREAK: u32 = 16;

/// How many chunks of stdout are read, when stderr turns out to hold something during a
/// flood, before its bytes take their place: a pipe's capacity (64 KiB), all that stdout can
/// hold from before them. So a command that prints much and then fails still ends its log
/// with its error.
const PIPE_CHUNKS: usize = 8;

/// The one reader of both streams: a line takes its place in the log when its last bytes are
/// read, so stdout and stderr keep the order in which the command wrote them (two readers
/// racing each other put a script's error before the line it printed just before it,
/// issue 15). Bytes that both pipes already hold when the reader wakes cannot be ordered by
/// any reader of two pipes; stdout is read first then, because a command prints what it is
/// doing before the error that stops it. Only during a flood ([`STDOUT_STREAK`]) is stderr
/// taken while stdout still has bytes: after what stdout held then ([`PIPE_CHUNKS`]).
async fn read_output(
    mut stdout: Option<impl AsyncRead + Unpin>,
    mut stderr: Option<impl AsyncRead + Unpin>,
    lines: mpsc::Sender<OutputLine>,
    redactor: Redactor,
) {
    let mut out = Lines::new(Stream::Stdout, stdout.is_some(), redactor.clone());
    let mut err = Lines::new(Stream::Stderr, stderr.is_some(), redactor);
    let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
    let mut streak = 0;
    while out.open || err.open {
        let (from_stdout, n) = tokio::select! {
            biased;
            n = read_some(&mut stdout, &mut out_buf), if out.open => (true, n),
            n = read_some(&mut stderr, &mut err_buf), if err.open => (false, n),
        };
        if !from_stdout {
            streak = 0;
            if !err.take(&err_buf[..n], &lines).await {
                return;
            }
            continue;
        }
        if !out.take(&out_buf[..n], &lines).await {
            return;
        }
        streak += 1;
        if streak < STDOUT_STREAK || !err.open {
            continue;
        }
        streak = 0;
        let Some(n) = ready_now(read_some(&mut stderr, &mut err_buf)).await else {
            continue;
        };
        for _ in 0..PIPE_CHUNKS {
            if !out.open {
                break;
            }
            let Some(m) = ready_now(read_some(&mut stdout, &mut out_buf)).await else {
                break;
            };
            if !out.take(&out_buf[..m], &lines).await {
                return;
            }
        }
        if !err.take(&err_buf[..n], &lines).await {
            return;
        }
    }
}

/// `read`'s result if it is ready at once, without waiting.
async fn ready_now(read: impl Future<Output = usize>) -> Option<usize> {
    tokio::select! {
        biased;
        n = read => Some(n),
        () = std::future::ready(()) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `sh -c script` and returns its output lines as (stream, text).
    async fn output_of(script: &str) -> Vec<(Stream, String)> {
        let action = CommandAction {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: None,
            env: Default::default(),
            stdin: None,
            timeout: None,
        };
        let limits = Limits {
            timeout: Some(Duration::from_secs(10)),
            kill_grace: Duration::from_secs(1),
        };
        let (tx, mut rx) = mpsc::channel(64);
        let stops = Stops {
            stop: CancellationToken::new(),
            fenced: CancellationToken::new(),
        };
        run(&action, limits, stops, tx, Start::Recorded, |_| async {
            Ok(())
        })
        .await;
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push((line.stream, line.line));
        }
        lines
    }

    /// Issue 15: a script that says what it deploys on stdout and then fails on stderr showed
    /// the error first in about one run of six, so that identical failures split into two
    /// dead-letter groups.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn issue_15_a_line_printed_before_an_error_stays_before_it() {
        for _ in 0..40 {
            let lines = output_of("echo deploying; echo 'Error: insufficient funds' >&2").await;
            assert_eq!(
                lines,
                [
                    (Stream::Stdout, "deploying".to_owned()),
                    (Stream::Stderr, "Error: insufficient funds".to_owned())
                ]
            );
        }
    }

    /// The reader of two in-memory pipes, and where its lines go.
    fn reading(
        stdout: tokio::io::DuplexStream,
        stderr: tokio::io::DuplexStream,
    ) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<OutputLine>) {
        let (tx, rx) = mpsc::channel(64);
        let reader = tokio::spawn(read_output(
            Some(stdout),
            Some(stderr),
            tx,
            Redactor::default(),
        ));
        (reader, rx)
    }

    /// A command that floods stdout: the error it writes meanwhile arrives while stdout still
    /// flows, not after it (it waited for stdout to pause, which `yes` never does).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_written_while_stdout_floods_is_not_held_back() {
        let (stdout, mut flood) = tokio::io::duplex(1 << 16);
        let (stderr, mut errors) = tokio::io::duplex(1 << 16);
        let (reader, mut rx) = reading(stdout, stderr);
        let writer = tokio::spawn(async move {
            let chunk = "y\n".repeat(4096);
            // Stdout always holds bytes from here on, and stderr gets its line in between.
            flood.write_all(chunk.as_bytes()).await.unwrap();
            errors.write_all(b"Error: disk full\n").await.unwrap();
            for _ in 0..2_000 {
                flood.write_all(chunk.as_bytes()).await.unwrap();
            }
        });
        let mut stdout_lines = 0;
        while let Some(line) = rx.recv().await {
            match line.stream {
                Stream::Stdout => stdout_lines += 1,
                _ => {
                    assert_eq!(line.line, "Error: disk full");
                    break;
                }
            }
        }
        assert!(
            stdout_lines <= 200_000,
            "the error came after {stdout_lines} of 8,196,096 stdout lines"
        );
        reader.abort();
        writer.abort();
    }

    /// A command that printed much and then failed, read late: both pipes hold bytes when the
    /// reader gets to them, stdout more than the flood rule's streak. What stdout held still
    /// comes first, so the error stays the log's last line (the line a diagnosis headlines).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_error_after_much_output_stays_last_when_read_late() {
        let (stdout, mut printed) = tokio::io::duplex(1 << 20);
        let (stderr, mut failed) = tokio::io::duplex(1 << 20);
        // About 150 KB: more than the streak's 16 chunks, less than 16 and a pipe's worth.
        for i in 0..15_000 {
            printed
                .write_all(format!("line {i}\n").as_bytes())
                .await
                .unwrap();
        }
        failed
            .write_all(b"ERROR: the real failure\n")
            .await
            .unwrap();
        drop((printed, failed));
        let (reader, mut rx) = reading(stdout, stderr);
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push((line.stream, line.line));
        }
        reader.await.unwrap();
        assert_eq!(lines.len(), 15_001);
        assert_eq!(
            lines.last().unwrap(),
            &(Stream::Stderr, "ERROR: the real failure".to_owned())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stdout_and_stderr_keep_the_order_they_were_written_in() {
        let lines = output_of(
            "echo warn >&2; sleep 0.05; echo step 1; sleep 0.05; echo fail >&2; sleep 0.05; printf 'no newline'",
        )
        .await;
        assert_eq!(
            lines,
            [
                (Stream::Stderr, "warn".to_owned()),
                (Stream::Stdout, "step 1".to_owned()),
                (Stream::Stderr, "fail".to_owned()),
                (Stream::Stdout, "no newline".to_owned()),
            ]
        );
    }
}
