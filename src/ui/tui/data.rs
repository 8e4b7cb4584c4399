//! What the dashboard shows, read from the store: one [`Snapshot`] per change of the
//! database, with the detail the open view needs. Reading is separate from drawing so that
//! tests can build a snapshot from a fixed database and draw it at a fixed time.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::graph::JobGraph;
use crate::store::progress::{self, ProgressNode};
use crate::store::queue::{Queue, WorkerRow};
use crate::store::status::{JobStatus, job_statuses};
use crate::store::{
    Build, BuildFilter, BuildId, BuildStatus, LogFilter, LogRow, Pin, Result, Store,
};

/// How many builds of one job its detail lists.
pub const JOB_BUILDS: u32 = 200;
/// How many log lines a build's view keeps (the newest).
pub const LOG_LINES: usize = 20_000;

/// A job's state as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    NotBuilt,
    Queued,
    Running,
    Success,
    Failed,
    Outdated,
}

impl State {
    /// Filters cycle through these, after "all".
    pub const ALL: [State; 6] = [
        State::Running,
        State::Failed,
        State::Outdated,
        State::Queued,
        State::NotBuilt,
        State::Success,
    ];

    /// A mark that tells the states apart without colour.
    pub fn symbol(self) -> &'static str {
        match self {
            State::NotBuilt => "·",
            State::Queued => "…",
            State::Running => "▶",
            State::Success => "✓",
            State::Failed => "✗",
            State::Outdated => "~",
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            State::NotBuilt => "not built",
            State::Queued => "queued",
            State::Running => "running",
            State::Success => "success",
            State::Failed => "failed",
            State::Outdated => "outdated",
        }
    }
}

/// A running build: its number, start and how far its progress is (0.0 to 1.0).
pub type Running = (BuildId, Option<DateTime<Utc>>, Option<f64>);

/// Who runs a build: host and jobctl pid, and until when its lease holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Who {
    pub host: String,
    pub pid: u32,
    pub lease_until: Option<DateTime<Utc>>,
}

/// One job's line in the jobs pane.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub state: State,
    /// Why it is outdated, when it is.
    pub outdated: Option<String>,
    /// The latest finished build: its status, start and end.
    pub last: Option<(BuildStatus, Option<DateTime<Utc>>, DateTime<Utc>)>,
    pub running: Option<Running>,
    pub runner: Option<Who>,
    /// The running build's runner is gone: its lease ran out (any machine; the next
    /// runner to look rescues it), or it is provably gone on this machine.
    pub runner_gone: bool,
}

impl JobRow {
    /// When something last happened to the job (for "recent activity" order).
    pub fn activity(&self) -> Option<DateTime<Utc>> {
        let running = self.running.and_then(|(_, at, _)| at);
        let last = self.last.map(|(_, _, at)| at);
        running.max(last)
    }
}

/// The detail of one build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildDetail {
    pub build: Build,
    pub pins: Vec<Pin>,
    pub progress: ProgressNode,
    /// The newest log lines, oldest first (at most [`LOG_LINES`]).
    pub logs: Vec<LogRow>,
    /// Whether older lines were left out.
    pub logs_cut: bool,
}

/// What the database holds, as far as the open views need it.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    /// Nothing to read yet (no SQLite file, no schema): the message says what to do.
    NoDatabase {
        message: String,
    },
    Ready(Box<Loaded>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// By job index.
    pub jobs: Vec<JobRow>,
    /// The builds of the job whose detail is open, newest first.
    pub job_builds: Option<(usize, Vec<Build>)>,
    pub build: Option<BuildDetail>,
    /// Every worker that has not stopped, when the workers view is open.
    pub workers: Option<Vec<WorkerRow>>,
}

/// What the open views want besides the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wanted {
    pub job: Option<usize>,
    pub build: Option<BuildId>,
    pub workers: bool,
}

/// Reads a snapshot. `previous` lets a build's log be read from where it stopped and,
/// unless `builds_changed` (no build made, started or ended since), lends its jobs and
/// job builds: then only running progress and the open build are read again, which keeps
/// a busy build cheap to watch over a long history.
pub async fn load(
    store: &(impl Store + Queue),
    config: &Config,
    graph: &JobGraph,
    wanted: Wanted,
    previous: Option<&Loaded>,
    builds_changed: bool,
) -> Result<Loaded> {
    let reuse = previous.filter(|_| !builds_changed);
    let mut jobs = match reuse {
        Some(previous) => {
            let mut jobs = previous.jobs.clone();
            for row in &mut jobs {
                if let Some((id, _, fraction)) = &mut row.running {
                    *fraction = progress::tree(&store.progress(*id).await?).fraction();
                }
            }
            jobs
        }
        None => job_rows(store, config, graph).await?,
    };
    mark_gone(&mut jobs);
    let job_builds = match wanted.job {
        Some(job) => match reuse
            .and_then(|p| p.job_builds.as_ref())
            .filter(|(j, _)| *j == job)
        {
            Some(same) => Some(same.clone()),
            None => Some((
                job,
                store
                    .builds(&BuildFilter {
                        job: Some(config.jobs[job].id.to_string()),
                        limit: Some(JOB_BUILDS),
                        ..BuildFilter::default()
                    })
                    .await?,
            )),
        },
        None => None,
    };
    let build = match wanted.build {
        Some(id) => match store.build(id).await? {
            Some(build) => {
                let before = previous
                    .and_then(|p| p.build.as_ref())
                    .filter(|b| b.build.id == id);
                Some(build_detail(store, build, before).await?)
            }
            None => None,
        },
        None => None,
    };
    let workers = match wanted.workers {
        true => Some(workers(store).await?),
        false => None,
    };
    Ok(Loaded {
        jobs,
        job_builds,
        build,
        workers,
    })
}

/// The workers that have not stopped, by name. Heartbeats move no change token: the
/// loop reads these on every tick while the view is open.
pub async fn workers(store: &impl Queue) -> Result<Vec<WorkerRow>> {
    let mut workers: Vec<WorkerRow> = store
        .workers()
        .await?
        .into_iter()
        .filter(|w| w.stopped_at.is_none())
        .collect();
    workers.sort_by(|a, b| a.name.cmp(&b.name).then(a.host.cmp(&b.host)));
    Ok(workers)
}

/// Every job's state, latest build and running build, from three queries.
async fn job_rows(store: &impl Store, config: &Config, graph: &JobGraph) -> Result<Vec<JobRow>> {
    let rows = store.job_builds().await?;
    let statuses = job_statuses(config, graph, &rows);
    let by_job: HashMap<&str, &crate::store::JobBuilds> =
        rows.iter().map(|r| (r.job_id.as_str(), r)).collect();
    let running = store
        .builds(&BuildFilter {
            status: Some(BuildStatus::Running),
            ..BuildFilter::default()
        })
        .await?;
    let mut running_by_job: HashMap<&str, (Running, Option<Who>)> = HashMap::new();
    for build in &running {
        let tree = progress::tree(&store.progress(build.id).await?);
        let runner = build.host.clone().zip(build.pid).map(|(host, pid)| Who {
            host,
            pid,
            lease_until: build.lease_until,
        });
        running_by_job
            .entry(build.job_id.as_str())
            .or_insert(((build.id, build.started_at, tree.fraction()), runner));
    }
    let jobs: Vec<JobRow> = config
        .jobs
        .iter()
        .zip(statuses)
        .map(|(job, status)| {
            let row = by_job.get(job.id.as_str());
            let queued = row.is_some_and(|r| r.queued);
            let (state, outdated) = match status {
                JobStatus::Running => (State::Running, None),
                _ if queued => (State::Queued, None),
                JobStatus::NotBuilt => (State::NotBuilt, None),
                JobStatus::Success => (State::Success, None),
                JobStatus::Failed => (State::Failed, None),
                JobStatus::Cancelled => {
                    (State::NotBuilt, Some("its last build was cancelled".into()))
                }
                JobStatus::Outdated { because } => (State::Outdated, Some(because.to_string())),
            };
            JobRow {
                state,
                outdated,
                last: row
                    .and_then(|r| r.finished.as_ref())
                    .map(|f| (f.status, f.started_at, f.at)),
                running: running_by_job.get(job.id.as_str()).map(|(r, _)| *r),
                runner: running_by_job
                    .get(job.id.as_str())
                    .and_then(|(_, who)| who.clone()),
                runner_gone: false,
            }
        })
        .collect();
    Ok(jobs)
}

/// Marks the running builds whose runner is gone, from what the store holds: a lease
/// that ran out, or a runner on this machine whose process is gone; true if a mark
/// changed. No database: a dead runner changes nothing there.
pub fn mark_gone(jobs: &mut [JobRow]) -> bool {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(|| crate::store::Runner::this_process().host);
    let now = chrono::Utc::now();
    let mut changed = false;
    for row in jobs {
        let gone = row.running.is_some()
            && row.runner.as_ref().is_some_and(|who| {
                who.lease_until.is_some_and(|until| until < now)
                    || (who.host == *host && !crate::host::alive_since(who.pid, now))
            });
        changed |= gone != row.runner_gone;
        row.runner_gone = gone;
    }
    changed
}

async fn build_detail(
    store: &impl Store,
    build: Build,
    before: Option<&BuildDetail>,
) -> Result<BuildDetail> {
    let id = build.id;
    let (mut logs, mut logs_cut) = match before {
        Some(b) => (b.logs.clone(), b.logs_cut),
        None => (Vec::new(), false),
    };
    let fresh = store
        .logs(
            id,
            &LogFilter {
                after_id: logs.last().map(|l| l.id),
                tail: Some(LOG_LINES as u32 + 1),
                ..LogFilter::default()
            },
        )
        .await?;
    if fresh.len() > LOG_LINES {
        // More came than is kept: what was read before is older still.
        logs.clear();
        logs_cut = true;
    }
    logs.extend(fresh);
    if logs.len() > LOG_LINES {
        logs.drain(..logs.len() - LOG_LINES);
        logs_cut = true;
    }
    Ok(BuildDetail {
        pins: store.pins(id).await?,
        progress: progress::tree(&store.progress(id).await?),
        build,
        logs,
        logs_cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(who: Who) -> JobRow {
        JobRow {
            state: State::Running,
            outdated: None,
            last: None,
            running: Some((BuildId(1), Some(Utc::now()), None)),
            runner: Some(who),
            runner_gone: false,
        }
    }

    #[test]
    fn a_runner_is_gone_when_its_lease_ran_out_or_its_process_here_ended() {
        let now = Utc::now();
        let elsewhere = |lease_until| Who {
            host: "another-machine".into(),
            pid: 1,
            lease_until,
        };
        let here = crate::store::Runner::this_process().host;
        let mut rows = vec![
            // Another machine, its lease renewed: alive, whatever its pid is here.
            running(elsewhere(Some(now + chrono::Duration::seconds(30)))),
            // Another machine whose lease ran out.
            running(elsewhere(Some(now - chrono::Duration::seconds(1)))),
            // This machine, this process: alive.
            running(Who {
                host: here.clone(),
                pid: std::process::id(),
                lease_until: Some(now + chrono::Duration::seconds(30)),
            }),
            // This machine, no such process: gone before its lease ends.
            running(Who {
                host: here,
                pid: u32::MAX / 2,
                lease_until: Some(now + chrono::Duration::seconds(30)),
            }),
        ];
        assert!(mark_gone(&mut rows));
        let gone: Vec<bool> = rows.iter().map(|r| r.runner_gone).collect();
        assert_eq!(gone, [false, true, false, true]);
        assert!(!mark_gone(&mut rows), "nothing changed the second time");
    }
}
