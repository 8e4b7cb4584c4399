use std::io::Write;

use super::{Context, job_indices, write_out};
use crate::error::CliError;
use crate::graph::JobGraph;
use crate::ui::graph as view;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show these jobs and what they depend on (default: every job)
    jobs: Vec<String>,
    /// Print Graphviz DOT instead of text (`jobctl graph --dot | dot -Tsvg > graph.svg`)
    #[arg(long, conflicts_with = "json")]
    dot: bool,
    /// Print JSON: {"nodes": [{"id", "title"}], "edges": [{"from", "to"}], "layers": [[id]]}
    /// (an edge goes from a dependency to the job that needs it)
    #[arg(long)]
    json: bool,
}

/// Without jobs named: every job by layer. With jobs named: a dependency tree for each
/// (or, with `--dot`, the sub-graph of those jobs and their ancestors).
pub fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let graph = config.graph();
    let targets = job_indices(config, &args.jobs)?;
    let order = if targets.is_empty() {
        graph.topo_order()
    } else {
        graph.closure(&targets)
    };
    let text = if args.json {
        let mut text =
            serde_json::to_string_pretty(&json(config, &graph, &order)).map_err(CliError::Json)?;
        text.push('\n');
        text
    } else if args.dot {
        view::dot(config, &graph, &order)
    } else if targets.is_empty() {
        view::layers(config, &graph, &order)
    } else {
        view::trees(config, &graph, &targets)
    };
    write_out(out, &config.mask(&text))
}

/// The graph of `order`'s jobs as data: nodes, edges between them, and their layers.
fn json(config: &crate::config::Config, graph: &JobGraph, order: &[usize]) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = order
        .iter()
        .map(|&i| serde_json::json!({"id": config.jobs[i].id.as_str(), "title": config.jobs[i].title}))
        .collect();
    let edges: Vec<serde_json::Value> = order
        .iter()
        .flat_map(|&i| {
            graph.dependencies(i).into_iter().map(move |d| {
                serde_json::json!({"from": config.jobs[d].id.as_str(), "to": config.jobs[i].id.as_str()})
            })
        })
        .collect();
    let layers: Vec<Vec<&str>> = graph
        .layers(order)
        .iter()
        .map(|layer| layer.iter().map(|&i| config.jobs[i].id.as_str()).collect())
        .collect();
    serde_json::json!({"nodes": nodes, "edges": edges, "layers": layers})
}
