//! How a build ended, and why one did not succeed: the words both sides of the store use.
//! The executor and the queue decide an [`Outcome`]; the store keeps it (the reason as
//! JSON beside its words); the CLI, the TUI and tests read it back and match on
//! [`Reason`], never on its words, which are made only where a person reads them.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::store::{BuildId, BuildStatus};

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
