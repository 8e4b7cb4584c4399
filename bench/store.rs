//! Storage benchmark (not a test): batched log and progress writes, and job-status
//! computation for 10k jobs with 100k builds, on SQLite and on PostgreSQL.
//!
//!   cargo bench --bench store                 # both backends
//!   cargo bench --bench store -- sqlite       # one
//!
//! PostgreSQL: `JOBCTL_TEST_POSTGRES` (default postgresql://postgres@127.0.0.1:5432/test)
//! names a server where a scratch database is made and dropped.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use jobctl::store::status::job_statuses;
use jobctl::store::{
    AnyStore, LogLevel, LogRecord, NewBuild, OpenMode, ProgressUpdate, Store, Stream, Write,
};
use serde_json::json;
use sqlx::Connection;

const LOG_ROWS: usize = 200_000;
const PROGRESS_ROWS: usize = 100_000;
const BATCH: usize = 1_000;
const JOBS: usize = 10_000;
const BUILDS_PER_JOB: usize = 10;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    println!(
        "{:10} {:>14} {:>16} {:>22}",
        "backend", "log rows/s", "progress rows/s", "status 10k jobs (ms)"
    );
    if want("sqlite") {
        let dir = tempfile::tempdir().unwrap();
        let store = jobctl::store::open("sqlite://bench.db", dir.path(), OpenMode::Use)
            .await
            .unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        run("sqlite", &store, &url, dir.path()).await;
    }
    if want("postgres") {
        let admin = std::env::var("JOBCTL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into());
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(conn) => conn,
            Err(err) => {
                println!("postgres   skipped: cannot reach {admin}: {err}");
                return;
            }
        };
        let name = format!("jobctl_bench_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        let dir = tempfile::tempdir().unwrap();
        {
            let store = jobctl::store::open(&url, dir.path(), OpenMode::Install)
                .await
                .unwrap();
            run("postgres", &store, &url, dir.path()).await;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

async fn run(backend: &str, store: &AnyStore, url: &str, dir: &Path) {
    let build = store
        .create_build(&NewBuild {
            job_id: "bench".into(),
            config: json!({}),
            config_hash: String::new(),
            pins: Vec::new(),
            attempt: 1,
            created_at: Utc::now(),
        })
        .await
        .unwrap();

    let logs: Vec<Write> = (0..LOG_ROWS)
        .map(|i| {
            Write::Log(LogRecord {
                build,
                at: Utc::now(),
                level: LogLevel::Info,
                stream: Stream::Stdout,
                message: format!("line {i}: fetched https://www.example.com/page/{i} in 12 ms"),
            })
        })
        .collect();
    let start = Instant::now();
    for batch in logs.chunks(BATCH) {
        store.write(batch).await.unwrap();
    }
    let log_rate = LOG_ROWS as f64 / start.elapsed().as_secs_f64();

    // Every update of a batch is a different group (no coalescing inside a batch): each
    // counts as a row written. 20k groups in all, each updated five times.
    let progress: Vec<Write> = (0..PROGRESS_ROWS)
        .map(|i| {
            Write::Progress(ProgressUpdate {
                build,
                path: vec![
                    format!("group-{}", (i / BATCH) % 20),
                    format!("part-{}", i % BATCH),
                ],
                current: i as i64,
                total: Some(PROGRESS_ROWS as i64),
                status: Some("working".into()),
                at: Utc::now(),
            })
        })
        .collect();
    let start = Instant::now();
    for batch in progress.chunks(BATCH) {
        store.write(batch).await.unwrap();
    }
    let progress_rate = PROGRESS_ROWS as f64 / start.elapsed().as_secs_f64();

    let status_ms = job_status_time(store, url, dir).await.as_secs_f64() * 1000.0;
    println!("{backend:10} {log_rate:>14.0} {progress_rate:>16.0} {status_ms:>22.1}");
}

/// 10k jobs in layers of 100, 10 builds each (the last successful); the median of 5
/// computations of every job's status.
async fn job_status_time(store: &AnyStore, url: &str, dir: &Path) -> Duration {
    let mut yaml = String::from("jobs:\n");
    for i in 0..JOBS {
        yaml.push_str(&format!("  - id: job_{i}\n    run: ./work.sh {i}\n"));
        if i >= 100 {
            yaml.push_str(&format!("    dependencies: [job_{}]\n", i - 100));
        }
    }
    let path = dir.join("status.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = jobctl::config::load(&path, &[]).unwrap();
    let graph = config.graph();

    // Fill builds straight through SQL: setting up is not what is measured.
    let statuses = ["failed", "successful"];
    let mut sql = String::new();
    let mut rows = Vec::new();
    for (i, job) in config.jobs.iter().enumerate() {
        for b in 0..BUILDS_PER_JOB {
            let status = statuses[usize::from(b + 1 == BUILDS_PER_JOB || b % 3 == 0)];
            let at =
                Utc::now() - chrono::Duration::seconds((JOBS * BUILDS_PER_JOB - i * 10 - b) as i64);
            rows.push((job.id.to_string(), status, at));
        }
    }
    for chunk in rows.chunks(500) {
        sql.clear();
        sql.push_str("INSERT INTO builds (job_id, status, created_at, started_at, finished_at, config, config_hash) VALUES ");
        for (k, (job, status, at)) in chunk.iter().enumerate() {
            if k > 0 {
                sql.push(',');
            }
            let at = at.to_rfc3339();
            sql.push_str(&format!(
                "('{job}', '{status}', '{at}', '{at}', '{at}', '{{}}', 'h')"
            ));
        }
        execute(url, &sql).await;
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let rows = store.job_builds().await.unwrap();
        let statuses = job_statuses(&config, &graph, &rows);
        assert_eq!(statuses.len(), JOBS);
        times.push(start.elapsed());
    }
    times.sort();
    times[2]
}

async fn execute(url: &str, sql: &str) {
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
