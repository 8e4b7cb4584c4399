//! Eight processes write to one new SQLite file at once, 500 transactions each, while this
//! process reads: no "database is locked", nothing lost.

mod common;

use std::path::Path;
use std::process::Command;

use chrono::Utc;
use jobctl::store::{
    BuildFilter, BuildStatus, LogFilter, LogLevel, LogRecord, NewBuild, OpenMode, Outcome,
    ProgressUpdate, Runner, Store, Stream, Write,
};
use serde_json::json;

const WRITERS: usize = 8;
const TRANSACTIONS: usize = 500;
const LOGS_PER_TRANSACTION: usize = 3;
const CHILD: &str = "JOBCTL_TEST_WRITER_DIR";

/// In a child process (the test binary run again with `CHILD` set): one build, then
/// `TRANSACTIONS` batches of log lines and a progress update, each its own transaction.
/// Ignored: the parent test runs it (with `--ignored`); on its own it has nothing to
/// write to, and a run that returned at once would count as a pass.
#[tokio::test]
#[ignore = "run by `eight_writers_and_a_reader_on_one_file` in child processes"]
async fn writer_child() {
    let dir = std::env::var_os(CHILD).expect("run by the parent test, with its folder");
    let store = jobctl::store::open("sqlite://state.db", Path::new(&dir), OpenMode::Use)
        .await
        .expect("open");
    let me = std::process::id();
    let build = store
        .create_build(&NewBuild {
            job_id: format!("writer_{me}"),
            config: json!({}),
            config_hash: String::new(),
            pins: Vec::new(),
            attempt: 1,
            created_at: Utc::now(),
        })
        .await
        .expect("create");
    store
        .start_build(build, &Runner::this_process(), Utc::now())
        .await
        .expect("start");
    for i in 0..TRANSACTIONS {
        let mut batch: Vec<Write> = (0..LOGS_PER_TRANSACTION)
            .map(|k| {
                Write::Log(LogRecord {
                    build,
                    at: Utc::now(),
                    level: LogLevel::Info,
                    stream: Stream::Stdout,
                    message: format!("{me} {i} {k}"),
                })
            })
            .collect();
        batch.push(Write::Progress(ProgressUpdate {
            build,
            path: vec!["work".into()],
            current: i as i64,
            total: Some(TRANSACTIONS as i64),
            status: None,
            at: Utc::now(),
        }));
        store.write(&batch).await.expect("write");
    }
    store
        .finish_build(
            build,
            &Outcome::Successful {
                retval: Some(json!(me)),
            },
            Utc::now(),
        )
        .await
        .expect("finish");
}

#[tokio::test]
async fn eight_writers_and_a_reader_on_one_file() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..WRITERS)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "writer_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD, dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    // Read while they write, until every child has exited.
    let mut reads = 0;
    let mut store = None;
    loop {
        let done = children.iter_mut().all(|c| c.try_wait().unwrap().is_some());
        if store.is_none() && dir.path().join("state.db").exists() {
            store = jobctl::store::open("sqlite://state.db", dir.path(), OpenMode::Use)
                .await
                .ok();
        }
        if let Some(store) = &store {
            let builds = store
                .builds(&BuildFilter::default())
                .await
                .expect("read builds");
            for b in &builds {
                store
                    .logs(
                        b.id,
                        &LogFilter {
                            limit: Some(10),
                            ..LogFilter::default()
                        },
                    )
                    .await
                    .expect("read logs");
            }
            store.job_builds().await.expect("read job status");
            reads += 1;
        }
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a writer failed: {stderr}");
        assert!(!stderr.contains("locked"), "{stderr}");
    }
    assert!(reads > 0, "the reader read while the writers wrote");

    let store = jobctl::store::open("sqlite://state.db", dir.path(), OpenMode::Use)
        .await
        .unwrap();
    let builds = store.builds(&BuildFilter::default()).await.unwrap();
    assert_eq!(builds.len(), WRITERS);
    for b in &builds {
        assert_eq!(b.status, BuildStatus::Successful);
        let logs = store.logs(b.id, &LogFilter::default()).await.unwrap();
        assert_eq!(
            logs.len(),
            TRANSACTIONS * LOGS_PER_TRANSACTION,
            "{}",
            b.job_id
        );
        let progress = store.progress(b.id).await.unwrap();
        assert_eq!(progress.len(), 1);
        assert_eq!(progress[0].current, TRANSACTIONS as i64 - 1);
    }
}
