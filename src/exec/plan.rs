//! What a `jobctl build` will run, and why: a pure function of the config, the graph and
//! the jobs' statuses.

use std::fmt;

use serde::Serialize;

use crate::config::{Config, JobId};
use crate::graph::JobGraph;
use crate::store::status::{JobStatus, Outdated};

/// Which dependencies of the asked-for jobs are built first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deps {
    /// None: only the jobs asked for.
    None,
    /// Those with no successful build.
    Missing,
    /// Those with no successful build, and those that are outdated (the default).
    #[default]
    Outdated,
    /// All of them, whatever their status.
    All,
}

/// Why a job is in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Reason {
    NotBuilt,
    /// Its latest finished build failed.
    Failed,
    /// Its only builds were cancelled.
    Cancelled,
    Outdated {
        because: Outdated,
    },
    /// A job it depends on is built in this run.
    UpstreamRebuilt {
        job: JobId,
    },
    /// `--force` for a job asked for.
    Forced,
    /// `--deps all` for a dependency that is up to date.
    AllDeps,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotBuilt => f.write_str("not built"),
            Reason::Failed => f.write_str("its last build failed"),
            Reason::Cancelled => f.write_str("its last build was cancelled"),
            Reason::Outdated { because } => write!(f, "outdated: {because}"),
            Reason::UpstreamRebuilt { job } => write!(f, "upstream {job} rebuilt"),
            Reason::Forced => f.write_str("--force"),
            Reason::AllDeps => f.write_str("--deps all"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Index in `Config.jobs`.
    #[serde(skip)]
    pub job: usize,
    #[serde(rename = "job")]
    pub id: JobId,
    #[serde(flatten)]
    pub reason: Reason,
}

/// The jobs to build, in an order that respects every dependency. With `downstream`,
/// also every job downstream of the targets that this run makes (or finds) outdated:
/// JobControl's "build the dependants too".
pub fn plan(
    config: &Config,
    graph: &JobGraph,
    statuses: &[JobStatus],
    targets: &[usize],
    deps: Deps,
    force: bool,
    downstream: bool,
) -> Vec<Step> {
    let mut is_target = vec![false; config.jobs.len()];
    for &t in targets {
        is_target[t] = true;
    }
    // Downstream jobs are looked at like targets, but never forced.
    let mut is_downstream = vec![false; config.jobs.len()];
    if downstream {
        let mut stack: Vec<usize> = targets.to_vec();
        while let Some(job) = stack.pop() {
            for d in graph.dependants(job) {
                if !is_target[d] && !std::mem::replace(&mut is_downstream[d], true) {
                    stack.push(d);
                }
            }
        }
    }
    let wanted: Vec<usize> = (0..config.jobs.len())
        .filter(|&j| is_target[j] || is_downstream[j])
        .collect();
    let order = graph.closure(&wanted);
    let mut planned = vec![false; config.jobs.len()];
    let mut steps = Vec::new();
    for job in order {
        let target = is_target[job];
        let asked = target || is_downstream[job];
        if !asked && deps == Deps::None {
            continue;
        }
        let own = match &statuses[job] {
            JobStatus::NotBuilt | JobStatus::Running => Some(Reason::NotBuilt),
            JobStatus::Failed => Some(Reason::Failed),
            JobStatus::Cancelled => Some(Reason::Cancelled),
            JobStatus::Outdated { because } if asked || deps != Deps::Missing => {
                Some(Reason::Outdated {
                    because: because.clone(),
                })
            }
            _ => None,
        };
        let upstream = graph
            .dependencies(job)
            .into_iter()
            .find(|&d| planned[d])
            .map(|d| Reason::UpstreamRebuilt {
                job: config.jobs[d].id.clone(),
            });
        let forced = (force && target).then_some(Reason::Forced);
        let all = (deps == Deps::All && !asked).then_some(Reason::AllDeps);
        let reason = own.or(upstream).or(forced).or(all);
        if let Some(reason) = reason {
            planned[job] = true;
            steps.push(Step {
                job,
                id: config.jobs[job].id.clone(),
                reason,
            });
        }
    }
    steps
}
