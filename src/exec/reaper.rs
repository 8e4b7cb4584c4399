//! What a job leaves behind when it ends: nothing. A job's processes that left its
//! process group (`setsid`, a double fork, a daemon) are found and killed too.
//!
//! ```text
//!   jobctl (child subreaper) ─┬─ sh (job, group G) ── what stays in G: killpg(G)
//!                             └─ orphans of any job, reparented to jobctl when their
//!                                parent died ── sweep: JOBCTL_BUILD_ID of an ended
//!                                build (or none, once no build runs) → KILL the subtree
//! ```
//!
//! On Linux jobctl makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a
//! process whose parent dies is handed to jobctl rather than to init: every descendant of
//! every job stays below jobctl, whatever group or session it moved to. A sweep lists
//! jobctl's children (`/proc/self/task/*/children`), leaves the job processes it started
//! (they are waited for by their runner), and kills each orphan whose build has ended,
//! with everything below it; the build is read from the `JOBCTL_BUILD_ID` every job's
//! environment carries. An orphan without one is killed once no build of this process
//! runs. Zombies among the orphans are reaped.
//!
//! Elsewhere (macOS, the BSDs) there is no subreaper: a job's process group is killed,
//! and what left it is not found (docs/config.md says so).
//!
//! Why not a cgroup per build: it needs cgroup v2 with a delegated subtree, which most
//! machines that run jobctl (containers, CI runners, hosts with cgroup v1 or hybrid
//! hierarchies, like the one this was written on) do not give a user process.

use std::collections::HashSet;

use super::spawn::live;

/// Builds of this process whose job still runs: their orphans are left alone.
static RUNNING: std::sync::Mutex<Option<HashSet<i64>>> = std::sync::Mutex::new(None);

/// Set once this process is the subreaper: only then are its unknown children orphans
/// of jobs (a program that embeds jobctl may have children of its own).
static REAPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set when a build ended since the last sweep.
static DIRTY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn running() -> std::sync::MutexGuard<'static, Option<HashSet<i64>>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes this process the reaper of its descendants' orphans (Linux; a no-op elsewhere).
pub fn become_subreaper() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // Failing leaves only what left its group unfound, as on other systems.
        if nix::sys::prctl::set_child_subreaper(true).is_ok() {
            REAPER.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Marks `build` as running in this process until the guard is dropped; then its
/// orphans are fair game for the next sweep.
pub fn running_build(build: i64) -> RunningBuild {
    running().get_or_insert_with(HashSet::new).insert(build);
    RunningBuild(build)
}

pub struct RunningBuild(i64);

impl Drop for RunningBuild {
    fn drop(&mut self) {
        if let Some(set) = running().as_mut() {
            set.remove(&self.0);
        }
        DIRTY.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether a build ended since the last sweep.
pub fn dirty() -> bool {
    DIRTY.load(std::sync::atomic::Ordering::Relaxed)
}

/// Kills what `build` left behind outside its process group, now (its job's own process
/// has ended, but something holds its pipes). Returns how many processes were signalled.
pub fn kill_build_leftovers(build: i64) -> usize {
    sweep_with(|marker| marker == Some(build))
}

/// Kills the orphans of ended builds (and, when no build runs and this process is the
/// subreaper, those that carry no build), and reaps the orphans that are gone. Returns
/// how many were signalled.
pub fn sweep() -> usize {
    DIRTY.store(false, std::sync::atomic::Ordering::Relaxed);
    let running = running().clone().unwrap_or_default();
    let reaper = REAPER.load(std::sync::atomic::Ordering::Relaxed);
    sweep_with(|marker| match marker {
        Some(build) => !running.contains(&build),
        None => reaper && running.is_empty(),
    })
}

/// Sweeps until no orphan is left or `within` has passed (the end of a run).
pub async fn sweep_all(within: std::time::Duration) {
    let until = tokio::time::Instant::now() + within;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let signalled = sweep();
        let done = signalled == 0 && !orphans().into_iter().any(is_zombie);
        if done || tokio::time::Instant::now() >= until {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(50));
    }
}

/// Signals the orphans `doomed` picks by their build marker, with all below them; reaps
/// those that are zombies.
fn sweep_with(doomed: impl Fn(Option<i64>) -> bool) -> usize {
    let mut signalled = 0;
    for pid in orphans() {
        if is_zombie(pid) {
            reap(pid);
            continue;
        }
        // A worker's warden carries no build, and stays as long as the worker.
        if super::warden::is_warden(pid) {
            continue;
        }
        if doomed(build_marker(pid)) {
            signalled += kill_tree(pid);
        }
    }
    signalled
}

/// jobctl's children that are not job processes it started (those are waited for by
/// their runners).
fn orphans() -> Vec<i32> {
    let _no_starts = super::spawn::no_starts();
    let children = children_of(std::process::id() as i32, true);
    let live = live();
    let live = live.as_ref();
    children
        .into_iter()
        .filter(|pid| !live.is_some_and(|l| l.contains(pid)))
        .collect()
}

/// The children of `pid`, from each of its threads (a child belongs to the thread that
/// started it). `all_threads`: look at every thread, not only the main one.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn children_of(pid: i32, all_threads: bool) -> Vec<i32> {
    let mut found = Vec::new();
    let tasks: Vec<String> = match all_threads {
        true => std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default(),
        false => vec![pid.to_string()],
    };
    let mut readable = false;
    for task in tasks {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{task}/children")) {
            readable = true;
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    if !readable {
        // A kernel without CONFIG_PROC_CHILDREN: every process's parent, from /proc.
        found = scan_parents(pid);
    }
    found
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn children_of(_pid: i32, _all_threads: bool) -> Vec<i32> {
    Vec::new()
}

/// The processes whose parent is `parent`, read from every `/proc/N/stat`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn scan_parents(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat_field(pid, 1).is_some_and(|ppid| ppid == parent.to_string()))
        .collect()
}

/// Field `n` after the command name of `/proc/PID/stat` (0: state, 1: parent, 2: group).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n).map(str::to_owned)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn is_zombie(pid: i32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state == "Z")
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn is_zombie(_pid: i32) -> bool {
    false
}

/// The build whose job started `pid`, from its environment.
fn build_marker(pid: i32) -> Option<i64> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"JOBCTL_BUILD_ID="))
        .and_then(|id| std::str::from_utf8(id).ok()?.parse().ok())
}

/// Stops `root` and everything below it, then kills them all: stopped first, so that
/// none forks a new child between the listing and the kill. Returns how many.
fn kill_tree(root: i32) -> usize {
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let pid = tree[i];
        // SAFETY: kill has no memory effects; a process already gone gives ESRCH.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        for child in children_of(pid, true) {
            if !tree.contains(&child) {
                tree.push(child);
            }
        }
        i += 1;
    }
    for &pid in &tree {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // The root is jobctl's child: reaped now if it is already gone, or by a later sweep.
    reap(root);
    tree.len()
}

/// Reaps `pid` if it has ended (never blocks).
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on a child of ours that no runner waits for (not in `live`).
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}
