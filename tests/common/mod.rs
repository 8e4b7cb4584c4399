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
