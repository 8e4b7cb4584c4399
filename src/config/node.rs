//! The parse stage: rendered YAML text to a tree of [`Node`]s that keep their tag and their
//! place in the rendered text.
//!
//! The config is not deserialized straight into typed structs: serde stops at the first
//! mistake and forgets where values came from. A generic tree with positions lets the
//! resolve stage report every independent mistake at once, each at its own line and column.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, MessageFormatter, Spanned, Tagged};

/// A place in the rendered YAML text: 1-based line and column (in characters), and the
/// length of the marked region in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenderedPos {
    pub line: usize,
    pub col: usize,
    pub len: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    /// The tag as written (`!retval`), if any.
    pub tag: Option<String>,
    pub pos: RenderedPos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
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
pub fn parse(text: &str) -> Result<Node, YamlError> {
    if text.trim().is_empty() {
        return Ok(Node {
            kind: NodeKind::Null,
            tag: None,
            pos: RenderedPos {
                line: 1,
                col: 1,
                len: 0,
            },
        });
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options.strict_booleans = true;
    options.duplicate_keys = DuplicateKeyPolicy::Error;
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|err| {
        let pos = err.location().and_then(|loc| {
            (loc.line() > 0).then(|| RenderedPos {
                line: loc.line() as usize,
                col: loc.column().max(1) as usize,
                len: loc.span().len().max(1) as usize,
            })
        });
        let raw = serde_saphyr::DefaultMessageFormatter.format_message(&err);
        YamlError {
            message: tidy_message(&raw),
            pos,
        }
    })
}

/// serde-saphyr's messages are written for developers; say the same thing to a person
/// editing a config.
fn tidy_message(raw: &str) -> String {
    let raw = raw.escape_debug().to_string().replace("\\'", "'").replace("\\\"", "\"");
    if let Some(key) = raw.strip_prefix("duplicate mapping key: ") {
        let key = key.split(", set DuplicateKeyPolicy").next().unwrap_or(key);
        return format!("duplicate key `{key}` in one mapping");
    }
    raw
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Tagged<NodeKind>>::deserialize(deserializer)?;
        let loc = spanned.referenced;
        Ok(Node {
            kind: spanned.value.0,
            tag: spanned.value.1,
            pos: RenderedPos {
                line: loc.line() as usize,
                col: loc.column() as usize,
                len: loc.span().len() as usize,
            },
        })
    }
}

impl<'de> Deserialize<'de> for NodeKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = NodeKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }
    fn visit_none<E>(self) -> Result<NodeKind, E> {
        Ok(NodeKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeKind, D::Error> {
        NodeKind::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<NodeKind, E> {
        Ok(NodeKind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<NodeKind, E> {
        Ok(NodeKind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeKind, E> {
        i64::try_from(v)
            .map(NodeKind::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeKind, E> {
        i64::try_from(v)
            .map(NodeKind::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeKind, E> {
        i64::try_from(v)
            .map(NodeKind::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<NodeKind, E> {
        Ok(NodeKind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<NodeKind, E> {
        Ok(NodeKind::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<NodeKind, E> {
        String::from_utf8(v.to_vec())
            .map(NodeKind::Str)
            .map_err(|_| E::custom("binary values are not supported"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeKind, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(NodeKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeKind, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(NodeKind::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(items[1].kind, NodeKind::Str("y".into()), "YAML 1.1 booleans stay strings");
    }

    #[test]
    fn reports_duplicate_keys() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.message, "duplicate key `a` in one mapping");
        assert_eq!(err.pos.map(|p| p.line), Some(2));
    }
}
