//! Config mistakes, and how they are shown: one message each, at the file, line and column
//! the user wrote, with the line and a caret under the spot (miette draws them).

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource};

use super::node::RenderedPos;
use super::render::{SourceFile, SourcePos};

/// A mistake found in the rendered YAML, before its place is mapped back to the template.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub message: String,
    pub pos: Option<RenderedPos>,
    /// Said under the caret.
    pub label: Option<String>,
    pub help: Option<String>,
    /// Other places that matter (the first definition of a duplicate id, say).
    pub related: Vec<(String, RenderedPos)>,
    /// The id of the job it was found in, to tell apart the expansions of one
    /// macro or loop when the same lines are wrong in each.
    pub within: Option<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>, pos: RenderedPos) -> Self {
        Problem {
            message: message.into(),
            pos: Some(pos),
            label: None,
            help: None,
            related: Vec::new(),
            within: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, label: impl Into<String>, pos: RenderedPos) -> Self {
        self.related.push((label.into(), pos));
        self
    }
}

/// A mistake at its place in the files the user wrote.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub at: Option<SourcePos>,
    pub label: Option<String>,
    pub help: Option<String>,
    pub related: Vec<(String, SourcePos)>,
}

impl Diagnostic {
    /// What makes two mistakes the same one: what is said, and where.
    fn identity(&self) -> String {
        let place = |p: &SourcePos| format!("{}:{}:{}+{}", p.file.name, p.line, p.col, p.len);
        let mut key = format!(
            "{}\u{0}{}\u{0}{:?}\u{0}{:?}",
            self.message,
            self.at.as_ref().map(place).unwrap_or_default(),
            self.label,
            self.help
        );
        for (label, pos) in &self.related {
            key.push_str(&format!("\u{0}{label}@{}", place(pos)));
        }
        key
    }

    /// `file:line:col`, or the file alone.
    pub fn location(&self) -> Option<String> {
        self.at
            .as_ref()
            .map(|p| format!("{}:{}:{}", p.file.name, p.line, p.col))
    }
}

/// Names of expansions listed in a merged mistake, at most.
const LISTED_EXPANSIONS: usize = 5;

/// One mistake for each place in the files the user wrote: lines a macro or a loop
/// expands several times are wrong in each expansion, and are said once, naming the
/// expansions (the jobs they made) it was found in.
pub fn merge_expansions(items: Vec<(Diagnostic, Option<String>)>) -> Vec<Diagnostic> {
    let mut merged: Vec<(Diagnostic, Vec<Option<String>>)> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (item, within) in items {
        let key = item.identity();
        match seen.get(&key) {
            Some(&at) if item.at.is_some() => merged[at].1.push(within),
            _ => {
                seen.insert(key, merged.len());
                merged.push((item, vec![within]));
            }
        }
    }
    merged
        .into_iter()
        .map(|(mut item, within)| {
            if within.len() > 1 {
                item.message = format!("{} ({})", item.message, expansions(&within));
            }
            item
        })
        .collect()
}

/// `in 2 expansions: jobs `a`, `b``.
fn expansions(within: &[Option<String>]) -> String {
    let names: Vec<String> = within
        .iter()
        .flatten()
        .map(|id| format!("`{id}`"))
        .collect();
    let mut text = format!("in {} expansions", within.len());
    if !names.is_empty() {
        let shown = names.len().min(LISTED_EXPANSIONS);
        let noun = if names.len() == 1 { "job" } else { "jobs" };
        text.push_str(&format!(": {noun} {}", names[..shown].join(", ")));
        if names.len() > shown {
            text.push_str(&format!(" and {} more", names.len() - shown));
        }
    }
    text
}

/// Every mistake found in one config; nothing runs while there is one.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    /// The config file as the user named it.
    pub file: String,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// The report a person reads: each mistake with its snippet, then a count.
    pub fn render(&self, color: bool) -> String {
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        let mut out = String::new();
        for item in &self.items {
            render_one(&handler, item, &self.file, &mut out);
            out.push('\n');
        }
        let n = self.items.len();
        out.push_str(&format!(
            "error: {} has {n} {}; nothing was run\n",
            self.file,
            if n == 1 { "mistake" } else { "mistakes" }
        ));
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Diagnostics {}

fn render_one(handler: &GraphicalReportHandler, item: &Diagnostic, main: &str, out: &mut String) {
    let Some(at) = &item.at else {
        let mut diag = MietteDiagnostic::new(format!("{} (in {main})", item.message));
        if let Some(help) = &item.help {
            diag = diag.with_help(help.clone());
        }
        let _ = handler.render_report(out, &diag);
        return;
    };
    let mut labels = vec![LabeledSpan::new_primary_with_span(
        item.label.clone(),
        span_of(&at.file, at.line, at.col, at.len),
    )];
    let mut help = item.help.clone().into_iter().collect::<Vec<_>>();
    for (label, pos) in &item.related {
        if Arc::ptr_eq(&pos.file, &at.file) {
            labels.push(LabeledSpan::new_with_span(
                Some(label.clone()),
                span_of(&pos.file, pos.line, pos.col, pos.len),
            ));
        } else {
            help.push(format!(
                "{label} at {}:{}:{}",
                pos.file.name, pos.line, pos.col
            ));
        }
    }
    let mut diag = MietteDiagnostic::new(item.message.clone()).with_labels(labels);
    if !help.is_empty() {
        diag = diag.with_help(help.join("\n"));
    }
    let report = miette::Report::new(diag).with_source_code(
        NamedSource::new(at.file.name.clone(), at.file.text.clone()).with_language("yaml"),
    );
    let _ = handler.render_report(out, report.as_ref());
}

/// Byte offset and length in `file` of `len` characters from (line, col).
fn span_of(file: &SourceFile, line: usize, col: usize, len: usize) -> (usize, usize) {
    let mut offset = 0;
    for (i, text) in file.text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let content = text.trim_end_matches(['\n', '\r']);
            let start = content
                .char_indices()
                .nth(col.saturating_sub(1))
                .map_or(content.len(), |(b, _)| b);
            let end = content[start..]
                .char_indices()
                .nth(len)
                .map_or(content.len(), |(b, _)| start + b);
            return (offset + start, end - start);
        }
        offset += text.len();
    }
    (file.text.len(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_count_characters_not_bytes() {
        let file = SourceFile {
            name: "x".into(),
            text: "a: 1\nü: zwei\n".into(),
        };
        assert_eq!(span_of(&file, 2, 4, 4), (5 + 4, 4));
        assert_eq!(span_of(&file, 1, 1, 1), (0, 1));
    }
}
