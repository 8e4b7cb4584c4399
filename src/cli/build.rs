use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::{Context, job_indices, write_out};
use crate::error::CliError;
use crate::exec::dispatcher::{self, Options};
use crate::exec::plan::{Deps, plan};
use crate::exec::process::OutputLimits;
use crate::exec::recover::recover_orphans;
use crate::graph::JobGraph;
use crate::store::status::job_statuses;
use crate::store::{OpenMode, Store};
use crate::ui::live::{Live, terminal_size};
use crate::ui::plain::Plain;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The jobs to build
    jobs: Vec<String>,
    /// Build every job
    #[arg(long, conflicts_with = "jobs")]
    all: bool,
    /// Which dependencies are built first
    #[arg(long, value_enum, default_value_t = Deps::Outdated)]
    deps: Deps,
    /// Jobs at once (default: the number of cores)
    #[arg(short = 'j', long = "jobs-at-once", value_name = "N")]
    parallel: Option<usize>,
    /// Build the jobs asked for even when they are up to date
    #[arg(long)]
    force: bool,
    /// Print what would be built and why; build nothing
    #[arg(long)]
    plan: bool,
    /// Confirm building protected jobs
    #[arg(long)]
    yes: bool,
    /// Start nothing more after the first failure
    #[arg(long, conflicts_with = "keep_going")]
    fail_fast: bool,
    /// Go on with everything that does not depend on a failure (the default)
    #[arg(long)]
    keep_going: bool,
    /// Seconds a job has to end after TERM (timeout, Ctrl-C) before it is killed
    #[arg(long, default_value_t = 5)]
    grace: u64,
    /// How to show the run: a live tree (on a terminal by default) or plain lines
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    progress: Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Progress {
    /// The tree when stdout is a terminal (and TERM is not `dumb`), else plain lines
    Auto,
    Tree,
    Plain,
}

pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load_runnable()?;
    let graph = JobGraph::new(config);
    let targets = if args.all {
        (0..config.jobs.len()).collect()
    } else if args.jobs.is_empty() {
        return Err(CliError::NothingToBuild);
    } else {
        job_indices(config, &args.jobs)?
    };
    let store = ctx.store(config, OpenMode::Use).await?;
    if !args.plan {
        for (build, reason) in recover_orphans(&store).await? {
            write_out(
                out,
                &format!("closed build {} of {}: {reason}\n", build.id, build.job_id),
            )?;
        }
    }
    let rows = store.job_builds().await?;
    let statuses = job_statuses(config, &graph, &rows);
    let steps = plan(config, &graph, &statuses, &targets, args.deps, args.force);
    if args.plan {
        let mut text = String::new();
        if steps.is_empty() {
            text.push_str("nothing to build: everything asked for is up to date\n");
        }
        let width = steps
            .iter()
            .map(|s| s.id.as_str().len())
            .max()
            .unwrap_or(0)
            .min(crate::limits::MAX_ID);
        for step in &steps {
            text.push_str(&format!(
                "build {:width$}  ({})\n",
                step.id.as_str(),
                step.reason
            ));
        }
        return write_out(out, &text);
    }
    let protected: Vec<String> = steps
        .iter()
        .filter(|s| config.jobs[s.job].protect)
        .map(|s| s.id.to_string())
        .collect();
    if !protected.is_empty() && !args.yes {
        return Err(CliError::Protected(protected));
    }
    if steps.is_empty() {
        return write_out(
            out,
            "nothing to build: everything asked for is up to date\n",
        );
    }
    let options = Options {
        jobs: args
            .parallel
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        fail_fast: args.fail_fast,
        grace: Duration::from_secs(args.grace),
        limits: OutputLimits::default(),
        functions: ctx.functions.clone(),
    };
    // What the jobs start stays below this process, to be killed when their build ends.
    crate::exec::reaper::become_subreaper();
    let store = std::sync::Arc::new(store);
    let tree = match args.progress {
        Progress::Tree => true,
        Progress::Plain => false,
        Progress::Auto => {
            std::io::stdout().is_terminal() && std::env::var("TERM").is_ok_and(|t| t != "dumb")
        }
    };
    let summary = if tree {
        let mut reporter = Live::new(&mut *out, steps.len(), terminal_size);
        let summary =
            dispatcher::run(config, &graph, &store, &steps, &options, &mut reporter).await;
        match &summary {
            Ok(summary) => reporter.summary(summary),
            Err(_) => reporter.clear(),
        }
        summary?
    } else {
        let mut reporter = Plain::new(&mut *out);
        let summary =
            dispatcher::run(config, &graph, &store, &steps, &options, &mut reporter).await?;
        reporter.summary(&summary);
        summary
    };
    if summary.ok() {
        Ok(())
    } else {
        Err(CliError::BuildFailed {
            failed: summary.failed.len(),
            not_run: summary.not_run,
            cancelled: summary.cancelled,
        })
    }
}
