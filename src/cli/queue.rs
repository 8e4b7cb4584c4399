//! `jobctl build --queue [--wait]`: the plan goes to the store as queued builds (with the
//! edges between them) for workers to run; `--wait` follows them to their end with the
//! same lines or tree as `jobctl build`, read from the store.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use super::write_out;
use crate::config::{Config, JobId};
use crate::error::CliError;
use crate::exec::dispatcher::new_build;
use crate::exec::event::{BuildEvent, Reporter, Summary};
use crate::exec::plan::Step;
use crate::graph::JobGraph;
use crate::store::queue::{BuildState, Enqueue, Enqueued, Queue, dedup_key};
use crate::store::{AnyStore, Build, BuildId, BuildStatus, Outcome, Store};
use crate::vocab::Reason;

/// Enqueues the plan's builds; each waits on the builds of its dependencies in the plan.
pub async fn enqueue(
    config: &Config,
    graph: &JobGraph,
    store: &AnyStore,
    steps: &[Step],
    dedup: bool,
) -> Result<Vec<Enqueued>, CliError> {
    let place: HashMap<usize, usize> = steps.iter().enumerate().map(|(i, s)| (s.job, i)).collect();
    let now = chrono::Utc::now();
    let batch: Vec<Enqueue> = steps
        .iter()
        .map(|step| {
            let job = &config.jobs[step.job];
            let build = new_build(job, 1, now);
            Enqueue {
                dedup_key: dedup.then(|| dedup_key(job.id.as_str(), &build.config)),
                waits_on: graph
                    .dependencies(step.job)
                    .iter()
                    .filter_map(|d| place.get(d).copied())
                    .collect(),
                labels: job.labels.clone(),
                concurrency: job.concurrency,
                build,
            }
        })
        .collect();
    Ok(store.enqueue(&batch, None, now).await?)
}

/// The lines `--queue` prints: each build and whether it was already queued.
pub fn enqueued_text(steps: &[Step], made: &[Enqueued]) -> String {
    let mut text = String::new();
    for (step, e) in steps.iter().zip(made) {
        let how = if e.deduplicated {
            " (already queued: the same job and arguments)"
        } else {
            ""
        };
        text.push_str(&format!("queued build {} of {}{how}\n", e.id, step.id));
    }
    text
}

/// What is known of a followed build.
struct Followed {
    job: JobId,
    build: BuildId,
    started: bool,
    done: bool,
}

/// Follows queued builds until each has ended (through retries), telling `reporter`.
/// One light query a turn reads every build of the run (and those made after it).
pub async fn follow(
    store: &AnyStore,
    steps: &[Step],
    made: &[Enqueued],
    reporter: &mut dyn Reporter,
    out_error: &mut dyn Write,
) -> Result<Summary, CliError> {
    let mut followed: Vec<Followed> = steps
        .iter()
        .zip(made)
        .map(|(s, e)| Followed {
            job: s.id.clone(),
            build: e.id,
            started: false,
            done: false,
        })
        .collect();
    let mut summary = Summary::default();
    let mut interrupts =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let mut pause = Duration::from_millis(20);
    let mut last_change = Instant::now();
    while let Some(from) = followed.iter().filter(|f| !f.done).map(|f| f.build).min() {
        let states = store.build_states(from, BuildId(i64::MAX)).await?;
        let by_id: HashMap<BuildId, &BuildState> = states.iter().map(|s| (s.id, s)).collect();
        for f in followed.iter_mut().filter(|f| !f.done) {
            let Some(build) = by_id.get(&f.build) else {
                // Deleted meanwhile.
                f.done = true;
                summary.cancelled += 1;
                continue;
            };
            let not_run = matches!(build.reason, Some(Reason::Upstream { .. }));
            if !f.started && build.status != BuildStatus::Created {
                f.started = true;
                if build.started_at.is_some() && !not_run {
                    reporter.event(&BuildEvent::Started {
                        build: build.id,
                        job: f.job.clone(),
                        attempt: build.attempt,
                    });
                }
                last_change = Instant::now();
            }
            if !build.status.is_finished() {
                continue;
            }
            last_change = Instant::now();
            if let Some(Reason::Upstream {
                job,
                build,
                cancelled,
            }) = &build.reason
            {
                summary.not_run += 1;
                reporter.event(&BuildEvent::NotStarted {
                    job: f.job.clone(),
                    why: format!(
                        "upstream {job} (build {build}) {}",
                        if *cancelled {
                            "was cancelled"
                        } else {
                            "failed"
                        }
                    ),
                });
                f.done = true;
                continue;
            }
            let words = || build.error.clone().unwrap_or_default();
            let reason = || reason_of(&build.reason, &build.error);
            let outcome = match build.status {
                BuildStatus::Successful => Outcome::Successful { retval: None },
                BuildStatus::Skipped => Outcome::Skipped { reason: words() },
                BuildStatus::Cancelled => Outcome::Cancelled { reason: reason() },
                // A failure is read in full: its exit status and stderr tail are shown.
                _ => match store.build(build.id).await? {
                    Some(full) => outcome_of(&full),
                    None => Outcome::failed(reason()),
                },
            };
            let took = match (build.started_at, build.finished_at) {
                (Some(start), Some(end)) => (end - start).to_std().unwrap_or_default(),
                _ => Duration::ZERO,
            };
            // A failure with attempts left was followed by a new build of the job, made
            // in the same transaction.
            let retry = match outcome {
                Outcome::Failed { .. } => states
                    .iter()
                    .find(|s| {
                        s.id > build.id
                            && s.job_id == build.job_id
                            && s.attempt == build.attempt + 1
                    })
                    .map(|s| (s.id, s.attempt)),
                _ => None,
            };
            reporter.event(&BuildEvent::Finished {
                build: build.id,
                job: f.job.clone(),
                attempt: build.attempt,
                outcome: outcome.clone(),
                took,
            });
            if let Some((next, attempt)) = retry {
                reporter.event(&BuildEvent::Retrying {
                    job: f.job.clone(),
                    attempt,
                    after: Duration::ZERO,
                });
                f.build = next;
                f.started = false;
                continue;
            }
            f.done = true;
            match outcome {
                Outcome::Successful { .. } => summary.succeeded += 1,
                Outcome::Skipped { .. } => summary.skipped += 1,
                Outcome::Cancelled { .. } => summary.cancelled += 1,
                Outcome::Failed { .. } => summary.failed.push((f.job.clone(), build.id, outcome)),
            }
        }
        reporter.tick();
        reporter.idle();
        // Quick while things move, then at a steady 200 ms.
        pause = if last_change.elapsed() < Duration::from_secs(1) {
            Duration::from_millis(20)
        } else {
            (pause * 2).min(Duration::from_millis(200))
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            Some(()) = async { match &mut interrupts { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                write_out(
                    out_error,
                    "stopped following; the builds stay queued (`jobctl cancel` cancels them)\n",
                )?;
                return Err(CliError::BuildFailed {
                    failed: summary.failed.len(),
                    not_run: summary.not_run,
                    cancelled: followed.iter().filter(|f| !f.done).count() + summary.cancelled,
                });
            }
        }
    }
    Ok(summary)
}

/// Why a stored build did not succeed; one recorded before reasons were kept has its
/// words only.
fn reason_of(reason: &Option<Reason>, words: &Option<String>) -> Reason {
    reason
        .clone()
        .unwrap_or_else(|| Reason::error(words.clone().unwrap_or_default()))
}

/// How a stored build ended.
pub fn outcome_of(build: &Build) -> Outcome {
    let words = || build.error.clone().unwrap_or_default();
    let reason = || reason_of(&build.reason, &build.error);
    match build.status {
        BuildStatus::Successful => Outcome::Successful {
            retval: build.retval.clone(),
        },
        BuildStatus::Skipped => Outcome::Skipped { reason: words() },
        BuildStatus::Cancelled => Outcome::Cancelled { reason: reason() },
        _ => Outcome::Failed {
            exit_code: build.exit_code,
            signal: build.signal,
            timed_out: build.timed_out,
            reason: reason(),
            stderr_tail: build.stderr_tail.clone(),
        },
    }
}
