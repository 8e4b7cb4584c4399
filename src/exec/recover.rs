//! Builds left `running` by a jobctl that died (kill -9, power loss): found on the next
//! start, closed as failed, and what their jobs left running is killed.
//!
//! A build is an orphan when it runs on this machine and the jobctl recorded as running it
//! is gone. Its job's leftover processes are found by the `JOBCTL_BUILD_ID` in their
//! environment and their process group (or, when the group was not recorded yet, the
//! `JOBCTL_RUNNER_PID`), so an unrelated process that reused a number is never touched.
//!
//! Builds are recorded in batches: a `created` build of a dead runner may have started
//! without the database hearing of it. If processes of it are found, it is closed as
//! failed like a running one; if not, it never ran and is removed.

use chrono::Utc;

use crate::store::{
    AnyStore, Build, BuildFilter, BuildStatus, LogFilter, Outcome, Runner, Store, StoreError,
};

/// Closes this machine's orphaned builds; returns them with the reason given.
pub async fn recover_orphans(store: &AnyStore) -> Result<Vec<(Build, String)>, StoreError> {
    let me = Runner::this_process();
    remove_dead_values();
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
            // A worker's build is the queue's to rescue: retried if it can be, what
            // waits on it told (`Queue::rescue`).
            if build.run_owner.is_none() && build.lease_until.is_some() {
                continue;
            }
            if *host != me.host || pid == me.pid || crate::host::alive_since(pid, build.created_at)
            {
                continue;
            }
            let killed = kill_leftovers(build.pgid, build.id.0, pid);
            if status == BuildStatus::Created && killed == 0 {
                store.delete_build(build.id).await?;
                let reason = format!(
                    "removed: planned by jobctl (pid {pid}) on {host}, which died before it started"
                );
                closed.push((build, reason));
                continue;
            }
            let why = crate::vocab::Reason::RunnerLost {
                worker: false,
                who: format!("jobctl (pid {pid}) on {host}"),
                gone: true,
            };
            let reason = why.to_string();
            // It ended when its runner did: its last sign of life, not now.
            let at = last_seen(store, &build).await?;
            store
                .finish_build(build.id, &Outcome::failed(why), at)
                .await?;
            closed.push((build, reason));
        }
    }
    Ok(closed)
}

/// When a build whose runner died was last seen alive: its newest log line or progress
/// report, or its start.
async fn last_seen(store: &AnyStore, build: &Build) -> Result<chrono::DateTime<Utc>, StoreError> {
    let last_log = store
        .logs(
            build.id,
            &LogFilter {
                tail: Some(1),
                ..LogFilter::default()
            },
        )
        .await?
        .last()
        .map(|l| l.at);
    let last_progress = store
        .progress(build.id)
        .await?
        .iter()
        .map(|p| p.updated_at)
        .max();
    Ok([build.started_at, last_log, last_progress]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(build.created_at))
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
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let in_group = pgid.is_some_and(|pgid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the command name (which may hold spaces and parentheses).
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(pgid)
        });
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
            // SAFETY: kill has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed += 1;
        }
    }
    killed
}
