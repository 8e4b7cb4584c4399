//! `jobctl tui`: a dashboard over the database, live.
//!
//! ```text
//!   keys (crossterm) ───────────┐
//!   250 ms: store.changes(), ───┤   one select! loop       App ──draw()──► ratatui Backend
//!     the config's files' stamps│
//!   builds it started end ──────┼─► app.key() / update() ─► (pure: state + time → frame)
//!   the config loaded again ────┤     / reload()
//!   SIGTERM, SIGHUP, SIGINT ────┘        │ Command
//!                                        ▼
//!              spawn `jobctl build …` / store.request_cancel(build) / load the config
//! ```
//!
//! The config is read again when one of the files it was rendered from changes (its
//! size, modification time or inode), or on `r`; the load runs off the loop, so a large
//! config does not hold the keys. A config that no longer loads is shown as an error bar
//! and the one before it stays in use.
//!
//! The dashboard reads only the store, so it shows what any process records: its own
//! builds, another `jobctl build`, workers. It asks the store for a change token four
//! times a second (a few indexed lookups) and reads again only when the token moved; it
//! draws only when something it shows changed (new data, a key, a resize, or the seconds
//! of a running build's clock). The loop is generic over the ratatui backend; tests drive
//! [`App`] with `TestBackend`.

pub mod app;
pub mod data;
pub mod draw;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::mpsc;

pub use app::{App, Command};
use data::{Snapshot, State};

use crate::config::{Config, LoadError};
use crate::store::queue::Queue;
use crate::store::{AnyStore, BuildId, ChangeToken, OpenMode, Runner, Store, StoreError};

/// How often the store is asked whether anything changed.
const POLL: Duration = Duration::from_millis(250);
/// How long the first frame waits for the database before saying it is connecting.
const FIRST_CONNECT: Duration = Duration::from_secs(2);
/// How often (seconds) an idle dashboard redraws, for its "… ago" times.
const IDLE_REDRAW: i64 = 15;

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error("`jobctl tui` needs a terminal (use `jobctl jobs`, `builds` or `logs` in scripts)")]
    NotATerminal,
    #[error("cannot draw on the terminal")]
    Terminal(#[source] std::io::Error),
}

/// How to start `jobctl build` the way this dashboard was started.
#[derive(Debug, Clone)]
pub struct Launch {
    pub config: PathBuf,
    pub vars: Vec<(String, String)>,
}

/// Runs the dashboard on this process's terminal until the user quits.
pub async fn run(config: Arc<Config>, launch: Launch) -> Result<(), TuiError> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(TuiError::NotATerminal);
    }
    // Installs a panic hook that restores the terminal before the panic is printed.
    let mut terminal = ratatui::try_init().map_err(TuiError::Terminal)?;
    let outcome = event_loop(&mut terminal, config, &launch).await;
    ratatui::restore();
    outcome
}

/// Where the dashboard reads from, once it can.
pub enum Source {
    Open(AnyStore),
    /// Not yet: the message says why.
    Waiting(String),
}

/// Opens the config's database for reading; a SQLite file that does not exist yet is
/// not created (the dashboard waits for a build to make it).
pub async fn connect(config: &Config) -> Source {
    let url = crate::store::redact_url(&config.storage);
    if let Some(file) = crate::store::sqlite_file(&config.storage, config.dir())
        && !file.exists()
    {
        return Source::Waiting(format!(
            "No database yet at {}: nothing has been built. Press b to build the selected \
             job, or run `jobctl build`; the dashboard picks it up.",
            file.display()
        ));
    }
    match crate::store::open(&config.storage, config.dir(), OpenMode::Use).await {
        Ok(store) => Source::Open(store),
        Err(StoreError::NotInstalled { .. }) => Source::Waiting(format!(
            "No jobctl tables in {url} yet: run `jobctl install`; the dashboard picks them up."
        )),
        Err(err @ StoreError::SchemaOld { .. }) => {
            Source::Waiting(format!("{err}; the dashboard picks it up."))
        }
        Err(err) => Source::Waiting(format!("Cannot read {url}: {}. Retrying.", chain(&err))),
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// What a build the dashboard started said when it ended.
struct Ended {
    what: String,
    status: std::process::ExitStatus,
    stderr: String,
}

/// The stamps of the files a config was rendered from, to tell when one changed.
#[derive(Debug, PartialEq)]
pub struct Stamps(Vec<Option<(std::time::SystemTime, u64, u64)>>);

impl Stamps {
    pub fn of(files: &[PathBuf]) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamps(
            files
                .iter()
                .map(|file| {
                    let meta = std::fs::metadata(file).ok()?;
                    Some((meta.modified().ok()?, meta.len(), meta.ino()))
                })
                .collect(),
        )
    }
}

/// The files to watch for `config`: those it was rendered from, or its own file.
fn sources(config: &Config) -> Vec<PathBuf> {
    match config.sources.is_empty() {
        true => vec![config.path.clone()],
        false => config.sources.clone(),
    }
}

/// One line for the error bar: where the first mistake is, and how many there are.
pub fn load_failure(err: &LoadError) -> String {
    let what = match err {
        LoadError::Invalid(diagnostics) => {
            let first = diagnostics.items.first();
            let at = first
                .and_then(|d| d.location())
                .unwrap_or_else(|| diagnostics.file.clone());
            let message = first.map_or("", |d| d.message.as_str());
            let more = match diagnostics.items.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more; `jobctl check` shows all)", n - 1),
            };
            format!("{at}: {message}{more}")
        }
        LoadError::Read { .. } => chain(err),
    };
    format!("config not reloaded: {what}")
}

async fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    config: Arc<Config>,
    launch: &Launch,
) -> Result<(), TuiError>
where
    B::Error: Into<std::io::Error>,
{
    let mut watched = sources(&config);
    let mut stamps = Stamps::of(&watched);
    let mut app = App::new(config.clone(), crate::store::redact_url(&config.storage));
    // A server that does not answer must not hold the keys: connecting goes on in a
    // task of its own after a first short wait.
    let (connected_tx, mut connected) = mpsc::unbounded_channel::<Source>();
    let mut connecting = false;
    let mut source = match tokio::time::timeout(FIRST_CONNECT, connect(&config)).await {
        Ok(source) => source,
        Err(_) => {
            connecting = true;
            let tx = connected_tx.clone();
            let later = config.clone();
            tokio::spawn(async move {
                let _ = tx.send(connect(&later).await);
            });
            Source::Waiting(format!(
                "Connecting to {}…",
                crate::store::redact_url(&config.storage)
            ))
        }
    };
    // The config read again, off the loop: one load at a time.
    let (loaded_tx, mut loaded) = mpsc::unbounded_channel::<Result<Config, LoadError>>();
    let mut loading = false;
    let load = |tx: &mpsc::UnboundedSender<Result<Config, LoadError>>| {
        let (path, vars, tx) = (launch.config.clone(), launch.vars.clone(), tx.clone());
        tokio::task::spawn_blocking(move || {
            let _ = tx.send(crate::config::load(&path, &vars));
        });
    };
    let mut token: Option<ChangeToken> = None;
    let mut wanted = app.wanted();
    refresh(&mut app, &source, &mut token, true).await;

    let mut keys = EventStream::new();
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<Ended>();
    let mut term = signal(tokio::signal::unix::SignalKind::terminate());
    let mut hup = signal(tokio::signal::unix::SignalKind::hangup());
    // Ctrl-C is a key in raw mode; a SIGINT sent by `kill` ends the dashboard the same way.
    let mut int = signal(tokio::signal::unix::SignalKind::interrupt());
    let mut drawn_second = None;
    let mut dirty = true;
    loop {
        if dirty {
            app.now = chrono::Utc::now();
            terminal
                .draw(|frame| draw::draw(&app, frame))
                .map_err(|e| TuiError::Terminal(e.into()))?;
            drawn_second = Some(app.now.timestamp());
            dirty = false;
        }
        tokio::select! {
            event = keys.next() => match event {
                Some(Ok(Event::Key(key))) => {
                    match app.key(key) {
                        Some(Command::Quit) => return Ok(()),
                        Some(Command::Reload) if !loading => {
                            loading = true;
                            stamps = Stamps::of(&watched);
                            load(&loaded_tx);
                        }
                        Some(Command::Reload) => {}
                        Some(command) => carry_out(&mut app, &source, command, launch, &ended_tx).await,
                        None => {}
                    }
                    dirty = true;
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(TuiError::Terminal(err)),
                None => return Ok(()),
            },
            Some(now) = connected.recv() => {
                connecting = false;
                source = now;
                token = None;
                refresh(&mut app, &source, &mut token, true).await;
                dirty = true;
            }
            Some(result) = loaded.recv() => {
                loading = false;
                match result {
                    Ok(new) => {
                        let new = Arc::new(new);
                        let moved = new.storage != app.config.storage;
                        // Files it includes now are watched from here on.
                        let now_watched = sources(&new);
                        if now_watched != watched {
                            watched = now_watched;
                            stamps = Stamps::of(&watched);
                        }
                        app.reload(new.clone());
                        if moved {
                            // Another database: read it from now on.
                            app.database = crate::store::redact_url(&new.storage);
                            source = Source::Waiting(format!("Connecting to {}…", app.database));
                            connecting = false;
                        }
                        token = None;
                        refresh(&mut app, &source, &mut token, true).await;
                    }
                    Err(err) => app.config_error = Some(load_failure(&err)),
                }
                dirty = true;
            }
            _ = poll.tick() => {
                if matches!(source, Source::Waiting(_)) && !connecting {
                    connecting = true;
                    let tx = connected_tx.clone();
                    let config = app.config.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(connect(&config).await);
                    });
                }
                if !loading {
                    // Stamped before the load reads them: an edit made while it reads
                    // is seen at the next tick.
                    let now = Stamps::of(&watched);
                    if now != stamps {
                        stamps = now;
                        loading = true;
                        load(&loaded_tx);
                    }
                }
                if refresh(&mut app, &source, &mut token, false).await {
                    dirty = true;
                }
                // A running build's clock moves once a second; "2m ago" now and then.
                let second = chrono::Utc::now().timestamp();
                let every = if running(&app) { 1 } else { IDLE_REDRAW };
                if drawn_second.is_none_or(|at| second / every != at / every) {
                    dirty = true;
                }
            }
            Some(done) = ended.recv() => {
                app.message = Some(if done.status.success() {
                    format!("{}: done", done.what)
                } else {
                    let last = done.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                    format!("{}: {} {}", done.what, done.status, last.trim_start_matches("error: "))
                });
                dirty = true;
            }
            _ = recv(&mut term) => return Ok(()),
            _ = recv(&mut hup) => return Ok(()),
            _ = recv(&mut int) => return Ok(()),
        }
        // A key that opened another view wants its data now, not at the next tick.
        if app.wanted() != wanted {
            wanted = app.wanted();
            refresh(&mut app, &source, &mut token, true).await;
            dirty = true;
        }
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).ok()
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn running(app: &App) -> bool {
    app.loaded().is_some_and(|l| {
        l.jobs.iter().any(|r| r.state == State::Running)
            || l.build
                .as_ref()
                .is_some_and(|b| !b.build.status.is_finished())
    })
}

/// Reads the store again if its token moved (or `force`); true if the snapshot changed.
async fn refresh(
    app: &mut App,
    source: &Source,
    token: &mut Option<ChangeToken>,
    force: bool,
) -> bool {
    let store = match source {
        Source::Open(store) => store,
        Source::Waiting(message) => {
            let snapshot = Snapshot::NoDatabase {
                message: message.clone(),
            };
            let changed = app.snapshot != snapshot;
            if changed {
                app.update(snapshot);
            }
            return changed;
        }
    };
    recover_now_and_then(store).await;
    read(app, store, token, force).await
}

/// Builds left `running` by a jobctl that died on this machine are closed, at most every
/// two seconds, so the dashboard does not show them running for ever.
async fn recover_now_and_then(store: &crate::store::AnyStore) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(2)) {
            return;
        }
        *last = Some(std::time::Instant::now());
    }
    let _ = crate::exec::recover::rescue(store).await;
}

/// Reads `store` again if its token moved since `token` (or `force`): everything when a
/// build was made, started or ended, otherwise only what a log line or progress report
/// changes. True if the snapshot changed.
pub async fn read(
    app: &mut App,
    store: &(impl Store + Queue),
    token: &mut Option<ChangeToken>,
    force: bool,
) -> bool {
    let now = match store.changes().await {
        Ok(now) => now,
        Err(err) => {
            app.message = Some(format!("cannot read the database: {}", chain(&err)));
            return true;
        }
    };
    if !force && token.as_ref() == Some(&now) {
        let wants_workers = app.wanted().workers;
        return match &mut app.snapshot {
            Snapshot::Ready(loaded) => {
                let gone = data::mark_gone(&mut loaded.jobs);
                // Heartbeats move no token: the open workers view reads them each tick.
                let beat = match wants_workers {
                    true => match data::workers(store).await {
                        Ok(workers) if loaded.workers.as_ref() != Some(&workers) => {
                            loaded.workers = Some(workers);
                            true
                        }
                        Ok(_) => false,
                        Err(err) => {
                            app.message = Some(format!("cannot read the workers: {}", chain(&err)));
                            true
                        }
                    },
                    false => false,
                };
                gone || beat
            }
            Snapshot::NoDatabase { .. } => false,
        };
    }
    let builds_changed = token.as_ref().is_none_or(|t| t.builds != now.builds);
    *token = Some(now);
    let (config, graph, wanted) = (app.config.clone(), app.graph.clone(), app.wanted());
    match data::load(store, &config, &graph, wanted, app.loaded(), builds_changed).await {
        Ok(loaded) => {
            let snapshot = Snapshot::Ready(Box::new(loaded));
            let changed = app.snapshot != snapshot;
            if changed {
                app.update(snapshot);
            }
            changed
        }
        Err(err) => {
            *token = None;
            app.message = Some(format!("cannot read the database: {}", chain(&err)));
            true
        }
    }
}

async fn carry_out(
    app: &mut App,
    source: &Source,
    command: Command,
    launch: &Launch,
    ended: &mpsc::UnboundedSender<Ended>,
) {
    match command {
        Command::Quit | Command::Reload => {}
        Command::Build {
            jobs,
            deps,
            downstream,
            yes,
        } => {
            let ids: Vec<String> = jobs
                .iter()
                .map(|&j| app.config.jobs[j].id.to_string())
                .collect();
            let how = How {
                deps,
                downstream,
                yes,
            };
            match start_build(&ids, how, launch, ended) {
                Ok(()) => {}
                Err(err) => app.message = Some(format!("cannot start jobctl build: {err}")),
            }
        }
        Command::Cancel { build } => {
            app.message = Some(match source {
                Source::Open(store) => cancel(store, build).await,
                Source::Waiting(_) => "no database to cancel in".to_owned(),
            });
        }
    }
}

/// The options of a `jobctl build` the dashboard starts.
struct How {
    deps: bool,
    downstream: bool,
    yes: bool,
}

/// Starts `jobctl build` in its own process group, so that it runs on after the
/// dashboard quits; its error output goes to a file read when it ends.
fn start_build(
    ids: &[String],
    how: How,
    launch: &Launch,
    ended: &mpsc::UnboundedSender<Ended>,
) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let log = std::env::temp_dir().join(format!(
        "jobctl-tui-{}-{}.stderr",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let stderr = std::fs::File::create(&log)?;
    let mut command = tokio::process::Command::new(exe);
    command.arg("--config").arg(&launch.config);
    for (name, value) in &launch.vars {
        command.arg("--var").arg(format!("{name}={value}"));
    }
    command.arg("build").args(ids).args(["--progress", "plain"]);
    if !how.deps {
        command.args(["--deps", "none"]);
    }
    if how.downstream {
        command.arg("--downstream");
    }
    if how.yes {
        command.arg("--yes");
    }
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .process_group(0);
    let mut child = command.spawn()?;
    let what = format!("build {}", ids.join(" "));
    let ended = ended.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        if let Ok(status) = status {
            let _ = ended.send(Ended {
                what,
                status,
                stderr,
            });
        }
    });
    Ok(())
}

/// Asks for `build` to be cancelled, through the database: the jobctl that runs it (on
/// any machine) cancels that build alone at its next tick, and what depends on it does not
/// run.
async fn cancel(store: &AnyStore, id: BuildId) -> String {
    let build = match store.build(id).await {
        Ok(Some(build)) => build,
        Ok(None) => return format!("build #{id} is gone"),
        Err(err) => return format!("cannot read build #{id}: {}", chain(&err)),
    };
    // Queued for workers: cancelled at once, and what waits on it with it.
    match store
        .cancel_queued(id, "cancelled on request", chrono::Utc::now())
        .await
    {
        Ok(true) => return format!("cancelled #{id} of {}: it was queued", build.job_id),
        Ok(false) => {}
        Err(err) => return format!("cannot cancel build #{id}: {}", chain(&err)),
    }
    match store.request_cancel(id, chrono::Utc::now()).await {
        Ok(true) => {}
        Ok(false) => return format!("build #{id} has already ended"),
        Err(err) => return format!("cannot ask to cancel build #{id}: {}", chain(&err)),
    }
    let me = Runner::this_process();
    match (build.host.as_deref(), build.pid) {
        (Some(host), Some(pid))
            if host == me.host && !crate::host::alive_since(pid, build.created_at) =>
        {
            format!(
                "cancel asked for #{id}, but its jobctl (pid {pid}) is gone; the next build closes it"
            )
        }
        (Some(host), Some(pid)) => {
            format!(
                "cancelling #{id} of {}: asked jobctl (pid {pid} on {host})",
                build.job_id
            )
        }
        _ => format!("cancelling #{id} of {}", build.job_id),
    }
}
