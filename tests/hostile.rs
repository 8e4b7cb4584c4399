//! What jobctl survives: jobs (and configs) that misbehave on purpose, each driven through
//! the real binary. Read this file as the list; each test says what a job tried and what
//! jobctl must still do.

mod common;

use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use common::alive;
use serde_json::Value;

fn jobctl(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("jobctl").unwrap();
    cmd.current_dir(dir)
        .env_remove("JOBCTL_CONFIG")
        .env("NO_COLOR", "1");
    cmd
}

fn setup(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobs.yaml.j2"), config).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = jobctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn builds(dir: &Path) -> Vec<Value> {
    let (code, out, err) = run(dir, &["builds", "--json", "--limit", "100"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn build_of<'a>(builds: &'a [Value], job: &str) -> &'a Value {
    builds.iter().find(|b| b["job_id"] == job).unwrap()
}

/// Waits for `ready`, checking every few milliseconds, failing with `what` after `limit`.
fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// `jobctl ARGS` in `dir`, in the background, its output to a pipe.
fn start(dir: &Path, args: &[&str]) -> Child {
    StdCommand::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(dir)
        .env_remove("JOBCTL_CONFIG")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit within `limit`; its code. Kills it and fails past that.
fn exit_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jobctl did not end within {limit:?}");
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

// --- A run must always end, and end when told -------------------------------------------

/// A job whose process ends while something it started in another session still holds
/// its output: the build ends with its process, successful, and what held the pipe is
/// killed (it used to hang the build for the full 300 s).
#[test]
fn a_leftover_holding_the_pipes_does_not_hold_the_build() {
    let dir = setup("jobs:\n  - {id: j, run: 'setsid sleep 3001.5 & sleep 0.2'}\n");
    let d = dir.path();
    let mut child = start(d, &["build", "j"]);
    let code = exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(0));
    assert_eq!(build_of(&builds(d), "j")["status"], "successful");
    assert!(!alive("sleep 3001.5"), "the escaped process outlived its build");
}

/// A job that double-forks a daemon (which keeps the pipes) and then hangs: its timeout
/// still applies, the build fails as timed out, and the daemon goes too (it used to end
/// "ok" after the daemon's 40 s, through two Ctrl-C).
#[test]
fn a_timeout_applies_to_a_job_whose_daemon_holds_the_pipes() {
    let dir = setup(
        "jobs:\n  - {id: j, timeout: 1s, run: \"(setsid sh -c 'sleep 3002.5' &); sleep 3002.6\"}\n",
    );
    let d = dir.path();
    let mut child = start(d, &["build", "j", "--grace", "1"]);
    let code = exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(4));
    let all = builds(d);
    let j = build_of(&all, "j");
    assert_eq!(j["status"], "failed");
    assert_eq!(j["timed_out"], true, "{j}");
    assert!(!alive("sleep 3002.5"), "the daemon outlived its build");
    assert!(!alive("sleep 3002.6"));
}

/// A real daemon: a new session, its output to /dev/null, the channel closed. Nothing
/// holds the build, and nothing outlives it either.
#[test]
fn a_daemon_that_let_go_of_everything_is_killed_when_its_build_ends() {
    let dir = setup(
        "jobs:\n  - {id: j, run: \"setsid sh -c 'exec sleep 3003.5' </dev/null >/dev/null 2>&1 3>&- &\"}\n",
    );
    let d = dir.path();
    let mut child = start(d, &["build", "j"]);
    assert_eq!(exit_within(&mut child, Duration::from_secs(20)), Some(0));
    assert!(!alive("sleep 3003.5"), "the daemon outlived the run");
}

/// The same, with the portable waiter (SIGCHLD and waitpid, as where there is no pidfd).
#[test]
fn the_portable_waiter_ends_builds_the_same_way() {
    let dir = setup(
        "jobs:
  - {id: a, run: 'setsid sleep 3004.5 & echo out; exit 3'}
  - {id: b, run: 'echo fine'}
",
    );
    let d = dir.path();
    let out = jobctl(d)
        .env("JOBCTL_WAIT", "sigchld")
        .args(["build", "--all", "-j", "2"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let all = builds(d);
    assert_eq!(build_of(&all, "a")["exit_code"], 3);
    assert_eq!(build_of(&all, "b")["status"], "successful");
    assert!(!alive("sleep 3004.5"));
}

/// SIGHUP (a closed terminal, a dropped SSH session) and SIGTERM cancel the run like the
/// first Ctrl-C: every job and what it started is ended, the builds are recorded
/// cancelled with the signal named, and jobctl exits as after Ctrl-C (SIGHUP used to
/// kill jobctl at once and leave its jobs running).
#[test]
fn sighup_and_sigterm_cancel_like_ctrl_c_and_are_named() {
    for (sig, name, marker) in [
        (libc::SIGHUP, "SIGHUP", "3005.5"),
        (libc::SIGTERM, "SIGTERM", "3006.5"),
    ] {
        let config = format!(
            "jobs:\n  - {{id: j, run: 'setsid sleep {marker}1 & sleep {marker}2; wait'}}\n"
        );
        let dir = setup(&config);
        let d = dir.path();
        let mut child = start(d, &["build", "j", "--grace", "1"]);
        wait_until("the job's processes", Duration::from_secs(20), || {
            alive(&format!("sleep {marker}1")) && alive(&format!("sleep {marker}2"))
        });
        signal(&child, sig);
        assert_eq!(exit_within(&mut child, Duration::from_secs(20)), Some(4));
        assert!(!alive(&format!("sleep {marker}")), "{name} left a job running");
        let all = builds(d);
        let j = build_of(&all, "j");
        assert_eq!(j["status"], "cancelled", "{j}");
        assert_eq!(j["error"], format!("cancelled ({name})"), "{j}");
    }
}

/// A jobctl killed with SIGKILL cannot clean up; the next start does, including a job's
/// process that had left the job's group.
#[test]
fn after_kill_9_the_next_start_kills_what_left_the_group_too() {
    let dir = setup(
        "jobs:
  - {id: slow, run: 'setsid sleep 3007.5 & sleep 3007.6; wait'}
  - {id: quick, run: 'true'}
",
    );
    let d = dir.path();
    let mut child = start(d, &["build", "slow"]);
    wait_until("the job's processes", Duration::from_secs(20), || {
        alive("sleep 3007.5") && alive("sleep 3007.6")
    });
    // The build's row knows its process group once the first batch is written.
    wait_until("the build's process group", Duration::from_secs(20), || {
        builds(d).first().is_some_and(|b| b["status"] == "running")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive("sleep 3007.5"), "the job outlives a killed jobctl");
    let (code, out, err) = run(d, &["build", "quick"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("closed build 1 of slow: runner died"), "{out}");
    assert!(!alive("sleep 3007.5"), "the escaped process survived recovery");
    assert!(!alive("sleep 3007.6"));
}

// --- Secrets stay secret ------------------------------------------------------------------

/// Values too long for the environment reach the job through a folder of files, which
/// hold the secrets too: private (0700, files 0600), removed when the build ends, and
/// removed by the next start after a kill -9 (it used to stay in /tmp for good).
#[test]
fn the_values_folder_is_private_and_removed_even_after_kill_9() {
    use std::os::unix::fs::PermissionsExt;

    let big = "x".repeat(140_000);
    let config = format!(
        "secrets: {{token: tok-3009-secret}}
jobs:
  - {{id: slow, run: 'sleep 3009.5', kwargs: {{BIG: {big}, TOKEN: !secret token}}}}
  - {{id: quick, run: 'true', kwargs: {{BIG: {big}}}}}
"
    );
    let dir = setup(&config);
    let d = dir.path();
    let tmp = tempfile::tempdir().unwrap();
    let values = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("jobctl-values-"))
            .collect()
    };
    // A build that ends removes its folder.
    let out = jobctl(d)
        .env("TMPDIR", tmp.path())
        .args(["build", "quick"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(values().is_empty(), "{:?}", values());

    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .env("TMPDIR", tmp.path())
        .args(["build", "slow"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the job", Duration::from_secs(20), || alive("sleep 3009.5"));
    let folders = values();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folders[0]), 0o700);
    let files: Vec<_> = std::fs::read_dir(&folders[0]).unwrap().flatten().collect();
    assert!(!files.is_empty());
    for file in &files {
        assert_eq!(mode(&file.path()), 0o600, "{file:?}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(values().len(), 1, "a killed runner cannot remove it");
    let out = jobctl(d)
        .env("TMPDIR", tmp.path())
        .args(["build", "quick", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(values().is_empty(), "the next start removes it: {:?}", values());
    assert!(!alive("sleep 3009.5"));
}
