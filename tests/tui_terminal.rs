//! The real `jobctl tui` in a real terminal (tmux), while a `jobctl build` runs in another
//! process: the dashboard starts before there is a database, picks it up, shows the
//! build's progress and its end, cancels another process's build, and gives the terminal
//! back on `q`.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A tmux server of this test's own, killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (with one line saying why) when tmux is missing outside CI; in CI a
    /// missing tmux fails the test.
    fn start(dir: &Path, command: &str) -> Option<Tmux> {
        if Command::new("tmux").arg("-V").output().is_err() {
            if std::env::var_os("CI").is_some() {
                panic!("CI must run the terminal test, but tmux is not installed");
            }
            eprintln!("skipping the terminal test of `jobctl tui`: tmux is not installed");
            return None;
        }
        // One server per test: the tests of this file run side by side.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmux = Tmux {
            socket: format!("jobctl-test-{}-{n}", std::process::id()),
        };
        let started = tmux.run(&[
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            "-c",
            dir.to_str().unwrap(),
            command,
        ]);
        assert!(started.status.success(), "tmux: {:?}", started);
        Some(tmux)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p"]).stdout).into_owned()
    }

    /// Waits until the screen shows what `seen` looks for; panics with the screen after
    /// a generous time.
    fn wait_for(&self, what: &str, seen: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if seen(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the dashboard never showed {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&self, keys: &str) {
        assert!(self.run(&["send-keys", keys]).status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

const CONFIG: &str = r#"
storage: sqlite://.jobctl/state.db
jobs:
  - id: slow
    title: Counts to 30 slowly
    run: |
      i=0
      while [ $i -lt 30 ]; do
        i=$((i + 1))
        echo "{\"type\": \"progress\", \"group\": [\"steps\"], \"current\": $i, \"total\": 30}" >&3
        echo "step $i"
        sleep 0.1
      done
  - id: after
    run: 'true'
    dependencies: [slow]
  - id: forever
    run: sleep 44.4444
"#;

#[test]
fn the_dashboard_follows_a_build_run_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobs.yaml.j2"), CONFIG).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("jobctl");
    let command = format!("{} tui; echo \"tui exited $?\"; sleep 60", bin.display());
    let Some(tmux) = Tmux::start(dir.path(), &command) else {
        return;
    };

    tmux.wait_for("that there is no database yet", |s| {
        s.contains("No database yet") && s.contains("slow")
    });
    assert!(
        !dir.path().join(".jobctl/state.db").exists(),
        "the dashboard creates no database"
    );

    let mut build = Command::new(&bin)
        .args(["build", "after", "--progress", "plain"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = tmux.wait_for("the build running with its progress", |s| {
        s.lines()
            .any(|l| l.contains("slow") && l.contains("running") && l.contains('%'))
    });
    assert!(!running.contains("No database yet"), "{running}");
    assert!(build.wait().unwrap().success());
    tmux.wait_for("both jobs built", |s| {
        s.lines().filter(|l| l.contains("success")).count() == 2
    });

    // The build's detail: its progress tree and its log's last line.
    tmux.keys("Enter");
    tmux.wait_for("the job's builds", |s| s.contains("Builds (1)"));
    for key in ["Tab", "Tab", "Enter"] {
        tmux.keys(key);
    }
    tmux.wait_for("the build's progress and log", |s| {
        s.contains("steps") && s.contains("30/30") && s.contains("step 30")
    });

    // Cancel a build another process runs: filter to it, press c.
    let mut forever = Command::new(&bin)
        .args(["build", "forever", "--progress", "plain"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Each step waits for its screen: keys sent in a burst can reach the dashboard in one
    // read, and an Esc glued to the next key is how a terminal spells Alt.
    tmux.keys("Escape");
    tmux.wait_for("the job view again", |s| s.contains("Builds (1)"));
    tmux.keys("Escape");
    tmux.wait_for("the jobs pane again", |s| s.contains("┌ Jobs ("));
    for key in ["/", "f", "o", "r", "e", "v", "e", "r", "Enter"] {
        tmux.keys(key);
    }
    tmux.wait_for("the filter applied", |s| s.contains("/forever)"));
    tmux.wait_for("forever running", |s| {
        s.lines()
            .any(|l| l.contains("forever") && l.contains("running"))
    });
    tmux.keys("c");
    tmux.wait_for("the cancel asked", |s| s.contains("cancelling #"));
    assert_eq!(
        forever.wait().unwrap().code(),
        Some(4),
        "a cancelled build fails the run"
    );
    let shown = Command::new(&bin)
        .args(["builds", "forever", "--json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(shown.contains("\"cancelled on request\""), "{shown}");

    tmux.keys("q");
    let after = tmux.wait_for("the terminal given back", |s| s.contains("tui exited 0"));
    assert!(
        !after.contains("Build #"),
        "the dashboard's screen is gone after quitting:\n{after}"
    );
}

#[test]
fn the_dashboard_reads_the_config_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("jobs.yaml.j2"),
        "jobs:\n  - {id: alpha, run: 'true'}\n{% include 'more.yaml.j2' %}\n",
    )
    .unwrap();
    std::fs::write(d.join("more.yaml.j2"), "  - {id: beta, run: 'true'}\n").unwrap();
    let bin = assert_cmd::cargo::cargo_bin("jobctl");
    let command = format!("{} tui; echo \"tui exited $?\"; sleep 60", bin.display());
    let Some(tmux) = Tmux::start(d, &command) else {
        return;
    };
    tmux.wait_for("the two jobs", |s| {
        s.contains("alpha") && s.contains("beta")
    });

    // A job added in the included file appears.
    std::fs::write(
        d.join("more.yaml.j2"),
        "  - {id: beta, run: 'true'}\n  - {id: gamma_added, run: 'true', dependencies: [beta]}\n",
    )
    .unwrap();
    tmux.wait_for("the added job", |s| {
        s.contains("gamma_added") && s.contains("config reloaded: 3 jobs (was 2)")
    });

    // A broken edit is an error bar; the jobs before it stay.
    std::fs::write(
        d.join("jobs.yaml.j2"),
        "jobs:\n  - {id: alpha, run: 'true', tmeout: 1h}\n{% include 'more.yaml.j2' %}\n",
    )
    .unwrap();
    let broken = tmux.wait_for("the error bar", |s| {
        s.contains("config not reloaded") && s.contains("unknown job key `tmeout`")
    });
    assert!(broken.contains("gamma_added"), "{broken}");
    assert!(broken.contains("jobs.yaml.j2:2:"), "{broken}");

    // Mended, with a job gone: the bar goes, and so does the job.
    std::fs::write(
        d.join("jobs.yaml.j2"),
        "jobs:\n{% include 'more.yaml.j2' %}\n",
    )
    .unwrap();
    let mended = tmux.wait_for("the mended config", |s| {
        !s.contains("config not reloaded") && s.contains("(was 3)")
    });
    assert!(!mended.contains("alpha"), "{mended}");
    assert!(mended.contains("gamma_added"), "{mended}");

    // And on a key.
    tmux.keys("r");
    tmux.wait_for("the config read on r", |s| {
        s.contains("config reloaded: 2 jobs") && !s.contains("(was")
    });
    tmux.keys("q");
    tmux.wait_for("the terminal given back", |s| s.contains("tui exited 0"));
}

#[test]
fn the_dashboard_shows_a_build_a_worker_runs_and_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("jobs.yaml.j2"), CONFIG).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("jobctl");
    let queued = Command::new(&bin)
        .args(["build", "slow", "--queue"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(queued.status.success(), "{queued:?}");
    let command = format!("{} tui; echo \"tui exited $?\"; sleep 60", bin.display());
    let Some(tmux) = Tmux::start(d, &command) else {
        return;
    };
    tmux.wait_for("slow queued", |s| {
        s.lines()
            .any(|l| l.contains("slow") && l.contains("queued"))
    });
    let mut worker = Command::new(&bin)
        .args(["worker", "--name", "tuiworker"])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tmux.wait_for("the worker's build running", |s| {
        s.lines()
            .any(|l| l.contains("slow") && l.contains("running") && l.contains('%'))
    });
    tmux.keys("w");
    tmux.wait_for("the worker in the workers view", |s| {
        s.contains("Workers (1)")
            && s.lines()
                .any(|l| l.contains("tuiworker") && l.contains("running"))
    });
    tmux.keys("Escape");
    tmux.wait_for("the worker's build done", |s| {
        s.lines()
            .any(|l| l.contains("slow") && l.contains("success"))
    });
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(worker.id() as i32, libc::SIGTERM);
    }
    assert!(worker.wait().unwrap().success());
    tmux.keys("q");
    tmux.wait_for("the terminal given back", |s| s.contains("tui exited 0"));
}

#[test]
fn without_a_terminal_it_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobs.yaml.j2"), CONFIG).unwrap();
    let out = assert_cmd::Command::cargo_bin("jobctl")
        .unwrap()
        .current_dir(dir.path())
        .arg("tui")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(String::from_utf8(out.stderr).unwrap());
    assert!(!dir.path().join(".jobctl").exists(), "nothing was created");
}
