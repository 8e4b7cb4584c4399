//! One storage story, run unchanged against SQLite (a temp file) and the real PostgreSQL
//! (a fresh database per run).

mod common;

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use jobctl::config::Config;
use jobctl::store::progress::tree;
use jobctl::store::queue::{Claimer, Queue};
use jobctl::store::status::{JobStatus, Outdated, config_hash, job_statuses};
use jobctl::store::{
    AnyStore, BuildFilter, BuildId, BuildStatus, LogFilter, LogLevel, LogRecord, NewBuild,
    OpenMode, Outcome, Pin, ProgressUpdate, PruneLogs, Reason, Runner, Store, Stream, Write,
};
use serde_json::json;
use std::time::Duration;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn load(dir: &Path, yaml: &str) -> Config {
    let path = dir.join("jobs.yaml.j2");
    std::fs::write(&path, yaml).unwrap();
    jobctl::config::load(&path, &[]).unwrap()
}

const DIAMOND: &str = "jobs:
  - {id: a, run: ./a}
  - {id: b, run: ./b, dependencies: [a]}
  - {id: c, run: ./c, dependencies: [a]}
  - {id: d, run: ./d, dependencies: [b, c]}
";

const CHAIN: &str = "jobs:
  - {id: s1, run: ./s1}
  - {id: s2, run: ./s2, dependencies: [s1]}
  - {id: s3, run: ./s3, dependencies: [s2]}
  - {id: s4, run: ./s4, args: [!retval s3]}
";

/// Builds `job` successfully at time `at`, with the config's current hash.
async fn succeed(store: &AnyStore, config: &Config, job: &str, at: i64) -> BuildId {
    let job = config.job(job).unwrap();
    let id = store
        .create_build(&NewBuild {
            job_id: job.id.to_string(),
            config: serde_json::to_value(job).unwrap(),
            config_hash: config_hash(job),
            pins: Vec::new(),
            attempt: 1,
            created_at: t(at),
        })
        .await
        .unwrap();
    store
        .start_build(id, &Runner::this_process(), t(at))
        .await
        .unwrap();
    store
        .finish_build(id, &Outcome::Successful { retval: None }, t(at))
        .await
        .unwrap();
    id
}

async fn statuses(store: &AnyStore, config: &Config) -> Vec<String> {
    let rows = store.job_builds().await.unwrap();
    job_statuses(config, &config.graph(), &rows)
        .iter()
        .map(|s| match s {
            JobStatus::Outdated {
                because: Outdated::NewerUpstream { job },
            } => format!("outdated({job})"),
            JobStatus::Outdated {
                because: Outdated::ConfigChanged,
            } => "outdated(config)".to_owned(),
            JobStatus::Outdated {
                because: Outdated::Upstream { job, status },
            } => format!("outdated(upstream {job} {status})"),
            other => other.as_str().to_owned(),
        })
        .collect()
}

async fn story(store: AnyStore, dir: &Path) {
    assert_eq!(store.schema_version().await.unwrap(), 6);
    let mut token = store.changes().await.unwrap();
    assert_eq!(store.changes().await.unwrap(), token, "nothing happened");
    // Asserts that a part of the token moved since the last call (a log line or progress
    // moves only the activity part), and remembers the new token.
    macro_rules! moved {
        (builds, $what:literal) => {{
            let now = store.changes().await.unwrap();
            assert_ne!(
                now.builds, token.builds,
                "the builds token did not move: {}",
                $what
            );
            token = now;
        }};
        (activity, $what:literal) => {{
            let now = store.changes().await.unwrap();
            assert_ne!(
                now.activity, token.activity,
                "activity did not move: {}",
                $what
            );
            assert_eq!(now.builds, token.builds, "builds moved: {}", $what);
            token = now;
        }};
    }

    // A build with pins, progress, logs and a nested return value.
    let crawl = store
        .create_build(&NewBuild {
            job_id: "crawl".into(),
            config: json!({"id": "crawl", "run": "./crawl.sh"}),
            config_hash: "h1".into(),
            pins: Vec::new(),
            attempt: 1,
            created_at: t(0),
        })
        .await
        .unwrap();
    let process = store
        .create_build(&NewBuild {
            job_id: "process".into(),
            config: json!({"id": "process", "kwargs": {"input": {"!retval": "crawl"}}}),
            config_hash: "h2".into(),
            pins: vec![
                Pin {
                    job_id: "crawl".into(),
                    build_id: Some(crawl),
                },
                Pin {
                    job_id: "extra".into(),
                    build_id: None,
                },
            ],
            attempt: 2,
            created_at: t(1),
        })
        .await
        .unwrap();
    assert!(process > crawl);
    moved!(builds, "builds created");
    let runner = Runner {
        host: "host-1".into(),
        pid: 4242,
        worker: Some("w1".into()),
    };
    store.start_build(crawl, &runner, t(2)).await.unwrap();
    moved!(builds, "a build started");
    let mut batch = Vec::new();
    for i in 0..250 {
        batch.push(Write::Log(LogRecord {
            build: crawl,
            at: t(3 + i / 100),
            level: if i % 50 == 0 {
                LogLevel::Error
            } else {
                LogLevel::Info
            },
            stream: if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Channel
            },
            message: format!("line {i} ünïcödé 'quoted' \"double\""),
        }));
    }
    for (path, current, total) in [
        (vec!["pages"], 10, Some(100)),
        (vec!["images", "png"], 1, Some(4)),
        (vec!["pages"], 40, Some(100)),
        (vec!["images", "jpg"], 2, Some(4)),
    ] {
        batch.push(Write::Progress(ProgressUpdate {
            build: crawl,
            path: path.into_iter().map(String::from).collect(),
            current,
            total,
            status: Some(format!("at {current}")),
            at: t(4),
        }));
    }
    store.write(&batch).await.unwrap();
    moved!(activity, "logs and progress written");
    store
        .write(&[Write::Progress(ProgressUpdate {
            build: crawl,
            path: vec!["pages".into()],
            current: 40,
            total: Some(100),
            status: Some("at 40".into()),
            at: t(5),
        })])
        .await
        .unwrap();
    moved!(activity, "one progress report of a running build");
    let retval =
        json!({"rows": 12, "nested": {"list": [1, 2.5, null, "ß"]}, "big": "x".repeat(100_000)});
    store
        .finish_build(
            crawl,
            &Outcome::Successful {
                retval: Some(retval.clone()),
            },
            t(10),
        )
        .await
        .unwrap();
    moved!(builds, "a build finished");
    assert_eq!(store.changes().await.unwrap(), token, "nothing happened");

    let build = store.build(crawl).await.unwrap().unwrap();
    assert_eq!(build.status, BuildStatus::Successful);
    assert_eq!(build.retval, Some(retval));
    assert_eq!(build.started_at, Some(t(2)));
    assert_eq!(build.finished_at, Some(t(10)));
    assert_eq!(build.host.as_deref(), Some("host-1"));
    assert_eq!(build.pid, Some(4242));
    assert_eq!(build.worker.as_deref(), Some("w1"));
    assert_eq!(build.config, json!({"id": "crawl", "run": "./crawl.sh"}));
    assert!(store.build(BuildId(999_999)).await.unwrap().is_none());

    let pins = store.pins(process).await.unwrap();
    assert_eq!(
        pins,
        vec![
            Pin {
                job_id: "crawl".into(),
                build_id: Some(crawl)
            },
            Pin {
                job_id: "extra".into(),
                build_id: None
            }
        ]
    );

    // Progress: the latest value per group, groups in first-reported order, sums.
    let rows = store.progress(crawl).await.unwrap();
    assert_eq!(rows.len(), 3);
    let progress = tree(&rows);
    let names: Vec<&str> = progress.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pages", "images"]);
    assert_eq!(progress.children[0].current, 40);
    assert_eq!(
        (progress.children[1].current, progress.children[1].total),
        (3, Some(8))
    );
    assert_eq!((progress.current, progress.total), (43, Some(108)));

    // Logs: all, by level, since a time, after a line (following).
    let logs = store.logs(crawl, &LogFilter::default()).await.unwrap();
    assert_eq!(logs.len(), 250);
    assert_eq!(logs[7].message, "line 7 ünïcödé 'quoted' \"double\"");
    assert_eq!(logs[7].stream, Stream::Channel);
    let errors = store
        .logs(
            crawl,
            &LogFilter {
                min_level: Some(LogLevel::Warning),
                ..LogFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(errors.len(), 5);
    assert!(errors.iter().all(|l| l.level == LogLevel::Error));
    let recent = store
        .logs(
            crawl,
            &LogFilter {
                since: Some(t(5)),
                ..LogFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(recent.len(), 50);
    let after = store
        .logs(
            crawl,
            &LogFilter {
                after_id: Some(logs[240].id),
                limit: Some(3),
                ..LogFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        [&logs[241].message, &logs[242].message, &logs[243].message]
    );
    let tail = store
        .logs(
            crawl,
            &LogFilter {
                tail: Some(3),
                ..LogFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        tail.iter().map(|l| l.id).collect::<Vec<_>>(),
        [logs[247].id, logs[248].id, logs[249].id],
        "the newest lines, oldest first"
    );

    // A failure keeps what a person needs to see.
    store.start_build(process, &runner, t(11)).await.unwrap();
    store
        .finish_build(
            process,
            &Outcome::Failed {
                exit_code: None,
                signal: Some(9),
                timed_out: true,
                reason: Reason::TimedOut,
                stderr_tail: Some("last words\n".into()),
            },
            t(12),
        )
        .await
        .unwrap();
    let failed = store.build(process).await.unwrap().unwrap();
    assert_eq!(failed.status, BuildStatus::Failed);
    assert_eq!(
        (failed.exit_code, failed.signal, failed.timed_out),
        (None, Some(9), true)
    );
    assert_eq!(failed.error.as_deref(), Some("timed out"));
    assert_eq!(failed.reason, Some(Reason::TimedOut));
    assert_eq!(failed.stderr_tail.as_deref(), Some("last words\n"));
    assert_eq!(failed.attempt, 2);

    // Listing: newest first, by job, by status, limited.
    let all = store.builds(&BuildFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|b| b.id).collect::<Vec<_>>(),
        [process, crawl]
    );
    let by_status = store
        .builds(&BuildFilter {
            status: Some(BuildStatus::Failed),
            ..BuildFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_status.len(), 1);
    let by_job = store
        .builds(&BuildFilter {
            job: Some("crawl".into()),
            limit: Some(1),
            ..BuildFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_job[0].id, crawl);

    // Pruning logs by level and age, then deleting a build with everything it owns.
    let pruned = store
        .prune_logs(&PruneLogs {
            level: Some(LogLevel::Info),
            older_than: Some(t(4)),
            ..PruneLogs::default()
        })
        .await
        .unwrap();
    assert_eq!(pruned, 98, "info lines at t(3)");
    let pruned = store
        .prune_logs(&PruneLogs {
            job: Some("crawl".into()),
            level: Some(LogLevel::Error),
            ..PruneLogs::default()
        })
        .await
        .unwrap();
    assert_eq!(pruned, 5);
    assert!(store.delete_build(crawl).await.unwrap());
    assert!(!store.delete_build(crawl).await.unwrap());
    assert!(
        store
            .logs(crawl, &LogFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.progress(crawl).await.unwrap().is_empty());
    assert!(store.delete_build(process).await.unwrap());
    assert!(store.pins(process).await.unwrap().is_empty());

    // Job status on a diamond: not built, success, outdated by an ancestor, failed.
    let diamond = load(dir, DIAMOND);
    assert_eq!(
        statuses(&store, &diamond).await,
        ["not_built", "not_built", "not_built", "not_built"]
    );
    for (job, at) in [("a", 100), ("b", 101), ("c", 102), ("d", 103)] {
        succeed(&store, &diamond, job, at).await;
    }
    assert_eq!(
        statuses(&store, &diamond).await,
        ["success", "success", "success", "success"]
    );
    succeed(&store, &diamond, "a", 110).await;
    assert_eq!(
        statuses(&store, &diamond).await,
        ["success", "outdated(a)", "outdated(a)", "outdated(a)"],
        "d is outdated through b and c, which it depends on"
    );
    succeed(&store, &diamond, "b", 111).await;
    succeed(&store, &diamond, "c", 112).await;
    assert_eq!(
        statuses(&store, &diamond).await,
        ["success", "success", "success", "outdated(c)"]
    );
    let d = store
        .create_build(&NewBuild {
            job_id: "d".into(),
            config: json!({}),
            config_hash: config_hash(diamond.job("d").unwrap()),
            pins: Vec::new(),
            attempt: 1,
            created_at: t(113),
        })
        .await
        .unwrap();
    store.start_build(d, &runner, t(113)).await.unwrap();
    assert_eq!(statuses(&store, &diamond).await[3], "running");
    store
        .finish_build(
            d,
            &Outcome::Failed {
                exit_code: Some(1),
                signal: None,
                timed_out: false,
                reason: Reason::Exit { code: 1 },
                stderr_tail: None,
            },
            t(114),
        )
        .await
        .unwrap();
    assert_eq!(statuses(&store, &diamond).await[3], "failed");

    // A chain of 4, transitively: a newer s1 makes s2, s3 and s4 outdated; then a config
    // edit of s3 makes s3 outdated by itself, and s4 through it.
    let chain = load(dir, CHAIN);
    for (job, at) in [("s1", 200), ("s2", 201), ("s3", 202), ("s4", 203)] {
        succeed(&store, &chain, job, at).await;
    }
    assert_eq!(
        statuses(&store, &chain).await,
        ["success", "success", "success", "success"]
    );
    succeed(&store, &chain, "s1", 210).await;
    assert_eq!(
        statuses(&store, &chain).await,
        ["success", "outdated(s1)", "outdated(s1)", "outdated(s1)"]
    );
    for (job, at) in [("s2", 211), ("s3", 212), ("s4", 213)] {
        succeed(&store, &chain, job, at).await;
    }
    let edited = load(dir, &CHAIN.replace("run: ./s3", "run: ./s3 --fast"));
    assert_eq!(
        statuses(&store, &edited).await,
        [
            "success",
            "success",
            "outdated(config)",
            "outdated(upstream s3 outdated)"
        ]
    );
    let title_only = load(dir, &CHAIN.replace("run: ./s3}", "run: ./s3, title: S3}"));
    assert_eq!(
        statuses(&store, &title_only).await,
        ["success", "success", "success", "success"],
        "a title is not what a job runs"
    );
    succeed(&store, &edited, "s3", 220).await;
    assert_eq!(
        statuses(&store, &edited).await,
        ["success", "success", "success", "outdated(s3)"]
    );

    // A run's way: builds planned at once (claimed by the runner), then starts, process
    // groups, ends and discards written in one batch.
    let runner = Runner {
        host: "box".into(),
        pid: 4242,
        worker: None,
    };
    let planned = |job: &str| NewBuild {
        job_id: job.into(),
        config: json!({}),
        config_hash: "h".into(),
        pins: Vec::new(),
        attempt: 1,
        created_at: t(300),
    };
    let ids = store
        .create_builds(
            &[planned("s1"), planned("s2"), planned("s3")],
            &runner,
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    let first = store.build(ids[0]).await.unwrap().unwrap();
    assert_eq!(first.status, BuildStatus::Created);
    assert_eq!(
        (first.host.as_deref(), first.pid),
        (Some("box"), Some(4242))
    );
    let pin = Pin {
        job_id: "s0".into(),
        build_id: None,
    };
    // The run claims what it starts; a start written for a build not claimed (or ended)
    // changes nothing.
    let claimer = Claimer {
        host: "box".into(),
        pid: 4242,
        ..Claimer::this_process(None, Vec::new())
    };
    assert_eq!(
        store
            .claim(
                &claimer,
                2,
                Some(&ids[..2]),
                Duration::from_secs(30),
                chrono::Utc::now()
            )
            .await
            .unwrap()
            .len(),
        2
    );
    store
        .write(&[
            Write::Started {
                build: ids[0],
                at: t(301),
                pins: vec![pin.clone()],
                pgid: Some(777),
            },
            Write::Started {
                build: ids[1],
                at: t(301),
                pins: Vec::new(),
                pgid: None,
            },
            Write::ProcessGroup {
                build: ids[1],
                pgid: 778,
            },
            Write::Finished {
                build: ids[0],
                outcome: Outcome::Successful {
                    retval: Some(json!({"n": 1})),
                },
                at: t(302),
            },
            Write::Discard { build: ids[2] },
        ])
        .await
        .unwrap();
    let first = store.build(ids[0]).await.unwrap().unwrap();
    assert_eq!(first.status, BuildStatus::Successful);
    assert_eq!(
        (first.started_at, first.finished_at),
        (Some(t(301)), Some(t(302)))
    );
    assert_eq!(
        (first.pgid, first.retval),
        (Some(777), Some(json!({"n": 1})))
    );
    assert_eq!(store.pins(ids[0]).await.unwrap(), vec![pin]);
    let second = store.build(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (second.status, second.pgid),
        (BuildStatus::Running, Some(778))
    );
    assert_eq!(
        store.build(ids[2]).await.unwrap(),
        None,
        "a build that never ran is gone"
    );
    // A discard does not remove a build that ran.
    store
        .write(&[Write::Discard { build: ids[1] }])
        .await
        .unwrap();
    assert!(store.build(ids[1]).await.unwrap().is_some());

    // A cancel request reaches the runner that owns the build, once; an ended build
    // takes none.
    assert!(store.cancel_requests(&runner).await.unwrap().is_empty());
    let token = store.changes().await.unwrap();
    assert!(store.request_cancel(ids[1], t(303)).await.unwrap());
    assert!(store.request_cancel(ids[1], t(304)).await.unwrap());
    assert!(
        !store.request_cancel(ids[0], t(303)).await.unwrap(),
        "it ended"
    );
    assert!(
        !store
            .request_cancel(BuildId(999_999), t(303))
            .await
            .unwrap()
    );
    assert_eq!(store.cancel_requests(&runner).await.unwrap(), vec![ids[1]]);
    let other = Runner {
        pid: 4243,
        ..runner.clone()
    };
    assert!(store.cancel_requests(&other).await.unwrap().is_empty());
    assert_eq!(
        store
            .build(ids[1])
            .await
            .unwrap()
            .unwrap()
            .cancel_requested_at,
        Some(t(303)),
        "the first request's time stays"
    );
    assert_eq!(
        store.changes().await.unwrap(),
        token,
        "a request is no change to show"
    );
    store
        .write(&[Write::Finished {
            build: ids[1],
            outcome: Outcome::Cancelled {
                reason: Reason::cancelled("cancel requested"),
            },
            at: t(305),
        }])
        .await
        .unwrap();
    assert!(store.cancel_requests(&runner).await.unwrap().is_empty());

    // Many at once, more than one statement's rows: each id is its own job's build with
    // its own pin, each start and end lands on its own build, and a build ended twice in
    // one batch keeps the later end.
    let n = 1203;
    let many: Vec<NewBuild> = (0..n)
        .map(|i| NewBuild {
            job_id: format!("m{i}"),
            pins: vec![Pin {
                job_id: format!("p{i}"),
                build_id: None,
            }],
            ..planned("m")
        })
        .collect();
    let ids = store
        .create_builds(&many, &runner, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(ids.len(), n);
    assert_eq!(
        store
            .claim(
                &claimer,
                n,
                Some(&ids),
                Duration::from_secs(30),
                chrono::Utc::now()
            )
            .await
            .unwrap()
            .len(),
        n
    );
    let mut batch: Vec<Write> = ids
        .iter()
        .enumerate()
        .map(|(i, &build)| Write::Started {
            build,
            at: t(400 + i as i64),
            pins: Vec::new(),
            pgid: i.is_multiple_of(2).then_some(10_000 + i as u32),
        })
        .collect();
    let failed = |i: usize| Outcome::Failed {
        exit_code: Some((i % 200) as i32 + 1),
        signal: None,
        timed_out: i.is_multiple_of(3),
        reason: Reason::Exit {
            code: (i % 200) as i32 + 1,
        },
        stderr_tail: i.is_multiple_of(5).then(|| format!("tail {i}\n")),
    };
    batch.extend(ids.iter().enumerate().map(|(i, &build)| Write::Finished {
        build,
        outcome: if i.is_multiple_of(7) {
            Outcome::Successful {
                retval: Some(json!({ "i": i })),
            }
        } else {
            failed(i)
        },
        at: t(2000 + i as i64),
    }));
    batch.push(Write::Finished {
        build: ids[7],
        outcome: failed(7),
        at: t(5000),
    });
    store.write(&batch).await.unwrap();
    for i in [0, 1, 7, 499, 500, 501, 999, 1000, 1202] {
        let b = store.build(ids[i]).await.unwrap().unwrap();
        assert_eq!(b.job_id, format!("m{i}"));
        assert_eq!(
            store.pins(ids[i]).await.unwrap(),
            vec![Pin {
                job_id: format!("p{i}"),
                build_id: None
            }]
        );
        assert_eq!(b.started_at, Some(t(400 + i as i64)));
        assert_eq!(b.pgid, i.is_multiple_of(2).then_some(10_000 + i as u32));
        let (outcome, at) = if i == 7 {
            (failed(7), t(5000))
        } else if i.is_multiple_of(7) {
            (
                Outcome::Successful {
                    retval: Some(json!({ "i": i })),
                },
                t(2000 + i as i64),
            )
        } else {
            (failed(i), t(2000 + i as i64))
        };
        assert_eq!(b.finished_at, Some(at), "build {i}");
        let seen = match outcome {
            Outcome::Successful { retval } => {
                (BuildStatus::Successful, retval, None, false, None, None)
            }
            Outcome::Failed {
                exit_code,
                timed_out,
                reason,
                stderr_tail,
                ..
            } => (
                BuildStatus::Failed,
                None,
                exit_code,
                timed_out,
                Some(reason.to_string()),
                stderr_tail,
            ),
            other => panic!("not made here: {other:?}"),
        };
        assert_eq!(
            (
                b.status,
                b.retval,
                b.exit_code,
                b.timed_out,
                b.error,
                b.stderr_tail
            ),
            seen,
            "build {i}"
        );
    }

    store.uninstall().await.unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 0);
}

#[tokio::test]
async fn story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(dir.path()).await;
    story(store, dir.path()).await;
}

#[tokio::test]
async fn story_on_postgres() {
    let Some(db) = common::PgDatabase::create("story").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = jobctl::store::open(&db.url, dir.path(), OpenMode::Install)
        .await
        .unwrap();
    story(store, dir.path()).await;
}

#[tokio::test]
async fn postgres_needs_install_and_refuses_a_newer_schema() {
    let Some(db) = common::PgDatabase::create("schema").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let err = jobctl::store::open(&db.url, dir.path(), OpenMode::Use)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .ends_with("has no jobctl schema yet: run `jobctl install`"),
        "{err}"
    );
    jobctl::store::open(&db.url, dir.path(), OpenMode::Install)
        .await
        .unwrap();
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'from the future', TRUE, '\\x00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let err = jobctl::store::open(&db.url, dir.path(), OpenMode::Use)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .ends_with("has schema version 99, newer than this jobctl knows (6): upgrade jobctl"),
        "{err}"
    );
}

/// Makes a database look as schema version 1 left it (no cancel requests, no queue).
async fn downgrade_to_v1<C: sqlx::Executor<'static>>(conn: C) {
    sqlx::raw_sql(
        "DROP TABLE build_waits; DROP TABLE build_labels; DROP TABLE workers; \
         DROP INDEX builds_ready; DROP INDEX builds_dedup; DROP INDEX builds_occupying; ALTER TABLE builds DROP COLUMN reason; \
         ALTER TABLE builds DROP COLUMN waiting; ALTER TABLE builds DROP COLUMN not_before; \
         ALTER TABLE builds DROP COLUMN run_owner; ALTER TABLE builds DROP COLUMN concurrency; \
         ALTER TABLE builds DROP COLUMN dedup_key; ALTER TABLE builds DROP COLUMN token; \
         ALTER TABLE builds DROP COLUMN lease_until; ALTER TABLE builds DROP COLUMN runner_id; \
         ALTER TABLE builds DROP COLUMN runner_since; \
         DROP INDEX builds_cancel_requested; \
         ALTER TABLE builds DROP COLUMN cancel_requested_at; \
         DELETE FROM _sqlx_migrations WHERE version >= 2;",
    )
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn sqlite_upgrades_a_version_1_database_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::sqlite_store(dir.path()).await;
    let kept = store
        .create_build(&NewBuild {
            job_id: "old".into(),
            config: json!({}),
            config_hash: "h".into(),
            pins: Vec::new(),
            attempt: 1,
            created_at: t(0),
        })
        .await
        .unwrap();
    drop(store);
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        downgrade_to_v1(&pool).await;
        pool.close().await;
    }
    let store = common::sqlite_store(dir.path()).await;
    assert_eq!(store.schema_version().await.unwrap(), 6);
    let build = store.build(kept).await.unwrap().unwrap();
    assert_eq!(build.cancel_requested_at, None, "old builds are kept");
}

#[tokio::test]
async fn postgres_asks_for_install_to_upgrade_a_version_1_schema() {
    let Some(db) = common::PgDatabase::create("upgrade").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    jobctl::store::open(&db.url, dir.path(), OpenMode::Install)
        .await
        .unwrap();
    {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        downgrade_to_v1(&pool).await;
        pool.close().await;
    }
    let err = jobctl::store::open(&db.url, dir.path(), OpenMode::Use)
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string().ends_with(
            "has schema version 1, older than this jobctl's (6): run `jobctl install` to upgrade it"
        ),
        "{err}"
    );
    let store = jobctl::store::open(&db.url, dir.path(), OpenMode::Install)
        .await
        .unwrap();
    assert_eq!(store.schema_version().await.unwrap(), 6);
}

/// A job's config hash is what its recorded builds are compared with: it must not change
/// from one jobctl to the next, or every job would look outdated after an upgrade.
#[test]
fn a_config_hash_stays_what_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(dir.path(), "jobs:\n  - {id: j0, run: 'true'}\n");
    assert_eq!(
        config_hash(&config.jobs[0]),
        "73443be80d88c1a136fc2b657c1fb1601f6295b9a99d910b757cdebce279fcf2"
    );
}
