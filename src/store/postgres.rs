//! PostgreSQL: for teams, and for workers on several machines. The schema is applied by
//! `jobctl install`, not on the fly.

use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::sql::impl_store;
use super::{OpenMode, Result, StoreError, redact_url};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Whether claims lock rows and jobs (PostgreSQL) or the whole database does.
    const PG: bool = true;

    pub(super) async fn open(url: &str, mode: OpenMode) -> Result<Self> {
        let shown = redact_url(url);
        let connect = |source: sqlx::Error| match &source {
            // The server's message is what a person can act on; its source file and line
            // (`at line 948`) read like a line of the config.
            sqlx::Error::Database(said) if said.code().as_deref() == Some("3D000") => {
                StoreError::NoSuchDatabase {
                    url: shown.clone(),
                    name: database_name(url),
                }
            }
            sqlx::Error::Database(said) => StoreError::ServerRefused {
                url: shown.clone(),
                message: said.message().to_owned(),
            },
            _ => StoreError::Connect {
                url: shown.clone(),
                source,
            },
        };
        let options: PgConnectOptions = url.parse().map_err(connect)?;
        // One attempt first: a pool retries a refused connection until its timeout, and
        // a server that is not there should be said at once.
        PgConnection::connect_with(&options)
            .await
            .map_err(connect)?
            .close()
            .await
            .map_err(connect)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let applied = Self::applied_version(&pool)
            .await
            .map_err(|source| StoreError::Connect {
                url: shown.clone(),
                source,
            })?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        if applied > known {
            return Err(StoreError::SchemaTooNew {
                url: shown,
                found: applied,
                known,
            });
        }
        if applied < known && mode != OpenMode::Connect {
            if mode != OpenMode::Install {
                return Err(if applied == 0 {
                    StoreError::NotInstalled { url: shown }
                } else {
                    StoreError::SchemaOld {
                        url: shown,
                        found: applied,
                        known,
                    }
                });
            }
            MIGRATOR
                .run(&pool)
                .await
                .map_err(|source| StoreError::Migrate {
                    url: shown.clone(),
                    source,
                })?;
        }
        Ok(PgStore { pool })
    }

    /// The newest migration applied, 0 for a database without jobctl's tables.
    async fn applied_version(pool: &PgPool) -> Result<i64, sqlx::Error> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
                .fetch_one(pool)
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

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Locks the rows a fenced write reads until it commits: a claim cannot move them.
    const SHARE_ROWS: &'static str = " FOR SHARE";

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

impl_store!(PgStore, Postgres);
super::queue::impl_queue!(PgStore, Postgres);

/// The database a PostgreSQL URL names: its path, without the query.
fn database_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.split_once('/').map_or("", |(_, path)| path);
    path.split('?').next().unwrap_or("").to_owned()
}
