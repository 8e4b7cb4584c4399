//! The job graph: which job waits for which.
//!
//! ```text
//!   Config.jobs[i].dependencies ──► Config::graph() ──► JobGraph (petgraph, node i = job i)
//!                                     │  edges run dependency ──► dependant
//!                                     ├─ cycles()      named, in the order work flows
//!                                     ├─ topo_order()  file order where edges allow
//!                                     ├─ closure()     targets and all their ancestors
//!                                     └─ layers()      longest path from a root
//! ```
//!
//! Nodes are indices into `Config.jobs`, so the graph holds no strings and is cheap to
//! build for 100k jobs. It knows nothing of the config (the config uses it to find
//! cycles); `ui::graph` draws it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

pub struct JobGraph {
    graph: DiGraph<(), (), u32>,
}

impl JobGraph {
    /// A graph of `n` jobs with edges `(dependency, dependant)`.
    pub fn from_edges(n: usize, edges: &[(usize, usize)]) -> Self {
        let mut graph = DiGraph::with_capacity(n, edges.len());
        for _ in 0..n {
            graph.add_node(());
        }
        for &(from, to) in edges {
            graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), ());
        }
        JobGraph { graph }
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The jobs `job` waits for, in the order they were declared.
    pub fn dependencies(&self, job: usize) -> Vec<usize> {
        self.neighbors(job, Direction::Incoming)
    }

    /// The jobs that wait for `job`, in file order.
    pub fn dependants(&self, job: usize) -> Vec<usize> {
        self.neighbors(job, Direction::Outgoing)
    }

    fn neighbors(&self, job: usize, dir: Direction) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .graph
            .neighbors_directed(NodeIndex::new(job), dir)
            .map(NodeIndex::index)
            .collect();
        // petgraph lists the newest edge first.
        out.reverse();
        out.dedup();
        out
    }

    /// Every dependency cycle, one per strongly connected group of jobs: the shortest
    /// cycle through the group's first job in file order, listed the way work would flow
    /// (each job feeds the next, the last feeds the first). Sorted by that first job.
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let mut cycles = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            let self_loop = scc.len() == 1 && self.graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let start = *scc.iter().min().expect("non-empty group");
            let mut in_scc = vec![false; self.len()];
            for n in &scc {
                in_scc[n.index()] = true;
            }
            cycles.push(self.shortest_cycle(start, &in_scc));
        }
        cycles.sort_by_key(|c| c[0]);
        cycles
    }

    fn shortest_cycle(&self, start: NodeIndex, in_scc: &[bool]) -> Vec<usize> {
        let mut parent: Vec<Option<NodeIndex>> = vec![None; self.len()];
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            let mut next: Vec<NodeIndex> = self.graph.neighbors(node).collect();
            next.sort();
            for n in next {
                if !in_scc[n.index()] {
                    continue;
                }
                if n == start {
                    let mut path = vec![node.index()];
                    let mut cur = node;
                    while cur != start {
                        cur = parent[cur.index()].expect("path back to start");
                        path.push(cur.index());
                    }
                    path.reverse();
                    return path;
                }
                if parent[n.index()].is_none() {
                    parent[n.index()] = Some(node);
                    queue.push_back(n);
                }
            }
        }
        unreachable!("a strongly connected group has a cycle through each member")
    }

    /// Every job after all it depends on; jobs free to go in either order keep file order.
    /// Jobs on a cycle are left out.
    pub fn topo_order(&self) -> Vec<usize> {
        self.order_of(&vec![true; self.len()])
    }

    /// `targets` and every job they depend on, directly or not, in [`Self::topo_order`].
    pub fn closure(&self, targets: &[usize]) -> Vec<usize> {
        self.order_of(&self.reach(targets, Direction::Incoming))
    }

    /// Every job that depends on one of `targets`, directly or not (the targets
    /// themselves only where one depends on another), in [`Self::topo_order`].
    pub fn downstream(&self, targets: &[usize]) -> Vec<usize> {
        let mut starts = Vec::new();
        for &job in targets {
            starts.extend(self.dependants(job));
        }
        self.order_of(&self.reach(&starts, Direction::Outgoing))
    }

    /// `starts` and every job reached from them following edges in `dir`.
    fn reach(&self, starts: &[usize], dir: Direction) -> Vec<bool> {
        let mut keep = vec![false; self.len()];
        let mut stack: Vec<usize> = starts.to_vec();
        while let Some(job) = stack.pop() {
            if std::mem::replace(&mut keep[job], true) {
                continue;
            }
            stack.extend(
                self.graph
                    .neighbors_directed(NodeIndex::new(job), dir)
                    .map(NodeIndex::index),
            );
        }
        keep
    }

    /// Kahn's algorithm over the kept jobs, smallest index first among the ready ones.
    fn order_of(&self, keep: &[bool]) -> Vec<usize> {
        let mut waiting = vec![0usize; self.len()];
        for edge in self.graph.raw_edges() {
            let (from, to) = (edge.source().index(), edge.target().index());
            if keep[from] && keep[to] {
                waiting[to] += 1;
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> = (0..self.len())
            .filter(|&i| keep[i] && waiting[i] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::with_capacity(keep.iter().filter(|k| **k).count());
        while let Some(Reverse(job)) = ready.pop() {
            order.push(job);
            for next in self.graph.neighbors(NodeIndex::new(job)) {
                let next = next.index();
                if keep[next] {
                    waiting[next] -= 1;
                    if waiting[next] == 0 {
                        ready.push(Reverse(next));
                    }
                }
            }
        }
        order
    }

    /// The jobs of `order` grouped by depth: a job's layer is one more than the deepest
    /// of its dependencies in `order` (roots are layer 0).
    pub fn layers(&self, order: &[usize]) -> Vec<Vec<usize>> {
        let mut depth = vec![usize::MAX; self.len()];
        let mut layers: Vec<Vec<usize>> = Vec::new();
        for &job in order {
            let d = self
                .graph
                .neighbors_directed(NodeIndex::new(job), Direction::Incoming)
                .filter_map(|dep| {
                    let d = depth[dep.index()];
                    (d != usize::MAX).then_some(d + 1)
                })
                .max()
                .unwrap_or(0);
            depth[job] = d;
            if layers.len() <= d {
                layers.resize_with(d + 1, Vec::new);
            }
            layers[d].push(job);
        }
        layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_cycle_in_flow_order_from_its_first_job() {
        // 0 fetch -> 1 transform -> 2 publish -> 0 fetch, and 3 hangs off 1.
        let g = JobGraph::from_edges(4, &[(0, 1), (1, 2), (2, 0), (1, 3)]);
        assert_eq!(g.cycles(), vec![vec![0, 1, 2]]);
        let g = JobGraph::from_edges(2, &[(1, 1)]);
        assert_eq!(g.cycles(), vec![vec![1]]);
    }

    #[test]
    fn order_closure_and_layers() {
        // diamond: 0 -> 1, 0 -> 2, 1 -> 3, 2 -> 3; 4 is alone.
        let g = JobGraph::from_edges(5, &[(0, 2), (0, 1), (1, 3), (2, 3)]);
        assert_eq!(g.topo_order(), vec![0, 1, 2, 3, 4]);
        assert_eq!(g.closure(&[3]), vec![0, 1, 2, 3]);
        assert_eq!(g.closure(&[1]), vec![0, 1]);
        assert_eq!(g.downstream(&[1]), vec![3]);
        assert_eq!(g.downstream(&[0]), vec![1, 2, 3]);
        assert_eq!(g.downstream(&[0, 1]), vec![1, 2, 3]);
        assert!(g.downstream(&[4]).is_empty());
        assert_eq!(
            g.layers(&g.topo_order()),
            vec![vec![0, 4], vec![1, 2], vec![3]]
        );
        assert_eq!(g.dependants(0), vec![2, 1]);
        assert_eq!(g.dependencies(3), vec![1, 2]);
    }
}
