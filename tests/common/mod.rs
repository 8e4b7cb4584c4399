//! Shared by the integration tests: real databases to run against.

#![allow(dead_code)]

use std::path::Path;

use jobctl::store::{self, AnyStore, OpenMode};

/// The PostgreSQL server tests use (`JOBCTL_TEST_POSTGRES` to point elsewhere).
pub fn postgres_base_url() -> String {
    std::env::var("JOBCTL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh, empty PostgreSQL database for one test, dropped when the guard goes; `None`
/// (with one line saying why) when no server is reachable outside CI. In CI (`CI` set)
/// an unreachable server fails the test.
pub struct PgDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDatabase {
    pub async fn create(test: &str) -> Option<PgDatabase> {
        use sqlx::Connection;
        let admin_url = postgres_base_url();
        let mut admin = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(conn) => conn,
            Err(err) if std::env::var_os("CI").is_none() => {
                eprintln!("skipping the PostgreSQL run of {test}: cannot reach {admin_url}: {err}");
                return None;
            }
            Err(err) => {
                panic!("CI must run the PostgreSQL tests, but {admin_url} is unreachable: {err}")
            }
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("jobctl_{test}_{}_{nanos}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0;
        Some(PgDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // A runtime of its own: Drop may run inside or outside one.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join()
        .unwrap();
    }
}

pub async fn sqlite_store(dir: &Path) -> AnyStore {
    store::open("sqlite://state.db", dir, OpenMode::Use)
        .await
        .unwrap()
}

/// Whether a process whose command line contains `marker` is alive.
pub fn alive(marker: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", marker])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The real binary, in `dir`, with no config from the environment and no colours.
pub fn jobctl(dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("jobctl").unwrap();
    cmd.current_dir(dir)
        .env_remove("JOBCTL_CONFIG")
        .env("NO_COLOR", "1");
    cmd
}

/// A temporary folder holding `config` as `jobs.yaml.j2`.
pub fn setup(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobs.yaml.j2"), config).unwrap();
    dir
}

/// `jobctl ARGS` in `dir` to its end: exit code (-1 for a signal), stdout, stderr.
pub fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = jobctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `jobctl builds --json` (the newest 100).
pub fn builds(dir: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = run(dir, &["builds", "--json", "--limit", "100"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The newest build of `job` among `builds`.
pub fn build_of<'a>(builds: &'a [serde_json::Value], job: &str) -> &'a serde_json::Value {
    builds.iter().find(|b| b["job_id"] == job).unwrap()
}

/// Waits for `ready`, checking every few milliseconds, failing with `what` after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::park_timeout(std::time::Duration::from_millis(20));
    }
}

/// Runs jobctl to its end; its exit code and peak memory (MB). `wait4` reports the
/// largest of jobctl and the children it waited for: keep the jobs small.
#[expect(
    clippy::zombie_processes,
    reason = "wait4 reaps the child itself, to read its peak memory"
)]
pub fn peak_rss(dir: &Path, args: &[&str]) -> (i32, i64) {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 reaps this child (std's handle is then not
    // waited on) and fills the structs it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    (libc::WEXITSTATUS(status), usage.ru_maxrss / 1024)
}
