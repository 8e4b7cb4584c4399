//! Builds whose runner died (kill -9, power loss, a lost machine) are rescued by whoever
//! looks next: the store decides what becomes of them (`Queue::rescue`, the one rescue
//! path); this is the rescuer's side on this machine — whether a runner recorded here is
//! gone, and killing what its builds' jobs left running before anyone runs them again.
//!
//! A runner is gone when no process runs under its pid, or a zombie does, or another
//! process that started later (`src/host.rs`), whatever its program is called. Its
//! builds' leftover processes are found by the `JOBCTL_BUILD_ID` in their environment
//! and their process group (or, when the group was not recorded yet, the
//! `JOBCTL_RUNNER_PID`), so an unrelated process that reused a number is never touched.
//!
//! A `jobctl build` run records its builds' starts in batches: a planned build of a dead
//! run may have started without the database hearing of it. If processes of it are
//! found, it is closed as failed like a running one; if not, it never ran and is removed.

use chrono::Utc;

use crate::store::queue::{Queue, Rescued, Suspect};
use crate::store::{AnyStore, StoreError};

/// Rescues the builds of lost runners — on this machine those whose runner is gone, and
/// anywhere those whose lease ran out — and removes the values folders dead runners left
/// here. Returns what became of each build.
pub async fn rescue(store: &AnyStore) -> Result<Vec<Rescued>, StoreError> {
    remove_dead_values();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    store.rescue(&host, &runner_gone, Utc::now()).await
}

/// Whether the runner of a build on this host is gone; if so, what the build left
/// running is killed first (returned: how many), so that nothing runs it again beside
/// its leftovers.
pub fn runner_gone(suspect: &Suspect) -> Option<usize> {
    let alive = match suspect.since {
        // The exact process its claim recorded.
        Some(since) => crate::host::alive_at(suspect.pid, since),
        // Planned by a run but not claimed yet: a process under that pid that was
        // there when the build was recorded.
        None => crate::host::alive_since(suspect.pid, suspect.created_at),
    };
    if alive {
        return None;
    }
    Some(kill_leftovers(suspect.pgid, suspect.build.0, suspect.pid))
}

/// Removes the folders of values (which may hold secrets) that runners no longer alive
/// left behind in the temporary folder; returns how many.
pub fn remove_dead_values() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(super::process::VALUES_DIR_PREFIX))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // The folder was made by its runner: a process under that number that started
        // after it is another one.
        let made = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(chrono::DateTime::<Utc>::from)
            .unwrap_or_else(|_| Utc::now());
        if pid != std::process::id()
            && !crate::host::alive_since(pid, made)
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Kills the processes of `build` run by the jobctl `runner_pid`: those that carry
/// `JOBCTL_BUILD_ID=<build>` and are in group `pgid` (when known) or carry
/// `JOBCTL_RUNNER_PID=<runner_pid>` (what left the group). Returns how many it signalled.
pub(crate) fn kill_leftovers(pgid: Option<u32>, build: i64, runner_pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let build_marker = format!("JOBCTL_BUILD_ID={build}");
    let runner_marker = format!("JOBCTL_RUNNER_PID={runner_pid}");
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let in_group =
            pgid.is_some_and(|pgid| crate::host::stat(pid).and_then(|s| s.pgrp) == Some(pgid));
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let has = |marker: &str| {
            environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
        };
        // In the build's group, or (having left it: setsid, a daemon) started under
        // that runner: both markers, so a reused number is never taken for it.
        if has(&build_marker) && (in_group || has(&runner_marker)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
    }
    killed
}
