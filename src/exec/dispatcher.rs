//! Running a plan: jobs start as soon as what they depend on has succeeded, up to `-j` at
//! once; a failure stops what depends on it, and (unless `--fail-fast`) nothing else.
//!
//! ```text
//!   plan ──► one select! loop ──┬─ start ready jobs (create build, pins, values)
//!                               ├─ job tasks ──Output──► reporters, DB batch (coalesced)
//!                               ├─ a job ends ──► dependants become ready, or not run
//!                               ├─ tick ──► flush the DB batch
//!                               └─ Ctrl-C ──► cancel every job (TERM, grace, KILL)
//! ```
//!
//! The loop emits [`BuildEvent`]s to reporters and knows nothing of what they show; only
//! the cancel signal runs the other way.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::Value as Json;
use tokio::sync::{mpsc, watch};

use super::channel::Message;
use super::plan::Step;
use super::process::{self, Output, OutputLimits, ShellJob};
use super::values::{resolve, to_arg};
use crate::config::{Action, Config, JobId};
use crate::graph::JobGraph;
use crate::store::status::config_hash;
use crate::store::{
    AnyStore, BuildFilter, BuildId, BuildStatus, LogLevel, LogRecord, NewBuild, Outcome, Pin,
    ProgressUpdate, Runner, Store, StoreError, Stream, Write,
};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Jobs at once.
    pub jobs: usize,
    /// Stop starting jobs after the first failure.
    pub fail_fast: bool,
    /// How long a job has to end after TERM.
    pub grace: Duration,
    pub limits: OutputLimits,
}

/// What happens during a run, for reporters.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildEvent {
    Started {
        build: BuildId,
        job: JobId,
        attempt: u32,
    },
    Output {
        build: BuildId,
        job: JobId,
        output: Output,
    },
    Finished {
        build: BuildId,
        job: JobId,
        attempt: u32,
        outcome: Outcome,
        took: Duration,
    },
    /// A failed attempt is tried again after `after`.
    Retrying {
        job: JobId,
        attempt: u32,
        after: Duration,
    },
    /// Not started because a job it depends on did not succeed.
    NotRun { job: JobId, because: JobId },
}

/// Consumes build events (the terminal, a test).
pub trait Reporter {
    fn event(&mut self, event: &BuildEvent);
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub succeeded: usize,
    pub skipped: usize,
    pub failed: Vec<(JobId, BuildId, Outcome)>,
    pub cancelled: usize,
    pub not_run: usize,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.cancelled == 0 && self.not_run == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Succeeded,
    Unsuccessful,
}

/// What a job task tells the loop.
enum TaskEvent {
    Started(BuildId, u32),
    Output(BuildId, Output),
    Retrying(u32, Duration),
}

/// Runs `steps` (from [`super::plan::plan`]) and records every build in `store`.
///
/// Each job runs as a task of its own: the loop may wait on the database (a batch, a
/// process group) while a job's task holds a write transaction, and that task must be
/// able to finish it meanwhile.
pub async fn run(
    config: &'static Config,
    graph: &JobGraph,
    store: &std::sync::Arc<AnyStore>,
    steps: &[Step],
    options: &Options,
    reporter: &mut dyn Reporter,
) -> Result<Summary, StoreError> {
    let mut state: HashMap<usize, State> = steps.iter().map(|s| (s.job, State::Waiting)).collect();
    // The latest successful build of each job, with its return value, as far as known.
    let mut successes: HashMap<usize, (BuildId, Option<Json>)> = HashMap::new();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let (task_tx, mut task_rx) = mpsc::unbounded_channel::<(usize, TaskEvent)>();
    let mut running = FuturesUnordered::new();
    let mut summary = Summary::default();
    let mut batch = Batch::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut stopping = false;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let runner = Runner::this_process();
    // Which step each planned job is, how many planned dependencies each still waits for,
    // and the steps free to start (smallest first: plan order).
    let index: HashMap<usize, usize> = steps.iter().enumerate().map(|(i, s)| (s.job, i)).collect();
    let mut waiting_on: Vec<usize> = steps
        .iter()
        .map(|s| {
            graph
                .dependencies(s.job)
                .iter()
                .filter(|d| index.contains_key(d))
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..steps.len())
        .filter(|&i| waiting_on[i] == 0)
        .map(Reverse)
        .collect();

    loop {
        // Start what is ready, in plan order.
        while !stopping && running.len() < options.jobs.max(1) {
            let Some(Reverse(i)) = ready.pop() else {
                break;
            };
            let step = &steps[i];
            let deps = graph.dependencies(step.job);
            let mut pins = Vec::new();
            let mut retvals = HashMap::new();
            for d in deps {
                if let std::collections::hash_map::Entry::Vacant(slot) = successes.entry(d)
                    && let Some(found) = latest_success(store, config.jobs[d].id.as_str()).await?
                {
                    slot.insert(found);
                }
                let dep_id = config.jobs[d].id.clone();
                let found = successes.get(&d);
                pins.push(Pin {
                    job_id: dep_id.to_string(),
                    build_id: found.map(|(b, _)| *b),
                });
                if let Some((_, Some(value))) = found {
                    retvals.insert(dep_id, value.clone());
                }
            }
            state.insert(step.job, State::Running);
            running.push(tokio::spawn(run_job(
                config,
                store.clone(),
                step.job,
                pins,
                retvals,
                options.clone(),
                runner.clone(),
                task_tx.clone(),
                cancel_rx.clone(),
            )));
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some(joined) = running.next() => {
                // A task sends all it has to say before it ends: take that first, so no
                // line is left behind when the last job ends the loop.
                while let Ok((job, event)) = task_rx.try_recv() {
                    on_task_event(config, store, &mut batch, reporter, job, event).await?;
                }
                let (job, result) = joined.expect("a job task does not panic");
                let (build, attempt, outcome, took) = result?;
                let ok = matches!(outcome, Outcome::Successful { .. } | Outcome::Skipped { .. });
                match &outcome {
                    Outcome::Successful { retval } => {
                        summary.succeeded += 1;
                        successes.insert(job, (build, retval.clone()));
                    }
                    Outcome::Skipped { .. } => summary.skipped += 1,
                    Outcome::Cancelled { .. } => summary.cancelled += 1,
                    Outcome::Failed { .. } => {
                        summary.failed.push((config.jobs[job].id.clone(), build, outcome.clone()));
                        if options.fail_fast {
                            stopping = true;
                        }
                    }
                }
                state.insert(job, if ok { State::Succeeded } else { State::Unsuccessful });
                if ok {
                    for d in graph.dependants(job) {
                        if let Some(&k) = index.get(&d) {
                            waiting_on[k] -= 1;
                            if waiting_on[k] == 0 && state[&d] == State::Waiting {
                                ready.push(Reverse(k));
                            }
                        }
                    }
                } else {
                    // Whatever waits for it, directly or not, will not run.
                    let mut stack = vec![job];
                    while let Some(failed) = stack.pop() {
                        for d in graph.dependants(failed) {
                            if index.contains_key(&d) && state[&d] == State::Waiting {
                                state.insert(d, State::Unsuccessful);
                                summary.not_run += 1;
                                reporter.event(&BuildEvent::NotRun {
                                    job: config.jobs[d].id.clone(),
                                    because: config.jobs[failed].id.clone(),
                                });
                                stack.push(d);
                            }
                        }
                    }
                }
                batch.flush(store).await?;
                reporter.event(&BuildEvent::Finished {
                    build,
                    job: config.jobs[job].id.clone(),
                    attempt,
                    outcome,
                    took,
                });
            }
            Some((job, event)) = task_rx.recv() => {
                on_task_event(config, store, &mut batch, reporter, job, event).await?;
            }
            _ = tick.tick() => batch.flush(store).await?,
            _ = &mut ctrl_c, if !stopping => {
                stopping = true;
                let _ = cancel_tx.send(true);
            }
        }
    }
    // What never got to start.
    for step in steps {
        if state[&step.job] == State::Waiting {
            summary.not_run += 1;
        }
    }
    batch.flush(store).await?;
    Ok(summary)
}

async fn on_task_event(
    config: &Config,
    store: &AnyStore,
    batch: &mut Batch,
    reporter: &mut dyn Reporter,
    job: usize,
    event: TaskEvent,
) -> Result<(), StoreError> {
    let id = config.jobs[job].id.clone();
    match event {
        TaskEvent::Started(build, attempt) => {
            reporter.event(&BuildEvent::Started {
                build,
                job: id,
                attempt,
            });
        }
        TaskEvent::Retrying(attempt, after) => {
            reporter.event(&BuildEvent::Retrying {
                job: id,
                attempt,
                after,
            });
        }
        TaskEvent::Output(build, Output::Spawned { pgid }) => {
            store.set_process_group(build, pgid).await?;
        }
        TaskEvent::Output(build, output) => {
            batch.add(build, &output);
            reporter.event(&BuildEvent::Output {
                build,
                job: id,
                output,
            });
            if batch.len() >= 5000 {
                batch.flush(store).await?;
            }
        }
    }
    Ok(())
}

async fn latest_success(
    store: &AnyStore,
    job: &str,
) -> Result<Option<(BuildId, Option<Json>)>, StoreError> {
    let builds = store
        .builds(&BuildFilter {
            job: Some(job.to_owned()),
            status: Some(BuildStatus::Successful),
            limit: Some(1),
        })
        .await?;
    Ok(builds.into_iter().next().map(|b| (b.id, b.retval)))
}

/// One job, every attempt: a build each, run, recorded.
#[expect(clippy::too_many_arguments, reason = "the loop's state, passed once")]
async fn run_job(
    config: &'static Config,
    store: std::sync::Arc<AnyStore>,
    job: usize,
    pins: Vec<Pin>,
    retvals: HashMap<JobId, Json>,
    options: Options,
    runner: Runner,
    events: mpsc::UnboundedSender<(usize, TaskEvent)>,
    cancel: watch::Receiver<bool>,
) -> (usize, Result<(BuildId, u32, Outcome, Duration), StoreError>) {
    let result = async {
        let spec = &config.jobs[job];
        let snapshot = serde_json::to_value(spec).expect("a job serializes");
        let hash = config_hash(spec);
        let mut delay = spec.retry_delay;
        let mut attempt = 1;
        loop {
            let build = store
                .create_build(&NewBuild {
                    job_id: spec.id.to_string(),
                    config: snapshot.clone(),
                    config_hash: hash.clone(),
                    pins: pins.clone(),
                    attempt,
                    created_at: Utc::now(),
                })
                .await?;
            store.start_build(build, &runner, Utc::now()).await?;
            let _ = events.send((job, TaskEvent::Started(build, attempt)));
            let started = Instant::now();
            let outcome = attempt_job(
                config,
                job,
                build,
                &retvals,
                &options,
                &events,
                cancel.clone(),
            )
            .await;
            store.finish_build(build, &outcome, Utc::now()).await?;
            let retry = matches!(outcome, Outcome::Failed { .. })
                && attempt <= spec.retries
                && !*cancel.borrow();
            if !retry {
                return Ok((build, attempt, outcome, started.elapsed()));
            }
            attempt += 1;
            let _ = events.send((job, TaskEvent::Retrying(attempt, delay)));
            let mut cancel = cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.changed() => return Ok((build, attempt - 1, outcome, started.elapsed())),
            }
            delay = delay.saturating_mul(2);
        }
    }
    .await;
    (job, result)
}

/// One attempt: the process, and what it reported.
async fn attempt_job(
    config: &Config,
    job: usize,
    build: BuildId,
    retvals: &HashMap<JobId, Json>,
    options: &Options,
    events: &mpsc::UnboundedSender<(usize, TaskEvent)>,
    cancel: watch::Receiver<bool>,
) -> Outcome {
    let spec = &config.jobs[job];
    let command = match &spec.action {
        Action::Run(command) => command.clone(),
        Action::Function(name) => {
            return Outcome::Failed {
                exit_code: None,
                signal: None,
                timed_out: false,
                error: format!(
                    "`function: {name}` jobs cannot run yet: this jobctl has no function registry"
                ),
                stderr_tail: None,
            };
        }
    };
    // Every `!retval` needs a return value to stand for.
    let mut used = Vec::new();
    for v in spec
        .args
        .iter()
        .chain(spec.kwargs.iter().map(|(_, v)| v))
        .chain(spec.env.iter().map(|(_, v)| v))
    {
        v.retval_targets(&mut used);
    }
    if let Some(dep) = used.into_iter().find(|dep| !retvals.contains_key(*dep)) {
        return Outcome::Failed {
            exit_code: None,
            signal: None,
            timed_out: false,
            error: format!("`!retval {dep}`: {dep} has no successful build with a return value"),
            stderr_tail: None,
        };
    }
    let args: Vec<Json> = spec
        .args
        .iter()
        .map(|v| resolve(v, retvals, &config.secrets))
        .collect();
    let kwargs: Vec<(String, Json)> = spec
        .kwargs
        .iter()
        .map(|(k, v)| (k.to_owned(), resolve(v, retvals, &config.secrets)))
        .collect();
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.to_owned(), to_arg(&resolve(v, retvals, &config.secrets))))
        .collect();
    env.extend(kwargs.iter().map(|(k, v)| (k.clone(), to_arg(v))));
    env.push(("JOBCTL_ARGS".into(), Json::Array(args.clone()).to_string()));
    env.push((
        "JOBCTL_KWARGS".into(),
        Json::Object(kwargs.into_iter().collect()).to_string(),
    ));
    env.push(("JOBCTL_JOB_ID".into(), spec.id.to_string()));
    env.push(("JOBCTL_BUILD_ID".into(), build.to_string()));
    if let Ok(exe) = std::env::current_exe() {
        env.push(("JOBCTL".into(), exe.to_string_lossy().into_owned()));
    }
    let shell = ShellJob {
        name: spec.id.to_string(),
        command: with_args(&command, !args.is_empty()),
        args: args.iter().map(to_arg).collect(),
        env,
        workdir: config.dir().join(&spec.workdir),
        timeout: spec.timeout,
        grace: options.grace,
        secrets: config.secrets.values().cloned().collect(),
        limits: options.limits,
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let process = async {
        let exit = process::run(&shell, &tx, cancel).await;
        drop(tx);
        exit
    };
    let mut retval = None;
    let mut skip = None;
    let forward = async {
        while let Some(output) = rx.recv().await {
            match &output {
                Output::Message(Message::Retval { value }) => retval = Some(value.clone()),
                Output::Message(Message::Skip { reason }) => skip = Some(reason.clone()),
                _ => {}
            }
            let _ = events.send((job, TaskEvent::Output(build, output)));
        }
    };
    let (exit, ()) = tokio::join!(process, forward);
    let exit = match exit {
        Ok(exit) => exit,
        Err(err) => {
            return Outcome::Failed {
                exit_code: None,
                signal: None,
                timed_out: false,
                error: format!("cannot start `sh` in {}: {err}", shell.workdir.display()),
                stderr_tail: None,
            };
        }
    };
    if exit.cancelled {
        return Outcome::Cancelled {
            reason: "cancelled (Ctrl-C)".into(),
        };
    }
    if exit.success() {
        return match skip {
            Some(reason) => Outcome::Skipped { reason },
            None => Outcome::Successful { retval },
        };
    }
    let tail = exit.stderr_tail.join("\n");
    Outcome::Failed {
        exit_code: exit.code,
        signal: exit.signal,
        timed_out: exit.timed_out,
        error: exit.describe(),
        stderr_tail: (!tail.is_empty()).then(|| tail + "\n"),
    }
}

/// `run: ./crawl.sh` with `args` gets them: a one-line command that does not use the
/// positional parameters itself is followed by `"$@"`. A command that says `$1`, `$@`…
/// (or spans lines, or has a comment) takes them where it says.
pub fn with_args(command: &str, has_args: bool) -> String {
    let bytes = command.as_bytes();
    let uses_positional = bytes.windows(2).any(|w| {
        w[0] == b'$' && (w[1].is_ascii_digit() && w[1] != b'0' || w[1] == b'@' || w[1] == b'*')
    }) || command.contains("${");
    if !has_args || uses_positional || command.contains('\n') || command.contains('#') {
        return command.to_owned();
    }
    format!("{} \"$@\"", command.trim_end())
}

/// Log lines and progress waiting to be written; progress keeps only the latest value
/// per build and group.
#[derive(Default)]
struct Batch {
    writes: Vec<Write>,
    progress_at: HashMap<(BuildId, Vec<String>), usize>,
}

impl Batch {
    fn len(&self) -> usize {
        self.writes.len()
    }

    fn add(&mut self, build: BuildId, output: &Output) {
        let at = Utc::now();
        let log = |level, stream, message: String| {
            Write::Log(LogRecord {
                build,
                at,
                level,
                stream,
                message,
            })
        };
        match output {
            Output::Line { stream, text } => {
                let level = if *stream == Stream::Stderr {
                    LogLevel::Warning
                } else {
                    LogLevel::Info
                };
                self.writes.push(log(level, *stream, text.clone()));
            }
            Output::Message(Message::Log { level, message }) => {
                self.writes
                    .push(log(*level, Stream::Channel, message.clone()));
            }
            Output::Message(Message::Progress {
                group,
                current,
                total,
                status,
            }) => {
                let update = Write::Progress(ProgressUpdate {
                    build,
                    path: group.clone(),
                    current: *current,
                    total: *total,
                    status: status.clone(),
                    at,
                });
                match self.progress_at.get(&(build, group.clone())) {
                    Some(&i) => self.writes[i] = update,
                    None => {
                        self.progress_at
                            .insert((build, group.clone()), self.writes.len());
                        self.writes.push(update);
                    }
                }
            }
            Output::Message(Message::Retval { .. } | Message::Skip { .. })
            | Output::Spawned { .. } => {}
            Output::BadLine(bad) => {
                self.writes
                    .push(log(LogLevel::Warning, Stream::Channel, bad.to_string()));
            }
            Output::Dropped { lines, bytes } => {
                self.writes.push(log(
                    LogLevel::Warning,
                    Stream::Stdout,
                    format!("[{lines} lines ({bytes} bytes) of output left out]"),
                ));
            }
        }
    }

    async fn flush(&mut self, store: &AnyStore) -> Result<(), StoreError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.writes);
        self.progress_at.clear();
        store.write(&writes).await
    }
}

#[cfg(test)]
mod tests {
    use super::with_args;

    #[test]
    fn args_follow_a_plain_command() {
        assert_eq!(with_args("./crawl.sh", true), "./crawl.sh \"$@\"");
        assert_eq!(with_args("./crawl.sh", false), "./crawl.sh");
        for own in [
            "echo \"$1\"",
            "printf '%s\\n' \"$@\"",
            "echo $*",
            "echo ${1:-x}",
            "a\nb",
            "./x # note",
        ] {
            assert_eq!(with_args(own, true), own);
        }
    }
}
