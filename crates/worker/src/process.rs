//! Naming processes across a restart. A command attempt's process group outlives a node
//! killed with SIGKILL; the restarted node finds it by pid and start time (a reused pid has
//! another start time) and stops it before the attempt runs again, so that the same command
//! never runs twice at once on this host.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use retryd_store::Process;

/// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Identifies a process that is running now.
pub fn identify(pid: u32) -> Option<Process> {
    start_ticks(pid).map(|started| Process { pid, started })
}

/// Kills the process group `process` leads, if that very process is still alive. Returns
/// whether it did.
pub fn kill_leftover_group(process: Process) -> bool {
    if start_ticks(process.pid) != Some(process.started) {
        return false;
    }
    killpg(Pid::from_raw(process.pid as i32), Signal::SIGKILL).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_identified_and_a_reused_pid_is_not_killed() {
        let me = identify(std::process::id()).expect("own start time");
        assert!(me.started > 0);
        let impostor = Process {
            started: me.started + 1,
            ..me
        };
        assert!(
            !kill_leftover_group(impostor),
            "a different start time is another process"
        );
    }
}
