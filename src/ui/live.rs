//! The live tree on a terminal: one branch per running build with its progress tree
//! beneath (bars, current/total, rate, ETA, status line); finished builds are printed
//! above it as plain lines and scroll away; a summary at the end.
//!
//! ```text
//!   BuildEvent ──► LiveState (pure data) ──► render(state, now, width, height) ──► lines
//!                                                       │ every tick (200 ms)
//!                          finished lines ──────────────┴──► the terminal: move up over
//!                                                            the last frame, clear, print
//! ```
//!
//! `render` is a pure function of the state and the time, snapshotted in tests.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use super::plain;
use crate::config::JobId;
use crate::exec::channel::Message;
use crate::exec::event::{BuildEvent, Reporter, Summary};
use crate::exec::process::Output;
use crate::store::progress::{ProgressNode, tree};
use crate::store::{BuildId, Outcome, ProgressRow};

/// What the live view knows.
#[derive(Debug, Clone)]
pub struct LiveState {
    /// Builds planned in this run.
    pub planned: usize,
    pub started_at: Instant,
    /// Running builds, in the order they started.
    pub running: IndexMap<BuildId, LiveBuild>,
    pub succeeded: usize,
    pub failed: usize,
    pub other: usize,
    /// Set once the run is being cancelled.
    pub cancelling: bool,
    /// Why queued builds wait with no worker to take them, while they do.
    pub unclaimed: Option<String>,
}

/// One running build.
#[derive(Debug, Clone)]
pub struct LiveBuild {
    pub job: JobId,
    pub attempt: u32,
    pub started: Instant,
    /// The latest report of each group, in first-reported order.
    pub progress: IndexMap<Vec<String>, ProgressRow>,
    /// When each group was first seen and its count then, for rates.
    pub first_seen: HashMap<Vec<String>, (Instant, i64)>,
    /// The last line the job printed, shown while it reports no progress.
    pub last_line: Option<String>,
}

impl LiveState {
    pub fn new(planned: usize, started_at: Instant) -> LiveState {
        LiveState {
            planned,
            started_at,
            running: IndexMap::new(),
            succeeded: 0,
            failed: 0,
            other: 0,
            cancelling: false,
            unclaimed: None,
        }
    }

    /// Takes an event at `now`.
    pub fn apply(&mut self, event: &BuildEvent, now: Instant) {
        match event {
            BuildEvent::Started {
                build,
                job,
                attempt,
            } => {
                self.running.insert(
                    *build,
                    LiveBuild {
                        job: job.clone(),
                        attempt: *attempt,
                        started: now,
                        progress: IndexMap::new(),
                        first_seen: HashMap::new(),
                        last_line: None,
                    },
                );
            }
            BuildEvent::Output { build, output, .. } => {
                let Some(b) = self.running.get_mut(build) else {
                    return;
                };
                match output {
                    Output::Message(Message::Progress {
                        group,
                        current,
                        total,
                        status,
                    }) => {
                        if !b.first_seen.contains_key(group) {
                            b.first_seen.insert(group.clone(), (now, *current));
                        }
                        let row = ProgressRow {
                            path: group.clone(),
                            current: *current,
                            total: *total,
                            status: status.clone(),
                            updated_at: chrono::DateTime::UNIX_EPOCH,
                        };
                        match b.progress.get_mut(group) {
                            Some(slot) => *slot = row,
                            None => {
                                b.progress.insert(group.clone(), row);
                            }
                        }
                    }
                    Output::Line { text, .. } if !text.trim().is_empty() => {
                        b.last_line = Some(text.clone());
                    }
                    _ => {}
                }
            }
            BuildEvent::Finished { build, outcome, .. } => {
                self.running.shift_remove(build);
                match outcome {
                    Outcome::Successful { .. } | Outcome::Skipped { .. } => self.succeeded += 1,
                    Outcome::Failed { .. } => self.failed += 1,
                    Outcome::Cancelled { .. } => self.other += 1,
                }
            }
            BuildEvent::NotRun { .. } | BuildEvent::NotStarted { .. } => self.other += 1,
            BuildEvent::Lost { build, .. } => {
                self.running.shift_remove(build);
                self.other += 1;
            }
            BuildEvent::Cancelling { .. } => self.cancelling = true,
            BuildEvent::Retrying { .. }
            | BuildEvent::Waiting { .. }
            | BuildEvent::ClaimTrouble { .. } => {}
            BuildEvent::Unclaimed { why } => self.unclaimed = why.clone(),
        }
    }
}

/// The live area: a status line, then each running build with its progress tree, at
/// most `height` lines, none wider than `width` characters.
pub fn render(state: &LiveState, now: Instant, width: usize, height: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let done = state.succeeded + state.failed + state.other;
    let mut head = format!(
        "{done}/{} done, {} running",
        state.planned,
        state.running.len()
    );
    if state.failed > 0 {
        head.push_str(&format!(", {} failed", state.failed));
    }
    head.push_str(&format!(
        "  {}",
        elapsed(now.saturating_duration_since(state.started_at))
    ));
    if state.cancelling {
        head.push_str("  cancelling (Ctrl-C again: kill)");
    } else if let Some(why) = &state.unclaimed {
        head.push_str(&format!("  queued: {why}"));
    }
    lines.push(head);
    let mut shown = 0;
    for (build, b) in &state.running {
        let mut block = build_lines(*build, b, now, width, height);
        if lines.len() + block.len() > height.saturating_sub(1) && shown > 0 {
            break;
        }
        lines.append(&mut block);
        shown += 1;
    }
    if shown < state.running.len() {
        lines.push(format!(
            "… and {} more running",
            state.running.len() - shown
        ));
    }
    lines.truncate(height.max(1));
    lines.into_iter().map(|l| clip(&l, width)).collect()
}

/// A build's lines: its own, then its progress tree, at most `height` lines (a build
/// may report thousands of groups; only what fits is formatted).
fn build_lines(
    build: BuildId,
    b: &LiveBuild,
    now: Instant,
    width: usize,
    height: usize,
) -> Vec<String> {
    let attempt = if b.attempt > 1 {
        format!(" attempt {}", b.attempt)
    } else {
        String::new()
    };
    let took = elapsed(now.saturating_duration_since(b.started));
    let mut lines = Vec::new();
    if b.progress.is_empty() {
        let mut line = format!("▸ {} #{build}{attempt}  {took}", b.job);
        if let Some(last) = &b.last_line {
            line.push_str(&format!("  {last}"));
        }
        lines.push(line);
        return lines;
    }
    let rows: Vec<ProgressRow> = b.progress.values().cloned().collect();
    let root = tree(&rows);
    let label = format!("▸ {} #{build}{attempt}", b.job);
    lines.push(node_line(&label, &root, &[], b, now, width, &took));
    let mut path = Vec::new();
    let view = View {
        b,
        now,
        width,
        height,
    };
    view.children_lines(&root, "  ", &mut path, &mut lines);
    lines
}

/// What the lines of one build's tree are made with.
struct View<'a> {
    b: &'a LiveBuild,
    now: Instant,
    width: usize,
    /// Lines at most.
    height: usize,
}

impl View<'_> {
    /// The lines of `node`'s children and theirs (the depth is bounded when reported).
    fn children_lines(
        &self,
        node: &ProgressNode,
        indent: &str,
        path: &mut Vec<String>,
        lines: &mut Vec<String>,
    ) {
        let n = node.children.len();
        for (i, child) in node.children.iter().enumerate() {
            if lines.len() >= self.height {
                return;
            }
            let last = i + 1 == n;
            path.push(child.name.clone());
            let label = format!("{indent}{} {}", if last { "└─" } else { "├─" }, child.name);
            lines.push(node_line(
                &label, child, path, self.b, self.now, self.width, "",
            ));
            let deeper = format!("{indent}{}", if last { "   " } else { "│  " });
            self.children_lines(child, &deeper, path, lines);
            path.pop();
        }
    }
}

/// `label  [████░░░░]  45/100  45%  12.0/s  ETA 5s  status`.
fn node_line(
    label: &str,
    node: &ProgressNode,
    path: &[String],
    b: &LiveBuild,
    now: Instant,
    width: usize,
    took: &str,
) -> String {
    let label_width = (width / 3).clamp(16, 40);
    let mut line = format!("{:label_width$}", clip(label, label_width));
    let bar_width = if width >= 100 { 20 } else { 10 };
    match node.fraction() {
        Some(f) => {
            let filled = ((f * bar_width as f64).round() as usize).min(bar_width);
            line.push_str(&format!(
                " [{}{}]",
                "█".repeat(filled),
                "░".repeat(bar_width - filled)
            ));
        }
        None => line.push_str(&format!(" [{}]", "·".repeat(bar_width))),
    }
    match node.total {
        Some(total) => line.push_str(&format!(" {}/{total}", node.current)),
        None => line.push_str(&format!(" {}", node.current)),
    }
    if let Some(f) = node.fraction() {
        line.push_str(&format!(" {:>3.0}%", f * 100.0));
    }
    if let Some(rate) = rate(node, &mut path.to_vec(), b, now)
        && rate > 0.0
    {
        line.push_str(&format!("  {}/s", rate_text(rate)));
        if let Some(total) = node.total
            && total > node.current
        {
            // An absurd ETA (a job's numbers are its own) is not shown.
            let left = total.saturating_sub(node.current) as f64 / rate;
            if let Ok(eta) = Duration::try_from_secs_f64(left)
                && eta < MAX_ETA
            {
                line.push_str(&format!("  ETA {}", elapsed(eta)));
            }
        }
    }
    if !took.is_empty() {
        line.push_str(&format!("  {took}"));
    }
    if let Some(status) = &node.status {
        line.push_str(&format!("  {status}"));
    }
    line
}

/// ETAs past this are shown as unknown.
const MAX_ETA: Duration = Duration::from_secs(365 * 24 * 3600);

/// Units a second since the group was first seen; a group that does not report for
/// itself goes as fast as its children together. Unknown in the first second.
fn rate(node: &ProgressNode, path: &mut Vec<String>, b: &LiveBuild, now: Instant) -> Option<f64> {
    if node.reported {
        let (since, start) = b.first_seen.get(path.as_slice())?;
        let secs = now.saturating_duration_since(*since).as_secs_f64();
        return (secs >= 1.0)
            .then(|| node.current.saturating_sub(*start).max(0) as f64 / secs)
            .filter(|rate| rate.is_finite());
    }
    let mut sum = None;
    for child in &node.children {
        path.push(child.name.clone());
        if let Some(r) = rate(child, path, b, now) {
            *sum.get_or_insert(0.0) += r;
        }
        path.pop();
    }
    sum
}

fn rate_text(rate: f64) -> String {
    if rate >= 1_000_000.0 {
        format!("{:.1}M", rate / 1_000_000.0)
    } else if rate >= 10_000.0 {
        format!("{:.0}k", rate / 1000.0)
    } else if rate >= 100.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub(crate) fn elapsed(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// At most `width` characters; one-line (control characters shown as spaces).
pub(crate) fn clip(text: &str, width: usize) -> String {
    let clean = text.chars().map(|c| if c.is_control() { ' ' } else { c });
    let count = text.chars().count();
    if count <= width {
        return clean.collect();
    }
    let mut out: String = clean.take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The terminal reporter: keeps a [`LiveState`], prints finished builds above the live
/// area, and at each tick redraws it if it changed (a clock, a bar, a new build).
pub struct Live<W: Write> {
    out: W,
    state: LiveState,
    /// Lines to print above the live area at the next draw.
    above: Vec<String>,
    /// How many lines the last frame took.
    drawn: usize,
    /// The last frame drawn, to skip drawing the same again.
    last: Vec<String>,
    size: fn() -> (usize, usize),
}

impl<W: Write> Live<W> {
    /// `size` tells the terminal's (columns, rows) at each draw.
    pub fn new(out: W, planned: usize, size: fn() -> (usize, usize)) -> Self {
        Live {
            out,
            state: LiveState::new(planned, Instant::now()),
            above: Vec::new(),
            drawn: 0,
            last: Vec::new(),
            size,
        }
    }

    fn draw(&mut self) {
        let (width, height) = (self.size)();
        let frame = render(
            &self.state,
            Instant::now(),
            width.saturating_sub(1).max(20),
            (height / 2).max(3),
        );
        if self.above.is_empty() && self.drawn > 0 && frame == self.last {
            return;
        }
        self.replace_frame(&frame.join("\n"));
        self.drawn = frame.len();
        self.last = frame;
    }

    /// Moves up over the last frame, clears it, prints the lines waiting to go above,
    /// then `below` (a new frame, or the summary).
    fn replace_frame(&mut self, below: &str) {
        let mut text = String::new();
        if self.drawn > 0 {
            text.push_str(&format!("\r\x1b[{}A", self.drawn));
        }
        text.push_str("\r\x1b[J");
        for line in self.above.drain(..) {
            text.push_str(&line);
            text.push('\n');
        }
        text.push_str(below);
        if !below.is_empty() && !below.ends_with('\n') {
            text.push('\n');
        }
        self.drawn = 0;
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Clears the live area, prints what is left and the summary.
    pub fn summary(&mut self, summary: &Summary) {
        self.replace_frame(&plain::render_summary(summary));
    }

    /// Clears the live area (a run that ended in an error).
    pub fn clear(&mut self) {
        self.replace_frame("");
    }
}

impl<W: Write> Reporter for Live<W> {
    fn event(&mut self, event: &BuildEvent) {
        self.state.apply(event, Instant::now());
        if matches!(
            event,
            BuildEvent::Started { .. } | BuildEvent::Output { .. }
        ) {
            return;
        }
        let now = chrono::Local::now().format("%H:%M:%S").to_string();
        if let Some(line) = plain::render(event, &now) {
            self.above.push(line);
        }
        if matches!(event, BuildEvent::Cancelling { .. }) {
            self.draw();
        }
    }

    fn tick(&mut self) {
        self.draw();
    }
}

/// The terminal's (columns, rows), or 80×24 when it does not say.
pub fn terminal_size() -> (usize, usize) {
    // SAFETY: TIOCGWINSZ fills a winsize; on failure it is left zeroed.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 && size.ws_row > 0 {
        (size.ws_col as usize, size.ws_row as usize)
    } else {
        (80, 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(group: &[&str], current: i64, total: Option<i64>, status: Option<&str>) -> Output {
        Output::Message(Message::Progress {
            group: group.iter().map(|g| g.to_string()).collect(),
            current,
            total,
            status: status.map(str::to_owned),
        })
    }

    fn started(build: i64, job: &str) -> BuildEvent {
        BuildEvent::Started {
            build: BuildId(build),
            job: JobId::parse(job).unwrap(),
            attempt: 1,
        }
    }

    fn out(build: i64, job: &str, output: Output) -> BuildEvent {
        BuildEvent::Output {
            build: BuildId(build),
            job: JobId::parse(job).unwrap(),
            output,
        }
    }

    /// Two crawls with nested groups and a job that only prints, 12 s into the run.
    fn a_run() -> (LiveState, Instant) {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut state = LiveState::new(6, t0);
        state.apply(&started(1, "fetch"), at(0));
        state.apply(
            &BuildEvent::Finished {
                build: BuildId(1),
                job: JobId::parse("fetch").unwrap(),
                attempt: 1,
                outcome: Outcome::Successful { retval: None },
                took: Duration::from_secs(2),
            },
            at(2),
        );
        state.apply(&started(2, "crawl_example_com"), at(2));
        state.apply(
            &out(
                2,
                "crawl_example_com",
                progress(&["pages"], 0, Some(100), None),
            ),
            at(2),
        );
        state.apply(
            &out(
                2,
                "crawl_example_com",
                progress(&["images"], 0, Some(40), None),
            ),
            at(2),
        );
        state.apply(
            &out(
                2,
                "crawl_example_com",
                progress(&["pages"], 45, Some(100), Some("/about")),
            ),
            at(11),
        );
        state.apply(
            &out(
                2,
                "crawl_example_com",
                progress(&["images"], 40, Some(40), None),
            ),
            at(11),
        );
        state.apply(&started(3, "import"), at(4));
        state.apply(
            &out(3, "import", progress(&["db", "users"], 300, None, None)),
            at(4),
        );
        state.apply(
            &out(3, "import", progress(&["db", "orders"], 10, Some(50), None)),
            at(4),
        );
        state.apply(
            &out(
                3,
                "import",
                progress(&["db", "users"], 1500, None, Some("batch 15")),
            ),
            at(12),
        );
        state.apply(&started(4, "report"), at(10));
        state.apply(
            &out(
                4,
                "report",
                Output::Line {
                    stream: crate::store::Stream::Stdout,
                    text: "writing summary.csv".into(),
                },
            ),
            at(11),
        );
        (state, at(12))
    }

    #[test]
    fn a_run_as_drawn() {
        let (state, now) = a_run();
        insta::assert_snapshot!(render(&state, now, 100, 20).join("\n"));
    }

    #[test]
    fn a_narrow_short_terminal_keeps_lines_within_bounds() {
        let (state, now) = a_run();
        let frame = render(&state, now, 60, 6);
        assert!(frame.len() <= 6, "{frame:#?}");
        assert!(frame.iter().all(|l| l.chars().count() <= 60), "{frame:#?}");
        insta::assert_snapshot!(frame.join("\n"));
    }

    #[test]
    fn finishing_and_cancelling_show_in_the_head() {
        let (mut state, now) = a_run();
        state.apply(
            &BuildEvent::Finished {
                build: BuildId(3),
                job: JobId::parse("import").unwrap(),
                attempt: 1,
                outcome: Outcome::Failed {
                    exit_code: Some(1),
                    signal: None,
                    timed_out: false,
                    reason: crate::vocab::Reason::Exit { code: 1 },
                    stderr_tail: None,
                },
                took: Duration::from_secs(8),
            },
            now,
        );
        state.apply(
            &BuildEvent::Cancelling {
                how: crate::exec::process::Cancel::Term,
            },
            now,
        );
        let head = &render(&state, now, 100, 20)[0];
        assert_eq!(
            head,
            "2/6 done, 2 running, 1 failed  12.0s  cancelling (Ctrl-C again: kill)"
        );
    }

    #[test]
    fn builds_no_worker_could_take_show_in_the_head_until_one_can() {
        let (mut state, now) = a_run();
        let why = "no worker is running: start one with `jobctl worker`";
        state.apply(
            &BuildEvent::Unclaimed {
                why: Some(why.into()),
            },
            now,
        );
        assert_eq!(
            render(&state, now, 120, 20)[0],
            format!("1/6 done, 3 running  12.0s  queued: {why}")
        );
        state.apply(&BuildEvent::Unclaimed { why: None }, now);
        assert_eq!(
            render(&state, now, 120, 20)[0],
            "1/6 done, 3 running  12.0s"
        );
    }

    #[test]
    fn a_tick_draws_only_what_changed() {
        let mut live = Live::new(Vec::new(), 3, || (80, 24));
        live.tick();
        let first = live.out.len();
        assert!(first > 0, "the first tick draws");
        // Within the same tenth of a second nothing on screen moves: nothing is written.
        live.tick();
        assert_eq!(live.out.len(), first);
        live.event(&started(1, "crawl"));
        live.tick();
        assert!(live.out.len() > first, "a new build is drawn");
    }
}
