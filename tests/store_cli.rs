//! The commands that read and change history, through the real binary, against a real
//! SQLite file filled through the library (the executor that writes builds comes later).

mod common;

use std::path::Path;

use assert_cmd::Command;
use chrono::{DateTime, TimeZone, Utc};
use jobctl::store::status::config_hash;
use jobctl::store::{
    AnyStore, BuildId, LogLevel, LogRecord, NewBuild, OpenMode, Outcome, Pin, ProgressUpdate,
    Runner, Store, Stream, Write,
};
use serde_json::{Value, json};

const CONFIG: &str = r#"secrets:
  token: "tok-9f8e7d-secret"
jobs:
  - id: crawl
    title: Crawl the site
    run: ./crawl.sh
    cleanup: echo "$JOBCTL_BUILD_ID $JOBCTL_JOB_ID $JOBCTL_RETVAL" > cleaned.txt
  - id: process
    run: ./process.sh
    kwargs:
      input: !retval crawl
      token: !secret token
    cleanup: exit 3
  - id: publish
    run: ./publish.sh
    dependencies: [process]
"#;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_763_884_800 + secs, 0).unwrap()
}

fn jobctl(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("jobctl").unwrap();
    cmd.current_dir(dir)
        .env_remove("JOBCTL_CONFIG")
        .env("NO_COLOR", "1");
    cmd
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A config and a database with two builds: crawl (successful, with logs, progress and a
/// return value) and process (failed, pinned to crawl).
async fn setup(dir: &Path) -> (AnyStore, BuildId, BuildId) {
    std::fs::write(dir.join("jobs.yaml.j2"), CONFIG).unwrap();
    let config = jobctl::config::load(&dir.join("jobs.yaml.j2"), &[]).unwrap();
    let store = jobctl::store::open(&config.storage, dir, OpenMode::Use)
        .await
        .unwrap();
    let runner = Runner {
        host: "build-host".into(),
        pid: 777,
        worker: None,
    };
    let job = config.job("crawl").unwrap();
    let crawl = store
        .create_build(&NewBuild {
            job_id: "crawl".into(),
            config: serde_json::to_value(job).unwrap(),
            config_hash: config_hash(job),
            pins: Vec::new(),
            attempt: 1,
            created_at: t(0),
        })
        .await
        .unwrap();
    store.start_build(crawl, &runner, t(1)).await.unwrap();
    let mut batch = Vec::new();
    for (i, (level, message)) in [
        (LogLevel::Debug, "connecting"),
        (LogLevel::Info, "fetched 10 pages"),
        (LogLevel::Warning, "slow response"),
        (LogLevel::Error, "page 7 failed, retrying"),
        (LogLevel::Info, "fetched 20 pages"),
    ]
    .into_iter()
    .enumerate()
    {
        batch.push(Write::Log(LogRecord {
            build: crawl,
            at: t(2 + i as i64),
            level,
            stream: if level == LogLevel::Info {
                Stream::Stdout
            } else {
                Stream::Channel
            },
            message: message.into(),
        }));
    }
    for (path, current, total, status) in [
        (vec![], 20, Some(40), Some("crawling")),
        (vec!["pages"], 20, Some(30), None),
        (vec!["images"], 0, Some(10), Some("waiting")),
    ] {
        batch.push(Write::Progress(ProgressUpdate {
            build: crawl,
            path: path.into_iter().map(String::from).collect(),
            current,
            total,
            status: status.map(String::from),
            at: t(6),
        }));
    }
    store.write(&batch).await.unwrap();
    store
        .finish_build(
            crawl,
            &Outcome::Successful {
                retval: Some(json!({"dir": "/data/crawl", "pages": 20})),
            },
            t(65),
        )
        .await
        .unwrap();
    let job = config.job("process").unwrap();
    let process = store
        .create_build(&NewBuild {
            job_id: "process".into(),
            config: serde_json::to_value(job).unwrap(),
            config_hash: config_hash(job),
            pins: vec![Pin {
                job_id: "crawl".into(),
                build_id: Some(crawl),
            }],
            attempt: 2,
            created_at: t(70),
        })
        .await
        .unwrap();
    store.start_build(process, &runner, t(71)).await.unwrap();
    store
        .finish_build(
            process,
            &Outcome::Failed {
                exit_code: Some(2),
                signal: None,
                timed_out: false,
                reason: jobctl::vocab::Reason::Exit { code: 2 },
                stderr_tail: Some("reading input\nerror: tok-9f8e7d-secret rejected\n".into()),
            },
            t(72),
        )
        .await
        .unwrap();
    (store, crawl, process)
}

#[tokio::test]
async fn listings_show_history_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, crawl, _process) = setup(dir.path()).await;
    let d = dir.path();

    insta::assert_snapshot!("jobs_with_status", ok(jobctl(d).arg("jobs")));
    let jobs: Value = serde_json::from_str(&ok(jobctl(d).args(["jobs", "--json"]))).unwrap();
    assert_eq!(jobs[0]["status"], "success");
    assert_eq!(jobs[1]["status"], "failed");
    assert_eq!(jobs[2]["status"], "not_built");

    insta::assert_snapshot!("builds", ok(jobctl(d).arg("builds")));
    let failed: Value = serde_json::from_str(&ok(
        jobctl(d).args(["builds", "--status", "failed", "--json"])
    ))
    .unwrap();
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["job_id"], "process");
    assert_eq!(failed[0]["exit_code"], 2);
    let text = failed.to_string();
    assert!(!text.contains("tok-9f8e7d-secret"), "{text}");
    assert_eq!(
        ok(jobctl(d).args(["builds", "crawl", "--limit", "1"]))
            .lines()
            .count(),
        2
    );

    insta::assert_snapshot!(
        "show_success",
        ok(jobctl(d).args(["show", &crawl.to_string()]))
    );
    insta::assert_snapshot!("show_failure", ok(jobctl(d).args(["show", "#2"])));
    let shown: Value = serde_json::from_str(&ok(jobctl(d).args(["show", "1", "--json"]))).unwrap();
    assert_eq!(shown["build"]["retval"]["pages"], 20);
    assert_eq!(shown["progress"]["current"], 20);
    assert_eq!(shown["progress"]["children"][1]["name"], "images");

    insta::assert_snapshot!("logs", ok(jobctl(d).args(["logs", "1"])));
    assert_eq!(
        ok(jobctl(d).args(["logs", "1", "--level", "warning"])),
        "2025-11-23 08:00:04Z warning  channel slow response\n\
         2025-11-23 08:00:05Z error    channel page 7 failed, retrying\n"
    );
    assert_eq!(
        ok(jobctl(d).args(["logs", "1", "--since", "2025-11-23T08:00:05Z"]))
            .lines()
            .count(),
        2
    );
    let json_lines = ok(jobctl(d).args(["logs", "1", "--json"]));
    let first: Value = serde_json::from_str(json_lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["level"], "debug");
    assert_eq!(first["message"], "connecting");
    // A finished build: --follow prints what there is and ends.
    assert_eq!(
        ok(jobctl(d).args(["logs", "1", "--follow"]))
            .lines()
            .count(),
        5
    );
}

#[tokio::test]
async fn prune_by_level_age_and_build() {
    let dir = tempfile::tempdir().unwrap();
    let (store, crawl, _) = setup(dir.path()).await;
    let d = dir.path();
    // The lines are from a year before the machine's clock (2026): older than every
    // default retention but critical's 366 days, and there are no critical lines.
    assert_eq!(
        ok(jobctl(d).args(["prune", "--level", "critical"])),
        "deleted 0 log lines\n"
    );
    assert_eq!(
        ok(jobctl(d).args(["prune", "--level", "info", "--older-than", "0s"])),
        "deleted 2 log lines\n"
    );
    assert_eq!(
        ok(jobctl(d).args(["prune", "--build", "1", "--older-than", "0s", "--json"])),
        "{\"deleted_log_lines\": 3}\n"
    );
    assert!(
        store
            .logs(crawl, &Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    let (code, err) = fails(jobctl(d).args(["prune", "--older-than", "soon"]));
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: `soon` is neither a duration (30m, 2d) nor a time (2026-11-23T08:00:00Z)\n"
    );
}

#[tokio::test]
async fn retention_comes_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _, _) = setup(dir.path()).await;
    let d = dir.path();
    // With every level kept ten years, nothing from 2025 goes.
    let config =
        format!("retention: {{debug: 3650d, info: 3650d, warning: 3650d, error: 3650d}}\n{CONFIG}");
    std::fs::write(d.join("jobs.yaml.j2"), config).unwrap();
    assert_eq!(ok(jobctl(d).arg("prune")), "deleted 0 log lines\n");
    std::fs::write(d.join("jobs.yaml.j2"), CONFIG).unwrap();
    assert_eq!(ok(jobctl(d).arg("prune")), "deleted 5 log lines\n");
}

#[tokio::test]
async fn delete_runs_the_cleanup_first_and_keeps_the_build_if_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (store, crawl, process) = setup(dir.path()).await;
    let d = dir.path();
    assert_eq!(
        ok(jobctl(d).args(["delete", "1"])),
        "ran the cleanup of build 1\ndeleted build 1 of crawl\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("cleaned.txt")).unwrap(),
        "1 crawl {\"dir\":\"/data/crawl\",\"pages\":20}\n"
    );
    assert!(store.build(crawl).await.unwrap().is_none());
    assert!(store.progress(crawl).await.unwrap().is_empty());

    let (code, err) = fails(jobctl(d).args(["delete", "2", "--json"]));
    assert_eq!(code, 4);
    assert_eq!(
        err,
        "error: the cleanup of build 2 failed (exit status 3); the build is kept\n"
    );
    assert!(store.build(process).await.unwrap().is_some());

    let (code, err) = fails(jobctl(d).args(["delete", "99"]));
    assert_eq!(code, 2);
    assert_eq!(err, "error: no build 99 in sqlite://.jobctl/state.db\n");
    let (code, err) = fails(jobctl(d).args(["show", "nine"]));
    assert_eq!(code, 2);
    assert!(err.contains("`nine` is not a build number"), "{err}");
}

#[tokio::test]
async fn install_and_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = setup(dir.path()).await;
    drop(store);
    let d = dir.path();
    assert_eq!(
        ok(jobctl(d).arg("install")),
        "jobctl schema version 6 is installed in sqlite://.jobctl/state.db\n"
    );
    let (code, err) = fails(jobctl(d).arg("uninstall"));
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: uninstall deletes every build, log and return value in sqlite://.jobctl/state.db; \
         run `jobctl uninstall --yes` to do it\n"
    );
    assert_eq!(
        ok(jobctl(d).arg("builds")).lines().count(),
        3,
        "nothing lost"
    );
    assert_eq!(
        ok(jobctl(d).args(["uninstall", "--yes"])),
        "dropped jobctl's tables from sqlite://.jobctl/state.db\n"
    );
    // SQLite installs itself again on the next use.
    assert_eq!(ok(jobctl(d).arg("builds")).lines().count(), 1);
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = setup(dir.path()).await;
    drop(store);
    let d = dir.path();
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", d.join(".jobctl/state.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (7, 'from the future', TRUE, x'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let (code, err) = fails(jobctl(d).arg("builds"));
    assert_eq!(code, 3);
    assert_eq!(
        err,
        "error: the database at sqlite://.jobctl/state.db has schema version 7, newer than \
         this jobctl knows (6): upgrade jobctl\n"
    );
}

#[test]
fn an_unreachable_postgres_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jobs.yaml.j2"),
        "storage: postgresql://jobctl:pw@127.0.0.1:9/jobs\njobs: []\n",
    )
    .unwrap();
    let (code, err) = fails(jobctl(dir.path()).arg("builds"));
    assert_eq!(code, 3);
    assert!(
        err.starts_with(
            "error: cannot open the database at postgresql://jobctl:***@127.0.0.1:9/jobs: "
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test]
async fn a_read_only_database_is_one_line_and_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = setup(dir.path()).await;
    drop(store);
    let d = dir.path();
    let db_dir = d.join(".jobctl");
    let _guard = ReadOnly::new(&db_dir);
    let (code, err) = fails(jobctl(d).args(["prune", "--older-than", "0s"]));
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        err,
        "error: cannot delete old log lines: the database is read-only\n"
    );
    drop(_guard);
    assert_eq!(
        ok(jobctl(d).arg("builds")).lines().count(),
        3,
        "nothing lost"
    );
}

/// Makes a folder and the files in it read-only for the length of a test: by permissions
/// for an ordinary user, with the immutable attribute for root (whom permissions do not
/// stop).
struct ReadOnly {
    paths: Vec<std::path::PathBuf>,
    root: bool,
}

impl ReadOnly {
    fn new(dir: &Path) -> ReadOnly {
        use std::os::unix::fs::PermissionsExt;
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.push(dir.to_path_buf());
        let root = is_root();
        for p in &paths {
            if root {
                let status = std::process::Command::new("chattr")
                    .arg("+i")
                    .arg(p)
                    .status()
                    .expect("chattr makes files read-only for root");
                assert!(status.success(), "chattr +i {}", p.display());
            } else {
                let mode = if p.is_dir() { 0o555 } else { 0o444 };
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
        ReadOnly { paths, root }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        for p in self.paths.iter().rev() {
            if self.root {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(p)
                    .status();
            } else {
                let mode = if p.is_dir() { 0o755 } else { 0o644 };
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
            }
        }
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test]
async fn logs_follow_a_running_build_until_it_ends() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (store, _, _) = setup(dir.path()).await;
    let d = dir.path();
    let running = store
        .create_build(&NewBuild {
            job_id: "publish".into(),
            config: json!({}),
            config_hash: String::new(),
            pins: Vec::new(),
            attempt: 1,
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    store
        .start_build(running, &Runner::this_process(), Utc::now())
        .await
        .unwrap();
    let line = |n: usize| {
        Write::Log(LogRecord {
            build: running,
            at: Utc::now(),
            level: LogLevel::Info,
            stream: Stream::Stdout,
            message: format!("step {n}"),
        })
    };
    store.write(&[line(1)]).await.unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .env_remove("JOBCTL_CONFIG")
        .args(["logs", &running.to_string(), "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().ends_with("step 1"));
    // Lines written after it started arrive while the build runs.
    store.write(&[line(2)]).await.unwrap();
    assert!(lines.next().unwrap().unwrap().ends_with("step 2"));
    store.write(&[line(3)]).await.unwrap();
    store
        .finish_build(running, &Outcome::Successful { retval: None }, Utc::now())
        .await
        .unwrap();
    // The last line, then the end: it stops by itself once the build has finished.
    assert!(lines.next().unwrap().unwrap().ends_with("step 3"));
    assert!(lines.next().is_none());
    assert!(child.wait().unwrap().success());
}
