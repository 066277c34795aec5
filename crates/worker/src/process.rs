//! Naming processes across a restart. A command attempt's process group outlives a node
//! killed with SIGKILL; a node on the same host (the restarted one, or another that rescues
//! the attempt) finds it by pid and start time (a reused pid has another start time) and
//! stops it before the attempt runs again, so that the same command never runs twice at
//! once on this host.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use retryd_store::Process;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a node waits for a leftover group to die before it gives up on it.
const DEATH_WAIT: Duration = Duration::from_secs(5);

/// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The fields of `/proc/PID/stat` after the command name (field 3, the state, first).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// This host, as pids are seen: the boot (pids and start times restart with it) and the pid
/// namespace (containers on one kernel number processes apart).
pub fn this_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|b| b.trim().to_owned())
            .unwrap_or_default();
        let namespace = std::fs::read_link("/proc/self/ns/pid")
            .map(|n| n.display().to_string())
            .unwrap_or_default();
        format!("{boot}/{namespace}")
    })
}

/// Identifies a process that is running now.
pub fn identify(pid: u32) -> Option<Process> {
    start_ticks(pid).map(|started| Process {
        pid,
        started,
        host: Some(this_host().to_owned()),
    })
}

/// Whether `process` was recorded on this host (a record without a host predates hosts:
/// only a node that owns the database, hence its host, may take it as local).
pub fn is_local(process: &Process, exclusive: bool) -> bool {
    match &process.host {
        Some(host) => host == this_host(),
        None => exclusive,
    }
}

/// Kills the process group `process` leads, if that very process is still alive, and waits
/// until no process of the group lives. Returns whether it killed it.
pub async fn kill_leftover_group(process: &Process) -> bool {
    if start_ticks(process.pid) != Some(process.started) {
        return false;
    }
    if killpg(Pid::from_raw(process.pid as i32), Signal::SIGKILL).is_err() {
        return false;
    }
    let until = Instant::now() + DEATH_WAIT;
    while live_members(process.pid) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// How many processes of group `pgid` are alive (a zombie is not: it runs nothing).
fn live_members(pgid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
                .and_then(stat_fields)
                .is_some_and(|fields| {
                    fields.first().is_some_and(|state| state != "Z")
                        && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
                })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_live_process_is_identified_and_a_reused_pid_is_not_killed() {
        let me = identify(std::process::id()).expect("own start time");
        assert!(me.started > 0);
        assert!(is_local(&me, false));
        let impostor = Process {
            started: me.started + 1,
            ..me
        };
        assert!(
            !kill_leftover_group(&impostor).await,
            "a different start time is another process"
        );
    }

    #[tokio::test]
    async fn a_leftover_group_is_dead_when_the_kill_returns() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30; wait"])
            .process_group(0)
            .spawn()
            .expect("sh");
        let process = identify(child.id().unwrap()).unwrap();
        // The shell and its two sleeps.
        while live_members(process.pid) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(kill_leftover_group(&process).await);
        assert_eq!(
            live_members(process.pid),
            0,
            "no process of the group lives"
        );
        let _ = child.wait().await;
    }

    #[test]
    fn a_process_from_another_host_is_not_local() {
        let elsewhere = Process {
            pid: 1,
            started: 1,
            host: Some("another-boot/pid:[1]".into()),
        };
        assert!(!is_local(&elsewhere, true));
        let unknown = Process {
            host: None,
            ..elsewhere
        };
        assert!(is_local(&unknown, true));
        assert!(!is_local(&unknown, false));
    }
}
