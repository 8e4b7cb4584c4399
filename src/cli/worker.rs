//! `jobctl worker` (claim and run queued builds) and `jobctl workers` (list them).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Context, fmt_elapsed, fmt_time, write_out};
use crate::config::model::parse_duration;
use crate::error::CliError;
use crate::exec::dispatcher::Options;
use crate::exec::process::OutputLimits;
use crate::exec::worker::{Settings, work};
use crate::limits::{MAX_DURATION, MAX_WORKER_NAME};
use crate::store::OpenMode;
use crate::store::queue::{Claimer, Queue};
use crate::ui::plain::Plain;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Builds at once (default: the number of cores)
    #[arg(short = 'j', long = "jobs-at-once", value_name = "N", value_parser = super::parse_slots)]
    parallel: Option<usize>,
    /// The name `jobctl workers` shows (default: HOST-PID)
    #[arg(long, value_parser = parse_name)]
    name: Option<String>,
    /// What this worker has, comma-separated: it runs only jobs whose `labels` are all
    /// among these
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// How long a claim holds without renewal; a worker that cannot renew kills its
    /// builds before then, and others take them after
    #[arg(long, default_value = "30s", value_parser = parse_lease)]
    lease: Duration,
    /// After SIGTERM, how long running builds may finish before they are handed back
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Seconds a build has to end after TERM before it is killed
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(..=MAX_DURATION.as_secs()))]
    grace: u64,
    /// The database, instead of the config's `storage:`
    #[arg(long, value_name = "URL", env = "JOBCTL_STORAGE")]
    storage: Option<String>,
    /// Where jobs' relative `workdir`s are taken from (default: the config's folder)
    #[arg(long, value_name = "DIR", value_parser = parse_dir)]
    dir: Option<PathBuf>,
    /// Exit once nothing this worker could run is queued and nothing runs here
    #[arg(long)]
    until_idle: bool,
}

/// The shortest lease: renewals come every third of it and a call to the database is
/// given up after a sixth, so shorter would lose builds to a busy database.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// The longest lease: how long a dead machine's builds may wait to be taken over.
const MAX_LEASE: Duration = Duration::from_secs(86_400);

/// `--lease`: a duration from [`MIN_LEASE`] to [`MAX_LEASE`].
fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if !(MIN_LEASE..=MAX_LEASE).contains(&lease) {
        return Err(format!("a lease is from 1s to 1d, not `{}`", text.trim()));
    }
    Ok(lease)
}

/// `--dir`: a folder that is there. A worker given a mistyped one would fail every
/// build it claims, builds that other workers would have run.
fn parse_dir(text: &str) -> Result<PathBuf, String> {
    match std::fs::metadata(text) {
        Ok(meta) if meta.is_dir() => Ok(PathBuf::from(text)),
        Ok(_) => Err(format!("`{text}` is not a folder")),
        Err(err) => Err(format!("cannot use `{text}` as the jobs' folder: {err}")),
    }
}

/// `--name`: shown in `jobctl workers` and recorded with every build the worker runs.
fn parse_name(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("a worker's name cannot be empty".into());
    }
    if text.chars().count() > MAX_WORKER_NAME {
        return Err(format!(
            "a worker's name is at most {MAX_WORKER_NAME} characters, not {}",
            text.chars().count()
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(
            "a worker's name cannot hold control characters (tabs, newlines, escapes)".into(),
        );
    }
    Ok(text.to_owned())
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Also list workers that stopped
    #[arg(long)]
    all: bool,
    /// The database, instead of the config's `storage:`
    #[arg(long, value_name = "URL", env = "JOBCTL_STORAGE")]
    storage: Option<String>,
}

/// The database and the secrets a worker (or a listing) uses: `--storage`, else the
/// config's; the config's secrets when there is a config.
/// The config is owned, not kept for the process: a worker lives for days and needs
/// only these pieces of it (it runs builds from their snapshots).
fn setting(
    ctx: &Context,
    storage: Option<String>,
) -> Result<(String, Option<crate::config::Config>), CliError> {
    let config = match (&storage, ctx.config.exists()) {
        // A worker with its own URL and no config file runs without secrets.
        (Some(_), false) => None,
        _ => Some(ctx.load_owned()?),
    };
    let url = match storage {
        Some(url) => url,
        None => config
            .as_ref()
            .map(|c| c.storage.clone())
            .unwrap_or_default(),
    };
    Ok((url, config))
}

pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let (url, config) = setting(ctx, args.storage)?;
    let base = config
        .as_ref()
        .map_or_else(|| PathBuf::from("."), |c| c.dir().to_path_buf());
    let store = crate::store::open(&url, &base, OpenMode::Use).await?;
    let mut labels: Vec<String> = Vec::new();
    for label in args
        .labels
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
    {
        if !crate::config::model::is_label(label) {
            return Err(CliError::BadLabel(label.to_owned()));
        }
        if !labels.iter().any(|l| l == label) {
            labels.push(label.to_owned());
        }
    }
    if labels.len() > crate::config::model::MAX_WORKER_LABELS {
        return Err(CliError::TooManyLabels(labels.len()));
    }
    let mut claimer = Claimer::this_process(None, labels);
    claimer.name = Some(
        args.name
            .unwrap_or_else(|| format!("{}-{}", claimer.host, claimer.pid)),
    );
    let secrets = config
        .as_ref()
        .map(|c| c.secrets.clone())
        .unwrap_or_default();
    let slots = args.parallel.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(crate::limits::MAX_SLOTS))
    });
    let settings = Settings {
        slots,
        lease: args.lease,
        drain_timeout: args.drain_timeout,
        poll: if store.postgres_pool().is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(50)
        },
        until_idle: args.until_idle,
        options: Options {
            jobs: slots,
            fail_fast: false,
            grace: Duration::from_secs(args.grace),
            limits: OutputLimits::default(),
            functions: ctx.functions.clone(),
        },
        masker: crate::store::masker(secrets.values(), &url),
        secrets,
        dir: args.dir.unwrap_or(base),
    };
    crate::exec::reaper::become_subreaper();
    // Its jobs end with it, however it ends: without the warden a worker killed with
    // SIGKILL left them running beside their retry on another machine. One that cannot
    // start is said, and the worker goes on as before.
    if let Err(err) = crate::exec::warden::start() {
        write_out(
            out,
            &format!("warning: no warden for this worker's jobs: {err}\n"),
        )?;
    }
    write_out(
        out,
        &format!(
            "worker {} ({}) claims from {} with {slots} slot{}{}\n",
            claimer.name.as_deref().unwrap_or("?"),
            claimer.id,
            crate::store::redact_url(&url),
            if slots == 1 { "" } else { "s" },
            if claimer.labels.is_empty() {
                String::new()
            } else {
                format!(", labels {}", claimer.labels.join(","))
            }
        ),
    )?;
    out.flush().map_err(CliError::Output)?;
    let mut reporter = Plain::new(&mut *out);
    let worked = work(Arc::new(store), claimer, settings, &mut reporter).await?;
    drop(reporter);
    write_out(
        out,
        &format!(
            "worker stopped: {} succeeded, {} failed, {} handed back, {} lost\n",
            worked.succeeded, worked.failed, worked.handed_back, worked.lost
        ),
    )
}

pub async fn list(ctx: &Context, args: ListArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let (url, config) = setting(ctx, args.storage)?;
    let base = config
        .as_ref()
        .map_or_else(|| PathBuf::from("."), |c| c.dir().to_path_buf());
    let store = crate::store::open(&url, &base, OpenMode::Use).await?;
    let now = chrono::Utc::now();
    let workers: Vec<_> = store
        .workers()
        .await?
        .into_iter()
        .filter(|w| args.all || w.state(now) != "stopped")
        .collect();
    if args.json {
        let rows: Vec<serde_json::Value> = workers
            .iter()
            .map(|w| {
                let mut v = serde_json::to_value(w).expect("a worker serializes");
                v["state"] = w.state(now).into();
                v
            })
            .collect();
        let text = serde_json::to_string_pretty(&rows).expect("JSON serializes");
        return write_out(out, &(text + "\n"));
    }
    if workers.is_empty() {
        return write_out(out, "no workers\n");
    }
    let mut text = String::from(
        "NAME                 HOST             STATE     RUNNING  LABELS        LAST HEARTBEAT\n",
    );
    for w in &workers {
        text.push_str(&format!(
            "{:20} {:16} {:9} {:>3}/{:<3}  {:13} {} ({} ago)\n",
            crate::limits::cut_text(&w.name, 20),
            crate::limits::cut_text(&w.host, 16),
            w.state(now),
            w.running,
            w.slots,
            if w.labels.is_empty() {
                "-".to_owned()
            } else {
                w.labels.join(",")
            },
            fmt_time(w.heartbeat_at),
            fmt_elapsed(now - w.heartbeat_at),
        ));
    }
    write_out(out, &text)
}
