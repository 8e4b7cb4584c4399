//! A job's status, computed from its builds and those of its ancestors: a pure function
//! over one query's rows ([`super::Store::job_builds`]), so 10k jobs cost one round trip.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{BuildStatus, JobBuilds};
use crate::config::{Config, Job, JobId};
use crate::graph::JobGraph;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum JobStatus {
    NotBuilt,
    Running,
    Success,
    /// Its only finished builds failed, or the latest finished one did.
    Failed,
    /// It has no successful build, and its latest finished build was cancelled.
    Cancelled,
    Outdated {
        because: Outdated,
    },
}

/// Why a successful job must be built again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Outdated {
    /// The job's config is not what its latest success ran with.
    ConfigChanged,
    /// An ancestor succeeded after it did (the newest such ancestor).
    NewerUpstream { job: JobId },
    /// A job upstream of it will be built again (it is outdated, failed or was never
    /// built), as in make: `job` is where that starts.
    Upstream { job: JobId, status: String },
}

impl std::fmt::Display for Outdated {
    /// `config changed`, `fetch succeeded since`, `upstream fetch outdated`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outdated::ConfigChanged => f.write_str("config changed"),
            Outdated::NewerUpstream { job } => write!(f, "{job} succeeded since"),
            Outdated::Upstream { job, status } => write!(f, "upstream {job} {status}"),
        }
    }
}

impl JobStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::NotBuilt => "not_built",
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Outdated { .. } => "outdated",
        }
    }
}

/// What decides whether a job's success is still valid: what it runs and with what.
/// A changed title or schedule does not make a job outdated.
#[derive(Serialize)]
struct HashedConfig<'a> {
    action: &'a crate::config::Action,
    args: &'a [crate::config::Value],
    kwargs: &'a crate::config::model::ValueMap,
    env: &'a crate::config::model::ValueMap,
    workdir: &'a std::path::Path,
    dependencies: &'a [JobId],
}

/// The hash a build records of its job's config (hex SHA-256).
pub fn config_hash(job: &Job) -> String {
    let hashed = HashedConfig {
        action: &job.action,
        args: &job.args,
        kwargs: &job.kwargs,
        env: &job.env,
        workdir: &job.workdir,
        dependencies: &job.dependencies,
    };
    let json = serde_json::to_vec(&hashed).expect("a config serializes");
    let digest = Sha256::digest(&json);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(2 * digest.len());
    for b in digest {
        hex.push(HEX[usize::from(b >> 4)] as char);
        hex.push(HEX[usize::from(b & 0xf)] as char);
    }
    hex
}

/// The status of every job of `config` (by index), from the rows of `job_builds`.
pub fn job_statuses(config: &Config, graph: &JobGraph, rows: &[JobBuilds]) -> Vec<JobStatus> {
    let by_job: HashMap<&str, &JobBuilds> = rows.iter().map(|r| (r.job_id.as_str(), r)).collect();
    let n = config.jobs.len();
    let row_of = |i: usize| by_job.get(config.jobs[i].id.as_str()).copied();
    // The newest success among each job's ancestors, and whose it is.
    let mut upstream: Vec<Option<(DateTime<Utc>, usize)>> = vec![None; n];
    let order = graph.topo_order();
    for &i in &order {
        let mut newest: Option<(DateTime<Utc>, usize)> = None;
        for d in graph.dependencies(i) {
            let own = row_of(d)
                .and_then(|r| r.success.as_ref())
                .map(|s| (s.at, d));
            for candidate in [own, upstream[d]].into_iter().flatten() {
                if newest.is_none_or(|(at, _)| candidate.0 > at) {
                    newest = Some(candidate);
                }
            }
        }
        upstream[i] = newest;
    }
    let mut statuses: Vec<JobStatus> = (0..n)
        .map(|i| {
            let Some(row) = row_of(i) else {
                return JobStatus::NotBuilt;
            };
            if row.running {
                return JobStatus::Running;
            }
            if row
                .finished
                .as_ref()
                .is_some_and(|f| f.status == BuildStatus::Failed)
            {
                return JobStatus::Failed;
            }
            let Some(success) = &row.success else {
                return match row.finished.as_ref().map(|f| f.status) {
                    // A job that said "nothing to do" is current (a skip makes nothing
                    // downstream outdated either: it changed nothing).
                    Some(BuildStatus::Skipped) => JobStatus::Success,
                    Some(BuildStatus::Cancelled) => JobStatus::Cancelled,
                    _ => JobStatus::NotBuilt,
                };
            };
            if success.config_hash != config_hash(&config.jobs[i]) {
                return JobStatus::Outdated {
                    because: Outdated::ConfigChanged,
                };
            }
            match upstream[i] {
                Some((at, job)) if at > success.at => JobStatus::Outdated {
                    because: Outdated::NewerUpstream {
                        job: config.jobs[job].id.clone(),
                    },
                },
                _ => JobStatus::Success,
            }
        })
        .collect();
    // As in make: a job whose upstream will be built again is outdated too, naming where
    // that starts. In dependency order, so each job sees its dependencies' final status.
    for &i in &order {
        if statuses[i] != JobStatus::Success {
            continue;
        }
        let cause = graph
            .dependencies(i)
            .into_iter()
            .find_map(|d| match &statuses[d] {
                JobStatus::Outdated {
                    because: Outdated::Upstream { job, status },
                } => Some((job.clone(), status.clone())),
                JobStatus::Outdated { .. } => Some((config.jobs[d].id.clone(), "outdated".into())),
                JobStatus::Failed => Some((config.jobs[d].id.clone(), "failed".into())),
                JobStatus::Cancelled => Some((config.jobs[d].id.clone(), "cancelled".into())),
                JobStatus::NotBuilt => Some((config.jobs[d].id.clone(), "not built".into())),
                JobStatus::Running | JobStatus::Success => None,
            });
        if let Some((job, status)) = cause {
            statuses[i] = JobStatus::Outdated {
                because: Outdated::Upstream { job, status },
            };
        }
    }
    statuses
}
