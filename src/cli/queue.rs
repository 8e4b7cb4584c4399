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
    labels: Vec<String>,
    build: BuildId,
    started: bool,
    done: bool,
}

/// How long queued builds may sit with nothing moving before the workers are looked at,
/// and how often after that.
const LOOK_FOR_WORKERS: Duration = Duration::from_secs(2);

/// Why builds still queued would wait with no one to run them, if they would: no worker
/// is running, or none of those running has every label one of them needs. `waiting`:
/// each queued build's job and its labels. `None` when a worker could take them (it may
/// be busy).
pub fn unclaimed(
    workers: &[crate::store::queue::WorkerRow],
    waiting: &[(&JobId, &[String])],
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    if waiting.is_empty() {
        return None;
    }
    let running: Vec<_> = workers
        .iter()
        .filter(|w| w.state(now) == "running")
        .collect();
    if running.is_empty() {
        return Some("no worker is running: start one with `jobctl worker`".to_owned());
    }
    let (job, labels) = waiting.iter().find(|(_, labels)| {
        !running
            .iter()
            .any(|w| labels.iter().all(|l| w.labels.contains(l)))
    })?;
    Some(format!(
        "no running worker has the label{} {} that {job} needs (`jobctl worker --labels {}`)",
        if labels.len() == 1 { "" } else { "s" },
        labels.join(", "),
        labels.join(",")
    ))
}

/// Follows queued builds until each has ended (through retries), telling `reporter`.
/// One light query a turn reads every build of the run (and those made after it). While
/// builds stay queued with nothing moving, it says so if no running worker could take
/// them (`labels`: each step's job's labels).
pub async fn follow(
    store: &AnyStore,
    steps: &[Step],
    labels: &[Vec<String>],
    made: &[Enqueued],
    reporter: &mut dyn Reporter,
    out_error: &mut dyn Write,
) -> Result<Summary, CliError> {
    let mut followed: Vec<Followed> = steps
        .iter()
        .zip(made)
        .zip(labels)
        .map(|((s, e), labels)| Followed {
            job: s.id.clone(),
            labels: labels.clone(),
            build: e.id,
            started: false,
            done: false,
        })
        .collect();
    let mut unclaimed_said: Option<String> = None;
    let mut looked = Instant::now();
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
                if unclaimed_said.take().is_some() {
                    reporter.event(&BuildEvent::Unclaimed { why: None });
                }
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
        if last_change.elapsed() >= LOOK_FOR_WORKERS && looked.elapsed() >= LOOK_FOR_WORKERS {
            looked = Instant::now();
            let waiting: Vec<(&JobId, &[String])> = followed
                .iter()
                .filter(|f| !f.done && !f.started)
                .map(|f| (&f.job, f.labels.as_slice()))
                .collect();
            // The list of workers is a hint: one that cannot be read is no reason to stop.
            let why = match store.workers().await {
                Ok(workers) => unclaimed(&workers, &waiting, chrono::Utc::now()),
                Err(_) => unclaimed_said.clone(),
            };
            if why != unclaimed_said {
                reporter.event(&BuildEvent::Unclaimed { why: why.clone() });
                unclaimed_said = why;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::queue::WorkerRow;

    fn worker(labels: &[&str], heartbeat_ago: i64, stopped: bool) -> WorkerRow {
        let now = chrono::Utc::now();
        WorkerRow {
            id: "w".into(),
            name: "w".into(),
            host: "h".into(),
            pid: 1,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            slots: 1,
            lease_secs: 30,
            started_at: now,
            heartbeat_at: now - chrono::Duration::seconds(heartbeat_ago),
            draining: false,
            stopped_at: stopped.then_some(now),
            running: 0,
        }
    }

    #[test]
    fn queued_builds_wait_unclaimed_without_a_running_worker_with_their_labels() {
        let now = chrono::Utc::now();
        let (g, plain) = (JobId::parse("g").unwrap(), JobId::parse("p").unwrap());
        let gpu = ["gpu".to_owned(), "big".to_owned()];
        let none: [String; 0] = [];
        let waiting = [(&plain, &none[..]), (&g, &gpu[..])];
        assert_eq!(unclaimed(&[], &[], now), None, "nothing waits");
        let nobody = Some("no worker is running: start one with `jobctl worker`".to_owned());
        assert_eq!(unclaimed(&[], &waiting, now), nobody);
        // Stopped, or silent past its lease: not running.
        assert_eq!(
            unclaimed(
                &[worker(&[], 0, true), worker(&["gpu", "big"], 60, false)],
                &waiting,
                now
            ),
            nobody
        );
        assert_eq!(
            unclaimed(&[worker(&["gpu"], 0, false)], &waiting, now).as_deref(),
            Some(
                "no running worker has the labels gpu, big that g needs (`jobctl worker --labels gpu,big`)"
            )
        );
        assert_eq!(
            unclaimed(&[worker(&["big", "gpu", "x"], 0, false)], &waiting, now),
            None
        );
    }
}
