//! The queue: the store hands out every build, to `jobctl build`'s own runner and to
//! `jobctl worker` processes anywhere, and decides in its transactions what may run.
//!
//! ```text
//!   enqueue (builds + build_waits, one transaction) ──► created, waiting = n
//!        │ an upstream build succeeds: waiting - 1 (in the transaction that ends it)
//!        ▼
//!   ready (created, waiting = 0, not_before passed)
//!        │ claim: one transaction per batch; the job's `concurrency` counted inside it
//!        │        (PostgreSQL: FOR UPDATE SKIP LOCKED + a lock per job; SQLite: BEGIN
//!        │        IMMEDIATE); token + 1, lease, runner, pins
//!        ▼
//!   running ──renew (lease)──► … ──end (token must match)──► successful / failed / …
//!        │                                  failed with attempts left: a new build, the
//!        │                                  waits moved to it; else dependants not run
//!        └─ lease expired, or runner provably gone on its host: rescued (retried, or
//!           failed "worker lost") by any runner
//! ```
//!
//! A write about a claimed build that carries a stale token changes nothing and says so:
//! the runner that made it has lost the build and stops it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value as Json;

use super::{BuildId, NewBuild, Outcome, Pin};

/// Who claims: a `jobctl worker`, or the runner inside a `jobctl build`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claimer {
    /// Unique among runners: the lease holder's name in the store.
    pub id: String,
    /// What `jobctl workers` shows (`--name`); `None` for a `jobctl build`.
    pub name: Option<String>,
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks after boot (Linux), so that a process
    /// that took over the number is not taken for this one.
    pub since: Option<i64>,
    /// What the worker has: it claims only builds whose labels are all among these.
    pub labels: Vec<String>,
}

impl Claimer {
    /// This process, claiming as `name` (a worker) or for its own run (`None`).
    pub fn this_process(name: Option<String>, labels: Vec<String>) -> Claimer {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let pid = std::process::id();
        let since = crate::host::process_start(pid);
        Claimer {
            id: this_process_id().to_owned(),
            name,
            host,
            pid,
            since,
            labels,
        }
    }
}

/// This process's name as a lease holder: host, pid and start time (or, without
/// `/proc`, the time it first asked), the same every time it is asked.
pub fn this_process_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        let pid = std::process::id();
        let since =
            crate::host::process_start(pid).unwrap_or_else(|| Utc::now().timestamp_micros());
        format!("{host}:{pid}:{since}")
    })
}

/// One build to enqueue.
#[derive(Debug, Clone)]
pub struct Enqueue {
    pub build: NewBuild,
    /// The builds of the same batch it waits on, by their place in the batch (earlier).
    pub waits_on: Vec<usize>,
    pub labels: Vec<String>,
    pub concurrency: u32,
    /// Same key as a build still queued: that build is returned instead of a new one.
    pub dedup_key: Option<String>,
}

/// What enqueueing one build gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: BuildId,
    /// An equal build was already queued: this is that one.
    pub deduplicated: bool,
}

/// A build handed to a runner.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub id: BuildId,
    pub job_id: String,
    /// Every later write about the build carries it.
    pub token: i64,
    pub attempt: u32,
    /// The job as it was when the build was made (what runs, not today's config), or why
    /// it cannot be read (JSON nested past what the parser takes, written by something
    /// other than jobctl): such a build is claimed all the same, and fails saying so,
    /// rather than making every claim that reaches it fail.
    pub config: Result<Json, String>,
    /// The dependency builds whose return values it uses: those of its run it waited on,
    /// else each dependency's latest success.
    pub pins: Vec<Pin>,
    /// The return values of the pinned builds that have one, by job id: read in the
    /// claim, so a build starts without another round trip.
    pub retvals: std::collections::HashMap<String, Json>,
}

/// The pins of a claimed build, and the return values of the pinned builds by job id.
pub(crate) type PinsOf = (Vec<Pin>, std::collections::HashMap<String, Json>);

/// How a claimed build ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Its outcome; a failure or cancel closes what waits on it as not run.
    Done(Outcome),
    /// Failed, with attempts left: a new build of the job runs from `not_before`, and
    /// what waited on this one waits on it.
    Retry {
        outcome: Outcome,
        not_before: DateTime<Utc>,
    },
    /// Not run to its end here (a worker draining): queued again for another runner.
    HandBack,
}

/// Where a build is, for following it (`build --queue --wait`): its row without the
/// config, return value and stderr tail.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildState {
    pub id: BuildId,
    pub job_id: String,
    pub status: super::BuildStatus,
    pub attempt: u32,
    pub error: Option<String>,
    pub reason: Option<super::Reason>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What became of a rescued build.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rescued {
    pub id: BuildId,
    pub job_id: String,
    /// The new attempt, when it is retried.
    pub retried_as: Option<BuildId>,
    pub reason: String,
    /// Where its runner was, and its pid: what the build's job left running on this
    /// host is killed by whoever rescued it.
    pub host: Option<String>,
    pub pid: Option<u32>,
}

/// A build whose runner was on the rescuing host, for the rescuer to judge: is its runner
/// gone (and if so, what the build's job left running is killed first)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    pub build: BuildId,
    /// The runner's pid, and when that process started (clock ticks after boot) when its
    /// claim recorded it.
    pub pid: u32,
    pub since: Option<i64>,
    /// When the build was recorded: a runner that started after it is another process.
    pub created_at: DateTime<Utc>,
    /// The build's process group, if its start recorded one.
    pub pgid: Option<u32>,
}

/// What a rescuer says of a [`Suspect`]: `None` while its runner lives; once it is gone,
/// how many processes the build left running were killed.
pub type Judge<'a> = dyn Fn(&Suspect) -> Option<usize> + Sync + 'a;

/// When a build whose runner is lost was last seen alive: its newest log line or
/// progress report, or its start, or when it was recorded.
pub(crate) async fn last_seen(
    store: &impl super::Store,
    build: BuildId,
    started_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
) -> super::Result<DateTime<Utc>> {
    let tail = super::LogFilter {
        tail: Some(1),
        ..super::LogFilter::default()
    };
    let last_log = store.logs(build, &tail).await?.last().map(|l| l.at);
    let last_progress = store
        .progress(build)
        .await?
        .iter()
        .map(|p| p.updated_at)
        .max();
    Ok([started_at, last_log, last_progress]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(created_at))
}

/// A runner as `jobctl workers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub labels: Vec<String>,
    pub slots: u32,
    pub lease_secs: u32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub draining: bool,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Builds it holds now.
    pub running: u32,
}

impl WorkerRow {
    /// `running`, `draining`, `stopped`, or `lost`: silent for longer than its lease.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.stopped_at.is_some() {
            "stopped"
        } else if now - self.heartbeat_at > chrono::Duration::seconds(i64::from(self.lease_secs)) {
            "lost"
        } else if self.draining {
            "draining"
        } else {
            "running"
        }
    }
}

// Found by id. Where a statement finds its builds by id (the count-down of what waits on
// an end, the ends, the not-run closure, a run's claim of its own and its starts), their
// status is a check on the rows found, written `status || ''` so the planner cannot use
// it to find them: with statistics older than a large enqueue it takes
// `status = 'created'` for a few rows and reads every open build through `builds_running`
// to pick out the few named by id (7 ms instead of 0.7 ms a turn with 10,000 planned
// builds, measured on PostgreSQL 15). Same meaning on SQLite.

/// The builds that fill a job's `concurrency`: those running, and those reserved by a
/// run (claimed ahead, waiting for what they depend on). The condition of the index
/// `builds_occupying` (migrations 0005), word for word.
pub(crate) const OCCUPYING: &str =
    "(status = 'running' OR (status = 'created' AND runner_id IS NOT NULL))";

/// A snapshot's `concurrency`, as its build row records it and every claim counts it:
/// 1 to 10,000 (the config's own bounds), 1 when the snapshot has none.
pub(crate) fn concurrency_of(config: &Json) -> i64 {
    config
        .get("concurrency")
        .and_then(Json::as_i64)
        .unwrap_or(1)
        .clamp(1, 10_000)
}

/// Which of a run's planned builds are reserved for it as they are recorded: in plan
/// order, each whose job has room — the builds that fill the job's concurrency now
/// (`occupied`, counted in the same transaction) and those of it reserved before it in
/// the list — the claim's rule (a job's builds fit while their count stays within its
/// `concurrency`), applied before the rows exist.
pub(crate) fn reservations<'a>(
    planned: impl IntoIterator<Item = (&'a str, i64)>,
    occupied: &std::collections::HashMap<String, i64>,
) -> Vec<bool> {
    let mut taken: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    planned
        .into_iter()
        .map(|(job, limit)| {
            let now = occupied.get(job).copied().unwrap_or(0);
            let mine = taken.entry(job).or_insert(0);
            let fits = now + *mine < limit;
            if fits {
                *mine += 1;
            }
            fits
        })
        .collect()
}

/// The de-duplication key of a job's build: the job and its resolved arguments.
pub fn dedup_key(job: &str, config: &Json) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    hash.update(job.as_bytes());
    for key in ["run", "function", "args", "kwargs", "env", "workdir"] {
        hash.update([0u8]);
        hash.update(key.as_bytes());
        hash.update(config.get(key).map(Json::to_string).unwrap_or_default());
    }
    let digest = hash.finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The queue's operations; both backends implement them with the same SQL, except how a
/// claim locks (see `impl_queue!`).
pub trait Queue: Send + Sync {
    /// Records builds waiting for a runner, with the edges between them; `owner` keeps
    /// them for one runner (a `jobctl build` run), `None` leaves them to any worker.
    fn enqueue(
        &self,
        builds: &[Enqueue],
        owner: Option<&str>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<Vec<Enqueued>>> + Send;
    /// Records the builds a `jobctl build` run planned, kept for it, and reserves (claims
    /// ahead, in the same transaction) each whose job's `concurrency` has room, so that
    /// the run starts it when it is ready without asking again. Returns each build and
    /// whether it was reserved; one that was not is claimed when it is ready.
    fn plan_builds(
        &self,
        builds: &[NewBuild],
        runner: &super::Runner,
        claimer: &Claimer,
        lease: std::time::Duration,
    ) -> impl Future<Output = super::Result<Vec<(BuildId, bool)>>> + Send;
    /// Claims up to `limit` ready builds not kept for a run (a worker), or exactly the
    /// builds `only` of `claimer`'s own run that its job's concurrency lets run.
    fn claim(
        &self,
        claimer: &Claimer,
        limit: usize,
        only: Option<&[BuildId]>,
        lease: std::time::Duration,
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<Vec<Claimed>>> + Send;
    /// Ends builds (as [`Queue::end_many`]) and claims up to `limit` ready ones (as a
    /// worker's [`Queue::claim`]) in one transaction: a worker's turn, one commit.
    fn end_and_claim(
        &self,
        ends: &[(BuildId, i64, Ending)],
        claimer: &Claimer,
        limit: usize,
        lease: std::time::Duration,
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<(Vec<bool>, Vec<Claimed>)>> + Send;
    /// Extends the lease of the builds `claimer` holds, and of those its run planned
    /// (of those in `only`, when given: a build its runner no longer tracks is let go,
    /// to be rescued when its lease ends); returns those renewed.
    fn renew(
        &self,
        claimer: &Claimer,
        only: Option<&[BuildId]>,
        lease: std::time::Duration,
    ) -> impl Future<Output = super::Result<Vec<BuildId>>> + Send;
    /// Ends a claimed build, if `token` is still its token; false when it is not (the
    /// build was rescued or handed to another runner: nothing was written).
    fn end_claimed(
        &self,
        build: BuildId,
        token: i64,
        ending: &Ending,
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<bool>> + Send;
    /// Ends many claimed builds in one transaction, as [`Queue::end_claimed`] each;
    /// returns, for each, whether its token still held.
    fn end_many(
        &self,
        ends: &[(BuildId, i64, Ending)],
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<Vec<bool>>> + Send;
    /// Cancels a build still queued for workers (and closes what waits on it); false if it
    /// was not (claimed, ended, or a `jobctl build` run's own: ask that run instead).
    fn cancel_queued(
        &self,
        build: BuildId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<bool>> + Send;
    /// The one rescue of builds whose runner is lost: running (or reserved, or planned)
    /// builds whose lease expired, or whose runner on `host` is gone (`gone` judges each
    /// such [`Suspect`], and kills what the build left running before it says so). A
    /// build that never started is removed (its job's concurrency is free again); one
    /// that ran is retried if it is a worker's and attempts remain, else failed "worker
    /// lost" / "runner died" — a `jobctl build` run's with its last sign of life as its
    /// end, since nobody else runs it again.
    fn rescue(
        &self,
        host: &str,
        gone: &Judge<'_>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<Vec<Rescued>>> + Send;
    /// Records (or refreshes) a worker and its heartbeat.
    fn heartbeat(
        &self,
        claimer: &Claimer,
        slots: u32,
        lease: std::time::Duration,
        draining: bool,
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<()>> + Send;
    /// Marks a worker stopped.
    fn worker_stopped(
        &self,
        claimer: &Claimer,
        at: DateTime<Utc>,
    ) -> impl Future<Output = super::Result<()>> + Send;
    /// Every worker, newest first.
    fn workers(&self) -> impl Future<Output = super::Result<Vec<WorkerRow>>> + Send;
    /// The state of every build numbered `from` to `to` (one light query however many).
    fn build_states(
        &self,
        from: BuildId,
        to: BuildId,
    ) -> impl Future<Output = super::Result<Vec<BuildState>>> + Send;
    /// How many builds are queued for workers with these labels (ready, or waiting on
    /// others).
    fn queued_for_workers(
        &self,
        labels: &[String],
    ) -> impl Future<Output = super::Result<u64>> + Send;
}

use std::future::Future;

/// The SQL of the queue, for a backend with `pool`, `begin_write` and a `PG` constant
/// (whether claims lock rows with `FOR UPDATE SKIP LOCKED` and jobs with advisory locks).
macro_rules! impl_queue {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Ends `build` in `tx` (if `token` matches; any token for `None`, a queued
            /// build) and decides what waits on it. Returns false if nothing matched.
            async fn end_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                build: crate::store::BuildId,
                token: Option<i64>,
                ending: &crate::store::queue::Ending,
                at: chrono::DateTime<chrono::Utc>,
                retried_as: &mut Option<i64>,
            ) -> Result<bool, sqlx::Error> {
                use crate::store::queue::Ending;
                if let Ending::HandBack = ending {
                    let done = sqlx::query(
                        "UPDATE builds SET status = 'created', started_at = NULL, \
                         lease_until = NULL, runner_id = NULL, runner_since = NULL, pgid = NULL, \
                         host = NULL, pid = NULL, worker = NULL \
                         WHERE id = $1 AND status = 'running' AND token = $2",
                    )
                    .bind(build.0)
                    .bind(token.unwrap_or(-1))
                    .execute(&mut **tx)
                    .await?;
                    if done.rows_affected() > 0 {
                        // What it had reported belongs to a run that did not finish.
                        sqlx::query("DELETE FROM progress WHERE build_id = $1")
                            .bind(build.0)
                            .execute(&mut **tx)
                            .await?;
                        sqlx::query("DELETE FROM build_pins WHERE build_id = $1")
                            .bind(build.0)
                            .execute(&mut **tx)
                            .await?;
                    }
                    return Ok(done.rows_affected() > 0);
                }
                let outcome = match ending {
                    Ending::Done(outcome) | Ending::Retry { outcome, .. } => outcome,
                    Ending::HandBack => unreachable!("handled above"),
                };
                let (retval, exit_code, signal, timed_out, error, stderr_tail, reason) =
                    crate::store::sql::outcome_columns(outcome);
                let guard = match token {
                    // A running build, or one reserved by a run.
                    Some(_) => "status || '' IN ('created', 'running') AND runner_id IS NOT NULL AND token = $11",
                    // A build queued for workers; a `jobctl build` run's own is cancelled
                    // by that run, on request.
                    None => "status || '' = 'created' AND runner_id IS NULL AND run_owner IS NULL AND $11 = $11",
                };
                let sql = format!(
                    "UPDATE builds SET status = $2, finished_at = $3, retval = $4, exit_code = $5, \
                     signal = $6, timed_out = $7, error = $8, stderr_tail = $9, \
                     started_at = COALESCE(started_at, $10), lease_until = NULL, reason = $12 \
                     WHERE id = $1 AND {guard} RETURNING job_id"
                );
                let job: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(build.0)
                    .bind(outcome.status().as_str())
                    .bind(at)
                    .bind(retval.map(sqlx::types::Json))
                    .bind(exit_code)
                    .bind(signal)
                    .bind(timed_out)
                    .bind(error)
                    .bind(stderr_tail)
                    .bind(at)
                    .bind(token.unwrap_or(0))
                    .bind(reason.map(sqlx::types::Json))
                    .fetch_optional(&mut **tx)
                    .await?;
                let Some(job) = job else {
                    return Ok(false);
                };
                match ending {
                    Ending::Done(crate::store::Outcome::Successful { .. })
                    | Ending::Done(crate::store::Outcome::Skipped { .. }) => {
                        sqlx::query(
                            "UPDATE builds SET waiting = waiting - 1 WHERE status || '' = 'created' \
                             AND id IN (SELECT build_id FROM build_waits WHERE waits_on = $1)",
                        )
                        .bind(build.0)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Ending::Retry { not_before, .. } => {
                        let new: i64 = sqlx::query_scalar(
                            "INSERT INTO builds (job_id, status, created_at, config, config_hash, \
                             attempt, waiting, not_before, run_owner, concurrency) \
                             SELECT job_id, 'created', $2, config, config_hash, attempt + 1, 0, $3, \
                             run_owner, concurrency FROM builds WHERE id = $1 RETURNING id",
                        )
                        .bind(build.0)
                        .bind(at)
                        .bind(*not_before)
                        .fetch_one(&mut **tx)
                        .await?;
                        *retried_as = Some(new);
                        sqlx::query(
                            "INSERT INTO build_labels (build_id, label) \
                             SELECT $2, label FROM build_labels WHERE build_id = $1",
                        )
                        .bind(build.0)
                        .bind(new)
                        .execute(&mut **tx)
                        .await?;
                        sqlx::query("UPDATE build_waits SET waits_on = $2 WHERE waits_on = $1")
                            .bind(build.0)
                            .bind(new)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Ending::Done(outcome) => {
                        Self::close_dependants(tx, build, &job, outcome, at).await?;
                    }
                    Ending::HandBack => {}
                }
                Ok(true)
            }

            /// Ends claimed builds in `tx`, as [`Self::end_in`] each, but the plain ends
            /// (an outcome, no retry, not handed back) in a few statements however many
            /// there are: one update of their rows, one of what waits on the successes.
            /// Whether each was recorded, in the order given.
            async fn end_all(
                tx: &mut sqlx::Transaction<'static, $db>,
                ends: &[(crate::store::BuildId, i64, crate::store::queue::Ending)],
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<bool>, sqlx::Error> {
                use crate::store::queue::Ending;
                let mut done = vec![false; ends.len()];
                let plain: Vec<usize> = (0..ends.len())
                    .filter(|&i| matches!(ends[i].2, Ending::Done(_)))
                    .collect();
                let mut ended: std::collections::HashMap<i64, String> =
                    std::collections::HashMap::with_capacity(plain.len());
                // On PostgreSQL one statement a piece: the ends, what waits on those that
                // succeeded counted down (other rows: a build that waits is never claimed,
                // so never among the ends), and the wake-up of the workers that listen
                // (once per transaction, however many rows).
                let merged = Self::PG;
                // A repeated row updates its build once.
                for piece in crate::store::sql::padded(&plain) {
                    let mut update: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(if merged {
                        "WITH ended AS (UPDATE builds SET status = v.column3, finished_at = "
                    } else {
                        "UPDATE builds SET status = v.column3, finished_at = "
                    });
                    update.push_bind(at);
                    update.push(
                        ", retval = v.column4, exit_code = v.column5, signal = v.column6, \
                         timed_out = v.column7, error = v.column8, stderr_tail = v.column9, \
                         reason = v.column10, started_at = COALESCE(started_at, ",
                    );
                    update.push_bind(at);
                    update.push("), lease_until = NULL FROM (");
                    update.push_values(&piece, |mut row, &i| {
                        let (build, token, ending) = &ends[i];
                        let Ending::Done(outcome) = ending else {
                            unreachable!("only plain ends")
                        };
                        let (retval, exit_code, signal, timed_out, error, stderr_tail, reason) =
                            crate::store::sql::outcome_columns(outcome);
                        row.push_bind(build.0)
                            .push_bind(*token)
                            .push_bind(outcome.status().as_str())
                            .push_bind(retval.cloned().map(sqlx::types::Json))
                            .push_bind(exit_code)
                            .push_bind(signal)
                            .push_bind(timed_out)
                            .push_bind(error)
                            .push_bind(stderr_tail.map(str::to_owned))
                            .push_bind(reason.map(sqlx::types::Json));
                    });
                    update.push(
                        ") AS v WHERE builds.id = v.column1 AND builds.token = v.column2 \
                         AND builds.status || '' IN ('created', 'running') AND builds.runner_id IS NOT NULL \
                         RETURNING builds.id, builds.job_id",
                    );
                    if merged {
                        update.push(
                            ", builds.status), \
                             d AS (SELECT w.build_id, COUNT(*) AS n FROM build_waits w JOIN ended e \
                               ON w.waits_on = e.id WHERE e.status IN ('successful', 'skipped') \
                               GROUP BY w.build_id), \
                             counted AS (UPDATE builds SET waiting = waiting - d.n FROM d \
                               WHERE builds.id = d.build_id AND builds.status || '' = 'created' RETURNING 1) \
                             SELECT e.id, e.job_id, pg_notify('jobctl_queue', 'ended')::text FROM ended e",
                        );
                        let rows: Vec<(i64, String, String)> =
                            update.build_query_as().fetch_all(&mut **tx).await?;
                        ended.extend(rows.into_iter().map(|(id, job, _)| (id, job)));
                    } else {
                        let rows: Vec<(i64, String)> = update.build_query_as().fetch_all(&mut **tx).await?;
                        ended.extend(rows);
                    }
                }
                let mut succeeded = Vec::new();
                for &i in &plain {
                    let (build, _, ending) = &ends[i];
                    let Some(job) = ended.get(&build.0) else {
                        continue;
                    };
                    done[i] = true;
                    match ending {
                        Ending::Done(crate::store::Outcome::Successful { .. })
                        | Ending::Done(crate::store::Outcome::Skipped { .. }) => succeeded.push(build.0),
                        Ending::Done(outcome) => {
                            Self::close_dependants(tx, *build, job, outcome, at).await?;
                        }
                        _ => unreachable!("only plain ends"),
                    }
                }
                let counted = if merged { &[][..] } else { &succeeded[..] };
                for piece in crate::store::sql::padded(counted) {
                    let mut update: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "WITH d AS (SELECT build_id, COUNT(*) AS n FROM build_waits WHERE waits_on IN (",
                    );
                    let mut list = update.separated(", ");
                    for id in piece {
                        list.push_bind(id);
                    }
                    update.push(
                        ") GROUP BY build_id) UPDATE builds SET waiting = waiting - d.n FROM d \
                         WHERE builds.id = d.build_id AND builds.status || '' = 'created'",
                    );
                    update.build().execute(&mut **tx).await?;
                }
                let mut others = false;
                for (i, (build, token, ending)) in ends.iter().enumerate() {
                    if !matches!(ending, Ending::Done(_)) {
                        done[i] = Self::end_in(tx, *build, Some(*token), ending, at, &mut None).await?;
                        others |= done[i];
                    }
                }
                // A retry or a hand-back queued a build: the workers that listen wake.
                if Self::PG && others {
                    Self::notify(tx, "ended").await?;
                }
                Ok(done)
            }

            /// Closes what waits on `build` (of `job`), which ended with `outcome` and not
            /// in success, as not run.
            async fn close_dependants(
                tx: &mut sqlx::Transaction<'static, $db>,
                build: crate::store::BuildId,
                job: &str,
                outcome: &crate::store::Outcome,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<(), sqlx::Error> {
                let reason = crate::store::Reason::upstream(job, build, outcome);
                sqlx::query(
                    "WITH RECURSIVE down(id) AS ( \
                       SELECT build_id FROM build_waits WHERE waits_on = $1 \
                       UNION SELECT w.build_id FROM build_waits w JOIN down d ON w.waits_on = d.id) \
                     UPDATE builds SET status = 'cancelled', error = $2, finished_at = $3, \
                     started_at = $3, reason = $4 WHERE status || '' = 'created' AND id IN (SELECT id FROM down)",
                )
                .bind(build.0)
                .bind(reason.to_string())
                .bind(at)
                .bind(sqlx::types::Json(&reason))
                .execute(&mut **tx)
                .await?;
                Ok(())
            }
        }

        impl crate::store::queue::Queue for $store {
            async fn enqueue(
                &self,
                builds: &[crate::store::queue::Enqueue],
                owner: Option<&str>,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<Vec<crate::store::queue::Enqueued>> {
                use crate::store::queue::Enqueued;
                let q = |source| crate::store::StoreError::query("enqueue builds", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                // De-duplication: the builds still queued under the keys asked for.
                let keys: Vec<&str> = match owner {
                    Some(_) => Vec::new(),
                    None => builds.iter().filter_map(|b| b.dedup_key.as_deref()).collect(),
                };
                let mut queued: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
                if !keys.is_empty() {
                    if Self::PG {
                        // Two processes enqueueing meet here, one after the other.
                        sqlx::query("SELECT pg_advisory_xact_lock(7361627)")
                            .execute(&mut *tx)
                            .await
                            .map_err(q)?;
                    }
                    for piece in crate::store::sql::pieces(&keys) {
                        let mut select: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                            "SELECT id, dedup_key FROM builds WHERE status = 'created' \
                             AND run_owner IS NULL AND dedup_key IN (",
                        );
                        let mut list = select.separated(", ");
                        for key in piece {
                            list.push_bind(key.to_string());
                        }
                        select.push(") ORDER BY id");
                        if Self::PG {
                            // Held until this commits: a build that waits on one of them
                            // is counted as waiting before that one can end.
                            select.push(" FOR SHARE");
                        }
                        let rows: Vec<(i64, String)> =
                            select.build_query_as().fetch_all(&mut *tx).await.map_err(q)?;
                        for (id, key) in rows {
                            queued.entry(key).or_insert(id);
                        }
                    }
                }
                // Each build: an id already queued, or a place among the new rows.
                enum Made {
                    Queued(i64),
                    New(usize),
                }
                let mut places: Vec<Made> = Vec::with_capacity(builds.len());
                // An earlier build of this batch under the same key.
                let mut again: Vec<bool> = vec![false; builds.len()];
                let mut new: Vec<usize> = Vec::new();
                let mut first_of_key: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
                for (i, build) in builds.iter().enumerate() {
                    let key = build.dedup_key.as_deref().filter(|_| owner.is_none());
                    if let Some(key) = key {
                        if let Some(&id) = queued.get(key) {
                            places.push(Made::Queued(id));
                            continue;
                        }
                        if let Some(&first) = first_of_key.get(key) {
                            places.push(Made::New(first));
                            again[i] = true;
                            continue;
                        }
                        first_of_key.insert(key, new.len());
                    }
                    places.push(Made::New(new.len()));
                    new.push(i);
                }
                // What each new build waits on, as places: the builds it waits on that are
                // new, or queued (held above), have not succeeded.
                let waits: Vec<Vec<&Made>> = new
                    .iter()
                    .map(|&i| {
                        let key = |m: &&Made| match m {
                            Made::Queued(id) => (0, *id),
                            Made::New(n) => (1, *n as i64),
                        };
                        let mut on: Vec<&Made> = builds[i].waits_on.iter().map(|&w| &places[w]).collect();
                        on.sort_unstable_by_key(key);
                        on.dedup_by_key(|m| key(m));
                        on
                    })
                    .collect();
                let mut ids: Vec<i64> = Vec::with_capacity(new.len());
                let rows: Vec<usize> = (0..new.len()).collect();
                for piece in crate::store::sql::pieces(&rows) {
                    let mut insert: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "INSERT INTO builds (job_id, status, created_at, config, config_hash, attempt, \
                         waiting, run_owner, concurrency, dedup_key) ",
                    );
                    insert.push_values(piece, |mut row, &n| {
                        let build = &builds[new[n]];
                        row.push_bind(build.build.job_id.as_str())
                            .push_bind("created")
                            .push_bind(at)
                            .push_bind(sqlx::types::Json(&build.build.config))
                            .push_bind(build.build.config_hash.as_str())
                            .push_bind(build.build.attempt as i32)
                            .push_bind(waits[n].len() as i32)
                            .push_bind(owner)
                            .push_bind(build.concurrency.clamp(1, 10_000) as i32)
                            .push_bind(build.dedup_key.as_deref());
                    });
                    insert.push(" RETURNING id");
                    // One statement numbers its rows in order: sorted, the ids follow the
                    // rows (RETURNING itself promises no order).
                    let mut made: Vec<i64> = insert.build_query_scalar().fetch_all(&mut *tx).await.map_err(q)?;
                    made.sort_unstable();
                    ids.extend(made);
                }
                let id_of = |m: &Made| match m {
                    Made::Queued(id) => *id,
                    Made::New(n) => ids[*n],
                };
                let edges: Vec<(i64, i64)> = waits
                    .iter()
                    .enumerate()
                    .flat_map(|(n, on)| on.iter().map(move |m| (n, *m)))
                    .map(|(n, m)| (ids[n], id_of(m)))
                    .collect();
                for piece in crate::store::sql::pieces(&edges) {
                    let mut insert: sqlx::QueryBuilder<$db> =
                        sqlx::QueryBuilder::new("INSERT INTO build_waits (build_id, waits_on) ");
                    insert.push_values(piece, |mut row, (build, on)| {
                        row.push_bind(*build).push_bind(*on);
                    });
                    insert.build().execute(&mut *tx).await.map_err(q)?;
                }
                let labels: Vec<(i64, &str)> = new
                    .iter()
                    .enumerate()
                    .flat_map(|(n, &i)| {
                        let mut own: Vec<&str> = builds[i].labels.iter().map(String::as_str).collect();
                        own.sort_unstable();
                        own.dedup();
                        own.into_iter().map(move |l| (n, l))
                    })
                    .map(|(n, l)| (ids[n], l))
                    .collect();
                for piece in crate::store::sql::pieces(&labels) {
                    let mut insert: sqlx::QueryBuilder<$db> =
                        sqlx::QueryBuilder::new("INSERT INTO build_labels (build_id, label) ");
                    insert.push_values(piece, |mut row, (build, label)| {
                        row.push_bind(*build).push_bind(label.to_string());
                    });
                    insert.build().execute(&mut *tx).await.map_err(q)?;
                }
                let made: Vec<Enqueued> = places
                    .iter()
                    .zip(again)
                    .map(|(m, again)| Enqueued {
                        id: crate::store::BuildId(id_of(m)),
                        deduplicated: again || matches!(m, Made::Queued(_)),
                    })
                    .collect();
                if Self::PG && owner.is_none() {
                    Self::notify(&mut tx, "enqueued").await.map_err(q)?;
                }
                tx.commit().await.map_err(q)?;
                Ok(made)
            }

            async fn plan_builds(
                &self,
                builds: &[crate::store::NewBuild],
                runner: &crate::store::Runner,
                claimer: &crate::store::queue::Claimer,
                lease: std::time::Duration,
            ) -> crate::store::Result<Vec<(crate::store::BuildId, bool)>> {
                let q = |source| crate::store::StoreError::query("record the planned builds", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                // Which of them the jobs' concurrency has room for, counted before they
                // are recorded (under the claims' lock), then recorded so in one statement.
                Self::lock_claims(&mut tx).await.map_err(q)?;
                let mut jobs: Vec<&str> = builds.iter().map(|b| b.job_id.as_str()).collect();
                jobs.sort_unstable();
                jobs.dedup();
                let busy = Self::occupied(&mut tx, &jobs).await.map_err(q)?;
                let marked = crate::store::queue::reservations(
                    builds
                        .iter()
                        .map(|b| (b.job_id.as_str(), crate::store::queue::concurrency_of(&b.config))),
                    &busy,
                );
                let ids = Self::insert_reserved(&mut tx, builds, Some((runner, lease)), Some((claimer, &marked)), chrono::Utc::now())
                    .await
                    .map_err(q)?;
                let reserved: Vec<(crate::store::BuildId, bool)> = ids.into_iter().zip(marked).collect();
                tx.commit().await.map_err(q)?;
                Ok(reserved)
            }

            async fn claim(
                &self,
                claimer: &crate::store::queue::Claimer,
                limit: usize,
                only: Option<&[crate::store::BuildId]>,
                lease: std::time::Duration,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<Vec<crate::store::queue::Claimed>> {
                let q = |source| crate::store::StoreError::query("claim builds", source);
                if limit == 0 || only.is_some_and(|o| o.is_empty()) {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await.map_err(q)?;
                let claimed = Self::claim_in(&mut tx, claimer, limit, only, lease, at).await.map_err(q)?;
                tx.commit().await.map_err(q)?;
                Ok(claimed)
            }

            async fn end_and_claim(
                &self,
                ends: &[(crate::store::BuildId, i64, crate::store::queue::Ending)],
                claimer: &crate::store::queue::Claimer,
                limit: usize,
                lease: std::time::Duration,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<(Vec<bool>, Vec<crate::store::queue::Claimed>)> {
                let q = |source| crate::store::StoreError::query("record ends and claim builds", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                let done = Self::end_all(&mut tx, ends, at).await.map_err(q)?;
                // Others may claim what these ends made ready and this claim leaves: the
                // ends woke them (`end_all`).
                let claimed = Self::claim_in(&mut tx, claimer, limit, None, lease, at).await.map_err(q)?;
                tx.commit().await.map_err(q)?;
                Ok((done, claimed))
            }

            async fn renew(
                &self,
                claimer: &crate::store::queue::Claimer,
                only: Option<&[crate::store::BuildId]>,
                lease: std::time::Duration,
            ) -> crate::store::Result<Vec<crate::store::BuildId>> {
                let q = |source| crate::store::StoreError::query("renew leases", source);
                let at = chrono::Utc::now();
                let renew = |ids: Option<Vec<i64>>| {
                    let mut update: sqlx::QueryBuilder<$db> =
                        sqlx::QueryBuilder::new("UPDATE builds SET lease_until = ");
                    Self::push_lease_end(&mut update, lease, at);
                    // What it claimed or reserved, and what its run planned.
                    update.push(" WHERE (runner_id = ").push_bind(claimer.id.clone());
                    update.push(" OR run_owner = ").push_bind(claimer.id.clone());
                    update.push(") AND status IN ('created', 'running')");
                    if let Some(ids) = ids {
                        update.push(" AND id IN (");
                        let mut list = update.separated(", ");
                        for id in ids {
                            list.push_bind(id);
                        }
                        update.push(")");
                    }
                    update.push(" RETURNING id");
                    update
                };
                let mut renewed: Vec<i64> = Vec::new();
                match only {
                    None => renewed = renew(None).build_query_scalar().fetch_all(&self.pool).await.map_err(q)?,
                    Some(ids) => {
                        let ids: Vec<i64> = ids.iter().map(|b| b.0).collect();
                        for piece in crate::store::sql::padded(&ids) {
                            let mut update = renew(Some(piece));
                            renewed.extend(
                                update.build_query_scalar::<i64>().fetch_all(&self.pool).await.map_err(q)?,
                            );
                        }
                    }
                }
                Ok(renewed.into_iter().map(crate::store::BuildId).collect())
            }

            async fn end_claimed(
                &self,
                build: crate::store::BuildId,
                token: i64,
                ending: &crate::store::queue::Ending,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<bool> {
                let q = |source| crate::store::StoreError::query("record how a build ended", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                let done = Self::end_in(&mut tx, build, Some(token), ending, at, &mut None)
                    .await
                    .map_err(q)?;
                if done && Self::PG {
                    Self::notify(&mut tx, "ended").await.map_err(q)?;
                }
                tx.commit().await.map_err(q)?;
                Ok(done)
            }

            async fn end_many(
                &self,
                ends: &[(crate::store::BuildId, i64, crate::store::queue::Ending)],
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<Vec<bool>> {
                let q = |source| crate::store::StoreError::query("record how builds ended", source);
                if ends.is_empty() {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await.map_err(q)?;
                // The workers that listen are woken by the ends themselves.
                let done = Self::end_all(&mut tx, ends, at).await.map_err(q)?;
                tx.commit().await.map_err(q)?;
                Ok(done)
            }

            async fn cancel_queued(
                &self,
                build: crate::store::BuildId,
                reason: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<bool> {
                let q = |source| crate::store::StoreError::query("cancel a queued build", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                let ending = crate::store::queue::Ending::Done(crate::store::Outcome::Cancelled {
                    reason: crate::store::Reason::cancelled(reason),
                });
                let done = Self::end_in(&mut tx, build, None, &ending, at, &mut None)
                    .await
                    .map_err(q)?;
                tx.commit().await.map_err(q)?;
                Ok(done)
            }

            async fn rescue(
                &self,
                host: &str,
                gone: &crate::store::queue::Judge<'_>,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<Vec<crate::store::queue::Rescued>> {
                use crate::store::queue::{Ending, Rescued, Suspect};
                use crate::store::BuildId;
                let q = |source| crate::store::StoreError::query("rescue builds of lost runners", source);
                #[derive(sqlx::FromRow)]
                struct Row {
                    id: i64,
                    job_id: String,
                    token: i64,
                    attempt: i32,
                    /// As text: one that does not read is a build without retries.
                    config: String,
                    worker: Option<String>,
                    host: Option<String>,
                    pid: Option<i32>,
                    pgid: Option<i32>,
                    runner_id: Option<String>,
                    runner_since: Option<i64>,
                    run_owner: Option<String>,
                    status: String,
                    created_at: chrono::DateTime<chrono::Utc>,
                    started_at: Option<chrono::DateTime<chrono::Utc>>,
                    expired: Option<bool>,
                }
                // Builds claimed, reserved or planned whose lease ran out anywhere, and
                // every open build a runner on this host holds or planned (with a lease or
                // not: a jobctl from before leases on planned builds).
                // Whether a lease ran out is judged on the database's clock (see
                // `push_lease_end`).
                let mut select: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "SELECT id, job_id, token, attempt, CAST(config AS TEXT) AS config, worker, host, pid, pgid, runner_id, \
                     runner_since, run_owner, status, created_at, started_at, \
                     (lease_until < ",
                );
                Self::push_now(&mut select, at);
                select.push(
                    ") AS expired FROM builds WHERE status IN ('created', 'running') \
                     AND ((lease_until < ",
                );
                Self::push_now(&mut select, at);
                select.push(") OR (host = ").push_bind(host).push(" AND pid IS NOT NULL)) ORDER BY id");
                let rows: Vec<Row> = select.build_query_as().fetch_all(&self.pool).await.map_err(q)?;
                let mut rescued = Vec::new();
                for row in rows {
                    let id = BuildId(row.id);
                    let pid = row.pid.map(|p| p.max(0) as u32);
                    let expired = row.expired.unwrap_or(false);
                    // Judged here only; a runner elsewhere is lost only by its lease.
                    let killed = match (row.host.as_deref() == Some(host), pid) {
                        (true, Some(pid)) => gone(&Suspect {
                            build: id,
                            pid,
                            since: row.runner_since,
                            created_at: row.created_at,
                            pgid: row.pgid.and_then(|g| u32::try_from(g).ok()),
                        }),
                        _ => None,
                    };
                    if !expired && killed.is_none() {
                        continue;
                    }
                    let gone = killed.is_some();
                    let who = match (&row.worker, &row.host, pid) {
                        (Some(name), Some(on), _) => format!("worker {name} on {on}"),
                        (None, Some(on), Some(pid)) => format!("jobctl (pid {pid}) on {on}"),
                        _ => "its runner".to_owned(),
                    };
                    let rescue = |retried_as: Option<i64>, reason: String| Rescued {
                        id,
                        job_id: row.job_id.clone(),
                        retried_as: retried_as.map(BuildId),
                        reason,
                        host: row.host.clone(),
                        pid,
                    };
                    if row.status == "created" && killed.unwrap_or(0) == 0 {
                        // Planned or reserved by a run that is gone, and nothing of it
                        // runs: it never started, so it did not happen.
                        let done = sqlx::query(
                            "DELETE FROM builds WHERE id = $1 AND status = 'created' AND token = $2",
                        )
                        .bind(row.id)
                        .bind(row.token)
                        .execute(&self.pool)
                        .await
                        .map_err(q)?;
                        if done.rows_affected() > 0 {
                            let reason = match gone {
                                true => format!("removed: planned by {who}, which died before it started"),
                                false => format!("removed: planned by {who}, whose lease ran out before it started"),
                            };
                            rescued.push(rescue(None, reason));
                        }
                        continue;
                    }
                    let owned = row.run_owner.is_some();
                    let why = crate::store::Reason::RunnerLost { worker: !owned, who, gone };
                    let reason = why.to_string();
                    let outcome = crate::store::Outcome::failed(why);
                    if owned {
                        // A `jobctl build` run's build: nobody runs it again. It ended
                        // when its runner was last seen alive, not now.
                        let end = crate::store::queue::last_seen(self, id, row.started_at, row.created_at).await?;
                        match row.runner_id {
                            Some(_) => {
                                let mut tx = self.begin_write().await.map_err(q)?;
                                let ended = Self::end_in(&mut tx, id, Some(row.token), &Ending::Done(outcome), end, &mut None)
                                    .await
                                    .map_err(q)?;
                                tx.commit().await.map_err(q)?;
                                if !ended {
                                    continue;
                                }
                            }
                            // Recorded by a jobctl from before claims (no lease, no token).
                            None => crate::store::Store::finish_build(self, id, &outcome, end).await?,
                        }
                        rescued.push(rescue(None, reason));
                        continue;
                    }
                    let job = serde_json::from_str(&row.config)
                        .ok()
                        .and_then(|config| crate::config::Job::from_snapshot(&config).ok());
                    let retries = job.as_ref().map_or(0, |j| j.retries);
                    let attempt = row.attempt;
                    let ending = if (attempt.max(0) as u32) <= retries {
                        let delay = job.as_ref().map_or(std::time::Duration::ZERO, |j| {
                            j.retry_delay.saturating_mul(1 << (attempt.clamp(1, 16) - 1))
                        });
                        Ending::Retry {
                            outcome,
                            not_before: crate::limits::after(at, delay),
                        }
                    } else {
                        Ending::Done(outcome)
                    };
                    let mut tx = self.begin_write().await.map_err(q)?;
                    let mut retried_as = None;
                    let ended = Self::end_in(&mut tx, id, Some(row.token), &ending, at, &mut retried_as)
                        .await
                        .map_err(q)?;
                    tx.commit().await.map_err(q)?;
                    if ended {
                        rescued.push(rescue(retried_as, reason));
                    }
                }
                Ok(rescued)
            }

            async fn heartbeat(
                &self,
                claimer: &crate::store::queue::Claimer,
                slots: u32,
                lease: std::time::Duration,
                draining: bool,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO workers (id, name, host, pid, labels, slots, lease_secs, started_at, \
                     heartbeat_at, draining) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
                     ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
                     draining = excluded.draining",
                )
                .bind(&claimer.id)
                .bind(claimer.name.as_deref().unwrap_or("jobctl build"))
                .bind(&claimer.host)
                .bind(claimer.pid as i32)
                .bind(serde_json::to_string(&claimer.labels).expect("strings serialize"))
                .bind(slots as i32)
                .bind(lease.as_secs().min(i32::MAX as u64) as i32)
                .bind(at)
                .bind(draining)
                .execute(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("record a worker's heartbeat", source))?;
                Ok(())
            }

            async fn worker_stopped(
                &self,
                claimer: &crate::store::queue::Claimer,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<()> {
                sqlx::query("UPDATE workers SET stopped_at = $2, heartbeat_at = $2 WHERE id = $1")
                    .bind(&claimer.id)
                    .bind(at)
                    .execute(&self.pool)
                    .await
                    .map_err(|source| crate::store::StoreError::query("record a worker's stop", source))?;
                Ok(())
            }

            async fn build_states(
                &self,
                from: crate::store::BuildId,
                to: crate::store::BuildId,
            ) -> crate::store::Result<Vec<crate::store::queue::BuildState>> {
                type Row = (
                    i64,
                    String,
                    String,
                    i32,
                    Option<String>,
                    Option<chrono::DateTime<chrono::Utc>>,
                    Option<chrono::DateTime<chrono::Utc>>,
                    Option<String>,
                );
                // The reason as text, parsed here: one that is not JSON (or not one this
                // jobctl knows) is left to its words.
                let sql = if Self::PG {
                    "SELECT id, job_id, status, attempt, error, started_at, finished_at, reason::text \
                     FROM builds WHERE id >= $1 AND id <= $2 ORDER BY id"
                } else {
                    "SELECT id, job_id, status, attempt, error, started_at, finished_at, reason \
                     FROM builds WHERE id >= $1 AND id <= $2 ORDER BY id"
                };
                let rows: Vec<Row> = sqlx::query_as(sql)
                .bind(from.0)
                .bind(to.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("follow builds", source))?;
                rows.into_iter()
                    .map(|(id, job_id, status, attempt, error, started_at, finished_at, reason)| {
                        Ok(crate::store::queue::BuildState {
                            id: crate::store::BuildId(id),
                            job_id,
                            started_at,
                            finished_at,
                            status: crate::store::BuildStatus::parse(&status).ok_or_else(|| {
                                crate::store::StoreError::Corrupt { what: "build status", detail: status.clone() }
                            })?,
                            attempt: attempt.max(0) as u32,
                            error,
                            reason: reason.and_then(|r| serde_json::from_str(&r).ok()),
                        })
                    })
                    .collect()
            }

            async fn queued_for_workers(&self, labels: &[String]) -> crate::store::Result<u64> {
                let mut count: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "SELECT COUNT(*) FROM builds WHERE status IN ('created', 'running') \
                     AND status = 'created' AND run_owner IS NULL \
                     AND NOT EXISTS (SELECT 1 FROM build_labels l WHERE l.build_id = builds.id",
                );
                if !labels.is_empty() {
                    count.push(" AND l.label NOT IN (");
                    let mut list = count.separated(", ");
                    for label in labels {
                        list.push_bind(label.clone());
                    }
                    count.push(")");
                }
                count.push(")");
                let n: i64 = count
                    .build_query_scalar()
                    .fetch_one(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("count queued builds", source))?;
                Ok(n.max(0) as u64)
            }

            async fn workers(&self) -> crate::store::Result<Vec<crate::store::queue::WorkerRow>> {
                type Row = (
                    String,
                    String,
                    String,
                    i32,
                    String,
                    i32,
                    i32,
                    chrono::DateTime<chrono::Utc>,
                    chrono::DateTime<chrono::Utc>,
                    bool,
                    Option<chrono::DateTime<chrono::Utc>>,
                    i64,
                );
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT w.id, w.name, w.host, w.pid, w.labels, w.slots, w.lease_secs, w.started_at, \
                     w.heartbeat_at, w.draining, w.stopped_at, \
                     (SELECT COUNT(*) FROM builds b WHERE b.status = 'running' AND b.runner_id = w.id) \
                     FROM workers w ORDER BY w.started_at DESC, w.id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("list workers", source))?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, host, pid, labels, slots, lease, started, beat, draining, stopped, running)| {
                        crate::store::queue::WorkerRow {
                            id,
                            name,
                            host,
                            pid: pid.max(0) as u32,
                            labels: serde_json::from_str(&labels).unwrap_or_default(),
                            slots: slots.max(0) as u32,
                            lease_secs: lease.max(0) as u32,
                            started_at: started,
                            heartbeat_at: beat,
                            draining,
                            stopped_at: stopped,
                            running: running.clamp(0, i64::from(u32::MAX)) as u32,
                        }
                    })
                    .collect())
            }
        }

        impl $store {
            /// Claims in `tx` (see [`Queue::claim`]).
            async fn claim_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                claimer: &crate::store::queue::Claimer,
                limit: usize,
                only: Option<&[crate::store::BuildId]>,
                lease: std::time::Duration,
                now: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<crate::store::queue::Claimed>, sqlx::Error> {
                if limit == 0 || only.is_some_and(|o| o.is_empty()) {
                    return Ok(Vec::new());
                }

                // Claims take turns (the count below sees every claim before this one).
                Self::lock_claims(tx).await?;
                // One statement: the candidates (the builds asked for, or the oldest ready
                // ones this runner has the labels for; a few more than wanted, as some may
                // be held back by their job's concurrency), how many builds of each of
                // their jobs fill its concurrency now, the first of each job that fit, and
                // their claim.
                let mut claim: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "WITH candidates AS (SELECT id, job_id, concurrency FROM builds WHERE ",
                );
                match only {
                    Some(ids) => {
                        // See "Found by id" above `OCCUPYING`.
                        claim.push("status || '' = 'created' AND runner_id IS NULL AND run_owner = ").push_bind(claimer.id.clone());
                        claim.push(" AND id IN (");
                        let mut list = claim.separated(", ");
                        for id in ids {
                            list.push_bind(id.0);
                        }
                        claim.push(")");
                    }
                    None => {
                        claim.push("status = 'created' AND waiting = 0 AND run_owner IS NULL AND runner_id IS NULL \
                             AND (not_before IS NULL OR not_before <= ");
                        claim.push_bind(now);
                        claim.push(") AND NOT EXISTS (SELECT 1 FROM build_labels l WHERE l.build_id = builds.id");
                        if !claimer.labels.is_empty() {
                            claim.push(" AND l.label NOT IN (");
                            let mut list = claim.separated(", ");
                            for label in &claimer.labels {
                                list.push_bind(label.clone());
                            }
                            claim.push(")");
                        }
                        claim.push(")");
                    }
                }
                claim.push(" ORDER BY id LIMIT ");
                claim.push_bind((limit.saturating_mul(2) + 16).min(10_000) as i64);
                if Self::PG {
                    claim.push(" FOR UPDATE SKIP LOCKED");
                }
                claim.push(format!(
                    "), busy AS (SELECT job_id, COUNT(*) AS n FROM builds WHERE {} \
                     AND job_id IN (SELECT job_id FROM candidates) GROUP BY job_id), \
                     ranked AS (SELECT c.id, c.concurrency, COALESCE(b.n, 0) AS n, \
                       ROW_NUMBER() OVER (PARTITION BY c.job_id ORDER BY c.id) AS place \
                       FROM candidates c LEFT JOIN busy b ON b.job_id = c.job_id), \
                     chosen AS (SELECT id FROM ranked WHERE n + place <= \
                       CASE WHEN concurrency < 1 THEN 1 ELSE concurrency END ORDER BY id LIMIT ",
                    crate::store::queue::OCCUPYING
                ));
                claim.push_bind(limit.min(10_000) as i64);
                claim.push(") UPDATE builds SET status = 'running', started_at = ");
                claim.push_bind(now);
                claim.push(", token = token + 1, lease_until = ");
                Self::push_lease_end(&mut claim, lease, now);
                claim.push(", runner_id = ").push_bind(claimer.id.clone());
                claim.push(", runner_since = ").push_bind(claimer.since);
                claim.push(", host = ").push_bind(claimer.host.clone());
                claim.push(", pid = ").push_bind(claimer.pid as i32);
                claim.push(", worker = ").push_bind(claimer.name.clone());
                // The snapshot as text, read here: see `Claimed::config`.
                claim.push(
                    " WHERE id IN (SELECT id FROM chosen) \
                     RETURNING id, job_id, token, attempt, CAST(config AS TEXT)",
                );
                let mut rows: Vec<(i64, String, i64, i32, String)> =
                    claim.build_query_as().fetch_all(&mut **tx).await?;
                rows.sort_unstable_by_key(|r| r.0);
                let configs: Vec<Result<serde_json::Value, String>> = rows
                    .iter()
                    .map(|r| serde_json::from_str(&r.4).map_err(|e| e.to_string()))
                    .collect();
                let mut pins = if only.is_some() {
                    // The run's own runner knows its pins.
                    std::collections::HashMap::new()
                } else {
                    let of: Vec<(i64, &serde_json::Value)> = rows
                        .iter()
                        .zip(&configs)
                        .filter_map(|(r, config)| Some((r.0, config.as_ref().ok()?)))
                        .collect();
                    Self::pins_of(tx, &of).await?
                };
                let mut claimed = Vec::with_capacity(rows.len());
                for ((id, job_id, token, attempt, _), config) in rows.into_iter().zip(configs) {
                    let (pins, retvals) = pins.remove(&id).unwrap_or_default();
                    claimed.push(crate::store::queue::Claimed {
                        id: crate::store::BuildId(id),
                        job_id,
                        token,
                        attempt: attempt.max(0) as u32,
                        config,
                        pins,
                        retvals,
                    });
                }
                Ok(claimed)
            }

            /// The end of a lease taken now: `lease` from now on the database's clock on
            /// PostgreSQL (`now()`, the start of the statement's transaction), so that
            /// runners on machines whose clocks disagree agree on when a lease ends — a
            /// worker whose clock ran a minute behind had its builds taken from it at
            /// once. A runner stops its builds `lease` after it asked for the renewal, by
            /// its own steady clock, which is before this end. SQLite is one machine, one
            /// clock: `at` (its timestamps are text, compared as such).
            fn push_lease_end(
                sql: &mut sqlx::QueryBuilder<$db>,
                lease: std::time::Duration,
                at: chrono::DateTime<chrono::Utc>,
            ) {
                if Self::PG {
                    let secs = lease.min(crate::limits::MAX_DURATION).as_secs_f64();
                    sql.push("now() + make_interval(secs => ").push_bind(secs).push(")");
                } else {
                    sql.push_bind(crate::limits::after(at, lease));
                }
            }

            /// Now, on the clock leases are judged by (see [`Self::push_lease_end`]).
            fn push_now(sql: &mut sqlx::QueryBuilder<$db>, at: chrono::DateTime<chrono::Utc>) {
                if Self::PG {
                    sql.push("now()");
                } else {
                    sql.push_bind(at);
                }
            }

            /// Wakes the workers that listen (PostgreSQL), when this transaction commits.
            async fn notify(
                tx: &mut sqlx::Transaction<'static, $db>,
                what: &str,
            ) -> Result<(), sqlx::Error> {
                sqlx::query("SELECT pg_notify('jobctl_queue', $1)")
                    .bind(what)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }

            /// Claims and reservations take turns: on PostgreSQL one transaction-level
            /// lock (claims are short and batched); SQLite's write lock already does.
            async fn lock_claims(
                tx: &mut sqlx::Transaction<'static, $db>,
            ) -> Result<(), sqlx::Error> {
                if Self::PG {
                    sqlx::query("SELECT pg_advisory_xact_lock(7361626)")
                        .execute(&mut **tx)
                        .await?;
                }
                Ok(())
            }

            /// How many builds of each of `jobs` fill its concurrency now.
            async fn occupied(
                tx: &mut sqlx::Transaction<'static, $db>,
                jobs: &[&str],
            ) -> Result<std::collections::HashMap<String, i64>, sqlx::Error> {
                let mut busy = std::collections::HashMap::new();
                for chunk in crate::store::sql::padded(jobs) {
                    let mut count: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(format!(
                        // Only OCCUPYING: the index of just those builds is then the one
                        // to use, even when the statistics lag behind a large enqueue.
                        "SELECT job_id, COUNT(*) FROM builds WHERE {} AND job_id IN (",
                        crate::store::queue::OCCUPYING
                    ));
                    let mut list = count.separated(", ");
                    for job in chunk {
                        list.push_bind(job.to_string());
                    }
                    count.push(") GROUP BY job_id");
                    let rows: Vec<(String, i64)> =
                        count.build_query_as().fetch_all(&mut **tx).await?;
                    busy.extend(rows);
                }
                Ok(busy)
            }

            /// The pins of claimed builds: for each dependency of a build's job, the build
            /// of its run it waited on, else that job's latest success. Recorded with
            /// them; a build without dependencies has none. A few statements for all.
            async fn pins_of(
                tx: &mut sqlx::Transaction<'static, $db>,
                builds: &[(i64, &serde_json::Value)],
            ) -> Result<std::collections::HashMap<i64, crate::store::queue::PinsOf>, sqlx::Error> {
                let wanted: Vec<(i64, String)> = builds
                    .iter()
                    .flat_map(|(build, config)| {
                        config
                            .get("dependencies")
                            .and_then(serde_json::Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|d| d.as_str().map(|d| (*build, d.to_owned())))
                    })
                    .collect();
                let mut pins: std::collections::HashMap<i64, crate::store::queue::PinsOf> =
                    std::collections::HashMap::new();
                if wanted.is_empty() {
                    // No dependencies: no pins, now or from an earlier claim.
                    return Ok(pins);
                }
                let mut found: std::collections::HashMap<(i64, String), Option<i64>> =
                    std::collections::HashMap::with_capacity(wanted.len());
                let mut values: std::collections::HashMap<i64, serde_json::Value> =
                    std::collections::HashMap::new();
                // One statement a piece finds each pin and records it (over what an earlier
                // claim of the build recorded); DISTINCT: a repeated pair (a padded piece, a
                // dependency named twice) is one row.
                for piece in crate::store::sql::padded(&wanted) {
                    let mut upsert: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(format!(
                        "{}INSERT INTO build_pins (build_id, dep_job_id, dep_build_id) \
                         SELECT DISTINCT v.column1, v.column2, COALESCE( \
                           (SELECT u.id FROM build_waits w JOIN builds u ON u.id = w.waits_on \
                            WHERE w.build_id = v.column1 AND u.job_id = v.column2 \
                            AND u.status = 'successful' ORDER BY u.id DESC LIMIT 1), \
                           (SELECT b.id FROM builds b WHERE b.job_id = v.column2 \
                            AND b.status = 'successful' ORDER BY b.id DESC LIMIT 1)) FROM (",
                        if Self::PG { "WITH up AS (" } else { "" }
                    ));
                    upsert.push_values(&piece, |mut row, (build, dep)| {
                        row.push_bind(*build).push_bind(dep.clone());
                    });
                    // `WHERE true`: SQLite reads an ON CONFLICT after a bare FROM as a join.
                    upsert.push(
                        ") AS v WHERE true ON CONFLICT (build_id, dep_job_id) \
                         DO UPDATE SET dep_build_id = excluded.dep_build_id \
                         RETURNING build_id, dep_job_id, dep_build_id",
                    );
                    // On PostgreSQL with the pinned builds' return values, in the same
                    // statement; SQLite cannot wrap an INSERT (read below).
                    upsert.push(if Self::PG {
                        ") SELECT up.build_id, up.dep_job_id, up.dep_build_id, b.retval \
                         FROM up LEFT JOIN builds b ON b.id = up.dep_build_id"
                    } else {
                        ", NULL"
                    });
                    let rows: Vec<(i64, String, Option<i64>, Option<sqlx::types::Json<serde_json::Value>>)> =
                        upsert.build_query_as().fetch_all(&mut **tx).await?;
                    for (b, d, at, value) in rows {
                        if let (Some(at), Some(value)) = (at, value) {
                            values.insert(at, value.0);
                        }
                        found.insert((b, d), at);
                    }
                }
                if !Self::PG {
                    let mut pinned: Vec<i64> = found.values().flatten().copied().collect();
                    pinned.sort_unstable();
                    pinned.dedup();
                    for piece in crate::store::sql::padded(&pinned) {
                        let mut select: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                            "SELECT id, retval FROM builds WHERE retval IS NOT NULL AND id IN (",
                        );
                        let mut list = select.separated(", ");
                        for id in piece {
                            list.push_bind(id);
                        }
                        select.push(")");
                        let rows: Vec<(i64, sqlx::types::Json<serde_json::Value>)> =
                            select.build_query_as().fetch_all(&mut **tx).await?;
                        values.extend(rows.into_iter().map(|(id, v)| (id, v.0)));
                    }
                }
                // In the order of each job's dependencies, each once.
                for (build, dep) in wanted {
                    let at = found.get(&(build, dep.clone())).copied().flatten();
                    let (own, retvals) = pins.entry(build).or_default();
                    if own.iter().any(|p| p.job_id == dep) {
                        continue;
                    }
                    if let Some(value) = at.and_then(|at| values.get(&at)) {
                        retvals.insert(dep.clone(), value.clone());
                    }
                    own.push(crate::store::Pin {
                        job_id: dep,
                        build_id: at.map(crate::store::BuildId),
                    });
                }
                Ok(pins)
            }
        }
    };
}

pub(super) use impl_queue;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reserves_in_order_what_each_job_has_room_for() {
        let occupied: std::collections::HashMap<String, i64> =
            [("full".to_owned(), 1), ("two".to_owned(), 1)].into();
        let planned = [
            ("free", 1),
            ("full", 1),
            ("two", 2),
            ("free", 1),
            ("two", 2),
            ("wide", 3),
            ("wide", 3),
        ];
        assert_eq!(
            reservations(planned, &occupied),
            [true, false, true, false, false, true, true]
        );
    }

    #[test]
    fn a_snapshots_concurrency_is_read_within_the_configs_bounds() {
        for (config, limit) in [
            (serde_json::json!({}), 1),
            (serde_json::json!({"concurrency": 4}), 4),
            (serde_json::json!({"concurrency": 0}), 1),
            (serde_json::json!({"concurrency": -7}), 1),
            (serde_json::json!({"concurrency": 1_000_000}), 10_000),
            (serde_json::json!({"concurrency": "3"}), 1),
        ] {
            assert_eq!(concurrency_of(&config), limit, "{config}");
        }
    }
}
