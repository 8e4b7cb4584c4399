//! Plain lines for a run: one per event that matters, a summary at the end with each
//! failure's stderr tail. No escape codes: fit for CI logs and pipes. Rendering is a pure
//! function of the event and the time.

use std::io::Write;

use crate::exec::event::{BuildEvent, Reporter, Summary};
use crate::exec::process::Cancel;
use crate::vocab::Outcome;

/// Prints build events as lines to a writer: the lines of one turn of the run's loop
/// together, when it is about to wait (one write instead of one a line, and none between a
/// job's end and the start of the next).
pub struct Plain<W: Write> {
    out: W,
    /// Lines not written yet.
    pending: String,
    /// The clock as printed, and the second it was printed for: a run of many short jobs
    /// would otherwise look up the local time zone for every line.
    clock: (u64, String),
}

impl<W: Write> Plain<W> {
    pub fn new(out: W) -> Self {
        Plain {
            out,
            pending: String::new(),
            clock: (0, String::new()),
        }
    }

    fn clock(&mut self) -> &str {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if second != self.clock.0 || self.clock.1.is_empty() {
            self.clock = (second, chrono::Local::now().format("%H:%M:%S").to_string());
        }
        &self.clock.1
    }

    pub fn summary(&mut self, summary: &Summary) {
        self.pending.push_str(&render_summary(summary));
        self.idle();
    }
}

impl<W: Write> Reporter for Plain<W> {
    fn event(&mut self, event: &BuildEvent) {
        if let Some(line) = render(event, self.clock()) {
            self.pending.push_str(&line);
            self.pending.push('\n');
        }
    }

    fn idle(&mut self) {
        if !self.pending.is_empty() {
            // Job output and errors in these lines cannot drive the terminal.
            let _ = self
                .out
                .write_all(crate::limits::visible(&self.pending).as_bytes());
            let _ = self.out.flush();
            self.pending.clear();
        }
    }
}

impl<W: Write> Drop for Plain<W> {
    /// A run that ends in an error still shows what happened before it.
    fn drop(&mut self) {
        self.idle();
    }
}

/// The line for an event, if it gets one.
pub fn render(event: &BuildEvent, time: &str) -> Option<String> {
    Some(match event {
        BuildEvent::Started {
            build,
            job,
            attempt,
        } => {
            let attempt = if *attempt > 1 {
                format!(", attempt {attempt}")
            } else {
                String::new()
            };
            format!("{time} start   {job} (build {build}{attempt})")
        }
        BuildEvent::Finished {
            build,
            job,
            outcome,
            took,
            ..
        } => {
            let took = format!("{:.1}s", took.as_secs_f64());
            match outcome {
                Outcome::Successful { .. } => {
                    format!("{time} ok      {job} (build {build}, {took})")
                }
                Outcome::Skipped { reason } => {
                    format!("{time} skipped {job} (build {build}, {took}): {reason}")
                }
                Outcome::Cancelled { .. } => {
                    format!("{time} cancel  {job} (build {build}, {took})")
                }
                Outcome::Failed { reason, .. } => {
                    format!("{time} FAILED  {job} (build {build}, {took}): {reason}")
                }
            }
        }
        BuildEvent::Retrying {
            job,
            attempt,
            after,
        } => format!(
            "{time} retry   {job}: attempt {attempt} in {:.1}s",
            after.as_secs_f64()
        ),
        BuildEvent::NotRun { job, because } => {
            format!("{time} not run {job}: {because} did not succeed")
        }
        BuildEvent::NotStarted { job, why } => format!("{time} not run {job}: {why}"),
        BuildEvent::Lost { build, job } => format!(
            "{time} lost    {job} (build {build}): taken over by another runner after a lapsed lease; its end here is not recorded"
        ),
        BuildEvent::Waiting {
            job,
            running,
            concurrency,
        } => format!(
            "{time} wait    {job}: {running} build{} of it running elsewhere (concurrency {concurrency})",
            if *running == 1 { "" } else { "s" }
        ),
        BuildEvent::Cancelling { how } => match how {
            Cancel::Kill => format!("{time} killing every job"),
            _ => format!(
                "{time} cancelling: every job gets TERM, then KILL after the grace period (Ctrl-C again: KILL now)"
            ),
        },
        BuildEvent::Unclaimed { why: Some(why) } => format!("{time} queued  {why}"),
        BuildEvent::Unclaimed { why: None } => return None,
        BuildEvent::ClaimTrouble { why: Some(why) } => {
            format!("{time} trouble cannot claim builds: {why}")
        }
        BuildEvent::ClaimTrouble { why: None } => format!("{time} trouble over: claims work again"),
        BuildEvent::Output { .. } => return None,
    })
}

/// Counts, then each failure with the last lines of its stderr.
pub fn render_summary(summary: &Summary) -> String {
    let mut parts = vec![format!("{} succeeded", summary.succeeded)];
    for (n, what) in [
        (summary.failed.len(), "failed"),
        (summary.not_run, "not run"),
        (summary.skipped, "skipped"),
        (summary.cancelled, "cancelled"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let mut out = parts.join(", ");
    out.push('\n');
    for (job, build, outcome) in &summary.failed {
        if let Outcome::Failed {
            reason,
            stderr_tail,
            ..
        } = outcome
        {
            out.push_str(&format!("failed: {job} (build {build}): {reason}\n"));
            for line in stderr_tail.iter().flat_map(|t| t.lines()) {
                out.push_str(&format!("  | {line}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::JobId;
    use crate::vocab::BuildId;

    fn id(s: &str) -> JobId {
        JobId::parse(s).unwrap()
    }

    #[test]
    fn lines_for_a_run() {
        let events = [
            BuildEvent::Started {
                build: BuildId(1),
                job: id("crawl"),
                attempt: 1,
            },
            BuildEvent::Finished {
                build: BuildId(1),
                job: id("crawl"),
                attempt: 1,
                outcome: Outcome::Successful { retval: None },
                took: Duration::from_millis(1250),
            },
            BuildEvent::Started {
                build: BuildId(2),
                job: id("process"),
                attempt: 1,
            },
            BuildEvent::Finished {
                build: BuildId(2),
                job: id("process"),
                attempt: 1,
                outcome: Outcome::Failed {
                    exit_code: Some(2),
                    signal: None,
                    timed_out: false,
                    reason: crate::vocab::Reason::Exit { code: 2 },
                    stderr_tail: Some("reading input\nbad row 7\n".into()),
                },
                took: Duration::from_millis(300),
            },
            BuildEvent::Retrying {
                job: id("process"),
                attempt: 2,
                after: Duration::from_secs(10),
            },
            BuildEvent::Started {
                build: BuildId(3),
                job: id("process"),
                attempt: 2,
            },
            BuildEvent::Finished {
                build: BuildId(3),
                job: id("process"),
                attempt: 2,
                outcome: Outcome::Failed {
                    exit_code: None,
                    signal: Some(9),
                    timed_out: true,
                    reason: crate::vocab::Reason::TimedOut,
                    stderr_tail: Some("bad row 7\n".into()),
                },
                took: Duration::from_secs(60),
            },
            BuildEvent::NotRun {
                job: id("publish"),
                because: id("process"),
            },
            BuildEvent::Finished {
                build: BuildId(4),
                job: id("check"),
                attempt: 1,
                outcome: Outcome::Skipped {
                    reason: "nothing new".into(),
                },
                took: Duration::from_millis(40),
            },
        ];
        let mut text: String = events
            .iter()
            .filter_map(|e| render(e, "08:00:00"))
            .map(|l| l + "\n")
            .collect();
        text.push_str(&render_summary(&Summary {
            succeeded: 1,
            skipped: 1,
            failed: vec![(
                id("process"),
                BuildId(3),
                Outcome::Failed {
                    exit_code: None,
                    signal: Some(9),
                    timed_out: true,
                    reason: crate::vocab::Reason::TimedOut,
                    stderr_tail: Some("bad row 7\n".into()),
                },
            )],
            cancelled: 0,
            not_run: 1,
        }));
        insta::assert_snapshot!(text);
    }
}
