//! The job channel protocol: one JSON object per line, tagged by `type`.
//!
//! ```json
//! {"type": "progress", "group": ["pages"], "current": 3, "total": 10, "status": "page 3"}
//! {"type": "log", "level": "warning", "message": "slow response"}
//! {"type": "retval", "value": {"rows": 12}}
//! {"type": "skip", "reason": "nothing new upstream"}
//! ```
//!
//! A line that is not a valid message is not lost: the reader turns it into a warning in
//! the build's log, with the reason.

use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::vocab::LogLevel;

/// The environment variable that names the channel: a file descriptor number open for
/// writing in the job's process.
pub const CHANNEL_ENV: &str = "JOBCTL_CHANNEL";

/// A message from a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// How far a group of the job's work is; `group` is a path of names, empty (or left
    /// out) for the job as a whole.
    Progress {
        #[serde(default)]
        group: Vec<String>,
        current: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    Log {
        #[serde(default = "default_level", with = "level_name")]
        level: LogLevel,
        message: String,
    },
    /// The build's return value: any JSON. The last one sent wins.
    Retval { value: serde_json::Value },
    /// The job decided there is nothing to do: the build ends `skipped`.
    Skip {
        #[serde(default)]
        reason: String,
    },
}

fn default_level() -> LogLevel {
    LogLevel::Info
}

mod level_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::vocab::LogLevel;

    pub fn serialize<S: Serializer>(level: &LogLevel, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(level.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogLevel, D::Error> {
        let text = String::deserialize(d)?;
        LogLevel::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown level `{text}` (debug, info, warning, error, critical)"
            ))
        })
    }
}

/// Why a channel line was not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a channel message ({reason}): {line}")]
pub struct BadLine {
    pub line: String,
    pub reason: String,
}

impl Message {
    /// Parses one line (without its newline).
    pub fn parse(line: &str) -> Result<Message, BadLine> {
        let message: Message = serde_json::from_str(line).map_err(|err| BadLine {
            line: line.chars().take(200).collect(),
            reason: err.to_string(),
        })?;
        if let Message::Progress { current, total, .. } = &message
            && (*current < 0 || total.is_some_and(|t| t < 0))
        {
            return Err(BadLine {
                line: line.chars().take(200).collect(),
                reason: "progress cannot be negative".into(),
            });
        }
        Ok(message)
    }

    /// The line that carries this message, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a message serializes");
        line.push('\n');
        line
    }
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("not inside a jobctl build: ${CHANNEL_ENV} is not set")]
    NoChannel,
    #[error("${CHANNEL_ENV} is `{0}`, not a file descriptor number")]
    BadChannel(String),
    #[error("cannot write to the job channel (fd {fd})")]
    Write {
        fd: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Sends a message on the channel named in this process's environment, as one write.
pub fn send(message: &Message) -> Result<(), SendError> {
    let value = std::env::var(CHANNEL_ENV).map_err(|_| SendError::NoChannel)?;
    let fd: u32 = value
        .trim()
        .parse()
        .map_err(|_| SendError::BadChannel(value.clone()))?;
    let write = |source| SendError::Write { fd, source };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(format!("/dev/fd/{fd}"))
        .map_err(write)?;
    file.write_all(message.to_line().as_bytes()).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let messages = [
            Message::Progress {
                group: vec!["pages".into(), "html".into()],
                current: 3,
                total: Some(10),
                status: Some("page 3".into()),
            },
            Message::Progress {
                group: vec![],
                current: 1,
                total: None,
                status: None,
            },
            Message::Log {
                level: LogLevel::Warning,
                message: "slow\nresponse".into(),
            },
            Message::Retval {
                value: serde_json::json!({"rows": [1, 2.5, null, "ß"]}),
            },
            Message::Skip {
                reason: "nothing new".into(),
            },
        ];
        for m in messages {
            let line = m.to_line();
            assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
            assert_eq!(Message::parse(line.trim_end()).unwrap(), m);
        }
    }

    #[test]
    fn short_forms_and_mistakes() {
        assert_eq!(
            Message::parse(r#"{"type":"progress","current":2}"#).unwrap(),
            Message::Progress {
                group: vec![],
                current: 2,
                total: None,
                status: None
            }
        );
        assert_eq!(
            Message::parse(r#"{"type":"log","message":"hi"}"#).unwrap(),
            Message::Log {
                level: LogLevel::Info,
                message: "hi".into()
            }
        );
        for bad in [
            "not json",
            r#"{"type":"progres","current":2}"#,
            r#"{"type":"progress","current":-1}"#,
            r#"{"type":"progress","current":1,"totl":3}"#,
            r#"{"type":"log","level":"loud","message":"x"}"#,
            r#"{"current":1}"#,
        ] {
            let err = Message::parse(bad).unwrap_err();
            assert_eq!(err.line, bad);
        }
        let err = Message::parse(r#"{"type":"log","level":"loud","message":"x"}"#).unwrap_err();
        assert!(
            err.reason.contains("unknown level `loud`"),
            "{}",
            err.reason
        );
    }
}
