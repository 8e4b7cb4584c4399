//! The parse stage: rendered YAML text to a tree of [`Node`]s that keep their tag and their
//! place in the rendered text.
//!
//! The config is not deserialized straight into typed structs: serde stops at the first
//! mistake and forgets where values came from. A generic tree with positions lets the
//! resolve stage report every independent mistake at once, each at its own line and column.

use std::collections::{HashMap, HashSet};

use compact_str::CompactString;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

/// A place in the rendered YAML text: 1-based line and column (in characters), and the
/// length of the marked region in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderedPos {
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

impl RenderedPos {
    pub fn new(line: usize, col: usize, len: usize) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        RenderedPos {
            line: clamp(line),
            col: clamp(col),
            len: clamp(len),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    /// The tag as written (`!retval`), if any.
    pub tag: Option<CompactString>,
    pub pos: RenderedPos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Short strings (most keys and ids) live inline: no allocation per scalar.
    Str(CompactString),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl NodeKind {
    /// What a person calls this kind of value, for "expected a string, found a list".
    pub fn describe(&self) -> &'static str {
        match self {
            NodeKind::Null => "nothing (null)",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

/// A YAML mistake: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub message: String,
    pub pos: Option<RenderedPos>,
}

/// Parses rendered YAML into a node tree. YAML 1.2 core schema: `yes`, `no`, `on`, `off`
/// and `y` stay strings. Duplicate keys are an error.
///
/// The tree is built straight from the events of the parser serde-saphyr is built on (it
/// re-exports it): going through serde's data model with `Spanned<Tagged<_>>` took three
/// times as long on a 100k-job config, and tags and spans are what this stage is for.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    let mut documents = 0;
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|err| {
            let mark = err.marker();
            YamlError {
                message: err.info(),
                pos: Some(RenderedPos::new(mark.line().max(1), mark.col() + 1, 1)),
            }
        })?;
        let mut pos = RenderedPos::new(
            span.start.line(),
            span.start.col() + 1,
            span.end.index().saturating_sub(span.start.index()).max(1),
        );
        // A tag jobctl does not know is all that will be said of its value: point at
        // the tag as written, not at the value after it.
        if let Some(tag) = span.tag_span()
            && tag
                .slice(text)
                .is_some_and(|t| !matches!(t, "!retval" | "!secret"))
        {
            pos = RenderedPos::new(
                tag.start.line(),
                tag.start.col() + 1,
                tag.end.index().saturating_sub(tag.start.index()).max(1),
            );
        }
        match event {
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        message: "a config is one YAML document; remove the second `---`".into(),
                        pos: Some(pos),
                    });
                }
            }
            Event::Alias(id) => {
                let (node, size) = builder.anchors.get(&id).cloned().ok_or_else(|| YamlError {
                    message: "alias references unknown anchor".into(),
                    pos: Some(pos),
                })?;
                // Each use of an alias copies what it names: bounded, or a few hundred
                // bytes of nested aliases expand to billions of nodes ("billion laughs").
                builder.aliased = builder.aliased.saturating_add(size);
                if builder.aliased > MAX_ALIASED_NODES {
                    return Err(YamlError {
                        message: format!(
                            "YAML aliases expand to more than {MAX_ALIASED_NODES} values; \
                             write the values out, or repeat them with a Jinja macro or loop"
                        ),
                        pos: Some(pos),
                    });
                }
                builder.push(node, size)?;
            }
            Event::UnresolvedAlias(name) => {
                return Err(YamlError {
                    message: format!("alias `*{name}` references an unknown anchor"),
                    pos: Some(pos),
                });
            }
            Event::Scalar(value, style, anchor, tag) => {
                let tag = tag.map(|t| CompactString::from(t.original()));
                let kind = scalar(&value, style, tag.as_deref()).map_err(|message| YamlError {
                    message,
                    pos: Some(pos),
                })?;
                let node = Node { kind, tag, pos };
                builder.anchor(anchor, &node, 1);
                builder.push(node, 1)?;
            }
            Event::SequenceStart(_, anchor, tag) => {
                builder.open(
                    NodeKind::Seq(Vec::new()),
                    anchor,
                    tag.map(|t| CompactString::from(t.original())),
                    pos,
                )?;
            }
            Event::MappingStart(_, anchor, tag) => {
                builder.open(
                    NodeKind::Map(Vec::new()),
                    anchor,
                    tag.map(|t| CompactString::from(t.original())),
                    pos,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let mut frame = builder
                    .stack
                    .pop()
                    .expect("the parser balances collections");
                // Growth leaves up to half of a collection unused; a 100k-job tree is
                // held whole, so give it back.
                match &mut frame.node.kind {
                    NodeKind::Seq(items) => items.shrink_to_fit(),
                    NodeKind::Map(entries) => entries.shrink_to_fit(),
                    _ => {}
                }
                builder.anchor(frame.anchor, &frame.node, frame.size);
                builder.push(frame.node, frame.size)?;
            }
            _ => {}
        }
    }
    Ok(builder.root.unwrap_or(Node {
        kind: NodeKind::Null,
        tag: None,
        pos: RenderedPos {
            line: 1,
            col: 1,
            len: 0,
        },
    }))
}

struct Frame {
    node: Node,
    anchor: usize,
    /// In a mapping: the key waiting for its value.
    key: Option<Node>,
    /// In a large mapping: the keys so far (a small one is searched instead).
    keys: Option<HashSet<String>>,
    /// Values in it so far, itself included.
    size: usize,
}

/// Values that aliases may add to a config in all.
pub const MAX_ALIASED_NODES: usize = 1_000_000;

/// Collections inside collections, at most: the tree is walked (and dropped) by
/// recursion, which a deeper config would overflow.
pub const MAX_NESTING: usize = 128;

/// Mappings up to this size find duplicate keys by a scan: a set per job would cost more
/// memory than the tree itself.
const SCAN_KEYS: usize = 32;

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Each anchored value and how many values it holds.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    /// Values copied in by aliases so far.
    aliased: usize,
}

impl Builder {
    fn open(
        &mut self,
        kind: NodeKind,
        anchor: usize,
        tag: Option<CompactString>,
        pos: RenderedPos,
    ) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_NESTING {
            return Err(YamlError {
                message: format!("values nested more than {MAX_NESTING} deep"),
                pos: Some(pos),
            });
        }
        self.stack.push(Frame {
            node: Node { kind, tag, pos },
            anchor,
            key: None,
            keys: None,
            size: 1,
        });
        Ok(())
    }

    fn anchor(&mut self, anchor: usize, node: &Node, size: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
    }

    /// Adds `node`, holding `size` values, to the collection being built.
    fn push(&mut self, node: Node, size: usize) -> Result<(), YamlError> {
        let Some(frame) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        frame.size = frame.size.saturating_add(size);
        match &mut frame.node.kind {
            NodeKind::Seq(items) => items.push(node),
            NodeKind::Map(entries) => match frame.key.take() {
                None => {
                    if let NodeKind::Str(key) = &node.kind
                        && !is_new_key(entries, &mut frame.keys, key)
                    {
                        return Err(YamlError {
                            message: format!("duplicate key `{key}` in one mapping"),
                            pos: Some(node.pos),
                        });
                    }
                    frame.key = Some(node);
                }
                Some(key) => entries.push((key, node)),
            },
            _ => unreachable!("only collections are on the stack"),
        }
        Ok(())
    }
}

fn is_new_key(entries: &[(Node, Node)], keys: &mut Option<HashSet<String>>, key: &str) -> bool {
    if entries.len() < SCAN_KEYS {
        return !entries
            .iter()
            .any(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == key));
    }
    let keys = keys.get_or_insert_with(|| {
        entries
            .iter()
            .filter_map(|(k, _)| match &k.kind {
                NodeKind::Str(s) => Some(s.to_string()),
                _ => None,
            })
            .collect()
    });
    keys.insert(key.to_owned())
}

/// A scalar's value under the YAML 1.2 core schema. A scalar with an application tag
/// (`!retval x`) is its text.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<NodeKind, String> {
    let core = tag.map(|t| {
        t.strip_prefix("!!").or_else(|| {
            t.strip_prefix("!<tag:yaml.org,2002:")
                .and_then(|s| s.strip_suffix('>'))
        })
    });
    match core {
        None if style == ScalarStyle::Plain => Ok(plain_scalar(text)),
        None | Some(None) | Some(Some("str")) => Ok(NodeKind::Str(CompactString::from(text))),
        Some(Some(kind @ ("int" | "float" | "bool" | "null"))) => {
            match (kind, plain_scalar(text)) {
                ("int", NodeKind::Int(i)) => Ok(NodeKind::Int(i)),
                ("float", NodeKind::Int(i)) => Ok(NodeKind::Float(i as f64)),
                ("float", NodeKind::Float(f)) => Ok(NodeKind::Float(f)),
                ("bool", NodeKind::Bool(b)) => Ok(NodeKind::Bool(b)),
                ("null", NodeKind::Null) => Ok(NodeKind::Null),
                _ => Err(format!("`{text}` is not a valid `!!{kind}`")),
            }
        }
        Some(Some(other)) => Err(format!("the YAML tag `!!{other}` is not supported here")),
    }
}

fn plain_scalar(text: &str) -> NodeKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeKind::Null,
        "true" | "True" | "TRUE" => return NodeKind::Bool(true),
        "false" | "False" | "FALSE" => return NodeKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return NodeKind::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return NodeKind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return NodeKind::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return NodeKind::Str(CompactString::from(text));
    }
    let radix = |prefix: &str, radix: u32| {
        text.strip_prefix(prefix)
            .and_then(|digits| i64::from_str_radix(digits, radix).ok())
    };
    if let Some(i) = radix("0o", 8).or_else(|| radix("0x", 16)) {
        return NodeKind::Int(i);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return NodeKind::Int(i);
        }
    } else if is_core_float(unsigned)
        && let Ok(f) = text.parse::<f64>()
    {
        return NodeKind::Float(f);
    }
    NodeKind::Str(CompactString::from(text))
}

/// `[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?` or `\.[0-9]+([eE][-+]?[0-9]+)?`, sign removed,
/// with a fraction or an exponent (plain digits are integers).
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (mantissa, None),
    };
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = all_digits(int)
        && frac.is_none_or(all_digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    mantissa_ok && exponent_ok && (frac.is_some() || exponent.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_schema_scalars() {
        let node = parse("[1, -2, 0x1f, 0o17, 2.5, 1e3, .5, .inf, ~, null, true, False, yes, 1.2.3, '1', !!str 2, !!float 3]").unwrap();
        let NodeKind::Seq(items) = node.kind else {
            panic!()
        };
        let kinds: Vec<NodeKind> = items.into_iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            vec![
                NodeKind::Int(1),
                NodeKind::Int(-2),
                NodeKind::Int(31),
                NodeKind::Int(15),
                NodeKind::Float(2.5),
                NodeKind::Float(1000.0),
                NodeKind::Float(0.5),
                NodeKind::Float(f64::INFINITY),
                NodeKind::Null,
                NodeKind::Null,
                NodeKind::Bool(true),
                NodeKind::Bool(false),
                NodeKind::Str("yes".into()),
                NodeKind::Str("1.2.3".into()),
                NodeKind::Str("1".into()),
                NodeKind::Str("2".into()),
                NodeKind::Float(3.0),
            ]
        );
    }

    #[test]
    fn anchors_and_aliases() {
        let node = parse("a: &x {k: 1}\nb: *x\n").unwrap();
        let NodeKind::Map(entries) = node.kind else {
            panic!()
        };
        assert_eq!(entries[0].1.kind, entries[1].1.kind);
        assert!(parse("a: *nope\n").is_err());
    }

    #[test]
    fn keeps_tags_and_positions() {
        let node = parse("a: !retval crawl\nb: [1, y]\n").unwrap();
        let NodeKind::Map(entries) = node.kind else {
            panic!("expected a map")
        };
        let (_, a) = &entries[0];
        assert_eq!(a.kind, NodeKind::Str("crawl".into()));
        assert_eq!(a.tag.as_deref(), Some("!retval"));
        assert_eq!((a.pos.line, a.pos.col), (1, 12));
        let (_, b) = &entries[1];
        let NodeKind::Seq(items) = &b.kind else {
            panic!("expected a list")
        };
        assert_eq!(
            items[1].kind,
            NodeKind::Str("y".into()),
            "YAML 1.1 booleans stay strings"
        );
    }

    #[test]
    fn reports_duplicate_keys() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.message, "duplicate key `a` in one mapping");
        assert_eq!(err.pos.map(|p| p.line), Some(2));
    }
}
