use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::{Context, job_indices, write_out};
use crate::error::CliError;
use crate::exec::dispatcher::{self, Options};
use crate::exec::plan::{Deps, plan};
use crate::exec::process::OutputLimits;
use crate::graph::JobGraph;
use crate::store::status::job_statuses;
use crate::store::{OpenMode, Store};
use crate::ui::live::{Live, terminal_size};
use crate::ui::plain::Plain;

/// `--deps`: [`Deps`] as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DepsArg {
    /// None: only the jobs asked for.
    None,
    /// Those with no successful build.
    Missing,
    /// Those with no successful build, and those that are outdated (the default).
    Outdated,
    /// All of them, whatever their status.
    All,
}

impl From<DepsArg> for Deps {
    fn from(arg: DepsArg) -> Deps {
        match arg {
            DepsArg::None => Deps::None,
            DepsArg::Missing => Deps::Missing,
            DepsArg::Outdated => Deps::Outdated,
            DepsArg::All => Deps::All,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The jobs to build
    jobs: Vec<String>,
    /// Build every job
    #[arg(long, conflicts_with = "jobs")]
    all: bool,
    /// Which dependencies are built first
    #[arg(long, value_enum, default_value_t = DepsArg::Outdated)]
    deps: DepsArg,
    /// Jobs at once (default: the number of cores)
    #[arg(short = 'j', long = "jobs-at-once", value_name = "N", value_parser = super::parse_slots)]
    parallel: Option<usize>,
    /// Build the jobs asked for even when they are up to date
    #[arg(long)]
    force: bool,
    /// Print what would be built and why; build nothing
    #[arg(long)]
    plan: bool,
    /// Then build every job downstream of those asked for that this build makes
    /// outdated (or that is outdated already)
    #[arg(long)]
    downstream: bool,
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
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(..=crate::limits::MAX_DURATION.as_secs()))]
    grace: u64,
    /// Leave the builds to workers (`jobctl worker`): queue them, print their numbers and
    /// return
    #[arg(long)]
    queue: bool,
    /// With --queue: follow the queued builds until they end, and exit as `build` would
    #[arg(long, requires = "queue")]
    wait: bool,
    /// With --queue: queue a new build even when one of the same job and arguments is
    /// still queued (by default that one is returned)
    #[arg(long, requires = "queue")]
    no_dedup: bool,
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
    let graph = config.graph();
    let targets = if args.all {
        (0..config.jobs.len()).collect()
    } else if args.jobs.is_empty() {
        return Err(CliError::NothingToBuild);
    } else {
        job_indices(config, &args.jobs)?
    };
    let store = ctx.store(config, OpenMode::Use).await?;
    if !args.plan {
        // Builds of lost runners anywhere (an expired lease), and of runners on this host
        // that are provably gone: removed if they never started, retried by the queue,
        // or failed.
        let rescued = crate::exec::recover::rescue(&store).await?;
        for r in &rescued {
            let then = match r.retried_as {
                Some(next) => format!("; queued again as build {next}"),
                None => String::new(),
            };
            write_out(
                out,
                &format!(
                    "closed build {} of {}: {}{then}\n",
                    r.id, r.job_id, r.reason
                ),
            )?;
        }
    }
    let rows = store.job_builds().await?;
    let statuses = job_statuses(config, &graph, &rows);
    let steps = plan(
        config,
        &graph,
        &statuses,
        &targets,
        args.deps.into(),
        args.force,
        args.downstream,
    );
    // Without --yes a protected job waits, and so does what needs it; the rest builds.
    let waits = match args.yes {
        true => HashMap::new(),
        false => waiting_for_confirmation(config, &graph, &steps),
    };
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
            let wait = match waits.get(&step.job) {
                Some(None) => "  needs --yes: it is protected".to_owned(),
                Some(Some(p)) => format!("  waits for {p}, which needs --yes"),
                None => String::new(),
            };
            text.push_str(&format!(
                "build {:width$}  ({}){wait}\n",
                step.id.as_str(),
                step.reason
            ));
        }
        return write_out(out, &text);
    }
    let protected: Vec<String> = steps
        .iter()
        .filter(|s| waits.get(&s.job) == Some(&None))
        .map(|s| s.id.to_string())
        .collect();
    let held: Vec<String> = steps
        .iter()
        .filter(|s| matches!(waits.get(&s.job), Some(Some(_))))
        .map(|s| s.id.to_string())
        .collect();
    let steps: Vec<_> = steps
        .into_iter()
        .filter(|s| !waits.contains_key(&s.job))
        .collect();
    let waiting_note = (!protected.is_empty()).then(|| {
        let mut note = format!(
            "waiting for confirmation: {} (protected: run again with --yes)\n",
            protected.join(", ")
        );
        if !held.is_empty() {
            note.push_str(&format!("held back with it: {}\n", held.join(", ")));
        }
        note
    });
    if steps.is_empty() {
        if waiting_note.is_some() {
            // Nothing else to build: the error says it all.
            return Err(CliError::Protected(protected));
        }
        return write_out(
            out,
            "nothing to build: everything asked for is up to date\n",
        );
    }
    let tree = match args.progress {
        Progress::Tree => true,
        Progress::Plain => false,
        Progress::Auto => {
            std::io::stdout().is_terminal() && std::env::var("TERM").is_ok_and(|t| t != "dumb")
        }
    };
    if args.queue {
        let made = super::queue::enqueue(config, &graph, &store, &steps, !args.no_dedup).await?;
        let labels: Vec<Vec<String>> = steps
            .iter()
            .map(|s| config.jobs[s.job].labels.clone())
            .collect();
        write_out(out, &super::queue::enqueued_text(&steps, &made))?;
        if !args.wait {
            if let Some(note) = &waiting_note {
                write_out(out, note)?;
            }
            return match protected.is_empty() {
                true => Ok(()),
                false => Err(CliError::Protected(protected)),
            };
        }
        out.flush().map_err(CliError::Output)?;
        let mut errors = std::io::stderr();
        let summary = if tree {
            let mut reporter = Live::new(&mut *out, steps.len(), terminal_size);
            let summary =
                super::queue::follow(&store, &steps, &labels, &made, &mut reporter, &mut errors)
                    .await;
            match &summary {
                Ok(summary) => reporter.summary(summary),
                Err(_) => reporter.clear(),
            }
            summary?
        } else {
            let mut reporter = Plain::new(&mut *out);
            let summary =
                super::queue::follow(&store, &steps, &labels, &made, &mut reporter, &mut errors)
                    .await?;
            reporter.summary(&summary);
            summary
        };
        return finish(out, summary, protected, waiting_note);
    }
    let options = Options {
        jobs: args.parallel.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, |n| n.get().min(crate::limits::MAX_SLOTS))
        }),
        fail_fast: args.fail_fast,
        grace: Duration::from_secs(args.grace),
        limits: OutputLimits::default(),
        functions: ctx.functions.clone(),
    };
    // What the jobs start stays below this process, to be killed when their build ends.
    crate::exec::reaper::become_subreaper();
    let store = std::sync::Arc::new(store);
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
    finish(out, summary, protected, waiting_note)
}

/// How a run ends: the note on protected jobs, and the exit that says how it went.
fn finish(
    out: &mut dyn Write,
    summary: crate::exec::event::Summary,
    protected: Vec<String>,
    waiting_note: Option<String>,
) -> Result<(), CliError> {
    if let Some(note) = &waiting_note {
        write_out(out, note)?;
    }
    if summary.ok() && protected.is_empty() {
        Ok(())
    } else if summary.ok() {
        Err(CliError::Protected(protected))
    } else {
        Err(CliError::BuildFailed {
            failed: summary.failed.len(),
            not_run: summary.not_run,
            cancelled: summary.cancelled,
        })
    }
}

/// The planned jobs that wait for a confirmation: each protected one (`None`) and each
/// that depends on one, directly or not (`Some(the protected job)`).
fn waiting_for_confirmation(
    config: &crate::config::Config,
    graph: &JobGraph,
    steps: &[crate::exec::plan::Step],
) -> HashMap<usize, Option<String>> {
    let mut waits: HashMap<usize, Option<String>> = HashMap::new();
    // Steps are in dependency order: a job's dependencies are decided before it.
    for step in steps {
        if config.jobs[step.job].protect {
            waits.insert(step.job, None);
            continue;
        }
        let cause = graph
            .dependencies(step.job)
            .into_iter()
            .find_map(|d| match waits.get(&d) {
                Some(None) => Some(config.jobs[d].id.to_string()),
                Some(Some(p)) => Some(p.clone()),
                None => None,
            });
        if let Some(protected) = cause {
            waits.insert(step.job, Some(protected));
        }
    }
    waits
}
