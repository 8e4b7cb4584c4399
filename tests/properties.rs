//! Property tests: the planner on random graphs, and the loader on arbitrary input.

use std::collections::HashSet;

use jobctl::graph::JobGraph;
use proptest::prelude::*;

/// A random DAG: edges only from a lower to a higher index, so no cycle.
fn dag() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    (2usize..60).prop_flat_map(|n| {
        let edges = prop::collection::vec((0..n, 0..n), 0..n * 3).prop_map(|pairs| {
            pairs
                .into_iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| (a.min(b), a.max(b)))
                .collect::<Vec<_>>()
        });
        (Just(n), edges)
    })
}

/// A node permutation, so that edges of the DAG do not all point "forward" in file order.
fn shuffled_dag() -> impl Strategy<Value = (usize, Vec<(usize, usize)>)> {
    dag()
        .prop_flat_map(|(n, edges)| {
            (
                Just(n),
                Just(edges),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            )
        })
        .prop_map(|(n, edges, perm)| {
            (
                n,
                edges.into_iter().map(|(a, b)| (perm[a], perm[b])).collect(),
            )
        })
}

fn assert_valid_cycle(cycle: &[usize], edges: &HashSet<(usize, usize)>) {
    assert!(!cycle.is_empty());
    for k in 0..cycle.len() {
        let from = cycle[k];
        let to = cycle[(k + 1) % cycle.len()];
        assert!(
            edges.contains(&(from, to)),
            "{from} -> {to} is not an edge of {cycle:?}"
        );
    }
    let distinct: HashSet<_> = cycle.iter().collect();
    assert_eq!(
        distinct.len(),
        cycle.len(),
        "a job appears twice in {cycle:?}"
    );
}

proptest! {
    #[test]
    fn order_respects_every_edge((n, edges) in shuffled_dag()) {
        let graph = JobGraph::from_edges(n, &edges);
        prop_assert!(graph.cycles().is_empty());
        let order = graph.topo_order();
        prop_assert_eq!(order.len(), n);
        let mut at = vec![usize::MAX; n];
        for (pos, &job) in order.iter().enumerate() {
            at[job] = pos;
        }
        for &(dep, job) in &edges {
            prop_assert!(at[dep] < at[job], "{} must come before {}", dep, job);
        }
        // The closure of any job holds exactly its ancestors, also in a valid order.
        let target = n - 1;
        let closure = graph.closure(&[target]);
        prop_assert!(closure.contains(&target));
        for &(dep, job) in &edges {
            if closure.contains(&job) {
                prop_assert!(closure.contains(&dep));
            }
        }
    }

    #[test]
    fn every_planted_cycle_is_found_and_named(
        (n, edges) in shuffled_dag(),
        plants in prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 1..6), 1..4),
    ) {
        let mut all: Vec<(usize, usize)> = edges.clone();
        let mut planted: Vec<Vec<usize>> = Vec::new();
        for plant in plants {
            let mut members: Vec<usize> = plant.iter().map(|i| i.index(n)).collect();
            members.dedup();
            let mut seen = HashSet::new();
            members.retain(|m| seen.insert(*m));
            for k in 0..members.len() {
                all.push((members[k], members[(k + 1) % members.len()]));
            }
            planted.push(members);
        }
        let graph = JobGraph::from_edges(n, &all);
        let edge_set: HashSet<(usize, usize)> = all.iter().copied().collect();
        let cycles = graph.cycles();
        prop_assert!(!cycles.is_empty());
        for cycle in &cycles {
            assert_valid_cycle(cycle, &edge_set);
        }
        // Each planted cycle lies inside one strongly connected group, and each group is
        // named by exactly one cycle through its first member: every planted cycle shares
        // a job with a named one, and is not left out of the order.
        let order: HashSet<usize> = graph.topo_order().into_iter().collect();
        for members in &planted {
            for m in members {
                prop_assert!(!order.contains(m), "{} is on a cycle but was ordered", m);
            }
            let reachable_named = cycles.iter().any(|c| {
                c.iter().any(|j| members.contains(j))
                    || members.iter().any(|m| reaches(&all, *m, c[0]) && reaches(&all, c[0], *m))
            });
            prop_assert!(reachable_named, "planted {:?} not named in {:?}", members, cycles);
        }
    }

    /// Arbitrary bytes as a config: an error or a config, never a panic.
    #[test]
    fn loader_never_panics_on_arbitrary_text(text in ".{0,400}") {
        load_text(&text);
    }

    /// Text built from the pieces configs are made of reaches deeper into each stage.
    #[test]
    fn loader_never_panics_on_config_shaped_text(parts in prop::collection::vec(prop::sample::select(PIECES), 0..40)) {
        load_text(&parts.concat());
    }
}

const PIECES: &[&str] = &[
    "jobs:\n",
    "  - id: a\n",
    "  - id: b\n",
    "    run: x\n",
    "    dependencies: [a]\n",
    "    dependencies: [b]\n",
    "    args: [!retval a]\n",
    "    kwargs: {k: !secret s}\n",
    "secrets: {s: v}\n",
    "{% for i in range(3) %}",
    "{% endfor %}",
    "{{ i }}",
    "{{ x }}",
    "{% macro m(n) %}",
    "{% endmacro %}",
    "{{ m(1) }}",
    "{%- if true -%}",
    "{% endif %}",
    "\n",
    "  ",
    "- ",
    ": ",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "!retval ",
    "!tag ",
    "timeout: 1h\n",
    "schedule: '* * * * *'\n",
    "#",
    "{#",
    "#}",
    "\u{2003}",
    "\u{2000}",
    "é",
    "\t",
    "&a ",
    "*a ",
];

fn reaches(edges: &[(usize, usize)], from: usize, to: usize) -> bool {
    let mut stack = vec![from];
    let mut seen = HashSet::new();
    while let Some(n) = stack.pop() {
        if n == to {
            return true;
        }
        if seen.insert(n) {
            stack.extend(edges.iter().filter(|(a, _)| *a == n).map(|(_, b)| *b));
        }
    }
    false
}

fn load_text(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.yaml.j2");
    std::fs::write(&path, text).unwrap();
    match jobctl::config::load(&path, &[]) {
        Ok(config) => {
            // A loaded config is acyclic and every dependency exists.
            let graph = config.graph();
            assert!(graph.cycles().is_empty());
            assert_eq!(graph.topo_order().len(), config.jobs.len());
        }
        Err(err) => {
            // Every mistake renders, and says where it is when it can.
            let report = match &err {
                jobctl::config::LoadError::Invalid(d) => d.render(false),
                other => other.to_string(),
            };
            assert!(!report.is_empty());
        }
    }
}
