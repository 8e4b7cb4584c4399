use std::io::Write;

use super::{Context, job_indices, write_out};
use crate::error::CliError;
use crate::graph::{JobGraph, view};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show these jobs and what they depend on (default: every job)
    jobs: Vec<String>,
    /// Print Graphviz DOT instead of text (`jobctl graph --dot | dot -Tsvg > graph.svg`)
    #[arg(long)]
    dot: bool,
}

/// Without jobs named: every job by layer. With jobs named: a dependency tree for each
/// (or, with `--dot`, the sub-graph of those jobs and their ancestors).
pub fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let graph = JobGraph::new(config);
    let targets = job_indices(config, &args.jobs)?;
    let order = if targets.is_empty() {
        graph.topo_order()
    } else {
        graph.closure(&targets)
    };
    let text = if args.dot {
        view::dot(config, &graph, &order)
    } else if targets.is_empty() {
        view::layers(config, &graph, &order)
    } else {
        view::trees(config, &graph, &targets)
    };
    write_out(out, &config.mask(&text))
}
