//! SQLite: the embedded default. WAL so readers never wait for the writer, a busy timeout
//! and `BEGIN IMMEDIATE` for every write transaction, so that concurrent processes queue
//! for the write lock instead of failing with "database is locked".

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::sql::impl_store;
use super::{OpenMode, Result, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Whether claims lock rows and jobs (PostgreSQL) or the whole database does.
    const PG: bool = false;

    /// `rest` is the URL after `sqlite://`: a path (relative to `base`), maybe `?mode=ro`.
    pub(super) async fn open(rest: &str, base: &Path, mode: OpenMode) -> Result<Self> {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let read_only = query.split('&').any(|kv| kv == "mode=ro");
        let memory = path == ":memory:";
        let path = if memory || base == Path::new(".") {
            Path::new(path).to_path_buf()
        } else {
            base.join(path)
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !memory
            && !read_only
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let shown = format!("sqlite://{}", path.display());
        // A new file: several processes may meet it at once, and the first one's switch
        // to WAL answers the others' connections "database is locked" without waiting.
        // The first to hold the lock creates and migrates it; the others wait, then find
        // it ready.
        let fresh =
            !memory && !read_only && std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let early_lock = if fresh {
            Some(lock_file(&path).await.map_err(|source| StoreError::Lock {
                path: path.clone(),
                source,
            })?)
        } else {
            None
        };
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?
            .filename(&path)
            .create_if_missing(!read_only)
            .read_only(read_only)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 4 })
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
        let store = SqliteStore { pool };
        store
            .migrate(&shown, &path, read_only, mode, early_lock)
            .await?;
        Ok(store)
    }

    /// Applies what migrations are missing (not when only connecting); refuses a schema
    /// newer than this binary's.
    async fn migrate(
        &self,
        url: &str,
        path: &Path,
        read_only: bool,
        mode: OpenMode,
        lock: Option<std::fs::File>,
    ) -> Result<()> {
        let applied = self.applied(url).await?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        if applied > known {
            return Err(StoreError::SchemaTooNew {
                url: url.to_owned(),
                found: applied,
                known,
            });
        }
        if applied == known || mode == OpenMode::Connect {
            return Ok(());
        }
        if read_only {
            return Err(StoreError::NotInstalled {
                url: url.to_owned(),
            });
        }
        // Several processes may meet a new database at once; sqlx takes no lock on
        // SQLite, so the first one to hold this file's lock migrates and the others find
        // the schema in place.
        let _lock = if lock.is_some() || path.as_os_str() == ":memory:" {
            lock
        } else {
            Some(lock_file(path).await.map_err(|source| StoreError::Lock {
                path: path.to_path_buf(),
                source,
            })?)
        };
        let applied = self.applied(url).await?;
        if applied == known {
            return Ok(());
        }
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|source| match &source {
                sqlx::migrate::MigrateError::Execute(sqlx::Error::Database(db))
                    if db.message().contains("readonly") =>
                {
                    StoreError::ReadOnly {
                        url: url.to_owned(),
                    }
                }
                _ => StoreError::Migrate {
                    url: url.to_owned(),
                    source,
                },
            })
    }

    async fn applied(&self, url: &str) -> Result<i64> {
        Self::applied_version(&self.pool)
            .await
            .map_err(|source| StoreError::Connect {
                url: url.to_owned(),
                source,
            })
    }

    /// The newest migration applied, 0 for a database without jobctl's tables.
    async fn applied_version(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(pool)
        .await?;
        if exists.is_none() {
            return Ok(0);
        }
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(pool)
                .await?;
        Ok(version.unwrap_or(0))
    }

    /// A write transaction that takes the write lock at once: a deferred one that reads
    /// first could fail to upgrade its lock while another process writes.
    /// `BEGIN IMMEDIATE` already holds every other writer off.
    const SHARE_ROWS: &'static str = "";

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Holds an exclusive lock on `<database>.lock` until dropped.
async fn lock_file(db: &Path) -> std::io::Result<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

impl_store!(SqliteStore, Sqlite);
super::queue::impl_queue!(SqliteStore, Sqlite);
