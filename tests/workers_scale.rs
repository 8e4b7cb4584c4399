//! Workers at scale and under chaos, with real processes on the real PostgreSQL: 4
//! workers and 10,000 builds of a layered DAG, each run once and in order; 20 rounds of
//! kill -9 of a random worker mid-run while the others go on. What each build did is read
//! from what it wrote (a line per start and end), not only from the builds table.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{PgDatabase, run};

/// A worker process, killed when dropped (a failing test leaves none behind).
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(dir: &Path, name: &str, args: &[&str]) -> Worker {
    Worker(
        Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
            .current_dir(dir)
            .args(["worker", "--name", name])
            .args(args)
            .env_remove("JOBCTL_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Every build's `(id, job, status, attempt, error)`.
fn all_builds(dir: &Path) -> Vec<(i64, String, String, u64, String)> {
    let (code, out, err) = run(dir, &["builds", "--json", "--limit", "100000"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter()
        .map(|b| {
            (
                b["id"].as_i64().unwrap(),
                b["job_id"].as_str().unwrap().to_owned(),
                b["status"].as_str().unwrap().to_owned(),
                b["attempt"].as_u64().unwrap(),
                b["error"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `JOB BUILD start|end TIME` lines the jobs wrote.
fn lines(dir: &Path) -> Vec<(String, i64, String, f64)> {
    std::fs::read_to_string(dir.join("ran.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.to_string(),
                f.get(1)?.parse().ok()?,
                f.get(2)?.to_string(),
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect()
}

/// A layered DAG: layers of `width`, each job after the job above it.
fn layered(url: &str, n: usize, width: usize, run: &str, extra: &str) -> String {
    let mut config = format!("storage: {url}\njobs:\n");
    for i in 0..n {
        let deps = if i >= width {
            format!(", dependencies: [j{}]", i - width)
        } else {
            String::new()
        };
        config.push_str(&format!("  - {{id: j{i}, run: '{run}'{deps}{extra}}}\n"));
    }
    config
}

/// Each job's ended run must start after the ended run of the job it depends on.
fn check_order(log: &[(String, i64, String, f64)], width: usize) {
    let mut ended: HashMap<&str, (f64, f64)> = HashMap::new();
    let mut starts: HashMap<i64, f64> = HashMap::new();
    for (_, build, what, at) in log {
        if what == "start" {
            starts.insert(*build, *at);
        }
    }
    for (job, build, what, at) in log {
        if what == "end" {
            ended.insert(job, (starts[build], *at));
        }
    }
    for (job, (start, _)) in &ended {
        let i: usize = job[1..].parse().unwrap();
        if i >= width {
            let dep = format!("j{}", i - width);
            let (_, dep_end) = ended[dep.as_str()];
            assert!(*start >= dep_end, "{job} started before {dep} ended");
        }
    }
}

const LOGGED: &str = "echo \"$JOBCTL_JOB_ID $JOBCTL_BUILD_ID start $(date +%s.%N)\" >> ran.log; \
                      echo \"$JOBCTL_JOB_ID $JOBCTL_BUILD_ID end $(date +%s.%N)\" >> ran.log";

#[tokio::test(flavor = "multi_thread")]
async fn four_workers_run_ten_thousand_builds_once_each_in_order() {
    let Some(db) = PgDatabase::create("workers_scale").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let n = 10_000;
        let dir = common::setup(&layered(&url, n, 100, LOGGED, ""));
        let d = dir.path();
        let (code, _, err) = run(d, &["install"]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(d, &["build", "--all", "--queue"]);
        assert_eq!(code, 0, "{err}");
        let mut workers: Vec<Worker> = (0..4)
            .map(|i| worker(d, &format!("w{i}"), &["-j", "2", "--until-idle"]))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(900);
        for w in &mut workers {
            loop {
                if let Some(status) = w.0.try_wait().unwrap() {
                    assert!(status.success());
                    break;
                }
                assert!(Instant::now() < deadline, "the workers did not finish");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let builds = all_builds(d);
        assert_eq!(builds.len(), n);
        assert!(builds.iter().all(|b| b.2 == "successful" && b.3 == 1));
        let log = lines(d);
        assert_eq!(log.len(), 2 * n, "each build ran exactly once");
        let mut seen = std::collections::HashSet::new();
        for (_, build, what, _) in &log {
            assert!(
                seen.insert((*build, what.clone())),
                "build {build} ran twice"
            );
        }
        check_order(&log, 100);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_rounds_of_kill_9_lose_no_build_and_never_overlap() {
    let Some(db) = PgDatabase::create("workers_chaos").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || chaos(&url))
        .await
        .unwrap();
}

fn chaos(url: &str) {
    let n = 90;
    // Each run checks that no other run of its job is alive (by the pids they left).
    // (A zombie is not alive: its state, the third field of its stat, is Z.)
    let body = "for p in pid.$JOBCTL_JOB_ID.*; do [ -e $p ] || continue; s=$(cut -d\" \" -f3 /proc/$(cat $p)/stat 2>/dev/null); \
        [ -n \"$s\" ] && [ \"$s\" != Z ] && echo \"$JOBCTL_JOB_ID $(cat $p) $s\" >> overlap.log; done; \
        echo $$ > pid.$JOBCTL_JOB_ID.$JOBCTL_BUILD_ID; \
        echo \"$JOBCTL_JOB_ID $JOBCTL_BUILD_ID start $(date +%s.%N)\" >> ran.log; sleep 1.5; \
        echo \"$JOBCTL_JOB_ID $JOBCTL_BUILD_ID end $(date +%s.%N)\" >> ran.log";
    let dir = common::setup(&layered(url, n, 10, body, ", retries: 30, retry_delay: 0s"));
    let d = dir.path();
    let (code, _, err) = run(d, &["install"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(d, &["build", "--all", "--queue"]);
    assert_eq!(code, 0, "{err}");
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| worker(d, &format!("w{i}"), &["-j", "3", "--lease", "3s"]))
        .collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut killed = 0;
    for round in 0..20 {
        // Mid-run: wait until more builds have started since the last kill.
        let before = lines(d).len();
        let until = Instant::now() + Duration::from_secs(60);
        while lines(d).len() < before + 2 {
            assert!(Instant::now() < until, "round {round}: nothing runs");
            std::thread::sleep(Duration::from_millis(20));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let pick = (seed % workers.len() as u64) as usize;
        let mut victim = workers.swap_remove(pick);
        victim.0.kill().unwrap();
        victim.0.wait().unwrap();
        killed += 1;
        workers.push(worker(
            d,
            &format!("r{round}"),
            &["-j", "3", "--lease", "3s"],
        ));
    }
    // The rest runs to its end.
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let builds = all_builds(d);
        if builds.iter().all(|b| b.2 != "created" && b.2 != "running")
            && builds.iter().filter(|b| b.2 == "successful").count() == n
        {
            break;
        }
        if Instant::now() > until {
            let open: Vec<_> = builds
                .iter()
                .filter(|b| b.2 != "successful")
                .take(20)
                .collect();
            let waits = Command::new("psql")
                .args([
                    url,
                    "-c",
                    "SELECT b.id, b.job_id, b.waiting, w.waits_on, u.job_id, u.status, u.attempt \
                     FROM builds b JOIN build_waits w ON w.build_id = b.id JOIN builds u ON u.id = w.waits_on \
                     WHERE b.status = 'created' ORDER BY b.id LIMIT 10",
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!("the run did not end; not successful: {open:?}\n{waits}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for mut w in workers {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(w.0.id() as i32, libc::SIGTERM);
        }
        assert!(w.0.wait().unwrap().success());
    }
    assert_eq!(killed, 20);
    let builds = all_builds(d);
    let mut successes: HashMap<&str, usize> = HashMap::new();
    for b in &builds {
        assert!(b.2 == "successful" || b.2 == "failed", "{b:?}");
        if b.2 == "failed" {
            assert!(b.4.starts_with("worker lost: worker "), "{b:?}");
            // Retried: the next attempt exists.
            assert!(
                builds.iter().any(|o| o.1 == b.1 && o.3 == b.3 + 1),
                "{b:?} was not retried"
            );
        } else {
            *successes.entry(&b.1).or_default() += 1;
        }
    }
    assert_eq!(successes.len(), n);
    assert!(successes.values().all(|&c| c == 1), "a job succeeded twice");
    assert!(
        builds.iter().any(|b| b.2 == "failed"),
        "no kill hit a running build"
    );
    assert!(
        !d.join("overlap.log").exists(),
        "two runs of a job were alive at once: {}",
        std::fs::read_to_string(d.join("overlap.log")).unwrap_or_default()
    );
    check_order(&lines(d), 10);
}
