//! Everything a running job sends passes here before anyone sees or stores it: secrets
//! masked (after decoding, so `\u0068…` escapes do not hide one), NUL made `␀`, and each
//! kind of report bounded.
//!
//! ```text
//!   shell reader / function ──Output──► Guard::admit ──► coalesce ──► events (store, views)
//!                                         ├─ progress: group depth, name size, distinct
//!                                         │  groups, status size; refused → one warning
//!                                         ├─ channel logs: head + tail, like stdout
//!                                         └─ retval: over its size → the build fails
//! ```
//!
//! Limits are in [`crate::limits`]; docs/channel.md lists them.

use std::collections::{HashSet, VecDeque};

use serde_json::Value as Json;

use super::channel::{BadLine, Message};
use super::process::Output;
use crate::config::model::Masker;
use crate::limits::{
    LOG_HEAD, LOG_TAIL, MAX_GROUP_DEPTH, MAX_GROUP_NAME, MAX_GROUPS, MAX_RETVAL, MAX_STATUS,
    cut_text, without_nul,
};
use crate::vocab::LogLevel;

/// One build's guard.
pub struct Guard<'a> {
    masker: &'a Masker,
    groups: HashSet<Vec<String>>,
    /// Progress messages refused, and whether the log was told.
    refused: u64,
    /// Set when the last return value sent was refused: why (the build fails so).
    retval_refused: Option<String>,
    logs: LogCap,
}

impl<'a> Guard<'a> {
    pub fn new(masker: &'a Masker) -> Guard<'a> {
        Guard {
            masker,
            groups: HashSet::new(),
            refused: 0,
            retval_refused: None,
            logs: LogCap::default(),
        }
    }

    /// What to pass on for `output`: itself masked and bounded, a warning instead, or
    /// nothing.
    pub fn admit(&mut self, output: Output) -> Option<Output> {
        match output {
            Output::Line { stream, text } => Some(Output::Line {
                stream,
                text: without_nul(&text).into_owned(),
            }),
            Output::Message(message) => self.message(message),
            Output::BadLine(bad) => Some(Output::BadLine(BadLine {
                line: self.text(&bad.line),
                reason: self.text(&bad.reason),
            })),
            Output::Oversized { bytes, retval } => {
                if retval {
                    self.retval_refused = Some(too_large(bytes));
                }
                Some(warning(format!(
                    "a channel message of {bytes} bytes was left out (the limit is {} bytes)",
                    crate::limits::MAX_MESSAGE
                )))
            }
            other => Some(other),
        }
    }

    fn message(&mut self, message: Message) -> Option<Output> {
        let message = match message {
            Message::Progress {
                group,
                current,
                total,
                status,
            } => {
                if let Some(why) = self.refuse_group(&group) {
                    self.refused += 1;
                    return (self.refused == 1).then(|| {
                        warning(format!(
                            "progress refused: {why} (this and any further refusals are \
                             counted at the end)"
                        ))
                    });
                }
                Message::Progress {
                    group: group.iter().map(|g| self.text(g)).collect(),
                    current,
                    total,
                    status: status.map(|s| self.text(&cut_text(&s, MAX_STATUS))),
                }
            }
            Message::Log { level, message } => {
                let message = Message::Log {
                    level,
                    message: self.text(&message),
                };
                return self.logs.push(Output::Message(message));
            }
            Message::Retval { value } => {
                let depth = crate::limits::json_depth(&value);
                if depth > crate::limits::MAX_RETVAL_DEPTH {
                    self.retval_refused = Some(too_deep(depth));
                    return Some(warning(format!(
                        "a return value nested {depth} deep was refused (the limit is {})",
                        crate::limits::MAX_RETVAL_DEPTH
                    )));
                }
                let size = value.to_string().len();
                if size > MAX_RETVAL {
                    self.retval_refused = Some(too_large(size));
                    return Some(warning(format!(
                        "a return value of {size} bytes was refused (the limit is {MAX_RETVAL} bytes)"
                    )));
                }
                self.retval_refused = None;
                Message::Retval {
                    value: self.json(value),
                }
            }
            Message::Skip { reason } => Message::Skip {
                reason: self.text(&cut_text(&reason, MAX_STATUS)),
            },
        };
        Some(Output::Message(message))
    }

    /// Why a progress report for `group` is refused, if it is.
    fn refuse_group(&mut self, group: &[String]) -> Option<String> {
        if group.len() > MAX_GROUP_DEPTH {
            return Some(format!(
                "a group path {} names deep (the limit is {MAX_GROUP_DEPTH})",
                group.len()
            ));
        }
        if let Some(long) = group.iter().find(|g| g.len() > MAX_GROUP_NAME) {
            return Some(format!(
                "a group name of {} bytes (the limit is {MAX_GROUP_NAME})",
                long.len()
            ));
        }
        if !self.groups.contains(group) {
            if self.groups.len() >= MAX_GROUPS {
                return Some(format!(
                    "more than {MAX_GROUPS} distinct groups in one build"
                ));
            }
            self.groups.insert(group.to_vec());
        }
        None
    }

    /// Masked, without NUL.
    pub fn text(&self, text: &str) -> String {
        let text = without_nul(text);
        match self.masker.is_empty() {
            true => text.into_owned(),
            false => self.masker.mask(&text),
        }
    }

    /// Every string in `value` (keys too) masked and without NUL; iterative, so a deep
    /// value cannot exhaust the stack.
    pub fn json(&self, value: Json) -> Json {
        let mut value = value;
        let mut stack: Vec<&mut Json> = vec![&mut value];
        while let Some(v) = stack.pop() {
            match v {
                Json::String(s) => *s = self.text(s),
                Json::Array(items) => stack.extend(items.iter_mut()),
                Json::Object(map) => {
                    let needs_keys = map.keys().any(|k| self.text(k) != *k);
                    if needs_keys {
                        let old = std::mem::take(map);
                        for (k, item) in old {
                            map.insert(self.text(&k), item);
                        }
                    }
                    stack.extend(map.values_mut());
                }
                _ => {}
            }
        }
        value
    }

    /// What is left to say when the job has ended: the tail of its channel logs, and
    /// how many reports were refused.
    pub fn finish(&mut self) -> Vec<Output> {
        let mut out = self.logs.finish();
        if self.refused > 0 {
            out.push(warning(format!(
                "{} progress report(s) refused in all",
                self.refused
            )));
        }
        out
    }

    /// Why the last return value sent was refused, if it was.
    pub fn retval_refused(&self) -> Option<&str> {
        self.retval_refused.as_deref()
    }
}

/// Why a build fails whose return value is `size` bytes, over [`MAX_RETVAL`].
pub fn too_large(size: usize) -> String {
    format!("its return value is {size} bytes, over the limit of {MAX_RETVAL} bytes")
}

/// Why a build fails whose return value nests `depth` deep, over
/// [`crate::limits::MAX_RETVAL_DEPTH`].
pub fn too_deep(depth: usize) -> String {
    format!(
        "its return value is nested {depth} deep, over the limit of {}",
        crate::limits::MAX_RETVAL_DEPTH
    )
}

fn warning(message: String) -> Output {
    Output::Message(Message::Log {
        level: LogLevel::Warning,
        message,
    })
}

/// Channel log messages kept: the first [`LOG_HEAD`] bytes as they come, then a ring of
/// the last [`LOG_TAIL`] bytes, passed on when the job ends with a line for what was left
/// out between.
#[derive(Default)]
struct LogCap {
    head_used: usize,
    tail: VecDeque<(usize, Output)>,
    tail_used: usize,
    dropped: u64,
    dropped_bytes: u64,
}

impl LogCap {
    fn push(&mut self, output: Output) -> Option<Output> {
        let size = match &output {
            Output::Message(Message::Log { message, .. }) => message.len() + 1,
            _ => 1,
        };
        if self.head_used + size <= LOG_HEAD {
            self.head_used += size;
            return Some(output);
        }
        self.head_used = LOG_HEAD;
        self.tail_used += size;
        self.tail.push_back((size, output));
        while self.tail_used > LOG_TAIL && self.tail.len() > 1 {
            let (gone, _) = self.tail.pop_front().expect("not empty");
            self.tail_used -= gone;
            self.dropped += 1;
            self.dropped_bytes += gone as u64;
        }
        None
    }

    fn finish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.dropped > 0 {
            out.push(Output::Dropped {
                lines: self.dropped,
                bytes: self.dropped_bytes,
            });
        }
        out.extend(std::mem::take(&mut self.tail).into_iter().map(|(_, o)| o));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(group: Vec<String>) -> Output {
        Output::Message(Message::Progress {
            group,
            current: 1,
            total: None,
            status: None,
        })
    }

    #[test]
    fn deep_long_and_too_many_groups_are_refused_once_and_counted() {
        let masker = Masker::default();
        let mut guard = Guard::new(&masker);
        let deep = progress((0..17).map(|i| i.to_string()).collect());
        assert!(matches!(
            guard.admit(deep.clone()),
            Some(Output::Message(Message::Log {
                level: LogLevel::Warning,
                ..
            }))
        ));
        assert_eq!(guard.admit(deep), None, "one warning, then counted");
        assert_eq!(guard.admit(progress(vec!["x".repeat(257)])), None);
        for i in 0..MAX_GROUPS {
            assert!(matches!(
                guard.admit(progress(vec![i.to_string()])),
                Some(Output::Message(Message::Progress { .. }))
            ));
        }
        assert_eq!(guard.admit(progress(vec!["one more".into()])), None);
        // A group already seen still reports.
        assert!(guard.admit(progress(vec!["7".into()])).is_some());
        let end = guard.finish();
        assert!(
            matches!(&end[..], [Output::Message(Message::Log { message, .. })] if message.starts_with("4 progress")),
            "{end:?}"
        );
    }

    #[test]
    fn decoded_text_is_masked_and_nul_free() {
        let masker = Masker::new(["hunter22".to_string()].iter());
        let mut guard = Guard::new(&masker);
        let m = Message::parse(r#"{"type":"log","message":"\u0068unter22 \u0000"}"#).unwrap();
        let Some(Output::Message(Message::Log { message, .. })) = guard.admit(Output::Message(m))
        else {
            panic!()
        };
        assert_eq!(message, "******** \u{2400}");
        let m =
            Message::parse(r#"{"type":"retval","value":{"hunter22":["a\u0000","x hunter22"]}}"#)
                .unwrap();
        let Some(Output::Message(Message::Retval { value })) = guard.admit(Output::Message(m))
        else {
            panic!()
        };
        assert_eq!(
            value,
            serde_json::json!({"********": ["a\u{2400}", "x ********"]})
        );
    }

    #[test]
    fn a_retval_over_its_limit_is_refused() {
        let masker = Masker::default();
        let mut guard = Guard::new(&masker);
        let big = Message::Retval {
            value: Json::String("x".repeat(MAX_RETVAL)),
        };
        assert!(matches!(
            guard.admit(Output::Message(big)),
            Some(Output::Message(Message::Log { .. }))
        ));
        assert_eq!(
            guard.retval_refused(),
            Some(too_large(MAX_RETVAL + 2).as_str())
        );
    }

    #[test]
    fn a_retval_nested_too_deep_is_refused_and_a_later_one_wins() {
        let masker = Masker::default();
        let mut guard = Guard::new(&masker);
        let mut deep = Json::Null;
        for _ in 0..crate::limits::MAX_RETVAL_DEPTH + 1 {
            deep = Json::Array(vec![deep]);
        }
        assert!(matches!(
            guard.admit(Output::Message(Message::Retval { value: deep })),
            Some(Output::Message(Message::Log { .. }))
        ));
        assert_eq!(
            guard.retval_refused(),
            Some(too_deep(crate::limits::MAX_RETVAL_DEPTH + 1).as_str())
        );
        let fine = Message::Retval {
            value: serde_json::json!({"ok": [1]}),
        };
        assert!(matches!(
            guard.admit(Output::Message(fine)),
            Some(Output::Message(Message::Retval { .. }))
        ));
        assert_eq!(guard.retval_refused(), None);
    }
}
