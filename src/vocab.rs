//! The words every side of a build uses — the executor, the queue, the store, the CLI and
//! the TUI: a build's id and status, how it ended ([`Outcome`]) and why one did not
//! succeed ([`Reason`]), the level and stream of a log line. The store keeps them (a
//! reason as JSON beside its words); readers match on the values, never on the words,
//! which are made only where a person reads them. (`store` re-exports them.)

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A build's number, unique in one database.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct BuildId(pub i64);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Made, waiting to start (queued for a worker, or about to run).
    Created,
    Running,
    Successful,
    Failed,
    /// The job said there was nothing to do.
    Skipped,
    Cancelled,
}

impl BuildStatus {
    pub const ALL: [BuildStatus; 6] = [
        BuildStatus::Created,
        BuildStatus::Running,
        BuildStatus::Successful,
        BuildStatus::Failed,
        BuildStatus::Skipped,
        BuildStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Created => "created",
            BuildStatus::Running => "running",
            BuildStatus::Successful => "successful",
            BuildStatus::Failed => "failed",
            BuildStatus::Skipped => "skipped",
            BuildStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<BuildStatus> {
        BuildStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, BuildStatus::Created | BuildStatus::Running)
    }
}

impl fmt::Display for BuildStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Log levels, stored as numbers so that "this level and above" is one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl LogLevel {
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<LogLevel> {
        let text = text.to_ascii_lowercase();
        let text = if text == "warn" { "warning" } else { &text };
        LogLevel::ALL.into_iter().find(|l| l.as_str() == text)
    }

    pub fn from_number(n: i64) -> LogLevel {
        LogLevel::ALL
            .into_iter()
            .rev()
            .find(|l| *l as i64 <= n)
            .unwrap_or(LogLevel::Debug)
    }

    /// How long logs of this level are kept by `jobctl prune` unless the config says
    /// otherwise (JobControl's defaults).
    pub fn default_retention(self) -> Duration {
        let days = match self {
            LogLevel::Debug => 15,
            LogLevel::Info => 30,
            LogLevel::Warning => 90,
            LogLevel::Error => 183,
            LogLevel::Critical => 366,
        };
        Duration::from_secs(days * 86_400)
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    /// Sent by the job through the job channel (`jobctl report log`).
    Channel,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Channel => "channel",
        }
    }

    pub fn parse(text: &str) -> Option<Stream> {
        [Stream::Stdout, Stream::Stderr, Stream::Channel]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// How a build ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Successful {
        retval: Option<Json>,
    },
    Failed {
        /// What its process's status said, when it had one.
        exit_code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
        reason: Reason,
        stderr_tail: Option<String>,
    },
    /// The job said it had nothing to do, in its own words.
    Skipped {
        reason: String,
    },
    Cancelled {
        reason: Reason,
    },
}

impl Outcome {
    pub fn status(&self) -> BuildStatus {
        match self {
            Outcome::Successful { .. } => BuildStatus::Successful,
            Outcome::Failed { .. } => BuildStatus::Failed,
            Outcome::Skipped { .. } => BuildStatus::Skipped,
            Outcome::Cancelled { .. } => BuildStatus::Cancelled,
        }
    }

    /// A failure for `reason`, with no process status.
    pub fn failed(reason: Reason) -> Outcome {
        Outcome::Failed {
            exit_code: None,
            signal: None,
            timed_out: false,
            reason,
            stderr_tail: None,
        }
    }

    /// Why it did not succeed (`None` for a success or a skip).
    pub fn reason(&self) -> Option<&Reason> {
        match self {
            Outcome::Failed { reason, .. } | Outcome::Cancelled { reason } => Some(reason),
            Outcome::Successful { .. } | Outcome::Skipped { .. } => None,
        }
    }
}

/// Why a build failed or was cancelled, as a program tells the cases apart. Stored as
/// JSON (`{"kind": "exit", "code": 2}`) in `builds.reason`, with its words
/// ([`fmt::Display`]) in `builds.error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Its process exited with a status other than 0.
    Exit { code: i32 },
    /// Its process was killed by a signal.
    Signal { signal: i32 },
    /// Its process ended with neither.
    NoStatus,
    /// It ran past its `timeout:` and was ended.
    TimedOut,
    /// It could not run, or failed another way (its function's error, a return value
    /// over the limit, its output not stored): the words say how.
    Error { message: String },
    /// The runner that held it is gone (`gone`: its process provably ended, on its host)
    /// or stopped renewing its lease. `worker`: a `jobctl worker`, else a `jobctl build`.
    RunnerLost {
        worker: bool,
        /// Who held it: `worker NAME on HOST`, `jobctl (pid N) on HOST`.
        who: String,
        gone: bool,
    },
    /// Not run: a build it waited on failed (or was cancelled, `cancelled`).
    Upstream {
        job: String,
        build: BuildId,
        cancelled: bool,
    },
    /// Cancelled (Ctrl-C, on request, by a run that stopped): the words say by what.
    Cancelled { message: String },
}

impl Reason {
    /// A reason given in words only (a build recorded before reasons were kept, or an
    /// error with nothing more to tell).
    pub fn error(message: impl Into<String>) -> Reason {
        Reason::Error {
            message: message.into(),
        }
    }

    pub fn cancelled(message: impl Into<String>) -> Reason {
        Reason::Cancelled {
            message: message.into(),
        }
    }

    /// The reason of a build that was not run because `build` of `job` ended with
    /// `outcome`.
    pub fn upstream(job: &str, build: BuildId, outcome: &Outcome) -> Reason {
        Reason::Upstream {
            job: job.to_owned(),
            build,
            cancelled: matches!(outcome, Outcome::Cancelled { .. }),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Exit { code } => write!(f, "exit status {code}"),
            Reason::Signal { signal } => write!(f, "killed by signal {signal}"),
            Reason::NoStatus => f.write_str("ended without a status"),
            Reason::TimedOut => f.write_str("timed out"),
            Reason::Error { message } | Reason::Cancelled { message } => f.write_str(message),
            Reason::RunnerLost { worker, who, gone } => write!(
                f,
                "{}: {who} {}",
                if *worker {
                    "worker lost"
                } else {
                    "runner died"
                },
                if *gone {
                    "is gone"
                } else {
                    "did not renew its lease"
                }
            ),
            Reason::Upstream {
                job,
                build,
                cancelled,
            } => write!(
                f,
                "not run: upstream {job} (build {build}) {}",
                if *cancelled {
                    "was cancelled"
                } else {
                    "failed"
                }
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_keeps_its_kind_in_json_and_reads_as_before() {
        let cases = [
            (
                Reason::Exit { code: 2 },
                r#"{"kind":"exit","code":2}"#,
                "exit status 2",
            ),
            (
                Reason::Signal { signal: 9 },
                r#"{"kind":"signal","signal":9}"#,
                "killed by signal 9",
            ),
            (Reason::TimedOut, r#"{"kind":"timed_out"}"#, "timed out"),
            (
                Reason::RunnerLost {
                    worker: true,
                    who: "worker w1 on h".into(),
                    gone: false,
                },
                r#"{"kind":"runner_lost","worker":true,"who":"worker w1 on h","gone":false}"#,
                "worker lost: worker w1 on h did not renew its lease",
            ),
            (
                Reason::RunnerLost {
                    worker: false,
                    who: "jobctl (pid 7) on h".into(),
                    gone: true,
                },
                r#"{"kind":"runner_lost","worker":false,"who":"jobctl (pid 7) on h","gone":true}"#,
                "runner died: jobctl (pid 7) on h is gone",
            ),
            (
                Reason::Upstream {
                    job: "a".into(),
                    build: BuildId(3),
                    cancelled: false,
                },
                r#"{"kind":"upstream","job":"a","build":3,"cancelled":false}"#,
                "not run: upstream a (build 3) failed",
            ),
        ];
        for (reason, json, words) in cases {
            assert_eq!(serde_json::to_string(&reason).unwrap(), json);
            assert_eq!(serde_json::from_str::<Reason>(json).unwrap(), reason);
            assert_eq!(reason.to_string(), words);
        }
    }
}
