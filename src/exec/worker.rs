//! `jobctl worker`: a runner that claims queued builds from the store, on any machine
//! that reaches the database, and runs each from the snapshot taken when it was queued.
//!
//! ```text
//!   one select! loop ──┬─ wake (NOTIFY on PostgreSQL, a short poll on SQLite) ──► claim
//!                      │     up to the free slots, one transaction
//!                      ├─ build tasks ──outputs──► Sink (logs, progress: batched)
//!                      │            └──ended──► end_claimed(token) ──► store decides
//!                      │                        what waits on it; refused: it was lost
//!                      ├─ tick ──► flush; cancel requests (every 500 ms); every
//!                      │           lease/3: renew + heartbeat + rescue; no renewal
//!                      │           for a lease: kill all
//!                      └─ SIGTERM: drain (claim nothing, wait up to --drain-timeout,
//!                         then cancel and hand back); again, or SIGINT: at once
//! ```
//!
//! A worker never writes about a build whose lease it lost: every end carries the token
//! of its claim, and a build taken over is stopped here the moment a renewal misses it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use indexmap::IndexMap;
use serde_json::Value as Json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::attempt::{Attempt, attempt, failed};
use super::dispatcher::Options;
use super::event::{BuildEvent, Reporter};
use super::process::{Cancel, Output};
use crate::config::model::Masker;
use crate::config::{Job, JobId};
use crate::store::queue::{Claimed, Claimer, Ending, Queue};
use crate::store::sink::{Sink, WriteTurn};
use crate::store::{AnyStore, BuildId, Outcome, Runner, Store, StoreError};

/// How a worker works.
pub struct Settings {
    /// Builds at once.
    pub slots: usize,
    /// How long a claim holds without a renewal.
    pub lease: Duration,
    /// After SIGTERM, how long running builds may go on before they are handed back.
    pub drain_timeout: Duration,
    /// How often to look for work without a wake-up.
    pub poll: Duration,
    /// Stop once nothing is queued for workers and nothing runs here.
    pub until_idle: bool,
    pub options: Options,
    /// The worker's own secrets (a snapshot never holds their values).
    pub secrets: IndexMap<String, String>,
    /// Where a job's relative `workdir` is taken from on this machine.
    pub dir: PathBuf,
    /// Masks secrets and the database password in what jobs print.
    pub masker: Masker,
}

/// What a worker did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Worked {
    pub succeeded: usize,
    pub failed: usize,
    pub handed_back: usize,
    /// Builds it lost (taken over after a missed renewal): stopped, nothing written.
    pub lost: usize,
}

/// A build this worker runs.
struct Held {
    token: i64,
    job: JobId,
    attempt: u32,
    retries: u32,
    retry_delay: Duration,
    cancel: watch::Sender<Cancel>,
    /// Cancelled to be handed back (draining), not to end.
    hand_back: bool,
    /// Cancelled on request (`jobctl cancel`, the TUI).
    requested: bool,
    /// Taken over elsewhere: its end is not written.
    lost: bool,
    /// Its job's process group, written with the next tick's batch if it still runs
    /// then (a build that ends first costs no write for it).
    pgid: Option<u32>,
}

/// An end the database has not taken yet (it could not be reached): tried again each
/// tick while the lease lasts.
struct PendingEnd {
    build: BuildId,
    job: JobId,
    token: i64,
    ending: Ending,
    since: Instant,
}

/// Claims and runs builds until stopped (or idle, with `until_idle`).
pub async fn work(
    store: Arc<AnyStore>,
    claimer: Claimer,
    settings: Settings,
    reporter: &mut dyn Reporter,
) -> Result<Worked, StoreError> {
    let settings = Arc::new(settings);
    let runner = Runner {
        host: claimer.host.clone(),
        pid: claimer.pid,
        worker: claimer.name.clone(),
    };
    let slots = settings.slots.max(1);
    let lease = settings.lease.max(Duration::from_secs(1));
    let renew_every = lease / 3;
    // No call to the database holds the loop longer than this: one that cannot reach it
    // fails, and the loop goes on killing jobs on time.
    let wait = (lease / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
    store
        .heartbeat(&claimer, slots as u32, lease, false, Utc::now())
        .await?;
    let mut held: HashMap<BuildId, Held> = HashMap::new();
    let mut tasks = FuturesUnordered::new();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(BuildId, Output)>();
    let mut sink = Sink::new(WriteTurn::default());
    let mut worked = Worked::default();
    let mut pending: Vec<PendingEnd> = Vec::new();
    let mut last_renewed = Instant::now();
    let mut last_look = Instant::now() - renew_every;
    let mut last_cancels = Instant::now();
    let mut draining: Option<Instant> = None;
    let mut stop_now = false;
    let mut want_claim = true;
    let mut trouble = Trouble::default();
    let mut terminations = signal(SignalKind::terminate()).ok();
    let mut interrupts = signal(SignalKind::interrupt()).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut poll = tokio::time::interval(settings.poll.max(Duration::from_millis(10)));
    let mut listener = bounded(wait, listen(&store)).await.flatten();

    loop {
        // Claim what fits, unless stopping.
        if want_claim && draining.is_none() && !stop_now && held.len() < slots {
            want_claim = false;
            // The database away: the next poll tries again.
            let claim = bounded(
                wait,
                store.claim(&claimer, slots - held.len(), None, lease, Utc::now()),
            )
            .await;
            if let Some(claimed) = trouble.saw(claim, wait, reporter) {
                for c in claimed {
                    // Every write about it carries its claim's token: lines, progress, its
                    // process group.
                    sink.fence(c.id, c.token);
                    start(
                        &settings, &runner, &out_tx, &mut held, &mut tasks, c, reporter,
                    );
                }
            }
        }
        if held.is_empty() && pending.is_empty() && (stop_now || draining.is_some()) {
            break;
        }
        reporter.idle();
        tokio::select! {
            Some(joined) = tasks.next() => {
                // Every build that has ended by now, together: one write of their lines,
                // one transaction for their ends (and the next claim).
                let mut ended = vec![joined];
                while let Some(Some(joined)) = tasks.next().now_or_never() {
                    ended.push(joined);
                }
                while let Ok((build, output)) = out_rx.try_recv() {
                    on_output(&mut sink, &mut held, reporter, build, output);
                }
                // Their lines go before their ends.
                bounded(wait, sink.finish(&store)).await;
                sink.failure = None;
                stop_stale(&mut sink, &mut held);
                for joined in ended {
                    let (build, outcome, took): (BuildId, Outcome, Duration) =
                        joined.expect("a build task does not panic");
                    sink.unfence(build);
                    if let Some(end) = ended_here(&mut held, &mut worked, reporter, build, outcome, took) {
                        pending.push(end);
                    }
                }
                if draining.is_none() && !stop_now && held.len() < slots {
                    // The ends and the next claim in one transaction: one commit a turn.
                    let ends: Vec<(BuildId, i64, Ending)> = pending
                        .iter()
                        .map(|e| (e.build, e.token, e.ending.clone()))
                        .collect();
                    let turn = store.end_and_claim(&ends, &claimer, slots - held.len(), lease, Utc::now());
                    if let Some((done, claimed)) = trouble.saw(bounded(wait, turn).await, wait, reporter) {
                        for (end, recorded) in pending.drain(..).zip(done) {
                            if !recorded {
                                worked.lost += 1;
                                reporter.event(&BuildEvent::Lost { build: end.build, job: end.job });
                            }
                        }
                        for c in claimed {
                            sink.fence(c.id, c.token);
                            start(&settings, &runner, &out_tx, &mut held, &mut tasks, c, reporter);
                        }
                    }
                } else {
                    bounded(wait, write_ends(&store, &mut pending, &mut worked, reporter)).await;
                }
            }
            Some((build, output)) = out_rx.recv() => {
                on_output(&mut sink, &mut held, reporter, build, output);
                while let Ok((build, output)) = out_rx.try_recv() {
                    on_output(&mut sink, &mut held, reporter, build, output);
                }
                if sink.len() >= 256 {
                    bounded(wait, sink.flush(&store)).await;
                }
            }
            _ = tick.tick() => {
                for (build, h) in held.iter_mut() {
                    if let Some(pgid) = h.pgid.take() {
                        sink.process_group(*build, pgid);
                    }
                }
                bounded(wait, sink.flush(&store)).await;
                if sink.failure.is_some() {
                    // Output that cannot be written is let go; the build goes on.
                    sink.failure = None;
                }
                stop_stale(&mut sink, &mut held);
                if super::reaper::dirty() {
                    super::reaper::sweep();
                }
                if !pending.is_empty() {
                    bounded(wait, write_ends(&store, &mut pending, &mut worked, reporter)).await;
                }
                if let Some(since) = draining
                    && since.elapsed() >= settings.drain_timeout
                {
                    for h in held.values_mut() {
                        if !h.hand_back {
                            h.hand_back = true;
                            let _ = h.cancel.send(Cancel::Term);
                        }
                    }
                }
                if !held.is_empty() && last_cancels.elapsed() >= Duration::from_millis(500) {
                    last_cancels = Instant::now();
                    cancels(&store, &runner, &mut held, wait).await;
                }
                if last_look.elapsed() >= renew_every {
                    last_look = Instant::now();
                    look(&store, &claimer, lease, slots, draining.is_some(), &mut held, &pending, &mut last_renewed, wait).await;
                }
                if settings.until_idle && held.is_empty() && pending.is_empty() && bounded(wait, idle(&store, &claimer)).await == Some(true) {
                    stop_now = true;
                }
                // Cut off from the database for as long as a lease: another runner may take
                // these builds now, so they stop here first.
                if !held.is_empty() && last_renewed.elapsed() + Duration::from_millis(500) >= lease {
                    for h in held.values_mut() {
                        if !h.lost {
                            h.lost = true;
                            let _ = h.cancel.send(Cancel::Kill);
                        }
                    }
                }
                // An end not written within a lease would be refused: the build is
                // another runner's by then.
                pending.retain(|end| end.since.elapsed() < lease);
            }
            _ = poll.tick() => {
                want_claim = true;
                // A listener lost (the server restarted, or ended its connection) is made
                // again: without it every enqueue would wait for this poll.
                if listener.is_none() && store.postgres_pool().is_some() {
                    listener = bounded(wait, listen(&store)).await.flatten();
                }
            }
            woke = wake(&mut listener) => {
                if !woke {
                    listener = None;
                }
                want_claim = true;
            }
            Some(()) = next(&mut terminations) => {
                if draining.is_none() {
                    draining = Some(Instant::now());
                    let _ = bounded(wait, store.heartbeat(&claimer, slots as u32, lease, true, Utc::now())).await;
                } else {
                    stop_now = true;
                    cancel_all(&mut held);
                }
            }
            Some(()) = next(&mut interrupts) => {
                stop_now = true;
                cancel_all(&mut held);
            }
        }
    }
    bounded(wait, sink.finish(&store)).await;
    super::reaper::sweep_all(Duration::from_secs(2)).await;
    let _ = bounded(wait, store.worker_stopped(&claimer, Utc::now())).await;
    reporter.idle();
    Ok(worked)
}

/// Whether claims work, said when that changes: a worker that cannot claim (the database
/// away, or refusing what it reads) says why once, not on every try, and says when it
/// can again.
#[derive(Default)]
struct Trouble(Option<String>);

impl Trouble {
    /// The value of a claim that worked.
    fn saw<T>(
        &mut self,
        claim: Option<Result<T, StoreError>>,
        wait: Duration,
        reporter: &mut dyn Reporter,
    ) -> Option<T> {
        let (value, why) = match claim {
            Some(Ok(value)) => (Some(value), None),
            Some(Err(err)) => (None, Some(crate::error::with_causes(&err))),
            None => (
                None,
                Some(format!(
                    "the database did not answer within {}",
                    crate::config::model::format_duration(wait)
                )),
            ),
        };
        if why != self.0 {
            reporter.event(&BuildEvent::ClaimTrouble { why: why.clone() });
            self.0 = why;
        }
        value
    }
}

/// `work`, or `None` if it takes longer than `limit` (dropped: what it sent may still
/// land).
async fn bounded<T>(limit: Duration, work: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, work).await.ok()
}

/// A build that ended here: what it comes to (its end to write, unless it was lost),
/// said to the reporter.
fn ended_here(
    held: &mut HashMap<BuildId, Held>,
    worked: &mut Worked,
    reporter: &mut dyn Reporter,
    build: BuildId,
    outcome: Outcome,
    took: Duration,
) -> Option<PendingEnd> {
    let h = held.remove(&build)?;
    if h.lost {
        worked.lost += 1;
        return None;
    }
    let outcome = match outcome {
        Outcome::Cancelled { .. } if h.requested => Outcome::Cancelled {
            reason: crate::vocab::Reason::cancelled("cancelled on request"),
        },
        other => other,
    };
    let ending = if h.hand_back && !h.requested {
        Ending::HandBack
    } else if matches!(outcome, Outcome::Failed { .. }) && h.attempt <= h.retries {
        let delay = h
            .retry_delay
            .saturating_mul(1 << (h.attempt.clamp(1, 16) - 1));
        reporter.event(&BuildEvent::Retrying {
            job: h.job.clone(),
            attempt: h.attempt + 1,
            after: delay,
        });
        Ending::Retry {
            outcome: outcome.clone(),
            not_before: crate::limits::after(Utc::now(), delay),
        }
    } else {
        Ending::Done(outcome.clone())
    };
    match &ending {
        Ending::HandBack => worked.handed_back += 1,
        _ if matches!(
            outcome,
            Outcome::Successful { .. } | Outcome::Skipped { .. }
        ) =>
        {
            worked.succeeded += 1
        }
        _ => worked.failed += 1,
    }
    reporter.event(&BuildEvent::Finished {
        build,
        job: h.job.clone(),
        attempt: h.attempt,
        outcome,
        took,
    });
    Some(PendingEnd {
        build,
        job: h.job,
        token: h.token,
        ending,
        since: Instant::now(),
    })
}

/// Builds whose writes were refused for a stale token were taken over (rescued, handed
/// to another runner): they stop here at once, and nothing more is written about them.
fn stop_stale(sink: &mut Sink, held: &mut HashMap<BuildId, Held>) {
    for build in std::mem::take(&mut sink.stale) {
        sink.unfence(build);
        if let Some(h) = held.get_mut(&build)
            && !h.lost
        {
            h.lost = true;
            let _ = h.cancel.send(Cancel::Kill);
        }
    }
}

/// Cancels every build to hand it back.
fn cancel_all(held: &mut HashMap<BuildId, Held>) {
    for h in held.values_mut() {
        h.hand_back = true;
        let _ = h.cancel.send(Cancel::Term);
    }
}

/// Renews the leases, beats the heart and rescues what lost runners left.
#[expect(clippy::too_many_arguments)]
async fn look(
    store: &AnyStore,
    claimer: &Claimer,
    lease: Duration,
    slots: usize,
    draining: bool,
    held: &mut HashMap<BuildId, Held>,
    pending: &[PendingEnd],
    last_renewed: &mut Instant,
    wait: Duration,
) {
    let asked = Instant::now();
    // What runs here, and what ended here but is not written yet. A build this worker
    // let go (its end not written within a lease) is not renewed: it is rescued.
    let mine: Vec<BuildId> = held
        .iter()
        .filter(|(_, h)| !h.lost)
        .map(|(id, _)| *id)
        .chain(pending.iter().map(|e| e.build))
        .collect();
    if let Some(Ok(still)) = bounded(wait, store.renew(claimer, Some(&mine), lease)).await {
        *last_renewed = asked;
        for (id, h) in held.iter_mut() {
            if !still.contains(id) && !h.lost {
                // Rescued or cancelled elsewhere: it is not this worker's any more.
                h.lost = true;
                let _ = h.cancel.send(Cancel::Kill);
            }
        }
    }
    let _ = bounded(
        wait,
        store.heartbeat(claimer, slots as u32, lease, draining, Utc::now()),
    )
    .await;
    let _ = bounded(
        wait,
        store.rescue(&claimer.host, &super::recover::runner_gone, Utc::now()),
    )
    .await;
}

/// Acts on the cancel requests for builds this worker runs (read twice a second).
async fn cancels(
    store: &AnyStore,
    runner: &Runner,
    held: &mut HashMap<BuildId, Held>,
    wait: Duration,
) {
    if let Some(Ok(requested)) = bounded(wait, store.cancel_requests(runner)).await {
        for id in requested {
            if let Some(h) = held.get_mut(&id)
                && !h.requested
            {
                h.requested = true;
                let _ = h.cancel.send(Cancel::Term);
            }
        }
    }
}

/// Whether nothing this worker could run is queued.
async fn idle(store: &AnyStore, claimer: &Claimer) -> bool {
    store
        .queued_for_workers(&claimer.labels)
        .await
        .is_ok_and(|n| n == 0)
}

/// Writes the ends waiting, in one transaction; if the database cannot take them now,
/// they wait for the next tick.
async fn write_ends(
    store: &AnyStore,
    pending: &mut Vec<PendingEnd>,
    worked: &mut Worked,
    reporter: &mut dyn Reporter,
) {
    let ends: Vec<(BuildId, i64, Ending)> = pending
        .iter()
        .map(|e| (e.build, e.token, e.ending.clone()))
        .collect();
    let Ok(done) = store.end_many(&ends, Utc::now()).await else {
        return;
    };
    for (end, recorded) in pending.drain(..).zip(done) {
        if !recorded {
            // Taken over meanwhile: the other runner's word stands.
            worked.lost += 1;
            reporter.event(&BuildEvent::Lost {
                build: end.build,
                job: end.job,
            });
        }
    }
}

fn on_output(
    sink: &mut Sink,
    held: &mut HashMap<BuildId, Held>,
    reporter: &mut dyn Reporter,
    build: BuildId,
    output: Output,
) {
    let Some(h) = held.get_mut(&build) else {
        return;
    };
    if h.lost {
        return;
    }
    match output {
        Output::Spawned { pgid } => h.pgid = Some(pgid),
        output => {
            if let Some(write) = super::event::record(build, &output, Utc::now()) {
                sink.push(write);
            }
            reporter.event(&BuildEvent::Output {
                build,
                job: h.job.clone(),
                output,
            });
        }
    }
}

/// Starts a claimed build as a task of its own.
fn start(
    settings: &Arc<Settings>,
    runner: &Runner,
    out: &mpsc::UnboundedSender<(BuildId, Output)>,
    held: &mut HashMap<BuildId, Held>,
    tasks: &mut FuturesUnordered<tokio::task::JoinHandle<(BuildId, Outcome, Duration)>>,
    claimed: Claimed,
    reporter: &mut dyn Reporter,
) {
    let (cancel_tx, cancel_rx) = watch::channel(Cancel::No);
    let spec = claimed
        .config
        .as_ref()
        .map_err(String::clone)
        .and_then(Job::from_snapshot);
    let job = spec
        .as_ref()
        .map(|j| j.id.clone())
        .ok()
        .or_else(|| JobId::parse(&claimed.job_id))
        .unwrap_or_else(|| JobId::parse("_").expect("a valid id"));
    held.insert(
        claimed.id,
        Held {
            token: claimed.token,
            job: job.clone(),
            attempt: claimed.attempt,
            retries: spec.as_ref().map_or(0, |j| j.retries),
            retry_delay: spec.as_ref().map_or(Duration::ZERO, |j| j.retry_delay),
            cancel: cancel_tx,
            hand_back: false,
            requested: false,
            lost: false,
            pgid: None,
        },
    );
    reporter.event(&BuildEvent::Started {
        build: claimed.id,
        job,
        attempt: claimed.attempt,
    });
    let (settings, out) = (settings.clone(), out.clone());
    let runner_pid = runner.pid;
    tasks.push(tokio::spawn(Box::pin(async move {
        let started = Instant::now();
        let build = claimed.id;
        let spec = match spec {
            Ok(spec) => spec,
            Err(err) => {
                return (
                    build,
                    failed(format!("cannot read the build's snapshot: {err}")),
                    started.elapsed(),
                );
            }
        };
        let retvals = retvals(&claimed);
        let one = Attempt {
            spec: &spec,
            build,
            secrets: &settings.secrets,
            dir: &settings.dir,
            options: &settings.options,
            masker: &settings.masker,
            runner_pid,
        };
        let send = |output| {
            let _ = out.send((build, output));
        };
        let outcome = attempt(&one, &retvals, &cancel_rx, &send).await;
        (build, outcome, started.elapsed())
    })));
}

/// The return values of a claimed build's pins (read with its claim).
fn retvals(claimed: &Claimed) -> HashMap<JobId, Json> {
    claimed
        .retvals
        .iter()
        .filter_map(|(job, value)| Some((JobId::parse(job)?, value.clone())))
        .collect()
}

/// Listens for the queue's notifications (PostgreSQL); `None` elsewhere or on failure.
async fn listen(store: &AnyStore) -> Option<sqlx::postgres::PgListener> {
    let pool = store.postgres_pool()?;
    let mut listener = sqlx::postgres::PgListener::connect_with(pool).await.ok()?;
    listener.listen("jobctl_queue").await.ok()?;
    Some(listener)
}

/// Waits for a notification; false when the listener failed (then never ready again:
/// the poll makes a new one).
async fn wake(listener: &mut Option<sqlx::postgres::PgListener>) -> bool {
    match listener {
        Some(l) => l.recv().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn next(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Heard(Vec<BuildEvent>);

    impl Reporter for Heard {
        fn event(&mut self, event: &BuildEvent) {
            self.0.push(event.clone());
        }
    }

    #[test]
    fn trouble_is_said_once_until_it_changes_and_once_when_it_is_over() {
        let refused = || {
            Some(Err::<(), _>(StoreError::UnknownScheme {
                url: "nope://".into(),
            }))
        };
        let wait = Duration::from_secs(5);
        let mut trouble = Trouble::default();
        let mut heard = Heard::default();
        assert_eq!(trouble.saw(Some(Ok(1)), wait, &mut heard), Some(1));
        for _ in 0..3 {
            assert_eq!(trouble.saw(refused(), wait, &mut heard), None);
        }
        assert_eq!(trouble.saw(None::<Result<(), _>>, wait, &mut heard), None);
        assert_eq!(trouble.saw(None::<Result<(), _>>, wait, &mut heard), None);
        assert_eq!(trouble.saw(Some(Ok(2)), wait, &mut heard), Some(2));
        assert_eq!(trouble.saw(Some(Ok(3)), wait, &mut heard), Some(3));
        let said: Vec<Option<String>> = heard
            .0
            .into_iter()
            .map(|e| match e {
                BuildEvent::ClaimTrouble { why } => why,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            said,
            [
                Some(
                    "`nope://` is not a storage URL jobctl knows (use sqlite://PATH or postgresql://USER@HOST/DB)"
                        .to_owned()
                ),
                Some("the database did not answer within 5s".to_owned()),
                None,
            ]
        );
    }
}
