//! Builds left `running` by a jobctl that died (kill -9, power loss): found on the next
//! start, closed as failed, and what their jobs left running is killed.
//!
//! A build is an orphan when it runs on this machine and the jobctl recorded as running it
//! is gone. Its job's leftover processes are found by their process group and by the
//! `JOBCTL_BUILD_ID` in their environment, so an unrelated process that reused a number is
//! never touched.

use chrono::Utc;

use crate::store::{AnyStore, Build, BuildFilter, BuildStatus, Outcome, Runner, Store, StoreError};

/// Closes this machine's orphaned builds; returns them with the reason given.
pub async fn recover_orphans(store: &AnyStore) -> Result<Vec<(Build, String)>, StoreError> {
    let me = Runner::this_process();
    let mut closed = Vec::new();
    for status in [BuildStatus::Running, BuildStatus::Created] {
        let builds = store
            .builds(&BuildFilter {
                status: Some(status),
                ..BuildFilter::default()
            })
            .await?;
        for build in builds {
            let (Some(host), Some(pid)) = (&build.host, build.pid) else {
                continue;
            };
            if *host != me.host || pid == me.pid || runner_alive(pid) {
                continue;
            }
            if let Some(pgid) = build.pgid {
                kill_leftovers(pgid, build.id.0);
            }
            let reason = format!("runner died: jobctl (pid {pid}) on {host} is gone");
            store
                .finish_build(
                    build.id,
                    &Outcome::Failed {
                        exit_code: None,
                        signal: None,
                        timed_out: false,
                        error: reason.clone(),
                        stderr_tail: None,
                    },
                    Utc::now(),
                )
                .await?;
            closed.push((build, reason));
        }
    }
    Ok(closed)
}

/// Whether `pid` is a live jobctl process.
fn runner_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as i32, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("jobctl")),
        // Without /proc, a live process with that number is taken to be the runner.
        Err(_) => true,
    }
}

/// Kills the processes of group `pgid` that carry `JOBCTL_BUILD_ID=<build>`.
fn kill_leftovers(pgid: u32, build: i64) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let marker = format!("JOBCTL_BUILD_ID={build}");
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces and parentheses).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let pgrp = rest
            .split_whitespace()
            .nth(2)
            .and_then(|f| f.parse::<u32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes())
        {
            // SAFETY: kill has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
