//! Text and Graphviz views of the job graph. Pure functions of the config and the graph.

use std::fmt::Write as _;

use crate::config::Config;
use crate::graph::JobGraph;

/// Jobs by layer: every job comes after all it depends on. Each line names the job, its
/// dependencies, and its title.
pub fn layers(config: &Config, graph: &JobGraph, order: &[usize]) -> String {
    let mut out = String::new();
    let layers = graph.layers(order);
    let width = order
        .iter()
        .map(|&i| config.jobs[i].id.as_str().len())
        .max()
        .unwrap_or(0)
        .min(crate::limits::MAX_ID);
    for (n, layer) in layers.iter().enumerate() {
        let noun = if layer.len() == 1 { "job" } else { "jobs" };
        let _ = writeln!(out, "layer {} ({} {noun})", n + 1, layer.len());
        for &i in layer {
            let job = &config.jobs[i];
            let deps: Vec<&str> = graph
                .dependencies(i)
                .into_iter()
                .map(|d| config.jobs[d].id.as_str())
                .collect();
            let mut line = format!("  {:width$}", job.id.as_str());
            if !deps.is_empty() {
                let _ = write!(line, "  <- {}", deps.join(", "));
            }
            if let Some(title) = &job.title {
                let _ = write!(line, "  # {title}");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Each target with the tree of what it depends on. A job already drawn is shown again
/// with `(*)` and not expanded twice.
pub fn trees(config: &Config, graph: &JobGraph, targets: &[usize]) -> String {
    let mut out = String::new();
    for &target in targets {
        let mut seen = vec![false; graph.len()];
        out.push_str(config.jobs[target].id.as_str());
        out.push('\n');
        seen[target] = true;
        tree_children(config, graph, target, "", &mut seen, &mut out);
    }
    out
}

fn tree_children(
    config: &Config,
    graph: &JobGraph,
    job: usize,
    prefix: &str,
    seen: &mut [bool],
    out: &mut String,
) {
    let deps = graph.dependencies(job);
    for (k, &dep) in deps.iter().enumerate() {
        let last = k + 1 == deps.len();
        let (branch, indent) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        let repeated = std::mem::replace(&mut seen[dep], true);
        let _ = writeln!(
            out,
            "{prefix}{branch}{}{}",
            config.jobs[dep].id,
            if repeated { " (*)" } else { "" }
        );
        if !repeated {
            tree_children(config, graph, dep, &format!("{prefix}{indent}"), seen, out);
        }
    }
}

/// Graphviz DOT: an edge from each dependency to the job that waits for it.
pub fn dot(config: &Config, graph: &JobGraph, order: &[usize]) -> String {
    let mut out = String::from("digraph jobs {\n  rankdir=LR;\n  node [shape=box];\n");
    let mut keep = vec![false; graph.len()];
    for &i in order {
        keep[i] = true;
        let job = &config.jobs[i];
        let label = match &job.title {
            Some(title) => format!("{}\\n{}", dot_escape(job.id.as_str()), dot_escape(title)),
            None => dot_escape(job.id.as_str()),
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{label}\"];",
            dot_escape(job.id.as_str())
        );
    }
    for &i in order {
        for dep in graph.dependencies(i) {
            if keep[dep] {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\";",
                    dot_escape(config.jobs[dep].id.as_str()),
                    dot_escape(config.jobs[i].id.as_str())
                );
            }
        }
    }
    out.push_str("}\n");
    out
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
