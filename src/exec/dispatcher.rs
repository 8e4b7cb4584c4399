//! Running a plan: jobs start as soon as what they depend on has succeeded, up to `-j` at
//! once; a failure stops what depends on it, and (unless `--fail-fast`) nothing else.
//!
//! ```text
//!   plan ──► every build recorded `created` (one transaction)
//!              │
//!              ▼
//!   one select! loop ──┬─ start ready jobs (pins, values) as tasks: shell or function
//!                      ├─ job tasks ──events──► reporters; Sink (one batch: starts,
//!                      │                         process groups, logs, progress
//!                      │                         coalesced, ends)
//!                      ├─ a job ends ──► dependants become ready, or not run
//!                      ├─ tick (200 ms) ──► the batch is written in one transaction
//!                      └─ Ctrl-C ──► cancel every job (TERM, grace, KILL); again: KILL
//! ```
//!
//! What starts next and what follows an end is decided by [`super::schedule::Schedule`],
//! which knows nothing of processes or the database; the loop carries its decisions out.
//! The loop emits [`BuildEvent`]s to reporters and knows nothing of what they show; only
//! the cancel signal runs the other way. No job waits on the database: a build's rows
//! are written with the next batch, so recording costs a few microseconds a job.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::Value as Json;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

pub use super::attempt::with_args;
use super::attempt::{Attempt, failed};
use super::event::record;
use super::event::{BuildEvent, Reporter, Summary};
use super::function::Registry;
use super::plan::Step;
use super::process::{Cancel, Output, OutputLimits};
use super::schedule::{NotRun, Schedule};
use crate::config::{Config, JobId};
use crate::graph::JobGraph;
use crate::store::queue::{Claimer, Queue};
use crate::store::sink::{Sink, WriteTurn, off_loop};
use crate::store::status::config_hash;
use crate::store::{
    AnyStore, BuildFilter, BuildId, BuildStatus, NewBuild, Outcome, Pin, Runner, Store, StoreError,
    Write,
};

/// How a run goes.
#[derive(Clone)]
pub struct Options {
    /// Jobs at once.
    pub jobs: usize,
    /// Stop starting jobs after the first failure.
    pub fail_fast: bool,
    /// How long a job has to end after TERM.
    pub grace: Duration,
    pub limits: OutputLimits,
    /// What `function:` jobs may call.
    pub functions: Arc<Registry>,
}

/// What a job task tells the loop.
enum TaskEvent {
    Started(BuildId, u32),
    Output(BuildId, Output),
    Ended(BuildId, Outcome),
    Retrying(u32, Duration),
}

/// What every job task shares.
struct Shared {
    config: &'static Config,
    store: Arc<AnyStore>,
    options: Options,
    runner: Runner,
    events: mpsc::UnboundedSender<(usize, TaskEvent)>,
    /// Held while this run writes to the database: its writers take turns here rather
    /// than in SQLite's busy wait.
    writing: WriteTurn,
    /// The secrets in every form they may take, made once for the run.
    masker: crate::config::model::Masker,
    /// `-j`: a job holds one while it runs, not while it waits to retry.
    slots: Arc<tokio::sync::Semaphore>,
    /// This run as the holder of its builds' leases.
    claimer: Claimer,
}

type TaskResult = (usize, Result<(BuildId, u32, Outcome, Duration), StoreError>);

/// Runs `steps` (from [`super::plan::plan`]) and records every build in `store`.
///
/// Each job runs as a task of its own, so the loop never waits on a job and a job never
/// waits on the database. If the database fails mid-run, every job is cancelled and
/// waited for before the error is returned: nothing is left running.
pub async fn run(
    config: &'static Config,
    graph: &JobGraph,
    store: &Arc<AnyStore>,
    steps: &[Step],
    options: &Options,
    reporter: &mut dyn Reporter,
) -> Result<Summary, StoreError> {
    let runner = Runner::this_process();
    let now = Utc::now();
    let writing = WriteTurn::default();
    // The first planned builds are recorded before anything starts, the others while
    // the first run (a step starts once its build is recorded).
    let jobs: Vec<usize> = steps.iter().map(|s| s.job).collect();
    let first = jobs.len().min(FIRST_PLANNED);
    let planned = create_planned(config, store, &jobs[..first], &runner, now).await?;
    let (task_tx, mut task_rx) = mpsc::unbounded_channel::<(usize, TaskEvent)>();
    let shared = Arc::new(Shared {
        config,
        store: store.clone(),
        options: options.clone(),
        runner,
        events: task_tx,
        writing: writing.clone(),
        // The database's password is masked in what jobs print, like a secret.
        masker: crate::store::masker(config.secrets.values(), &config.storage),
        slots: Arc::new(tokio::sync::Semaphore::new(options.jobs.max(1))),
        claimer: Claimer::this_process(None, Vec::new()),
    });
    let mut run = Run {
        config,
        graph,
        steps,
        store,
        shared: shared.clone(),
        index: steps.iter().enumerate().map(|(i, s)| (s.job, i)).collect(),
        schedule: Schedule::of_plan(steps, graph),
        build_ids: Vec::with_capacity(steps.len()),
        reserved: Vec::with_capacity(steps.len()),
        successes: HashMap::new(),
        pins_of: HashMap::new(),
        cancels: Cancels::default(),
        summary: Summary::default(),
        sink: Sink::new(writing.clone()),
        stopping: false,
        told_waiting: std::collections::HashSet::new(),
        ended_ok: HashMap::new(),
    };
    run.recorded(planned);
    let mut running = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut interrupts = signal(SignalKind::interrupt()).ok();
    let mut terminations = signal(SignalKind::terminate()).ok();
    let mut hangups = signal(SignalKind::hangup()).ok();
    // Each tick's look at the database (cancel requests, the lease's renewal), made by a
    // task of its own: the loop does not wait on it.
    let mut looking: Option<tokio::task::JoinHandle<Looked>> = None;
    let mut last_renewed = Instant::now();
    // From here on the run ends only through the loop, which waits for this.
    let (planned_tx, mut planned_rx) = mpsc::unbounded_channel();
    let stop_planning = Arc::new(std::sync::atomic::AtomicBool::new(false));
    off_loop(plan_rest(
        config,
        store.clone(),
        jobs[first..].to_vec(),
        shared.runner.clone(),
        now,
        writing,
        stop_planning.clone(),
        planned_tx,
    ));
    let mut planning = jobs.len() > first;

    loop {
        run.refused(reporter);
        run.start_ready(&mut running, reporter).await;
        // Nothing runs and nothing can start: held steps wait for a tick, ready ones
        // for their builds to be recorded.
        if running.is_empty() && run.schedule.stalled(run.stopping) {
            break;
        }
        reporter.idle();
        tokio::select! {
            Some(joined) = running.next() => {
                // A task sends all it has to say before it ends: take that first, so no
                // line is left behind when the last job ends the loop.
                while let Ok((job, event)) = task_rx.try_recv() {
                    run.task_event(job, event, reporter);
                }
                let (job, result) = joined.expect("a job task does not panic");
                run.ended(job, result, reporter);
                if run.sink.len() >= WRITE_AT {
                    run.sink.flush(store).await;
                }
            }
            created = planned_rx.recv(), if planning => match created {
                Some(Ok(ids)) => run.recorded(ids),
                Some(Err(err)) => run.sink.fail(err),
                None => planning = false,
            },
            Some((job, event)) = task_rx.recv() => {
                run.task_event(job, event, reporter);
                // What else the tasks have said, in the same turn.
                while let Ok((job, event)) = task_rx.try_recv() {
                    run.task_event(job, event, reporter);
                }
                if run.sink.len() >= WRITE_AT {
                    run.sink.flush(store).await;
                }
            }
            _ = tick.tick() => {
                run.sink.flush(store).await;
                // What ended jobs left behind outside their process groups.
                if super::reaper::dirty() {
                    super::reaper::sweep();
                }
                if !run.stopping && looking.is_none() {
                    let (store, runner) = (store.clone(), shared.runner.clone());
                    let renew = (last_renewed.elapsed() >= LEASE / 3).then(|| shared.claimer.clone());
                    if renew.is_some() {
                        last_renewed = Instant::now();
                    }
                    looking = Some(tokio::spawn(async move {
                        let requested = store.cancel_requests(&runner).await;
                        let renewed = match renew {
                            Some(claimer) => store.renew(&claimer, None, LEASE).await.map(|_| ()),
                            None => Ok(()),
                        };
                        (requested, renewed)
                    }));
                }
                reporter.tick();
            }
            Some(found) = looked(&mut looking) => {
                looking = None;
                run.looked(found, reporter);
            }
            Some(()) = next_signal(&mut interrupts) => {
                let how = if run.stopping { Cancel::Kill } else { Cancel::Term };
                run.cancel_all("Ctrl-C", how, reporter);
            }
            // A closed terminal or a dropped SSH session, and a polite kill: as the first
            // Ctrl-C (a second Ctrl-C still kills at once).
            Some(name) = async {
                tokio::select! {
                    Some(()) = next_signal(&mut terminations) => Some("SIGTERM"),
                    Some(()) = next_signal(&mut hangups) => Some("SIGHUP"),
                }
            }, if !run.stopping => run.cancel_all(name, Cancel::Term, reporter),
        }
    }
    // Whatever the jobs left behind goes with the run.
    super::reaper::sweep_all(Duration::from_secs(2)).await;
    // What never got to start did not happen: its planned build goes, once recorded.
    stop_planning.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(created) = planned_rx.recv().await {
        match created {
            Ok(ids) => run.build_ids.extend(ids.into_iter().map(|(id, _)| id)),
            Err(err) => run.sink.fail(err),
        }
    }
    run.finish(reporter).await
}

/// A run under way: its steps, where each is (the [`Schedule`]), its builds, and what the
/// loop has learned.
struct Run<'a> {
    config: &'static Config,
    graph: &'a JobGraph,
    steps: &'a [Step],
    store: &'a Arc<AnyStore>,
    shared: Arc<Shared>,
    /// Which step each planned job is.
    index: HashMap<usize, usize>,
    schedule: Schedule,
    /// The planned build of each step recorded so far, and whether it was reserved for
    /// this run when it was recorded (its job's concurrency had room): then it starts
    /// when ready without another claim.
    build_ids: Vec<BuildId>,
    reserved: Vec<bool>,
    /// The latest successful build of each job, with its return value, as far as known.
    successes: HashMap<usize, (BuildId, Option<Json>)>,
    pins_of: HashMap<usize, Vec<Pin>>,
    /// Each running job has its own cancel: Ctrl-C raises them all, a cancel request
    /// (from `jobctl tui`, through the database) one.
    cancels: Cancels,
    summary: Summary,
    sink: Sink,
    /// Nothing more starts.
    stopping: bool,
    /// Steps already said to wait for their job's concurrency.
    told_waiting: std::collections::HashSet<usize>,
    /// Builds counted as ended well (job, whether successful rather than skipped), in
    /// case the database then refuses their data.
    ended_ok: HashMap<BuildId, (usize, bool)>,
}

impl Run<'_> {
    /// More planned builds are recorded; those of steps that will not run any more go.
    fn recorded(&mut self, ids: Vec<(BuildId, bool)>) {
        for (id, ok) in ids {
            self.build_ids.push(id);
            self.reserved.push(ok);
        }
        for k in self.schedule.recorded(self.build_ids.len()) {
            self.sink.push(Write::Discard {
                build: self.build_ids[k],
            });
        }
    }

    /// Builds whose data the database refused fail alone, and the run goes on; a
    /// database that fails altogether stops the run.
    fn refused(&mut self, reporter: &mut dyn Reporter) {
        for (build, reason) in std::mem::take(&mut self.sink.unstored) {
            // Once: a build whose end cannot be stored either is not tried for ever.
            if self
                .cancels
                .unstored
                .insert(build, reason.clone())
                .is_some()
            {
                continue;
            }
            if !self.cancels.one(build) {
                self.fail_ended(build, reason);
            }
        }
        if self.sink.failure.is_some() && !self.stopping {
            self.cancel_all("the run could not be recorded", Cancel::Term, reporter);
        }
    }

    /// The whole run is cancelled (`why`: Ctrl-C, a signal, a failure to record).
    fn cancel_all(&mut self, why: &'static str, how: Cancel, reporter: &mut dyn Reporter) {
        self.stopping = true;
        self.cancels.why.get_or_insert(why);
        if self.cancels.level < how {
            self.cancels.all(how);
            reporter.event(&BuildEvent::Cancelling { how });
        }
    }

    /// Starts what is ready, in plan order: claimed in one transaction, in which the
    /// store counts each job's builds running anywhere against its `concurrency`. A job
    /// waiting out its retry delay has given its slot back (`-j` counts jobs that run,
    /// not jobs that wait).
    async fn start_ready(
        &mut self,
        running: &mut FuturesUnordered<tokio::task::JoinHandle<TaskResult>>,
        reporter: &mut dyn Reporter,
    ) {
        let mut batch: Vec<(usize, tokio::sync::OwnedSemaphorePermit)> = Vec::new();
        if !self.stopping {
            let slots = &self.shared.slots;
            for i in self.schedule.take(slots.available_permits()) {
                // A retry waiting for a slot may have taken one meanwhile.
                match slots.clone().try_acquire_owned() {
                    Ok(slot) => batch.push((i, slot)),
                    Err(_) => self.schedule.give_back(i),
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        // Builds reserved when they were recorded start at once; the others are
        // claimed now, together.
        let ids: Vec<BuildId> = batch
            .iter()
            .filter(|(i, _)| !self.reserved[*i])
            .map(|(i, _)| self.build_ids[*i])
            .collect();
        let claimed = {
            // Behind the run's batch writer, not in SQLite's busy wait.
            let _turn = self.shared.writing.lock().await;
            self.store
                .claim(
                    &self.shared.claimer,
                    ids.len(),
                    Some(&ids),
                    LEASE,
                    Utc::now(),
                )
                .await
        };
        let got: std::collections::HashSet<BuildId> = match claimed {
            Ok(claimed) => claimed.iter().map(|c| c.id).collect(),
            Err(err) => {
                for (i, _) in batch {
                    self.schedule.give_back(i);
                }
                self.sink.fail(err);
                return;
            }
        };
        for (i, slot) in batch {
            let job = self.steps[i].job;
            let spec = &self.config.jobs[job];
            if !self.reserved[i] && !got.contains(&self.build_ids[i]) {
                // As many builds of it as it allows run elsewhere.
                if self.told_waiting.insert(i) {
                    reporter.event(&BuildEvent::Waiting {
                        job: spec.id.clone(),
                        running: spec.concurrency.max(1),
                        concurrency: spec.concurrency.max(1),
                    });
                }
                self.schedule.hold(i);
                continue;
            }
            let found = pins_and_retvals(
                self.config,
                self.graph,
                self.store,
                &mut self.successes,
                job,
            )
            .await;
            let (pins, retvals) = match found {
                Ok(found) => found,
                Err(err) => {
                    // Claimed but not started: it ends with the run.
                    self.schedule.abandoned(i);
                    self.summary.cancelled += 1;
                    self.sink.fail(err);
                    continue;
                }
            };
            self.pins_of.insert(job, pins);
            self.schedule.started(i);
            // Boxed: the job's future is several kB, and a task's future is moved a few
            // times on its way in; a box is moved instead.
            running.push(tokio::spawn(Box::pin(run_job(
                self.shared.clone(),
                job,
                self.build_ids[i],
                retvals,
                self.cancels.add(job),
                slot,
            ))));
        }
    }

    /// A job's task ended: counted, and what follows from it decided.
    fn ended(
        &mut self,
        job: usize,
        result: Result<(BuildId, u32, Outcome, Duration), StoreError>,
        reporter: &mut dyn Reporter,
    ) {
        self.cancels.remove(job);
        let i = self.index[&job];
        let (build, attempt, mut outcome, took) = match result {
            Ok(ended) => ended,
            Err(err) => {
                // Its build could not be recorded; the run stops.
                self.schedule.abandoned(i);
                self.summary.cancelled += 1;
                self.sink.fail(err);
                return;
            }
        };
        self.cancels.explain(build, &mut outcome);
        let ok = matches!(
            outcome,
            Outcome::Successful { .. } | Outcome::Skipped { .. }
        );
        let id = &self.config.jobs[job].id;
        match &outcome {
            Outcome::Successful { retval } => {
                self.summary.succeeded += 1;
                self.successes.insert(job, (build, retval.clone()));
                self.ended_ok.insert(build, (job, true));
            }
            Outcome::Skipped { .. } => {
                self.summary.skipped += 1;
                self.ended_ok.insert(build, (job, false));
            }
            Outcome::Cancelled { .. } => self.summary.cancelled += 1,
            Outcome::Failed { .. } => {
                self.summary
                    .failed
                    .push((id.clone(), build, outcome.clone()));
                if self.shared.options.fail_fast {
                    self.stopping = true;
                    self.cancels.stopped_by.get_or_insert_with(|| {
                        format!("the run stopped after {id} failed (--fail-fast)")
                    });
                }
            }
        }
        let not_run = self.schedule.ended(i, ok);
        self.not_run(&not_run, reporter);
        reporter.event(&BuildEvent::Finished {
            build,
            job: id.clone(),
            attempt,
            outcome,
            took,
        });
    }

    /// What a tick's look at the database found: cancel requests, and whether the lease
    /// was renewed. Held steps are tried again against the new counts.
    fn looked(&mut self, (requested, renewed): Looked, reporter: &mut dyn Reporter) {
        if self.stopping {
            return;
        }
        match requested {
            Ok(requested) => {
                for build in requested {
                    self.cancel_requested(build, reporter);
                }
            }
            Err(err) => self.sink.fail(err),
        }
        if let Err(err) = renewed {
            self.sink.fail(err);
        }
        self.schedule.retry_held();
    }

    /// Steps that will not run (after one that did not succeed): their planned builds
    /// are removed and they are reported as not run because of it.
    fn not_run(&mut self, not_run: &[NotRun], reporter: &mut dyn Reporter) {
        for &NotRun { step, because } in not_run {
            self.summary.not_run += 1;
            // A build still being recorded goes when it is.
            if self.schedule.is_recorded(step) {
                self.sink.push(Write::Discard {
                    build: self.build_ids[step],
                });
            }
            reporter.event(&BuildEvent::NotRun {
                job: self.config.jobs[self.steps[step].job].id.clone(),
                because: self.config.jobs[self.steps[because].job].id.clone(),
            });
        }
    }

    /// A cancel request for `build`: a running attempt is terminated (and recorded
    /// cancelled when it ends); a planned build that has not started is recorded
    /// cancelled at once, and what depends on it does not run.
    fn cancel_requested(&mut self, build: BuildId, reporter: &mut dyn Reporter) {
        if self.cancels.one(build) {
            return;
        }
        let Some(i) = self.build_ids.iter().position(|b| *b == build) else {
            return;
        };
        let Some(not_run) = self.schedule.cancel(i) else {
            return;
        };
        self.summary.cancelled += 1;
        let outcome = Outcome::Cancelled {
            reason: crate::vocab::Reason::cancelled(format!("{REQUESTED} before it started")),
        };
        self.sink.push(Write::Finished {
            build,
            outcome: outcome.clone(),
            at: Utc::now(),
        });
        reporter.event(&BuildEvent::Finished {
            build,
            job: self.config.jobs[self.steps[i].job].id.clone(),
            attempt: 1,
            outcome,
            took: Duration::ZERO,
        });
        self.not_run(&not_run, reporter);
    }

    /// What a job's task says: to the reporter, and what of it the store keeps to the sink.
    fn task_event(&mut self, job: usize, event: TaskEvent, reporter: &mut dyn Reporter) {
        let id = self.config.jobs[job].id.clone();
        match event {
            TaskEvent::Started(build, attempt) => {
                self.cancels.attempt(job, build);
                self.sink.push(Write::Started {
                    build,
                    at: Utc::now(),
                    pins: self.pins_of.get(&job).cloned().unwrap_or_default(),
                    pgid: None,
                });
                reporter.event(&BuildEvent::Started {
                    build,
                    job: id,
                    attempt,
                });
            }
            TaskEvent::Ended(build, mut outcome) => {
                self.cancels.explain(build, &mut outcome);
                self.sink.push(Write::Finished {
                    build,
                    outcome,
                    at: Utc::now(),
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
                self.sink.process_group(build, pgid);
            }
            TaskEvent::Output(build, output) => {
                if let Some(write) = record(build, &output, Utc::now()) {
                    self.sink.push(write);
                }
                reporter.event(&BuildEvent::Output {
                    build,
                    job: id,
                    output,
                });
            }
        }
    }

    /// A build that had ended when the database refused its data: recorded failed,
    /// saying why, and counted so.
    fn fail_ended(&mut self, build: BuildId, reason: String) {
        let outcome = failed(reason);
        self.sink.push(Write::Finished {
            build,
            outcome: outcome.clone(),
            at: Utc::now(),
        });
        if let Some((job, successful)) = self.ended_ok.remove(&build) {
            let summary = &mut self.summary;
            match successful {
                true => summary.succeeded = summary.succeeded.saturating_sub(1),
                false => summary.skipped = summary.skipped.saturating_sub(1),
            }
            summary
                .failed
                .push((self.config.jobs[job].id.clone(), build, outcome));
        }
    }

    /// The loop is over (every planned build recorded by now): what never started is
    /// named, with what stopped the run, and removed; the last writes go.
    async fn finish(mut self, reporter: &mut dyn Reporter) -> Result<Summary, StoreError> {
        let why = self
            .cancels
            .stopped_by
            .clone()
            .or_else(|| {
                self.cancels
                    .why
                    .map(|why| format!("the run was cancelled ({why})"))
            })
            .unwrap_or_else(|| "the run stopped".to_owned());
        let (not_started, discard) = self.schedule.stop(self.build_ids.len());
        self.summary.not_run += not_started.len();
        for i in not_started {
            reporter.event(&BuildEvent::NotStarted {
                job: self.config.jobs[self.steps[i].job].id.clone(),
                why: why.clone(),
            });
        }
        for i in discard {
            self.sink.push(Write::Discard {
                build: self.build_ids[i],
            });
        }
        self.sink.finish(self.store).await;
        // Refused in the last batch: those builds had ended; their end is recorded failed.
        let unstored = std::mem::take(&mut self.sink.unstored);
        if !unstored.is_empty() {
            for (build, reason) in unstored {
                self.fail_ended(build, reason);
            }
            self.sink.finish(self.store).await;
        }
        match self.sink.failure {
            Some(err) => Err(err),
            None => Ok(self.summary),
        }
    }
}

/// The cancel of each running job, and the builds cancelled on request.
#[derive(Default)]
struct Cancels {
    /// How far the whole run is cancelled.
    level: Cancel,
    /// What cancelled the whole run: `Ctrl-C`, `SIGTERM`, `SIGHUP`.
    why: Option<&'static str>,
    /// What stopped the run from starting more (a failure under `--fail-fast`).
    stopped_by: Option<String>,
    by_job: HashMap<usize, watch::Sender<Cancel>>,
    /// The build each running job's current attempt is.
    attempts: HashMap<BuildId, usize>,
    requested: std::collections::HashSet<BuildId>,
    /// Builds whose data the database refused, and why: they end failed.
    unstored: HashMap<BuildId, String>,
}

impl Cancels {
    /// The cancel a job about to start watches.
    fn add(&mut self, job: usize) -> watch::Receiver<Cancel> {
        let (tx, rx) = watch::channel(self.level);
        self.by_job.insert(job, tx);
        rx
    }

    fn attempt(&mut self, job: usize, build: BuildId) {
        self.attempts.retain(|_, j| *j != job);
        self.attempts.insert(build, job);
    }

    fn remove(&mut self, job: usize) {
        self.by_job.remove(&job);
        self.attempts.retain(|_, j| *j != job);
    }

    /// Cancels every running job.
    fn all(&mut self, how: Cancel) {
        self.level = how;
        for tx in self.by_job.values() {
            let _ = tx.send(how);
        }
    }

    /// Cancels the running attempt `build`; false if no job runs it.
    fn one(&mut self, build: BuildId) -> bool {
        let Some(tx) = self.attempts.get(&build).and_then(|j| self.by_job.get(j)) else {
            return false;
        };
        // The request stays until the build ends: act on it once.
        if self.requested.insert(build) {
            let _ = tx.send(Cancel::Term);
        }
        true
    }

    /// A cancelled build says what cancelled it: a request, or the signal that stopped
    /// the run.
    fn explain(&self, build: BuildId, outcome: &mut Outcome) {
        if let Some(reason) = self.unstored.get(&build) {
            *outcome = failed(reason.clone());
            return;
        }
        if let Outcome::Cancelled { reason } = outcome {
            if self.requested.contains(&build) {
                *reason = crate::vocab::Reason::cancelled(REQUESTED);
            } else if let Some(why) = self.why {
                *reason = crate::vocab::Reason::cancelled(format!("cancelled ({why})"));
            }
        }
    }
}

const REQUESTED: &str = "cancelled on request";

/// How long this run's claims hold without a renewal (renewed at a third of it): a
/// `jobctl build` that stops renewing is taken for lost after this.
const LEASE: Duration = Duration::from_secs(30);

/// Writes are handed to the writer when this many wait and it is free, even before the
/// tick: the batch written when the run ends (with nothing else left to do) stays small.
const WRITE_AT: usize = 256;

/// Planned builds recorded before the first job starts; the others follow while it runs,
/// in transactions twice as large each time (a job can start once its build is
/// recorded, and the first are needed first), up to [`PLANNED_PER_TRANSACTION`].
const FIRST_PLANNED: usize = 16;

/// Planned builds recorded in one transaction at most: 10k config snapshots at once would
/// double the peak memory of a run.
const PLANNED_PER_TRANSACTION: usize = 500;

/// Records the planned builds of `jobs`, one each, `created`.
async fn create_planned(
    config: &Config,
    store: &AnyStore,
    jobs: &[usize],
    runner: &Runner,
    at: chrono::DateTime<Utc>,
) -> Result<Vec<(BuildId, bool)>, StoreError> {
    let planned: Vec<NewBuild> = jobs
        .iter()
        .map(|&job| new_build(&config.jobs[job], 1, at))
        .collect();
    let claimer = Claimer::this_process(None, Vec::new());
    store.plan_builds(&planned, runner, &claimer, LEASE).await
}

/// Records the planned builds of `jobs` a transaction at a time (each reserved where its
/// job's concurrency has room), sending their ids in order; stops early when `stop` is
/// raised (the run ended without them).
#[expect(clippy::too_many_arguments)]
async fn plan_rest(
    config: &'static Config,
    store: Arc<AnyStore>,
    jobs: Vec<usize>,
    runner: Runner,
    at: chrono::DateTime<Utc>,
    turn: WriteTurn,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ids: mpsc::UnboundedSender<Result<Vec<(BuildId, bool)>, StoreError>>,
) {
    let mut rest = &jobs[..];
    let mut size = FIRST_PLANNED;
    while !rest.is_empty() {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        size = (size * 2).min(PLANNED_PER_TRANSACTION);
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        rest = after;
        let _turn = turn.lock().await;
        let created = create_planned(config, &store, chunk, &runner, at).await;
        let failed = created.is_err();
        if ids.send(created).is_err() || failed {
            return;
        }
    }
}

/// What a tick's look at the database found.
type Looked = (Result<Vec<BuildId>, StoreError>, Result<(), StoreError>);

/// The look's result once it is there (never while none is under way).
async fn looked(looking: &mut Option<tokio::task::JoinHandle<Looked>>) -> Option<Looked> {
    match looking {
        Some(task) => match task.await {
            Ok(found) => Some(found),
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        },
        None => std::future::pending().await,
    }
}

async fn next_signal(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

/// The row a build of `job` starts as.
pub(crate) fn new_build(
    job: &crate::config::Job,
    attempt: u32,
    at: chrono::DateTime<Utc>,
) -> NewBuild {
    NewBuild {
        job_id: job.id.to_string(),
        config: serde_json::to_value(job).expect("a job serializes"),
        config_hash: config_hash(job),
        pins: Vec::new(),
        attempt,
        created_at: at,
    }
}

/// The dependency builds `job` uses (built in this run, or the latest success) and their
/// return values.
async fn pins_and_retvals(
    config: &Config,
    graph: &JobGraph,
    store: &AnyStore,
    successes: &mut HashMap<usize, (BuildId, Option<Json>)>,
    job: usize,
) -> Result<(Vec<Pin>, HashMap<JobId, Json>), StoreError> {
    let mut pins = Vec::new();
    let mut retvals = HashMap::new();
    for d in graph.dependencies(job) {
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
    Ok((pins, retvals))
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

/// One job, every attempt: the planned build first, a new build for each retry.
async fn run_job(
    shared: Arc<Shared>,
    job: usize,
    first: BuildId,
    retvals: HashMap<JobId, Json>,
    cancel: watch::Receiver<Cancel>,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> TaskResult {
    let mut slot = Some(slot);
    let result = async {
        let spec = &shared.config.jobs[job];
        let mut delay = spec.retry_delay;
        let mut attempt = 1;
        let mut build = first;
        loop {
            let _ = shared
                .events
                .send((job, TaskEvent::Started(build, attempt)));
            let started = Instant::now();
            let spec = &shared.config.jobs[job];
            let one = Attempt {
                spec,
                build,
                secrets: &shared.config.secrets,
                dir: shared.config.dir(),
                options: &shared.options,
                masker: &shared.masker,
                runner_pid: shared.runner.pid,
            };
            let send = |output| {
                let _ = shared.events.send((job, TaskEvent::Output(build, output)));
            };
            let outcome = super::attempt::attempt(&one, &retvals, &cancel, &send).await;
            let _ = shared
                .events
                .send((job, TaskEvent::Ended(build, outcome.clone())));
            let retry = matches!(outcome, Outcome::Failed { .. })
                && attempt <= spec.retries
                && *cancel.borrow() == Cancel::No;
            if !retry {
                return Ok((build, attempt, outcome, started.elapsed()));
            }
            attempt += 1;
            // The slot goes back while the job waits (the loop hears of it through this
            // event and may start another job); the next attempt waits for a free one.
            slot = None;
            let _ = shared
                .events
                .send((job, TaskEvent::Retrying(attempt, delay)));
            let mut cancel = cancel.clone();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.changed() => return Ok((build, attempt - 1, outcome, started.elapsed())),
            }
            tokio::select! {
                acquired = shared.slots.clone().acquire_owned() => {
                    slot = Some(acquired.expect("the slots are never closed"));
                }
                _ = cancel.changed() => return Ok((build, attempt - 1, outcome, started.elapsed())),
            }
            delay = delay.saturating_mul(2);
            let previous = build;
            {
                let _turn = shared.writing.lock().await;
                build = shared
                    .store
                    .create_builds(
                        &[new_build(spec, attempt, Utc::now())],
                        &shared.runner,
                        LEASE,
                    )
                    .await?[0];
            }
            // Claimed like the first: it waits while its job's builds elsewhere fill its
            // `concurrency`.
            loop {
                let claimed = {
                    let _turn = shared.writing.lock().await;
                    shared
                        .store
                        .claim(
                            &shared.claimer,
                            1,
                            Some(&[build]),
                            LEASE,
                            chrono::Utc::now(),
                        )
                        .await?
                };
                if !claimed.is_empty() {
                    break;
                }
                let mut cancel = cancel.clone();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = cancel.changed() => {
                        // It never started: it did not happen.
                        let _turn = shared.writing.lock().await;
                        shared.store.delete_build(build).await?;
                        return Ok((previous, attempt - 1, outcome, started.elapsed()));
                    }
                }
            }
        }
    }
    .await;
    drop(slot);
    (job, result)
}
