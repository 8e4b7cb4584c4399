//! What a run tells the world: the one typed event enum every runner emits (`jobctl
//! build`'s dispatcher, a worker), the reporters that consume it (the live tree, plain
//! lines, a test), and what of a build's output the store keeps.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::channel::Message;
use super::process::{Cancel, Output};
use crate::config::JobId;
use crate::store::{BuildId, LogLevel, LogRecord, Outcome, ProgressUpdate, Stream, Write};

/// What happens during a run, for reporters.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildEvent {
    Started {
        build: BuildId,
        job: JobId,
        attempt: u32,
    },
    Output {
        build: BuildId,
        job: JobId,
        output: Output,
    },
    Finished {
        build: BuildId,
        job: JobId,
        attempt: u32,
        outcome: Outcome,
        took: Duration,
    },
    /// A failed attempt is tried again after `after`.
    Retrying {
        job: JobId,
        attempt: u32,
        after: Duration,
    },
    /// Not started because a job it depends on did not succeed.
    NotRun { job: JobId, because: JobId },
    /// Not started because the run stopped first; `why` says what stopped it.
    NotStarted { job: JobId, why: String },
    /// Waits to start: as many builds of it as its `concurrency` run elsewhere (another
    /// jobctl, a worker). Said once per job.
    Waiting {
        job: JobId,
        running: u32,
        concurrency: u32,
    },
    /// The build was taken over by another runner (its lease lapsed): it was stopped
    /// here and what this runner saw of its end is not recorded.
    Lost { build: BuildId, job: JobId },
    /// Builds followed in the queue wait with no running worker able to take them
    /// (`Some`: why, said when it starts or changes), or one can now (`None`).
    Unclaimed { why: Option<String> },
    /// A worker's claims stopped working (`Some`: why, said when it starts or changes) or
    /// work again (`None`).
    ClaimTrouble { why: Option<String> },
    /// The run is being stopped: `Term` on the first Ctrl-C (or a failure to record),
    /// `Kill` on the second.
    Cancelling { how: Cancel },
}

/// Consumes build events (the terminal, a test).
pub trait Reporter {
    fn event(&mut self, event: &BuildEvent);
    /// Called every tick (200 ms) while the run goes on, for views that move with time.
    fn tick(&mut self) {}
    /// Called when the loop has done what it can and is about to wait: what a view holds
    /// back goes out now.
    fn idle(&mut self) {}
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub succeeded: usize,
    pub skipped: usize,
    pub failed: Vec<(JobId, BuildId, Outcome)>,
    pub cancelled: usize,
    pub not_run: usize,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.cancelled == 0 && self.not_run == 0
    }
}

/// What the store keeps of a build's output, if anything: lines and channel logs as log
/// records (stderr a warning), progress as the group's latest value, a bad channel line
/// and the lines left out as warnings. A return value, a skip and an oversized message
/// reach the store otherwise (the end; the guard's warning); a process group is part of
/// the start.
pub(crate) fn record(build: BuildId, output: &Output, at: DateTime<Utc>) -> Option<Write> {
    let log = |level, stream, message: String| {
        Some(Write::Log(LogRecord {
            build,
            at,
            level,
            stream,
            message,
        }))
    };
    match output {
        Output::Line { stream, text } => {
            let level = match stream {
                Stream::Stderr => LogLevel::Warning,
                _ => LogLevel::Info,
            };
            log(level, *stream, text.clone())
        }
        Output::Message(Message::Log { level, message }) => {
            log(*level, Stream::Channel, message.clone())
        }
        Output::Message(Message::Progress {
            group,
            current,
            total,
            status,
        }) => Some(Write::Progress(ProgressUpdate {
            build,
            path: group.clone(),
            current: *current,
            total: *total,
            status: status.clone(),
            at,
        })),
        Output::Message(Message::Retval { .. } | Message::Skip { .. })
        | Output::Spawned { .. }
        | Output::Oversized { .. } => None,
        Output::BadLine(bad) => log(LogLevel::Warning, Stream::Channel, bad.to_string()),
        Output::Dropped { lines, bytes } => log(
            LogLevel::Warning,
            Stream::Stdout,
            format!("[{lines} lines ({bytes} bytes) of output left out]"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::channel::BadLine;

    fn logged(output: Output) -> Option<(LogLevel, Stream, String)> {
        match record(BuildId(7), &output, Utc::now())? {
            Write::Log(r) => {
                assert_eq!(r.build, BuildId(7));
                Some((r.level, r.stream, r.message))
            }
            other => panic!("not a log record: {other:?}"),
        }
    }

    #[test]
    fn what_the_store_keeps_of_each_kind_of_output() {
        let line = |stream, text: &str| Output::Line {
            stream,
            text: text.into(),
        };
        assert_eq!(
            logged(line(Stream::Stdout, "out")),
            Some((LogLevel::Info, Stream::Stdout, "out".into()))
        );
        assert_eq!(
            logged(line(Stream::Stderr, "err")),
            Some((LogLevel::Warning, Stream::Stderr, "err".into()))
        );
        assert_eq!(
            logged(Output::Message(Message::Log {
                level: LogLevel::Error,
                message: "boom".into()
            })),
            Some((LogLevel::Error, Stream::Channel, "boom".into()))
        );
        let bad = logged(Output::BadLine(BadLine {
            line: "{nope".into(),
            reason: "not JSON".into(),
        }))
        .unwrap();
        assert_eq!((bad.0, bad.1), (LogLevel::Warning, Stream::Channel));
        assert!(bad.2.contains("{nope"), "{}", bad.2);
        assert_eq!(
            logged(Output::Dropped {
                lines: 3,
                bytes: 30
            }),
            Some((
                LogLevel::Warning,
                Stream::Stdout,
                "[3 lines (30 bytes) of output left out]".into()
            ))
        );
        for kept_elsewhere in [
            Output::Spawned { pgid: 9 },
            Output::Oversized {
                bytes: 1 << 20,
                retval: true,
            },
            Output::Message(Message::Skip {
                reason: String::new(),
            }),
        ] {
            assert!(record(BuildId(7), &kept_elsewhere, Utc::now()).is_none());
        }
        let progress = Output::Message(Message::Progress {
            group: vec!["a".into()],
            current: 2,
            total: Some(5),
            status: None,
        });
        assert!(matches!(
            record(BuildId(7), &progress, Utc::now()),
            Some(Write::Progress(ProgressUpdate {
                current: 2,
                total: Some(5),
                ..
            }))
        ));
    }
}
