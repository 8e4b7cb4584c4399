//! The command line: one file per subcommand, each a function from parsed arguments to
//! output or a [`CliError`].

mod build;
mod builds;
mod cancel;
mod check;
mod config;
mod delete;
mod graph;
mod install;
mod jobs;
mod logs;
mod prune;
mod queue;
mod report;
mod show;
mod tui;
mod worker;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG};
use crate::error::{CliError, exit};
use crate::exec::function::Registry;
use crate::store::{AnyStore, OpenMode, Store};

#[derive(Debug, Parser)]
#[command(
    name = "jobctl",
    version,
    about = "A dependency-graph build orchestrator: templated YAML jobs, run in order and in parallel"
)]
pub struct Cli {
    /// The config file (a minijinja template of YAML)
    #[arg(short, long, global = true, env = "JOBCTL_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,

    /// A template variable, NAME=VALUE (repeatable); overrides nothing but fills `{{ NAME }}`
    #[arg(long = "var", global = true, value_name = "NAME=VALUE")]
    vars: Vec<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the config and report every mistake in it (exit 0 if valid, 1 if not)
    Check(check::Args),
    /// List the jobs: id, status (and why it is outdated), title, dependencies
    Jobs(jobs::Args),
    /// Print the rendered YAML config, secrets masked
    Config(config::Args),
    /// Show the dependency graph: layers, a tree per named job, or Graphviz DOT
    Graph(graph::Args),
    /// Build jobs, after what they depend on, in parallel, recording every build
    Build(build::Args),
    /// List builds, newest first
    Builds(builds::Args),
    /// Show one build: status, times, pins, return value, error, progress, config
    Show(show::Args),
    /// Print a build's log, or follow it while the build runs
    Logs(logs::Args),
    /// Delete old log lines (by default, each level older than its retention)
    Prune(prune::Args),
    /// Run a build's `cleanup` command, then delete the build with its logs and progress
    Delete(delete::Args),
    /// Create or upgrade jobctl's tables in the configured database
    Install(install::Args),
    /// Drop jobctl's tables and everything in them (needs --yes)
    Uninstall(install::UninstallArgs),
    /// A live dashboard over the jobs and their builds (by any process), with keys to build
    /// and cancel
    Tui(tui::Args),
    /// Cancel builds: queued ones at once, running ones wherever they run
    Cancel(cancel::Args),
    /// Claim queued builds from the database and run them (on any machine that reaches it)
    Worker(worker::Args),
    /// List the workers: name, host, state, running builds, labels, last heartbeat
    Workers(worker::ListArgs),
    /// From inside a running job: report progress, a log line, the return value, or a skip
    #[command(subcommand)]
    Report(report::Args),
    /// A worker's warden (started by the worker; see exec/warden.rs)
    #[command(name = crate::exec::warden::COMMAND, hide = true)]
    Warden,
}

/// Runs the command line with the built-in functions and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    main_with(Registry::with_builtins())
}

/// Runs the command line of a program that embeds jobctl: `function:` jobs may call
/// what `functions` holds.
pub fn main_with(functions: Registry) -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match run(cli, functions, &mut stdout).and_then(|()| stdout.flush().map_err(CliError::Output)) {
        Ok(()) => ExitCode::from(exit::OK),
        // `jobctl jobs | head`: the reader has what it wanted.
        Err(CliError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(exit::OK)
        }
        Err(err) => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let _ = std::io::stderr().write_all(err.report(color).as_bytes());
            err.into_exit_code()
        }
    }
}

fn run(cli: Cli, functions: Registry, out: &mut dyn Write) -> Result<(), CliError> {
    let ctx = Context {
        config: cli.config,
        vars: parse_vars(&cli.vars)?,
        functions: std::sync::Arc::new(functions),
    };
    match cli.command {
        Command::Check(args) => check::run(&ctx, args, out),
        Command::Jobs(args) => ctx.block_on(jobs::run(&ctx, args, out)),
        Command::Config(args) => config::run(&ctx, args, out),
        Command::Graph(args) => graph::run(&ctx, args, out),
        Command::Build(args) => ctx.block_on(build::run(&ctx, args, out)),
        Command::Builds(args) => ctx.block_on(builds::run(&ctx, args, out)),
        Command::Show(args) => ctx.block_on(show::run(&ctx, args, out)),
        Command::Logs(args) => ctx.block_on(logs::run(&ctx, args, out)),
        Command::Prune(args) => ctx.block_on(prune::run(&ctx, args, out)),
        Command::Delete(args) => ctx.block_on(delete::run(&ctx, args, out)),
        Command::Install(args) => ctx.block_on(install::install(&ctx, args, out)),
        Command::Uninstall(args) => ctx.block_on(install::uninstall(&ctx, args, out)),
        Command::Tui(args) => ctx.block_on(tui::run(&ctx, args)),
        Command::Cancel(args) => ctx.block_on(cancel::run(&ctx, args, out)),
        Command::Warden => {
            crate::exec::warden::run();
            Ok(())
        }
        Command::Worker(args) => ctx.block_on(worker::run(&ctx, args, out)),
        Command::Workers(args) => ctx.block_on(worker::list(&ctx, args, out)),
        Command::Report(args) => report::run(args),
    }
}

/// What every command gets from the global options.
struct Context {
    config: PathBuf,
    vars: Vec<(String, String)>,
    functions: std::sync::Arc<Registry>,
}

impl Context {
    /// Runs a command that talks to the database.
    fn block_on<F: std::future::Future<Output = Result<(), CliError>>>(
        &self,
        future: F,
    ) -> Result<(), CliError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)?
            .block_on(future)
    }

    /// The config's store (created on first use for SQLite).
    async fn store(&self, config: &Config, mode: OpenMode) -> Result<AnyStore, CliError> {
        Ok(crate::store::open(&config.storage, config.dir(), mode).await?)
    }

    /// The config, kept until the process exits: freeing a 100k-job config piece by
    /// piece costs a fifth of `jobctl check`'s time, and the process is about to end.
    fn load(&self) -> Result<&'static Config, CliError> {
        let config = crate::config::load(&self.config, &self.vars)?;
        Ok(Box::leak(Box::new(config)))
    }

    /// The config, owned: for a process that lives on after it (`worker`).
    fn load_owned(&self) -> Result<Config, CliError> {
        Ok(crate::config::load(&self.config, &self.vars)?)
    }

    /// The config, with every `function:` it names registered: one that is not is a
    /// mistake of the same report as any other, at its line.
    fn load_runnable(&self) -> Result<&'static Config, CliError> {
        let known: Vec<String> = self.functions.names().map(str::to_owned).collect();
        let config = crate::config::load_with(&self.config, &self.vars, Some(&known))?;
        Ok(Box::leak(Box::new(config)))
    }
}

fn parse_vars(vars: &[String]) -> Result<Vec<(String, String)>, CliError> {
    vars.iter()
        .map(|v| match v.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
            _ => Err(CliError::BadVar(v.clone())),
        })
        .collect()
}

/// The build with this number, or the error that names the database it is not in.
async fn find_build(
    store: &AnyStore,
    config: &Config,
    id: crate::store::BuildId,
) -> Result<crate::store::Build, CliError> {
    use crate::store::Store;
    store.build(id).await?.ok_or_else(|| CliError::NoBuild {
        id,
        url: crate::store::redact_url(&config.storage),
    })
}

/// The index of each named job, or the error for the first unknown one.
fn job_indices(config: &Config, ids: &[String]) -> Result<Vec<usize>, CliError> {
    ids.iter()
        .map(|id| {
            config.job_index(id).ok_or_else(|| CliError::UnknownJob {
                id: id.clone(),
                config: config.path.display().to_string(),
                suggestion: crate::config::resolve::suggest(
                    id,
                    config.jobs.iter().map(|j| j.id.as_str()),
                )
                .map(str::to_owned),
            })
        })
        .collect()
}

/// A note when jobs have a `schedule:`, which nothing acts on yet; `None` otherwise.
fn schedules_note(config: &Config) -> Option<String> {
    let scheduled: Vec<&str> = config
        .jobs
        .iter()
        .filter(|j| j.schedule.is_some())
        .map(|j| j.id.as_str())
        .collect();
    (!scheduled.is_empty()).then(|| {
        format!(
            "note: `schedule:` is set on {}, but nothing runs jobs on a schedule yet: \
             `jobctl build` ignores it (`jobctl serve` will act on it)\n",
            scheduled.join(", ")
        )
    })
}

/// Checks a job named to filter history: in the config, or with builds in the store (a
/// job since removed from the config still has its history). Otherwise it is a mistake,
/// with a suggestion.
async fn known_job(store: &AnyStore, config: &Config, id: &str) -> Result<(), CliError> {
    if config.job_index(id).is_some() {
        return Ok(());
    }
    let builds = store
        .builds(&crate::store::BuildFilter {
            job: Some(id.to_owned()),
            status: None,
            limit: Some(1),
        })
        .await?;
    if !builds.is_empty() {
        return Ok(());
    }
    job_indices(config, &[id.to_owned()]).map(|_| ())
}

/// Writes a command's output. Much of it came from jobs or a config (output lines,
/// errors, titles): control characters are made visible, so that none of it can drive
/// the reader's terminal (`jobctl logs --raw` alone prints lines as stored).
fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    out.write_all(crate::limits::visible(text).as_bytes())
        .map_err(CliError::Output)
}

/// A time as listings show it: UTC, to the second.
fn fmt_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// A duration as listings show it: `850ms`, `12.3s`, `4m05s`, `2h03m`.
fn fmt_elapsed(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// `30m` (that long ago) or an RFC 3339 time.
fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, CliError> {
    if let Ok(d) = crate::config::model::parse_duration(text) {
        return chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
            .ok_or_else(|| CliError::BadTime(text.to_owned()));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| CliError::BadTime(text.to_owned()))
}

/// `-j N`: 1 to [`crate::limits::MAX_SLOTS`] jobs at once.
fn parse_slots(text: &str) -> Result<usize, String> {
    let max = crate::limits::MAX_SLOTS;
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("jobs at once are from 1 to {max}, not `{text}`"))
}

/// `jobctl show 12` or `#12`.
fn parse_build_id(text: &str) -> Result<crate::store::BuildId, String> {
    text.trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(crate::store::BuildId)
        .ok_or_else(|| format!("`{text}` is not a build number"))
}
