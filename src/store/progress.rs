//! Progress rows read back as a tree, by JobControl's rules: a group that did not report
//! for itself shows the sum of its children; children stand in first-reported order.

use serde::Serialize;

use super::ProgressRow;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProgressNode {
    /// The group's name; empty for the top.
    pub name: String,
    pub current: i64,
    /// Unknown when the group did not say, or a child it sums did not.
    pub total: Option<i64>,
    pub status: Option<String>,
    /// Whether the numbers are the group's own report rather than its children's sum.
    pub reported: bool,
    pub children: Vec<ProgressNode>,
}

impl ProgressNode {
    fn new(name: &str) -> Self {
        ProgressNode {
            name: name.to_owned(),
            current: 0,
            total: None,
            status: None,
            reported: false,
            children: Vec::new(),
        }
    }

    /// Current over total, 0.0 to 1.0, when the total is known and not zero.
    pub fn fraction(&self) -> Option<f64> {
        self.total
            .filter(|t| *t > 0)
            .map(|t| (self.current as f64 / t as f64).clamp(0.0, 1.0))
    }

    /// Each group that did not report for itself takes the sum of its children, deepest
    /// first. Iterative (the depth is a job's), and saturating (so are the numbers).
    fn sum_children(&mut self) {
        // Every node's path of child indexes, parents before children.
        let mut order: Vec<Vec<usize>> = vec![Vec::new()];
        let mut i = 0;
        while i < order.len() {
            let path = order[i].clone();
            let node = self.at(&path);
            for k in 0..node.children.len() {
                let mut child = path.clone();
                child.push(k);
                order.push(child);
            }
            i += 1;
        }
        for path in order.iter().rev() {
            let node = self.at_mut(path);
            if node.reported || node.children.is_empty() {
                continue;
            }
            node.current = node
                .children
                .iter()
                .fold(0i64, |sum, c| sum.saturating_add(c.current));
            node.total = node
                .children
                .iter()
                .try_fold(0i64, |sum, c| c.total.map(|t| sum.saturating_add(t)));
        }
    }

    fn at(&self, path: &[usize]) -> &ProgressNode {
        path.iter().fold(self, |node, &k| &node.children[k])
    }

    fn at_mut(&mut self, path: &[usize]) -> &mut ProgressNode {
        path.iter().fold(self, |node, &k| &mut node.children[k])
    }
}

/// The tree of a build's progress rows (given in first-reported order). Each group is
/// found through an index, not by scanning its siblings: a build may report thousands.
pub fn tree(rows: &[ProgressRow]) -> ProgressNode {
    let mut root = ProgressNode::new("");
    // (the parent's path of child indexes, a name) → its index among the parent's children.
    let mut index: std::collections::HashMap<(Vec<usize>, &str), usize> =
        std::collections::HashMap::new();
    for row in rows {
        let mut at: Vec<usize> = Vec::new();
        // Deeper paths are refused when reported; one stored before that is shown at
        // the deepest level allowed.
        for name in row.path.iter().take(crate::limits::MAX_GROUP_DEPTH) {
            let key = (at.clone(), name.as_str());
            let k = match index.get(&key) {
                Some(&k) => k,
                None => {
                    let parent = root.at_mut(&at);
                    parent.children.push(ProgressNode::new(name));
                    let k = parent.children.len() - 1;
                    index.insert(key, k);
                    k
                }
            };
            at.push(k);
        }
        let node = root.at_mut(&at);
        node.current = row.current;
        node.total = row.total;
        node.status = row.status.clone();
        node.reported = true;
    }
    root.sum_children();
    root
}

/// The tree as indented lines: `name  current/total  pct%  status`.
pub fn render(root: &ProgressNode) -> String {
    let mut out = String::new();
    render_node(root, 0, &mut out);
    out
}

fn render_node(node: &ProgressNode, depth: usize, out: &mut String) {
    let name = if depth == 0 && node.name.is_empty() {
        "(build)"
    } else {
        &node.name
    };
    let mut line = format!("{}{name}  {}", "  ".repeat(depth), node.current);
    if let Some(total) = node.total {
        line.push_str(&format!("/{total}"));
    }
    if let Some(f) = node.fraction() {
        line.push_str(&format!("  {:.0}%", f * 100.0));
    }
    if let Some(status) = &node.status {
        line.push_str(&format!("  {status}"));
    }
    out.push_str(&line);
    out.push('\n');
    for child in &node.children {
        render_node(child, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &[&str], current: i64, total: Option<i64>) -> ProgressRow {
        ProgressRow {
            path: path.iter().map(|s| s.to_string()).collect(),
            current,
            total,
            status: None,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn groups_without_a_report_sum_their_children_in_first_reported_order() {
        let rows = vec![
            row(&["b", "x"], 1, Some(10)),
            row(&["a"], 5, Some(5)),
            row(&["b", "y"], 2, Some(10)),
        ];
        let t = tree(&rows);
        let names: Vec<&str> = t.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!((t.children[0].current, t.children[0].total), (3, Some(20)));
        assert_eq!((t.current, t.total), (8, Some(25)));
        assert!(!t.reported);
    }

    #[test]
    fn an_own_report_wins_and_an_unknown_total_stays_unknown() {
        let rows = vec![
            row(&[], 7, Some(9)),
            row(&["a"], 1, None),
            row(&["b"], 1, Some(2)),
        ];
        let t = tree(&rows);
        assert_eq!((t.current, t.total), (7, Some(9)));
        let rows = vec![row(&["a"], 1, None), row(&["b"], 1, Some(2))];
        assert_eq!(tree(&rows).total, None);
    }
}
