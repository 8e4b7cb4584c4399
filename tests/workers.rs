//! `jobctl worker`, `build --queue [--wait]`, `cancel` and `workers` with real processes,
//! against SQLite and the real PostgreSQL. Each job writes what it did to a file (its
//! side effect), and the checks read that file, not only the builds table.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{PgDatabase, run, wait_until};

/// A started `jobctl` process (killed if the test fails first).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn start(dir: &Path, args: &[&str]) -> Proc {
        Proc::start_under(&[], dir, args)
    }

    /// Started by the command `runner` (none: at once), as `runner… jobctl args…`.
    fn start_under(runner: &[String], dir: &Path, args: &[&str]) -> Proc {
        let jobctl = assert_cmd::cargo::cargo_bin("jobctl");
        let mut command = match runner.split_first() {
            None => Command::new(jobctl),
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(jobctl);
                command
            }
        };
        Proc(
            command
                .current_dir(dir)
                .args(args)
                .env_remove("JOBCTL_CONFIG")
                .env("NO_COLOR", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// Waits for the end (failing after `limit`); exit code and stdout (what is left of
    /// it, if a reader took it), then stderr.
    fn finish(mut self, limit: Duration) -> (i32, String) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                use std::io::Read;
                let mut out = String::new();
                if let Some(mut stdout) = self.0.stdout.take() {
                    stdout.read_to_string(&mut out).unwrap();
                }
                let mut err = String::new();
                self.0
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                return (status.code().unwrap_or(-1), out + &err);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "jobctl did not end within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What a started process prints on stdout, line by line, read on a thread of its own
/// so that a wait for a line can give up.
struct Said {
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Said {
    fn of(proc: &mut Proc) -> Said {
        use std::io::BufRead;
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = proc.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Said {
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (20 s at most) for a line that holds `what`.
    fn until(&mut self, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.seen.iter().any(|l| l.contains(what)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("`{what}` was not said; what was: {:#?}", self.seen),
            }
        }
    }
}

/// Whether `build` (as `builds --json` gives it) failed because worker `name` was lost.
fn lost_by(build: &serde_json::Value, name: &str) -> bool {
    let reason = &build["reason"];
    build["status"] == "failed"
        && reason["kind"] == "runner_lost"
        && reason["worker"] == true
        && reason["who"]
            .as_str()
            .is_some_and(|w| w.starts_with(&format!("worker {name} on ")))
}

/// A folder with `config` whose `storage:` is `url` (SQLite in the folder by default).
fn setup(config: &str, url: Option<&str>) -> tempfile::TempDir {
    let storage = url.unwrap_or("sqlite://.jobctl/state.db");
    common::setup(&format!("storage: {storage}\n{config}"))
}

/// Lines the jobs wrote to `ran.log`: `JOB BUILD start|end TIME`.
fn ran(dir: &Path) -> Vec<(String, i64, String, f64)> {
    std::fs::read_to_string(dir.join("ran.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].to_owned(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

/// A job's command that records its start and end in `ran.log` around `body`.
fn logged(body: &str) -> String {
    format!(
        "echo \"$JOBCTL_JOB_ID $JOBCTL_BUILD_ID start $(date +%s.%N)\" >> ran.log; {body}; s=$?; echo \"$JOBCTL_JOB_ID $JOBCTL_BUILD_ID end $(date +%s.%N)\" >> ran.log; exit $s"
    )
}

fn diamond() -> String {
    let job = |id: &str, deps: &str, body: &str| {
        format!(
            "  - id: {id}\n    run: '{}'\n    dependencies: [{deps}]\n",
            logged(body).replace('\'', "''")
        )
    };
    format!(
        "jobs:\n{}{}    kwargs:\n      A: !retval a\n{}{}",
        job("a", "", "$JOBCTL report retval '\"from a\"'"),
        job("b", "a", "printf %s \"$A\" > b_saw; sleep 0.2"),
        job("c", "a", "sleep 0.2"),
        job("d", "b, c", "true"),
    )
}

/// Two workers run a queued diamond: every build once, in order, and `--wait` follows
/// it to the end with the exit code of `build`.
fn queued_diamond_runs_once_in_order(url: Option<&str>) {
    let dir = setup(&diamond(), url);
    let d = dir.path();
    let (code, _, err) = run(d, &["install"]);
    assert_eq!(code, 0, "{err}");
    let wait = Proc::start(d, &["build", "--all", "--queue", "--wait"]);
    wait_until("the builds to be queued", Duration::from_secs(20), || {
        run(d, &["builds", "--json"]).1.contains("\"created\"")
    });
    let w1 = Proc::start(d, &["worker", "-j2", "--name", "w1", "--until-idle"]);
    let w2 = Proc::start(d, &["worker", "-j2", "--name", "w2", "--until-idle"]);
    let (code, out) = wait.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 succeeded"), "{out}");
    for w in [w1, w2] {
        let (code, out) = w.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "{out}");
    }
    let lines = ran(d);
    assert_eq!(lines.len(), 8, "each job ran once: {lines:?}");
    let at = |job: &str, what: &str| {
        lines
            .iter()
            .find(|l| l.0 == job && l.2 == what)
            .unwrap_or_else(|| panic!("{job} {what} in {lines:?}"))
            .3
    };
    assert!(at("b", "start") >= at("a", "end"));
    assert!(at("c", "start") >= at("a", "end"));
    assert!(at("d", "start") >= at("b", "end").max(at("c", "end")));
    let builds = common::builds(d);
    assert_eq!(builds.len(), 4);
    assert!(builds.iter().all(|b| b["status"] == "successful"));
    assert!(
        builds
            .iter()
            .all(|b| matches!(b["worker"].as_str(), Some("w1" | "w2"))),
        "{builds:?}"
    );
    // b used a's return value (read with its claim), pinned to the build that made it.
    assert_eq!(std::fs::read_to_string(d.join("b_saw")).unwrap(), "from a");
    let (_, show, _) = run(
        d,
        &["show", &common::build_of(&builds, "b")["id"].to_string()],
    );
    assert!(show.contains("a -> build"), "{show}");
    // Queued again while nothing is queued: new builds; queued twice: one.
    let (_, first, _) = run(d, &["build", "a", "--force", "--queue"]);
    let (_, again, _) = run(d, &["build", "a", "--force", "--queue"]);
    assert!(first.starts_with("queued build 5 of a\n"), "{first}");
    assert_eq!(
        again,
        "queued build 5 of a (already queued: the same job and arguments)\n"
    );
    let (_, third, _) = run(d, &["build", "a", "--force", "--queue", "--no-dedup"]);
    assert_eq!(third, "queued build 6 of a\n");
    // Cancel: a queued build at once.
    let (code, out, err) = run(d, &["cancel", "--job", "a"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "build 5 of a: cancelled (it was queued)\nbuild 6 of a: cancelled (it was queued)\n"
    );
    // Delete --cancel: a queued build is cancelled at once, then deleted.
    let (_, queued, _) = run(d, &["build", "d", "--force", "--queue", "--deps", "none"]);
    assert!(queued.starts_with("queued build "), "{queued}");
    let id = queued.split_whitespace().nth(2).unwrap().to_owned();
    let (code, out, err) = run(d, &["delete", &id, "--cancel", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("\"deleted\":{id}")), "{out}");
    let (code, out, _) = run(d, &["workers", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("w1") && out.contains("stopped"), "{out}");
}

#[test]
fn queued_diamond_on_sqlite() {
    queued_diamond_runs_once_in_order(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_diamond_on_postgres() {
    let Some(db) = PgDatabase::create("workers_diamond").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || queued_diamond_runs_once_in_order(Some(&url)))
        .await
        .unwrap();
}

/// A failure closes what waits on it as not run, naming it; `--wait` exits 4 (a build
/// failed), as `build` does.
#[test]
fn a_failure_in_the_queue_closes_its_dependants() {
    let dir = setup(
        "jobs:\n  - {id: bad, run: 'exit 3'}\n  - {id: after, run: 'touch after-ran', dependencies: [bad]}\n",
        None,
    );
    let d = dir.path();
    let wait = Proc::start(d, &["build", "after", "--queue", "--wait"]);
    wait_until("the builds to be queued", Duration::from_secs(20), || {
        run(d, &["builds", "--json"]).1.contains("\"created\"")
    });
    let (code, out) = Proc::start(d, &["worker", "--until-idle"]).finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    let (code, out) = wait.finish(Duration::from_secs(30));
    assert_eq!(code, 4, "as `build` exits: {out}");
    assert!(
        out.contains("not run after: upstream bad (build 1) failed"),
        "{out}"
    );
    assert!(!d.join("after-ran").exists());
}

/// `concurrency: 1` holds across three `jobctl build` processes and two workers started
/// at once: the intervals the job wrote never overlap.
fn concurrency_holds_everywhere(url: Option<&str>) {
    let config = format!(
        "jobs:\n  - id: only\n    concurrency: 1\n    run: '{}'\n",
        logged("sleep 0.3")
    );
    let dir = setup(&config, url);
    let d = dir.path();
    let (code, _, err) = run(d, &["install"]);
    assert_eq!(code, 0, "{err}");
    for _ in 0..2 {
        let (code, _, err) = run(d, &["build", "only", "--force", "--queue", "--no-dedup"]);
        assert_eq!(code, 0, "{err}");
    }
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Proc::start(
            d,
            &["build", "only", "--force", "--progress", "plain"],
        ));
    }
    for name in ["w1", "w2"] {
        procs.push(Proc::start(
            d,
            &["worker", "-j2", "--name", name, "--until-idle"],
        ));
    }
    for p in procs {
        let (code, out) = p.finish(Duration::from_secs(60));
        assert_eq!(code, 0, "{out}");
    }
    let lines = ran(d);
    assert_eq!(lines.len(), 10, "five builds ran: {lines:?}");
    let mut spans: Vec<(f64, f64)> = lines
        .iter()
        .filter(|l| l.2 == "start")
        .map(|s| {
            let end = lines.iter().find(|e| e.1 == s.1 && e.2 == "end").unwrap().3;
            (s.3, end)
        })
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two builds of `only` ran at once: {spans:?}"
        );
    }
}

#[test]
fn concurrency_holds_on_sqlite() {
    concurrency_holds_everywhere(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_holds_on_postgres() {
    let Some(db) = PgDatabase::create("workers_concurrency").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || concurrency_holds_everywhere(Some(&url)))
        .await
        .unwrap();
}

/// kill -9 of a worker mid-build: another worker on the same host sees it is gone and
/// retries the build at once; the first attempt is failed "worker lost", naming it.
#[test]
fn a_killed_workers_build_is_retried_by_another() {
    let config = format!(
        "jobs:\n  - id: slow\n    retries: 1\n    retry_delay: 0s\n    run: '{}'\n",
        logged("sleep 3")
    );
    let dir = setup(&config, None);
    let d = dir.path();
    let (code, _, err) = run(d, &["build", "slow", "--queue"]);
    assert_eq!(code, 0, "{err}");
    let doomed = Proc::start(d, &["worker", "--name", "doomed"]);
    wait_until("the build to start", Duration::from_secs(20), || {
        ran(d).iter().any(|l| l.2 == "start")
    });
    doomed.signal(libc::SIGKILL);
    drop(doomed);
    let (code, out) = Proc::start(d, &["worker", "--name", "rescuer", "--until-idle"])
        .finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    let builds = common::builds(d);
    assert_eq!(builds.len(), 2, "{builds:?}");
    let (second, first) = (&builds[0], &builds[1]);
    assert_eq!(first["status"], "failed");
    assert!(lost_by(first, "doomed"), "{first}");
    assert_eq!(second["status"], "successful");
    assert_eq!(
        (second["attempt"].as_u64(), second["worker"].as_str()),
        (Some(2), Some("rescuer"))
    );
    // What the killed worker's job started was killed with it: no end from build 1.
    assert!(
        !ran(d).iter().any(|l| l.1 == 1 && l.2 == "end"),
        "{:?}",
        ran(d)
    );
}

/// A worker killed with SIGKILL takes its job with it, at once, all of the job's process
/// group (a child in the background too): its warden kills them. It left them running
/// until a jobctl on its machine next looked; a rescuer on another machine ran the
/// build again beside them (seen with the two in UTS namespaces of their own).
#[test]
fn a_killed_workers_jobs_end_with_it() {
    let config =
        "jobs:\n  - id: long\n    run: 'sleep 60 & echo $! > child.pid; echo $$ > pid; wait'\n";
    let dir = setup(config, None);
    let d = dir.path();
    let (code, _, err) = run(d, &["build", "long", "--queue"]);
    assert_eq!(code, 0, "{err}");
    let doomed = Proc::start(d, &["worker", "--name", "doomed"]);
    let twenty = Duration::from_secs(20);
    let pid = |file: &str| -> Option<i32> {
        std::fs::read_to_string(d.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    wait_until("the job to start", twenty, || {
        pid("pid").is_some() && pid("child.pid").is_some()
    });
    let job = [pid("pid").unwrap(), pid("child.pid").unwrap()];
    // Gone, or a zombie that whoever took it over has not reaped yet.
    let gone = |p: i32| {
        std::fs::read_to_string(format!("/proc/{p}/stat")).map_or(true, |stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    };
    assert!(!job.iter().any(|&p| gone(p)), "the job ended by itself");
    doomed.signal(libc::SIGKILL);
    drop(doomed);
    wait_until("the killed worker's job to end", twenty, || {
        job.iter().all(|&p| gone(p))
    });
}

/// SIGTERM drains: the running build finishes and the worker exits 0; with a short drain
/// timeout the build is handed back (queued again, not failed) and another runs it.
#[test]
fn sigterm_drains_then_hands_back() {
    let config = format!(
        "jobs:\n  - id: short\n    run: '{}'\n  - id: long\n    run: '{}'\n",
        logged("sleep 1"),
        logged("if [ -e handed ]; then true; else touch handed; sleep 30; fi"),
    );
    let dir = setup(&config, None);
    let d = dir.path();
    run(d, &["build", "short", "--queue"]);
    let w = Proc::start(d, &["worker", "--name", "drained"]);
    wait_until("short to start", Duration::from_secs(20), || {
        ran(d).iter().any(|l| l.0 == "short")
    });
    w.signal(libc::SIGTERM);
    let (code, out) = w.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 succeeded"), "{out}");
    assert_eq!(
        common::build_of(&common::builds(d), "short")["status"],
        "successful"
    );

    run(d, &["build", "long", "--queue"]);
    let w = Proc::start(
        d,
        &["worker", "--name", "hurried", "--drain-timeout", "200ms"],
    );
    wait_until("long to start", Duration::from_secs(20), || {
        ran(d).iter().any(|l| l.0 == "long")
    });
    w.signal(libc::SIGTERM);
    let (code, out) = w.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 handed back"), "{out}");
    let long = common::build_of(&common::builds(d), "long").clone();
    assert_eq!(long["status"], "created", "queued again: {long}");
    let (code, out) = Proc::start(d, &["worker", "--name", "next", "--until-idle"])
        .finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    let long = common::build_of(&common::builds(d), "long").clone();
    assert_eq!(
        (
            long["status"].as_str(),
            long["worker"].as_str(),
            &long["id"]
        ),
        (Some("successful"), Some("next"), &long["id"]),
        "the same build, run by another worker"
    );
}

/// `jobctl cancel` of a build running on a worker: the worker ends it within a second
/// or so; the build is cancelled, and the worker goes on.
#[test]
fn cancel_reaches_a_build_on_a_worker() {
    let config = format!(
        "jobs:\n  - id: sleeper\n    run: '{}'\n",
        logged("sleep 60")
    );
    let dir = setup(&config, None);
    let d = dir.path();
    run(d, &["build", "sleeper", "--queue"]);
    let w = Proc::start(d, &["worker", "--name", "w", "--lease", "3s"]);
    wait_until("sleeper to start", Duration::from_secs(20), || {
        ran(d).iter().any(|l| l.2 == "start")
    });
    let (code, out, err) = run(d, &["cancel", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "build 1 of sleeper: asked worker w to stop it\n");
    wait_until("the build to be cancelled", Duration::from_secs(10), || {
        common::builds(d)[0]["status"] == "cancelled"
    });
    assert_eq!(common::builds(d)[0]["error"], "cancelled on request");
    w.signal(libc::SIGTERM);
    let (code, out) = w.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{out}");
}

/// A TCP proxy to PostgreSQL that can be cut in two ways. Cut: the connections through it
/// are shut and new ones closed at once, as a refused network looks to the worker behind
/// it. Frozen: nothing passes either way and nothing is closed — new connections are
/// taken and left hanging — as a stopped proxy, a dropped link or a firewall that drops
/// packets looks: every call the worker makes hangs, no error comes.
struct Proxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    frozen: std::sync::Arc<Gate>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &'static str) -> Proxy {
        Proxy::listen("127.0.0.1", upstream)
    }

    /// A proxy listening on `address` (any free port).
    fn listen(address: &str, upstream: &'static str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind((address, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let frozen = std::sync::Arc::new(Gate::default());
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, f, o) = (cut.clone(), frozen.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let (f, o) = (f.clone(), o.clone());
                std::thread::spawn(move || {
                    // Taken, and left hanging while frozen.
                    f.thawed();
                    let Ok(server) = std::net::TcpStream::connect(upstream) else {
                        return;
                    };
                    let mut list = o.lock().unwrap();
                    list.push(client.try_clone().unwrap());
                    list.push(server.try_clone().unwrap());
                    for (from, to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server, client),
                    ] {
                        let f = f.clone();
                        std::thread::spawn(move || pass(from, to, &f));
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            frozen,
            open,
        }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
        self.frozen.set(false);
    }
}

/// Whether the proxy is frozen; those who wait on it are woken by the thaw.
#[derive(Default)]
struct Gate {
    frozen: std::sync::Mutex<bool>,
    thaw: std::sync::Condvar,
}

impl Gate {
    fn set(&self, frozen: bool) {
        *self.frozen.lock().unwrap() = frozen;
        if !frozen {
            self.thaw.notify_all();
        }
    }

    /// Returns once the proxy is not frozen.
    fn thawed(&self) {
        let frozen = self.frozen.lock().unwrap();
        drop(self.thaw.wait_while(frozen, |frozen| *frozen).unwrap());
    }
}

/// Passes bytes from one side to the other; what is read while frozen is held until
/// thawed (the rest waits in the kernel's buffers).
fn pass(mut from: std::net::TcpStream, mut to: std::net::TcpStream, frozen: &Gate) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        frozen.thawed();
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// The proxy frozen rather than cut: see [`Proxy`].
struct Frozen<'a>(&'a Proxy);

impl Cut for Frozen<'_> {
    fn cut(&self) {
        self.0.frozen.set(true);
    }

    fn restore(&self) {
        self.0.restore()
    }
}

/// How a test cuts a worker off from the database, and gives it back.
trait Cut {
    fn cut(&self);
    fn restore(&self);
    /// The command the cut-off worker runs under (none: as the test's own child).
    fn runner(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A host of the worker's own: a network namespace joined to the test's by a veth pair,
/// the worker reaching the database through a [`Proxy`] on this side's end of the link.
/// Cut: this side's end set down, so the kernel drops whatever either side sends, and
/// nothing answers or fails, as a pulled cable or a firewall that drops packets looks to
/// the worker. Made with iproute2, as root; outside CI a machine that cannot is skipped.
struct Host {
    namespace: Namespace,
    link: String,
    /// This side's address on the link.
    address: String,
    proxy: Proxy,
}

/// A network namespace, deleted when dropped (and the veth pair with it).
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

impl Host {
    fn create() -> Option<Host> {
        let id = std::process::id();
        let (a, b) = ((id / 64) % 256, (id % 64) * 4);
        let name = format!("jobctl-test-{id}");
        let link = format!("jct{id}");
        let address = format!("10.213.{a}.{}", b + 1);
        let there = format!("10.213.{a}.{}/30", b + 2);
        let steps: [&[&str]; 7] = [
            &["netns", "add", &name],
            &[
                "link", "add", &link, "type", "veth", "peer", "name", "jobctl0", "netns", &name,
            ],
            &["addr", "add", &format!("{address}/30"), "dev", &link],
            &["link", "set", &link, "up"],
            &["-n", &name, "addr", "add", &there, "dev", "jobctl0"],
            &["-n", &name, "link", "set", "jobctl0", "up"],
            &["-n", &name, "link", "set", "lo", "up"],
        ];
        let mut namespace = None;
        for step in steps {
            let failed = match Command::new("ip").args(step).output() {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
                Err(err) => Some(format!("cannot run ip: {err}")),
            };
            if let Some(why) = failed {
                let why = format!("`ip {}` failed: {why}", step.join(" "));
                if std::env::var_os("CI").is_none() {
                    eprintln!(
                        "skipping the network namespace test: {why} (it needs root and iproute2)"
                    );
                    return None;
                }
                panic!("CI must run the network namespace test, but {why}");
            }
            namespace.get_or_insert_with(|| Namespace(name.clone()));
        }
        Some(Host {
            namespace: namespace.unwrap(),
            proxy: Proxy::listen(&address, "127.0.0.1:5432"),
            link,
            address,
        })
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Cut for Host {
    fn cut(&self) {
        self.ip(&["link", "set", &self.link, "down"]);
    }

    fn restore(&self) {
        self.ip(&["link", "set", &self.link, "up"]);
    }

    fn runner(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.namespace.0]
            .map(str::to_owned)
            .to_vec()
    }
}

impl Cut for Proxy {
    fn cut(&self) {
        Proxy::cut(self)
    }

    fn restore(&self) {
        Proxy::restore(self)
    }
}

/// A login role of its own for the worker: cut off on the server's side, by
/// `pg_terminate_backend` on every connection it has and no new login.
struct Role {
    name: String,
    /// The test database's URL.
    db: String,
    rt: tokio::runtime::Handle,
}

impl Role {
    fn create(db: &str, rt: tokio::runtime::Handle) -> Role {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let role = Role {
            name: format!("jobctl_cut_{}_{nanos}", std::process::id()),
            db: db.to_owned(),
            rt,
        };
        role.sql(&format!(
            "CREATE ROLE {} LOGIN SUPERUSER PASSWORD 'cut'",
            role.name
        ));
        role
    }

    fn sql(&self, sql: &str) -> Vec<i64> {
        self.rt.block_on(async {
            use sqlx::Connection;
            let mut admin = sqlx::PgConnection::connect(&self.db).await.unwrap();
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_all(&mut admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
    }

    /// Ends every connection the role has; how many there were.
    fn terminate(&self) -> usize {
        self.sql(&format!(
            // Materialized first: in one WHERE the server may end every backend before
            // it looks at the name.
            "WITH its AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE usename = '{}') \
             SELECT pid::bigint FROM its WHERE pg_terminate_backend(pid)",
            self.name
        ))
        .len()
    }

    /// The role's connections that listen for the queue's notifications (their last
    /// statement a LISTEN).
    fn listening(&self) -> Vec<i64> {
        self.sql(&format!(
            "SELECT pid::bigint FROM pg_stat_activity WHERE usename = '{}' \
             AND query LIKE 'LISTEN%'",
            self.name
        ))
    }

    /// The build's lease, in ms since the epoch.
    fn lease_until(&self, build: i64) -> i64 {
        self.sql(&format!(
            "SELECT (EXTRACT(EPOCH FROM lease_until) * 1000)::bigint FROM builds WHERE id = {build}"
        ))
        .first()
        .copied()
        .unwrap_or(0)
    }
}

impl Role {
    /// The test database's URL as the role.
    fn url(&self) -> String {
        let (scheme, rest) = self.db.split_once("://").unwrap();
        let (_, host) = rest.rsplit_once('@').unwrap();
        format!("{scheme}://{}:cut@{host}", self.name)
    }
}

impl Cut for Role {
    fn cut(&self) {
        self.sql(&format!("ALTER ROLE {} NOLOGIN", self.name));
        self.terminate();
    }

    fn restore(&self) {
        self.sql(&format!("ALTER ROLE {} LOGIN", self.name));
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.sql(&format!("ALTER ROLE {} NOLOGIN", self.name));
            self.terminate();
            self.sql(&format!("DROP ROLE IF EXISTS {}", self.name));
        }));
    }
}

/// A worker cut off from the database kills its job before its lease runs out; another
/// worker takes the build over after the lease (retried, the first attempt failed "worker
/// lost"), and the two attempts never run at once. The cut-off worker records nothing of
/// the build it lost. Cut here by a proxy that shuts its connections and refuses new ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_from_the_database_stops_its_jobs_in_time() {
    through_proxy("workers_cutoff", false).await;
}

/// The same, with the network gone silent rather than refused: nothing the worker sends
/// gets an answer or an error (the proxy frozen, its connections kept open). Its calls
/// hang; it must still kill its job before its lease ends, and when the network comes
/// back, what it sends late (its renewal, the end it saw) changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_network_goes_silent_stops_its_jobs_in_time() {
    through_proxy("workers_silent", true).await;
}

/// The cut-off story with the worker behind a [`Proxy`], cut or `frozen`.
async fn through_proxy(database: &str, frozen: bool) {
    let Some(db) = PgDatabase::create(database).await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let proxy = Proxy::start("127.0.0.1:5432");
        let proxied = url.replace(":5432/", &format!(":{}/", proxy.port));
        assert_ne!(proxied, url, "the test database is on port 5432");
        match frozen {
            true => cut_off(&url, &proxied, &Frozen(&proxy), |_| {}),
            false => cut_off(&url, &proxied, &proxy, |_| {}),
        }
    })
    .await
    .unwrap();
}

/// The same with the worker on a host of its own (a network namespace) whose link goes
/// down: the kernel drops what it sends, as a pulled cable does.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_link_goes_down_stops_its_jobs_in_time() {
    let Some(db) = PgDatabase::create("workers_link_down").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let Some(host) = Host::create() else {
            return;
        };
        let there = url.replace(
            "127.0.0.1:5432/",
            &format!("{}:{}/", host.address, host.proxy.port),
        );
        assert_ne!(there, url, "the test database is on 127.0.0.1:5432");
        cut_off(&url, &there, &host, |_| {});
    })
    .await
    .unwrap();
}

/// The same, cut on the server's side: every connection of the worker ended with
/// `pg_terminate_backend` and its role refused a new login. Before that, its connections
/// ended once (a restart of the server's side, say): it connects again, renews its lease
/// and the build goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_connections_are_terminated_reconnects_or_stops_in_time() {
    let Some(db) = PgDatabase::create("workers_terminated").await else {
        return;
    };
    let url = db.url.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let role = Role::create(&url, rt);
        let worker_url = role.url();
        cut_off(&url, &worker_url, &role, |build| {
            let before = role.lease_until(build);
            let ended = role.terminate();
            assert!(ended >= 1, "the worker had no connection to end");
            let asked = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            // Its lease is 3 s, renewed each second: renewed again after the end of
            // its connections (a lease that ends 3 s after it or later), over new ones.
            wait_until(
                "the worker to renew its lease over a new connection",
                Duration::from_secs(10),
                || role.lease_until(build) >= asked + 3000,
            );
            assert!(role.lease_until(build) > before);
        })
    })
    .await
    .unwrap();
}

/// A worker whose listener is lost for longer than a reconnect (its logins refused for a
/// while, as while the server restarts) listens again once it can. It used to fall back
/// for good to its 2 s poll: every build queued after waited for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_listens_again_when_the_database_is_back() {
    let Some(db) = PgDatabase::create("workers_listen_again").await else {
        return;
    };
    let url = db.url.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let role = Role::create(&url, rt);
        let dir = setup("jobs:\n  - id: a\n    run: 'true'\n", Some(&url));
        let d = dir.path();
        let (code, _, err) = run(d, &["install"]);
        assert_eq!(code, 0, "{err}");
        let mut worker = Proc::start(d, &["worker", "--name", "w", "--storage", &role.url()]);
        let mut said = Said::of(&mut worker);
        said.until("claims from");
        let twenty = Duration::from_secs(20);
        wait_until("the worker to listen", twenty, || {
            !role.listening().is_empty()
        });
        role.cut();
        said.until("trouble cannot claim builds");
        role.restore();
        said.until("trouble over: claims work again");
        wait_until("the worker to listen again", twenty, || {
            !role.listening().is_empty()
        });
        worker.signal(libc::SIGTERM);
        let (code, out) = worker.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "{out}");
    })
    .await
    .unwrap();
}

/// Runs the cut-off story: `worker_url` is how the worker `cutoff` reaches the database
/// at `url`, `how` cuts it off; `before_cut` runs once the build started on it.
fn cut_off(url: &str, worker_url: &str, how: &dyn Cut, before_cut: impl FnOnce(i64)) {
    let body = "echo $$ > pid.$JOBCTL_BUILD_ID; \
        if [ -e first ]; then for p in pid.*; do [ $p = pid.$JOBCTL_BUILD_ID ] || ! kill -0 $(cat $p) 2>/dev/null || echo overlap >> overlap.log; done; \
        else touch first; sleep 30; fi";
    let config = format!(
        "jobs:\n  - id: cut\n    retries: 1\n    retry_delay: 0s\n    run: '{}'\n",
        logged(body)
    );
    let dir = setup(&config, Some(url));
    let d = dir.path();
    let (code, _, err) = run(d, &["install"]);
    assert_eq!(code, 0, "{err}");
    run(d, &["build", "cut", "--queue"]);
    let cutoff = start_cut_off_worker(&how.runner(), d, worker_url);
    wait_until(
        "the first attempt to start",
        Duration::from_secs(20),
        || ran(d).iter().any(|l| l.2 == "start"),
    );
    before_cut(common::builds(d)[0]["id"].as_i64().unwrap());
    how.cut();
    // It cannot know the lease holder is cut off: it takes the build when the lease ends.
    let other = Proc::start(d, &["worker", "--name", "other"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !common::builds(d)
        .iter()
        .any(|b| b["attempt"] == 2 && b["status"] == "successful")
    {
        if std::time::Instant::now() > deadline {
            other.signal(libc::SIGKILL);
            let (_, out) = other.finish(Duration::from_secs(5));
            panic!(
                "the second attempt did not succeed: {:?}\nworker other said: {out}",
                common::builds(d)
                    .iter()
                    .map(|b| (b["id"].clone(), b["status"].clone(), b["error"].clone()))
                    .collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    other.signal(libc::SIGTERM);
    let (code, out) = other.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    assert!(
        !d.join("overlap.log").exists(),
        "the second attempt started while the first still ran"
    );
    let builds = common::builds(d);
    assert_eq!(builds.len(), 2, "{builds:?}");
    let (second, first) = (&builds[0], &builds[1]);
    assert_eq!(first["status"], "failed", "{first}");
    assert!(lost_by(first, "cutoff"), "{first}");
    assert_eq!(
        (second["status"].as_str(), second["worker"].as_str()),
        (Some("successful"), Some("other"))
    );
    how.restore();
    cutoff.signal(libc::SIGTERM);
    let (code, out) = cutoff.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 lost"), "{out}");
    // What it may have tried to write later changed nothing.
    assert_eq!(common::builds(d)[1]["status"], "failed");
}

fn start_cut_off_worker(runner: &[String], dir: &Path, url: &str) -> Proc {
    Proc::start_under(
        runner,
        dir,
        &[
            "worker",
            "--name",
            "cutoff",
            "--lease",
            "3s",
            "--storage",
            url,
        ],
    )
}

/// Another runner's claim of a build (its token moved on): the worker that ran it has
/// its next lines refused, stops the job at once — long before a renewal would tell it —
/// and nothing it printed after the claim moved is stored.
fn late_writes_of_a_taken_over_build_are_refused(url: Option<&str>) {
    let config = "jobs:\n  - id: ticker\n    run: 'echo $$ > pid; i=0; while [ $i -lt 1200 ]; do echo tick; sleep 0.05; i=$((i + 1)); done'\n";
    let dir = setup(config, url);
    let d = dir.path();
    if url.is_some() {
        let (code, _, err) = run(d, &["install"]);
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = run(d, &["build", "ticker", "--queue"]);
    assert_eq!(code, 0, "{err}");
    // A lease of a minute: a renewal (every 20 s) cannot be what stops it.
    let w = Proc::start(d, &["worker", "--name", "w", "--lease", "60s"]);
    let lines = || {
        let (_, out, _) = run(d, &["logs", "1", "--raw"]);
        out.lines().filter(|l| l.contains("tick")).count()
    };
    wait_until(
        "the job's lines to be stored",
        Duration::from_secs(20),
        || lines() >= 3,
    );
    let pid: i32 = std::fs::read_to_string(d.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Another claim, as a rescue and a claim elsewhere leave it.
    let bump = "UPDATE builds SET token = token + 1 WHERE id = 1";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        match url {
            Some(url) => {
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(bump).execute(&mut c).await.unwrap();
            }
            None => {
                let db = format!("sqlite://{}", d.join(".jobctl/state.db").display());
                let mut c = sqlx::SqliteConnection::connect(&db).await.unwrap();
                sqlx::query(bump).execute(&mut c).await.unwrap();
            }
        }
    });
    let stored = lines();
    // SAFETY: kill with signal 0 only asks whether the process exists.
    let alive = || unsafe { libc::kill(pid, 0) } == 0;
    wait_until(
        "the worker to stop the job",
        Duration::from_secs(10),
        || !alive(),
    );
    assert_eq!(lines(), stored, "nothing was stored after the claim moved");
    w.signal(libc::SIGTERM);
    let (code, out) = w.finish(Duration::from_secs(20));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 failed, 0 handed back, 1 lost"), "{out}");
}

#[test]
fn late_writes_are_refused_on_sqlite() {
    late_writes_of_a_taken_over_build_are_refused(None);
}

#[tokio::test(flavor = "multi_thread")]
async fn late_writes_are_refused_on_postgres() {
    let Some(db) = PgDatabase::create("workers_late_writes").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || late_writes_of_a_taken_over_build_are_refused(Some(&url)))
        .await
        .unwrap();
}

/// `worker --labels` takes what a job's `labels:` takes, and says what it does not.
#[test]
fn a_worker_refuses_labels_a_job_could_not_have() {
    let dir = setup("jobs:\n  - {id: a, run: 'true'}\n", None);
    let d = dir.path();
    let (code, out, err) = run(d, &["worker", "--labels", "gpu,bad label", "--until-idle"]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(
        err,
        "error: `bad label` is not a label: a label is up to 64 letters, digits, `_`, `.` and `-`, such as `gpu`\n"
    );
    let long = "x".repeat(200);
    let (code, _, err) = run(d, &["worker", "--labels", &long, "--until-idle"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("`{}…` is not a label", "x".repeat(61))),
        "{err}"
    );
    let (code, _, err) = run(d, &["worker", "--labels", "\u{1b}[2J", "--until-idle"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no escape reaches the terminal: {err:?}"
    );
    let many: Vec<String> = (0..300).map(|i| format!("l{i}")).collect();
    let (code, _, err) = run(d, &["worker", "--labels", &many.join(","), "--until-idle"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err, "error: a worker has at most 256 labels, not 300\n");
    // The same label twice, and spaces around: one label.
    let (code, out, err) = run(d, &["worker", "--labels", " gpu , gpu,", "--until-idle"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(", labels gpu\n"), "{out}");
    // Nothing was written for the refused ones: only the last worker is listed.
    let (_, listed, _) = run(d, &["workers", "--all"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
}

/// A worker that cannot claim says so, with the reason, once rather than on every try,
/// and says when it can again; what was queued meanwhile then runs. Here another
/// connection holds SQLite's write lock for a while (a long transaction elsewhere).
#[test]
fn a_worker_that_cannot_claim_says_why_and_when_it_can_again() {
    let dir = setup("jobs:\n  - {id: a, run: 'echo ran > a.txt'}\n", None);
    let d = dir.path();
    let (code, _, err) = run(d, &["install"]);
    assert_eq!(code, 0, "{err}");
    // With the default lease a call to the database is given up after 5 s.
    let mut worker = Proc::start(d, &["worker", "--name", "w"]);
    let mut said = Said::of(&mut worker);
    wait_until("the worker's heartbeat", Duration::from_secs(20), || {
        let (_, out, _) = run(d, &["workers", "--json"]);
        out.contains("\"name\": \"w\"")
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut lock = rt.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", d.join(".jobctl/state.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    });
    said.until("trouble cannot claim builds: the database did not answer within 5s");
    // That it says so once, however many tries fail, is `Trouble`'s unit test.
    rt.block_on(async {
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    });
    drop(lock);
    said.until("trouble over: claims work again");
    let (code, out, err) = run(d, &["build", "a", "--queue"]);
    assert_eq!(code, 0, "{out}{err}");
    said.until("ok      a (build 1");
    assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "ran\n");
    worker.signal(libc::SIGTERM);
    let (code, out) = worker.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    let troubles: Vec<&String> = said
        .seen
        .iter()
        .filter(|l| l.contains(" trouble "))
        .collect();
    assert_eq!(troubles.len(), 2, "{:#?}", said.seen);
}

/// A worker whose clock runs a minute behind the database's (and the other workers')
/// keeps its build: leases are taken and judged on the database's clock. Before, its
/// leases looked long expired to every other runner, and another worker ran its build
/// beside it at once. The skewed clock is libfaketime's (Debian: faketime); outside CI a
/// machine without it skips the test.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_clock_is_behind_keeps_its_builds() {
    let Some(db) = PgDatabase::create("workers_clock_behind").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        // Preloaded into the worker itself (`env` execs it: the same process). Its steady
        // clock stays true: only the time of day is a minute behind.
        let library = format!(
            "/usr/lib/{}-linux-gnu/faketime/libfaketime.so.1",
            std::env::consts::ARCH
        );
        if !Path::new(&library).exists() {
            if std::env::var_os("CI").is_none() {
                eprintln!("skipping the skewed clock test: no {library} (Debian: faketime)");
                return;
            }
            panic!("CI must run the skewed clock test, but there is no {library}");
        }
        let behind: Vec<String> = [
            "env",
            &format!("LD_PRELOAD={library}"),
            "FAKETIME=-60s",
            "FAKETIME_DONT_FAKE_MONOTONIC=1",
        ]
        .map(str::to_owned)
        .to_vec();
        let skewed = Command::new(&behind[0])
            .args(&behind[1..])
            .args(["date", "+%s"])
            .output()
            .unwrap();
        let then: i64 = String::from_utf8_lossy(&skewed.stdout)
            .trim()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - then - 60).abs() <= 2,
            "the clock is not a minute behind: {then} against {now}"
        );
        let config = format!(
            "jobs:\n  - id: slow\n    retries: 1\n    retry_delay: 0s\n    run: '{}'\n",
            logged("sleep 6")
        );
        let dir = setup(&config, Some(&url));
        let d = dir.path();
        let (code, _, err) = run(d, &["install"]);
        assert_eq!(code, 0, "{err}");
        run(d, &["build", "slow", "--queue"]);
        let late = Proc::start_under(&behind, d, &["worker", "--name", "late", "--lease", "3s"]);
        wait_until("the build to start", Duration::from_secs(20), || {
            ran(d).iter().any(|l| l.2 == "start")
        });
        let other = Proc::start(d, &["worker", "--name", "other", "--lease", "3s"]);
        wait_until("the build to end", Duration::from_secs(30), || {
            common::builds(d)
                .iter()
                .all(|b| b["status"] != "running" && b["status"] != "created")
        });
        for worker in [&late, &other] {
            worker.signal(libc::SIGTERM);
        }
        let (code, out) = late.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("1 succeeded"), "{out}");
        let (code, out) = other.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "{out}");
        let builds = common::builds(d);
        assert_eq!(builds.len(), 1, "taken over: {builds:#?}");
        assert_eq!(
            (builds[0]["status"].as_str(), builds[0]["worker"].as_str()),
            (Some("successful"), Some("late"))
        );
        let starts = ran(d).iter().filter(|l| l.2 == "start").count();
        assert_eq!(starts, 1, "{:?}", ran(d));
    })
    .await
    .unwrap();
}

/// `--queue --wait` with no worker that could take the build says so, rather than
/// waiting without a word: first that no worker runs, then, once one without the job's
/// label runs, which label is missing; a worker with it then runs the build.
#[test]
fn waiting_on_the_queue_says_when_no_worker_could_take_the_build() {
    let dir = setup("jobs:\n  - {id: g, run: 'true', labels: [gpu]}\n", None);
    let d = dir.path();
    let (code, _, err) = run(d, &["install"]);
    assert_eq!(code, 0, "{err}");
    let mut follow = Proc::start(
        d,
        &["build", "g", "--queue", "--wait", "--progress", "plain"],
    );
    let mut said = Said::of(&mut follow);
    said.until("queued  no worker is running: start one with `jobctl worker`");
    let cpu = Proc::start(d, &["worker", "--labels", "cpu"]);
    said.until(
        "queued  no running worker has the label gpu that g needs (`jobctl worker --labels gpu`)",
    );
    let gpu = Proc::start(d, &["worker", "--labels", "gpu"]);
    said.until("ok      g (build 1");
    let (code, out) = follow.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}");
    for worker in [cpu, gpu] {
        worker.signal(libc::SIGTERM);
        let (code, out) = worker.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "{out}");
    }
}
