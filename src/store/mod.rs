//! Storage: every build, its pins, progress, logs and return value, in SQLite (embedded,
//! the default) or PostgreSQL (for teams and workers).
//!
//! ```text
//!   config `storage:` URL ──► open() ──► AnyStore ─┬─ SqliteStore (WAL, BEGIN IMMEDIATE)
//!                                                   └─ PgStore
//!        writers: create_build(s) / start_build / finish_build / write(batch)
//!        readers: builds / build / pins / progress / logs / job_states
//!                 (jobctl builds, show, logs, jobs; the TUI)
//! ```
//!
//! Both backends run the same SQL (`sql.rs`, `$1` placeholders work in both); each has its
//! own migrations (`migrations/sqlite`, `migrations/postgres`) embedded in the binary.
//! Writes come in batches so that an executor can put many log lines and progress updates
//! in one transaction. What is derived from builds (a job's status, a progress tree) is
//! computed in `status.rs` and `progress.rs`, pure functions over rows.

mod postgres;
pub mod progress;
pub mod queue;
pub(crate) mod sink;
mod sql;
mod sqlite;
pub mod status;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value as Json;

pub use crate::vocab::{BuildId, BuildStatus, LogLevel, Outcome, Reason, Stream};
pub use postgres::PgStore;
pub use queue::Queue;
pub use sqlite::SqliteStore;

/// A dependency build whose return value a build uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pin {
    pub job_id: String,
    /// `None` when the dependency had no successful build to pin.
    pub build_id: Option<BuildId>,
}

/// What a new build is made from.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub job_id: String,
    /// The resolved job, as `jobctl jobs --json` shows it.
    pub config: Json,
    pub config_hash: String,
    pub pins: Vec<Pin>,
    pub attempt: u32,
    pub created_at: DateTime<Utc>,
}

/// Who runs a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Runner {
    pub host: String,
    pub pid: u32,
    pub worker: Option<String>,
}

impl Runner {
    /// This process on this machine.
    pub fn this_process() -> Runner {
        Runner {
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
            worker: None,
        }
    }
}

/// A build as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Build {
    pub id: BuildId,
    pub job_id: String,
    pub status: BuildStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub config: Json,
    pub config_hash: String,
    pub retval: Option<Json>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Why it failed or was cancelled, in words ([`Reason`]'s, or a skip's).
    pub error: Option<String>,
    /// Why it failed or was cancelled (`None` for a build recorded before reasons were
    /// kept: its `error` has the words).
    pub reason: Option<Reason>,
    pub stderr_tail: Option<String>,
    pub attempt: u32,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub worker: Option<String>,
    /// The job's process group while it runs, to end what a dead runner left behind.
    pub pgid: Option<u32>,
    /// When someone asked for it to be cancelled (its runner acts on it at its next tick).
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The `jobctl build` run it is kept for; `None`: queued for any worker.
    pub run_owner: Option<String>,
    /// Until when its runner holds it (renewed while it runs).
    pub lease_until: Option<DateTime<Utc>>,
    /// The fencing token of its latest claim.
    pub token: i64,
}

impl Build {
    /// How long it ran (so far, for a running build).
    pub fn duration(&self, now: DateTime<Utc>) -> Option<chrono::Duration> {
        let start = self.started_at?;
        Some(self.finished_at.unwrap_or(now) - start)
    }
}

/// One write of a batch. A batch is one transaction: builds start first, end last.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Log(LogRecord),
    Progress(ProgressUpdate),
    /// A created build runs, with the dependency builds it uses (and its process group,
    /// when known by the time the batch is written).
    Started {
        build: BuildId,
        at: DateTime<Utc>,
        pins: Vec<Pin>,
        pgid: Option<u32>,
    },
    /// The process group of a running build's job.
    ProcessGroup {
        build: BuildId,
        pgid: u32,
    },
    Finished {
        build: BuildId,
        outcome: Outcome,
        at: DateTime<Utc>,
    },
    /// A planned build that never started is removed (it did not happen).
    Discard {
        build: BuildId,
    },
}

impl Write {
    /// The build this write is about.
    pub fn build(&self) -> BuildId {
        match self {
            Write::Log(record) => record.build,
            Write::Progress(update) => update.build,
            Write::Started { build, .. }
            | Write::ProcessGroup { build, .. }
            | Write::Finished { build, .. }
            | Write::Discard { build } => *build,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub build: BuildId,
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    pub stream: Stream,
    pub message: String,
}

/// The latest progress of one group of a build.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    pub build: BuildId,
    /// Group names from the top; empty for the build's own progress.
    pub path: Vec<String>,
    pub current: i64,
    pub total: Option<i64>,
    pub status: Option<String>,
    pub at: DateTime<Utc>,
}

/// A stored progress row, in first-reported order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressRow {
    pub path: Vec<String>,
    pub current: i64,
    pub total: Option<i64>,
    pub status: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A stored log line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogRow {
    pub id: i64,
    pub build: BuildId,
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    pub stream: Stream,
    pub message: String,
}

/// Which builds `builds()` returns, newest first.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    pub job: Option<String>,
    pub status: Option<BuildStatus>,
    pub limit: Option<u32>,
}

/// Which log lines `logs()` returns, oldest first.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// This level and above.
    pub min_level: Option<LogLevel>,
    pub since: Option<DateTime<Utc>>,
    /// Only lines after this one (for following a log).
    pub after_id: Option<i64>,
    pub limit: Option<u32>,
    /// Only the newest this many (still oldest first); `limit` is then ignored.
    pub tail: Option<u32>,
}

/// What a job's status is computed from: whether it runs, its latest finished build and
/// its latest success.
#[derive(Debug, Clone, PartialEq)]
pub struct JobBuilds {
    pub job_id: String,
    pub running: bool,
    /// Some build of it is planned and waits to start.
    pub queued: bool,
    pub finished: Option<Finished>,
    pub success: Option<Success>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub id: BuildId,
    pub status: BuildStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Success {
    pub id: BuildId,
    pub at: DateTime<Utc>,
    pub config_hash: String,
}

/// Log lines to delete: those of a job, or a build, older than a time, of a level.
#[derive(Debug, Clone, Default)]
pub struct PruneLogs {
    pub job: Option<String>,
    pub build: Option<BuildId>,
    pub level: Option<LogLevel>,
    pub older_than: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "`{url}` is not a storage URL jobctl knows (use sqlite://PATH or postgresql://USER@HOST/DB)"
    )]
    UnknownScheme { url: String },
    #[error("cannot create the folder `{}` for the database", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock `{}.lock` to apply the schema", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database `{name}` does not exist on the server of {url}: create it (`createdb {name}`), then run `jobctl install`"
    )]
    NoSuchDatabase { url: String, name: String },
    /// The server refused, saying why (its own words, without its source line).
    #[error("cannot open the database at {url}: the server says: {message}")]
    ServerRefused { url: String, message: String },
    #[error("cannot open the database at {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the database at {url} has schema version {found}, newer than this jobctl knows ({known}): upgrade jobctl"
    )]
    SchemaTooNew { url: String, found: i64, known: i64 },
    #[error(
        "the database at {url} has schema version {found}, older than this jobctl's ({known}): run `jobctl install` to upgrade it"
    )]
    SchemaOld { url: String, found: i64, known: i64 },
    #[error("the database at {url} has no jobctl schema yet: run `jobctl install`")]
    NotInstalled { url: String },
    #[error("the database at {url} is read-only")]
    ReadOnly { url: String },
    #[error("cannot apply the schema to {url}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("cannot {action}: the database is read-only")]
    ReadOnlyWrite { action: &'static str },
    #[error("cannot {action}")]
    Query {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored {what} is not valid: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

impl StoreError {
    /// A failed query; a write refused because the database file is read-only says so.
    pub fn query(action: &'static str, source: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &source
            && (db.code().as_deref() == Some("8") || db.message().contains("readonly"))
        {
            return StoreError::ReadOnlyWrite { action };
        }
        StoreError::Query { action, source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything jobctl keeps. Both backends implement it with the same SQL.
pub trait Store: Send + Sync {
    /// Records a new build (status `created`) with its pins.
    fn create_build(&self, build: &NewBuild) -> impl Future<Output = Result<BuildId>> + Send;
    /// Records builds planned by `runner` (status `created`, kept for its run), in one
    /// transaction, each with a lease of `lease` that the run renews (`Queue::renew`):
    /// once it runs out, a rescuer on any host removes what never started.
    fn create_builds(
        &self,
        builds: &[NewBuild],
        runner: &Runner,
        lease: std::time::Duration,
    ) -> impl Future<Output = Result<Vec<BuildId>>> + Send;
    /// Marks a build running, by whom.
    fn start_build(
        &self,
        id: BuildId,
        runner: &Runner,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Records how a build ended.
    fn finish_build(
        &self,
        id: BuildId,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Writes many build changes, log lines and progress updates in one transaction.
    fn write(&self, batch: &[Write]) -> impl Future<Output = Result<()>> + Send;
    /// As [`Store::write`], for a runner that holds claims: the writes about each build of
    /// `fences` are made only while the build is still open under that claim's token
    /// (not rescued, handed back or taken over since). Returns the builds whose writes
    /// were refused for a stale token; nothing of them was written.
    fn write_fenced(
        &self,
        batch: &[Write],
        fences: &[(BuildId, i64)],
    ) -> impl Future<Output = Result<Vec<BuildId>>> + Send;

    fn builds(&self, filter: &BuildFilter) -> impl Future<Output = Result<Vec<Build>>> + Send;
    fn build(&self, id: BuildId) -> impl Future<Output = Result<Option<Build>>> + Send;
    fn pins(&self, id: BuildId) -> impl Future<Output = Result<Vec<Pin>>> + Send;
    fn progress(&self, id: BuildId) -> impl Future<Output = Result<Vec<ProgressRow>>> + Send;
    fn logs(
        &self,
        id: BuildId,
        filter: &LogFilter,
    ) -> impl Future<Output = Result<Vec<LogRow>>> + Send;
    /// The latest build and latest success of every job that has builds, in one query.
    fn job_builds(&self) -> impl Future<Output = Result<Vec<JobBuilds>>> + Send;

    /// Asks for an open build to be cancelled; false if it has already ended (or is not
    /// there). The runner that owns it cancels it at its next tick.
    fn request_cancel(
        &self,
        id: BuildId,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// The open builds of `runner` someone asked to cancel.
    fn cancel_requests(&self, runner: &Runner)
    -> impl Future<Output = Result<Vec<BuildId>>> + Send;

    /// Deletes matching log lines; returns how many.
    fn prune_logs(&self, prune: &PruneLogs) -> impl Future<Output = Result<u64>> + Send;
    /// Deletes a build with its pins, progress and logs; false if there was none.
    fn delete_build(&self, id: BuildId) -> impl Future<Output = Result<bool>> + Send;
    /// Drops every table jobctl made.
    fn uninstall(&self) -> impl Future<Output = Result<()>> + Send;
    /// A token that differs whenever builds, logs or running progress changed (by any
    /// process): viewers ask often and reload only when it moved.
    fn changes(&self) -> impl Future<Output = Result<ChangeToken>> + Send;
    /// The schema version applied.
    fn schema_version(&self) -> impl Future<Output = Result<i64>> + Send;
}

/// An opaque summary of the database's state; two equal tokens mean nothing a viewer
/// shows has changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeToken {
    /// Moves when a build is made, starts, ends or is removed while open.
    pub builds: String,
    /// Moves when a log line or a running build's progress arrives.
    pub activity: String,
}

/// The store a config's `storage` URL names.
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// How to open a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Apply migrations where that is automatic (SQLite); PostgreSQL must be installed.
    Use,
    /// Apply migrations on any backend (`jobctl install`).
    Install,
    /// Connect only, whatever the schema (`jobctl uninstall`); a newer one is still refused.
    Connect,
}

/// Opens the store at `url`; a relative SQLite path is taken from `base` (the config's
/// folder). A SQLite database is created on first use.
pub async fn open(url: &str, base: &Path, mode: OpenMode) -> Result<AnyStore> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return Ok(AnyStore::Sqlite(SqliteStore::open(rest, base, mode).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(AnyStore::Postgres(PgStore::open(url, mode).await?));
    }
    Err(StoreError::UnknownScheme {
        url: redact_url(url),
    })
}

/// The file a SQLite URL names (relative paths from `base`); `None` for other URLs and
/// in-memory databases. A viewer uses it to tell "no database yet" from an error.
pub fn sqlite_file(url: &str, base: &Path) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    if path == ":memory:" {
        return None;
    }
    Some(if base == Path::new(".") {
        PathBuf::from(path)
    } else {
        base.join(path)
    })
}

/// A URL with its passwords replaced, for messages: the one in its user info
/// (`user:password@`) and a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let mut shown = url.to_owned();
    for password in url_passwords(url) {
        shown = shown.replace(&format!(":{password}@"), ":***@");
        shown = shown.replace(&format!("password={password}"), "password=***");
    }
    shown
}

/// The passwords written in a storage URL: after `user:` in its user info, and in a
/// `password=` query parameter. What `jobctl config` and job output mask.
/// What masks the output of jobs run with `secrets` against the database at `url`: the
/// secrets and the database's password (a job may print the URL, from the config or an
/// environment variable such as `JOBCTL_STORAGE`).
pub fn masker<'a>(
    secrets: impl Iterator<Item = &'a String>,
    url: &str,
) -> crate::config::model::Masker {
    let hidden: Vec<String> = secrets
        .cloned()
        .chain(url_passwords(url).into_iter().map(str::to_owned))
        .collect();
    crate::config::model::Masker::new(hidden.iter())
}

pub fn url_passwords(url: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let Some((_, rest)) = url.split_once("://") else {
        return found;
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
        && !password.is_empty()
    {
        found.push(password);
    }
    if let Some((_, query)) = rest.split_once('?') {
        for pair in query.split('&') {
            if let Some(password) = pair.strip_prefix("password=")
                && !password.is_empty()
            {
                found.push(password);
            }
        }
    }
    found
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($store) => $call.await,
            AnyStore::Postgres($store) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn create_build(&self, build: &NewBuild) -> Result<BuildId> {
        delegate!(self, s => s.create_build(build))
    }
    async fn create_builds(
        &self,
        builds: &[NewBuild],
        runner: &Runner,
        lease: std::time::Duration,
    ) -> Result<Vec<BuildId>> {
        delegate!(self, s => s.create_builds(builds, runner, lease))
    }
    async fn start_build(&self, id: BuildId, runner: &Runner, at: DateTime<Utc>) -> Result<()> {
        delegate!(self, s => s.start_build(id, runner, at))
    }
    async fn finish_build(&self, id: BuildId, outcome: &Outcome, at: DateTime<Utc>) -> Result<()> {
        delegate!(self, s => s.finish_build(id, outcome, at))
    }
    async fn write(&self, batch: &[Write]) -> Result<()> {
        delegate!(self, s => s.write(batch))
    }
    async fn write_fenced(
        &self,
        batch: &[Write],
        fences: &[(BuildId, i64)],
    ) -> Result<Vec<BuildId>> {
        delegate!(self, s => s.write_fenced(batch, fences))
    }
    async fn builds(&self, filter: &BuildFilter) -> Result<Vec<Build>> {
        delegate!(self, s => s.builds(filter))
    }
    async fn build(&self, id: BuildId) -> Result<Option<Build>> {
        delegate!(self, s => s.build(id))
    }
    async fn pins(&self, id: BuildId) -> Result<Vec<Pin>> {
        delegate!(self, s => s.pins(id))
    }
    async fn progress(&self, id: BuildId) -> Result<Vec<ProgressRow>> {
        delegate!(self, s => s.progress(id))
    }
    async fn logs(&self, id: BuildId, filter: &LogFilter) -> Result<Vec<LogRow>> {
        delegate!(self, s => s.logs(id, filter))
    }
    async fn job_builds(&self) -> Result<Vec<JobBuilds>> {
        delegate!(self, s => s.job_builds())
    }
    async fn request_cancel(&self, id: BuildId, at: DateTime<Utc>) -> Result<bool> {
        delegate!(self, s => s.request_cancel(id, at))
    }
    async fn cancel_requests(&self, runner: &Runner) -> Result<Vec<BuildId>> {
        delegate!(self, s => s.cancel_requests(runner))
    }
    async fn prune_logs(&self, prune: &PruneLogs) -> Result<u64> {
        delegate!(self, s => s.prune_logs(prune))
    }
    async fn delete_build(&self, id: BuildId) -> Result<bool> {
        delegate!(self, s => s.delete_build(id))
    }
    async fn uninstall(&self) -> Result<()> {
        delegate!(self, s => s.uninstall())
    }
    async fn changes(&self) -> Result<ChangeToken> {
        delegate!(self, s => s.changes())
    }
    async fn schema_version(&self) -> Result<i64> {
        delegate!(self, s => s.schema_version())
    }
}

impl Queue for AnyStore {
    async fn enqueue(
        &self,
        builds: &[queue::Enqueue],
        owner: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Vec<queue::Enqueued>> {
        delegate!(self, s => s.enqueue(builds, owner, at))
    }
    async fn plan_builds(
        &self,
        builds: &[NewBuild],
        runner: &Runner,
        claimer: &queue::Claimer,
        lease: Duration,
    ) -> Result<Vec<(BuildId, bool)>> {
        delegate!(self, s => s.plan_builds(builds, runner, claimer, lease))
    }
    async fn claim(
        &self,
        claimer: &queue::Claimer,
        limit: usize,
        only: Option<&[BuildId]>,
        lease: Duration,
        at: DateTime<Utc>,
    ) -> Result<Vec<queue::Claimed>> {
        delegate!(self, s => s.claim(claimer, limit, only, lease, at))
    }
    async fn end_and_claim(
        &self,
        ends: &[(BuildId, i64, queue::Ending)],
        claimer: &queue::Claimer,
        limit: usize,
        lease: Duration,
        at: DateTime<Utc>,
    ) -> Result<(Vec<bool>, Vec<queue::Claimed>)> {
        delegate!(self, s => s.end_and_claim(ends, claimer, limit, lease, at))
    }
    async fn renew(
        &self,
        claimer: &queue::Claimer,
        only: Option<&[BuildId]>,
        lease: Duration,
    ) -> Result<Vec<BuildId>> {
        delegate!(self, s => s.renew(claimer, only, lease))
    }
    async fn end_claimed(
        &self,
        build: BuildId,
        token: i64,
        ending: &queue::Ending,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        delegate!(self, s => s.end_claimed(build, token, ending, at))
    }
    async fn end_many(
        &self,
        ends: &[(BuildId, i64, queue::Ending)],
        at: DateTime<Utc>,
    ) -> Result<Vec<bool>> {
        delegate!(self, s => s.end_many(ends, at))
    }
    async fn cancel_queued(&self, build: BuildId, reason: &str, at: DateTime<Utc>) -> Result<bool> {
        delegate!(self, s => s.cancel_queued(build, reason, at))
    }
    async fn rescue(
        &self,
        host: &str,
        gone: &queue::Judge<'_>,
        at: DateTime<Utc>,
    ) -> Result<Vec<queue::Rescued>> {
        delegate!(self, s => s.rescue(host, gone, at))
    }
    async fn heartbeat(
        &self,
        claimer: &queue::Claimer,
        slots: u32,
        lease: Duration,
        draining: bool,
        at: DateTime<Utc>,
    ) -> Result<()> {
        delegate!(self, s => s.heartbeat(claimer, slots, lease, draining, at))
    }
    async fn worker_stopped(&self, claimer: &queue::Claimer, at: DateTime<Utc>) -> Result<()> {
        delegate!(self, s => s.worker_stopped(claimer, at))
    }
    async fn workers(&self) -> Result<Vec<queue::WorkerRow>> {
        delegate!(self, s => s.workers())
    }
    async fn build_states(&self, from: BuildId, to: BuildId) -> Result<Vec<queue::BuildState>> {
        delegate!(self, s => s.build_states(from, to))
    }
    async fn queued_for_workers(&self, labels: &[String]) -> Result<u64> {
        delegate!(self, s => s.queued_for_workers(labels))
    }
}

impl AnyStore {
    /// Whether this store is PostgreSQL (wake-ups by LISTEN/NOTIFY there).
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match self {
            AnyStore::Postgres(s) => Some(s.pool()),
            AnyStore::Sqlite(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgresql://ci:hunter2@db.example:5432/jobs"),
            "postgresql://ci:***@db.example:5432/jobs"
        );
        assert_eq!(
            redact_url("postgresql://postgres@127.0.0.1/test"),
            "postgresql://postgres@127.0.0.1/test"
        );
        assert_eq!(
            redact_url("postgresql://ci@db/jobs?sslmode=require&password=s3cr%40t&x=1"),
            "postgresql://ci@db/jobs?sslmode=require&password=***&x=1"
        );
        assert_eq!(
            url_passwords("postgresql://u:p%3Aw@h/d?password=q"),
            ["p%3Aw", "q"]
        );
    }

    #[test]
    fn levels_order_and_parse() {
        assert!(LogLevel::Debug < LogLevel::Error);
        assert_eq!(LogLevel::parse("WARN"), Some(LogLevel::Warning));
        assert_eq!(LogLevel::from_number(35), LogLevel::Warning);
    }
}
