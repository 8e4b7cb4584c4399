//! The command line: one file per subcommand, each a function from parsed arguments to
//! output or a [`CliError`].

mod check;
mod config;
mod graph;
mod jobs;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG};
use crate::error::{CliError, exit};

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
    /// List the jobs: id, title, dependencies
    Jobs(jobs::Args),
    /// Print the rendered YAML config, secrets masked
    Config(config::Args),
    /// Show the dependency graph: layers, a tree per named job, or Graphviz DOT
    Graph(graph::Args),
}

/// Runs the command line and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match run(cli, &mut stdout).and_then(|()| stdout.flush().map_err(CliError::Output)) {
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

fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    let ctx = Context {
        config: cli.config,
        vars: parse_vars(&cli.vars)?,
    };
    match cli.command {
        Command::Check(args) => check::run(&ctx, args, out),
        Command::Jobs(args) => jobs::run(&ctx, args, out),
        Command::Config(args) => config::run(&ctx, args, out),
        Command::Graph(args) => graph::run(&ctx, args, out),
    }
}

/// What every command gets from the global options.
struct Context {
    config: PathBuf,
    vars: Vec<(String, String)>,
}

impl Context {
    /// The config, kept until the process exits: freeing a 100k-job config piece by
    /// piece costs a fifth of `jobctl check`'s time, and the process is about to end.
    fn load(&self) -> Result<&'static Config, CliError> {
        let config = crate::config::load(&self.config, &self.vars)?;
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

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    out.write_all(text.as_bytes()).map_err(CliError::Output)
}
