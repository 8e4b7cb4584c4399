//! Drawing: a pure function of the [`App`] (its snapshot, its views and the time it was
//! given) onto a ratatui frame. Nothing here reads the database or the clock.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::app::{App, BuildView, GraphView, Input, JobView, Section, Sort, View};
use super::data::{BuildDetail, Snapshot, State};
use crate::store::progress::ProgressNode;
use crate::vocab::{BuildStatus, LogLevel};

pub fn draw(app: &App, frame: &mut Frame) {
    let bar = u16::from(app.config_error.is_some());
    let [header, body, error, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(bar),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_line(app)), header);
    frame.render_widget(Paragraph::new(footer_line(app)), footer);
    if let Some(problem) = &app.config_error {
        let text = format!(" {problem}");
        frame.render_widget(
            Paragraph::new(clip(&text, error.width as usize))
                .style(Style::new().fg(Color::White).bg(Color::Red)),
            error,
        );
    }
    let body = match &app.snapshot {
        Snapshot::NoDatabase { message } => {
            let [note, rest] =
                Layout::vertical([Constraint::Length(5), Constraint::Min(0)]).areas(body);
            frame.render_widget(
                Paragraph::new(message.as_str())
                    .wrap(Wrap { trim: true })
                    .style(Style::new().fg(Color::Yellow))
                    .block(Block::bordered().title(" Database ")),
                note,
            );
            rest
        }
        Snapshot::Ready(_) => body,
    };
    match app.view() {
        View::Jobs => jobs_view(app, frame, body),
        View::Job(v) => job_view(app, v, frame, body),
        View::Build(v) => build_view(app, v, frame, body),
        View::Graph(v) => graph_view(app, v, frame, body),
        View::Workers => workers_view(app, frame, body),
    }
    if app.help {
        help(frame, body);
    }
}

fn state_style(state: State) -> Style {
    let color = match state {
        State::NotBuilt => Color::DarkGray,
        State::Queued => Color::Blue,
        State::Running => Color::Yellow,
        State::Success => Color::Green,
        State::Failed => Color::Red,
        State::Outdated => Color::Magenta,
    };
    Style::new().fg(color)
}

fn build_style(status: BuildStatus) -> Style {
    let color = match status {
        BuildStatus::Created => Color::Blue,
        BuildStatus::Running => Color::Yellow,
        BuildStatus::Successful => Color::Green,
        BuildStatus::Failed => Color::Red,
        BuildStatus::Skipped => Color::Cyan,
        BuildStatus::Cancelled => Color::DarkGray,
    };
    Style::new().fg(color)
}

fn build_symbol(status: BuildStatus) -> &'static str {
    match status {
        BuildStatus::Created => "…",
        BuildStatus::Running => "▶",
        BuildStatus::Successful => "✓",
        BuildStatus::Failed => "✗",
        BuildStatus::Skipped => "-",
        BuildStatus::Cancelled => "⊘",
    }
}

const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
const DIM: Style = Style::new().fg(Color::DarkGray);
const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);

fn header_line(app: &App) -> Line<'static> {
    let mut spans = vec![
        Span::styled(" jobctl ", BOLD),
        Span::raw(format!("{} · {}", app.config.path.display(), app.database)),
    ];
    if let Some(loaded) = app.loaded() {
        let mut counts = [0usize; 6];
        for row in &loaded.jobs {
            counts[State::ALL.iter().position(|s| *s == row.state).unwrap_or(0)] += 1;
        }
        spans.push(Span::raw(format!("  {} jobs", app.config.jobs.len())));
        for (state, n) in State::ALL.iter().zip(counts) {
            if n > 0 {
                spans.push(Span::styled(
                    format!(" {}{n}", state.symbol()),
                    state_style(*state),
                ));
            }
        }
    }
    Line::from(spans)
}

fn footer_line(app: &App) -> Line<'static> {
    match &app.input {
        Some(Input::Filter) => {
            return Line::from(format!(
                " filter: {}▏ (enter keeps, esc clears)",
                app.filter
            ));
        }
        Some(Input::Search) => {
            let text = match app.view() {
                View::Build(v) => v.search.clone(),
                _ => String::new(),
            };
            return Line::from(format!(" search: {text}▏ (enter finds, esc clears)"));
        }
        None => {}
    }
    if let Some(message) = &app.message {
        let style = if app.armed.is_some() {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Cyan)
        };
        return Line::from(Span::styled(format!(" {message}"), style));
    }
    let keys = match app.view() {
        View::Jobs => "?:help /:filter s:status o:sort ⏎:open g:graph b:build c:cancel q:quit",
        View::Job(_) => "?:help tab:section ⏎:open g:graph b:build a:arm c:cancel esc:back",
        View::Build(_) => "?:help ↑↓:scroll f:follow l:level /:search n:next c:cancel esc:back",
        View::Graph(_) => "?:help ←→↑↓:move ⏎:centre i:details b:build esc:back",
        View::Workers => "?:help esc:back q:quit",
    };
    Line::from(Span::styled(format!(" {keys}"), DIM))
}

/// The workers (`jobctl workers`): one line each, a lost one (silent past its lease)
/// in red.
fn workers_view(app: &App, frame: &mut Frame, area: Rect) {
    let workers = app
        .loaded()
        .and_then(|l| l.workers.as_deref())
        .unwrap_or(&[]);
    let block = Block::bordered().title(format!(" Workers ({}) ", workers.len()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let mut lines = vec![Line::from(Span::styled(
        clip(
            &format!(
                " {:20} {:16} {:9} {:>7}  {:13} {}",
                "NAME", "HOST", "STATE", "RUNNING", "LABELS", "HEARTBEAT"
            ),
            width,
        ),
        BOLD,
    ))];
    if workers.is_empty() {
        lines.push(Line::from(Span::styled(
            " no workers: `jobctl worker` on any machine that reaches the database runs \
             what `jobctl build --queue` leaves",
            DIM,
        )));
    }
    for w in workers {
        let state = w.state(app.now);
        let style = match state {
            "lost" => Style::new().fg(Color::Red),
            "draining" => Style::new().fg(Color::Yellow),
            _ => Style::new(),
        };
        let labels = if w.labels.is_empty() {
            "-".to_owned()
        } else {
            w.labels.join(",")
        };
        let text = format!(
            " {} {} {state:9} {:>7}  {} {}",
            pad(&w.name, 20),
            pad(&w.host, 16),
            format!("{}/{}", w.running, w.slots),
            pad(&labels, 13),
            ago(app.now, w.heartbeat_at),
        );
        lines.push(Line::from(Span::styled(clip(&text, width), style)));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// `3s ago`, `4m ago`, `2h ago`, `5d ago`.
fn ago(now: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let s = (now - at).num_seconds().max(0);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn took(d: chrono::Duration) -> String {
    super::super::live::elapsed(d.to_std().unwrap_or_default())
}

fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

/// At most `width` characters on one line.
fn clip(text: &str, width: usize) -> String {
    super::super::live::clip(text, width)
}

fn pad(text: &str, width: usize) -> String {
    format!("{:width$}", clip(text, width))
}

/// The first line to show so that `selected` is within `height` lines.
fn offset(selected: usize, height: usize) -> usize {
    if height == 0 {
        return 0;
    }
    (selected + 1).saturating_sub(height)
}

fn jobs_view(app: &App, frame: &mut Frame, area: Rect) {
    let title = format!(
        " Jobs ({} of {}, {} order{}{}) ",
        app.visible.len(),
        app.config.jobs.len(),
        match app.sort {
            Sort::Graph => "graph",
            Sort::Recent => "recent",
        },
        match app.state_filter {
            Some(s) => format!(", {}", s.word()),
            None => String::new(),
        },
        if app.filter.is_empty() {
            String::new()
        } else {
            format!(", /{}", app.filter)
        },
    );
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width as usize;
    let id_width = 22.min(width / 3).max(8);
    let title_width = width.saturating_sub(id_width + 2 + 10 + 10 + 8 + 16 + 5);
    let head = format!(
        "  {} {:10} {:10} {:>8}  {}",
        pad("JOB", id_width),
        "STATUS",
        "LAST",
        "TOOK",
        if title_width >= 10 {
            format!("{:16} {}", "PROGRESS", "TITLE")
        } else {
            "PROGRESS".to_owned()
        },
    );
    let mut lines = vec![Line::from(Span::styled(clip(&head, width), BOLD))];
    let height = (inner.height as usize).saturating_sub(1);
    let at = app
        .selected
        .and_then(|s| app.visible.iter().position(|&j| j == s))
        .unwrap_or(0);
    let rows = app.loaded().map(|l| &l.jobs);
    for &job in app.visible.iter().skip(offset(at, height)).take(height) {
        let row = rows.and_then(|r| r.get(job));
        let state = row.map_or(State::NotBuilt, |r| r.state);
        let (last, duration) = match row {
            Some(r) if r.running.is_some() => {
                let (_, start, _) = r.running.expect("checked");
                (
                    "now".to_owned(),
                    start.map(|s| took(app.now - s)).unwrap_or_default(),
                )
            }
            Some(r) => match r.last {
                Some((_, start, end)) => (
                    ago(app.now, end),
                    start.map(|s| took(end - s)).unwrap_or_default(),
                ),
                None => (String::new(), String::new()),
            },
            None => (String::new(), String::new()),
        };
        let progress = match row.and_then(|r| r.running) {
            _ if row.is_some_and(|r| r.runner_gone) => "runner gone".to_owned(),
            Some((_, _, Some(f))) => format!("{} {:>3.0}%", bar(f, 10), f * 100.0),
            Some((_, _, None)) => "running".to_owned(),
            None => String::new(),
        };
        let word = if app.armed == Some(job) {
            Span::styled(
                format!("{:10} ", "ARMED"),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        } else {
            Span::styled(format!("{:10} ", state.word()), state_style(state))
        };
        let mut spans = vec![
            Span::styled(format!("{} ", state.symbol()), state_style(state)),
            Span::raw(format!(
                "{} ",
                pad(app.config.jobs[job].id.as_str(), id_width)
            )),
            word,
            Span::raw(format!("{:10} {:>8}  ", clip(&last, 10), duration)),
            Span::styled(format!("{progress:16}"), state_style(state)),
        ];
        if title_width >= 10
            && let Some(title) = &app.config.jobs[job].title
        {
            spans.push(Span::styled(format!(" {}", clip(title, title_width)), DIM));
        }
        let mut line = Line::from(spans);
        if app.selected == Some(job) {
            line = line.patch_style(SELECTED);
        }
        lines.push(line);
    }
    if app.visible.is_empty() {
        lines.push(Line::from(Span::styled("  no job matches", DIM)));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn section_block(title: String, focused: bool) -> Block<'static> {
    if focused {
        Block::bordered()
            .title(format!(" » {} ", title.trim()))
            .border_style(Style::new().fg(Color::Cyan))
    } else {
        Block::bordered().title(title)
    }
}

fn job_list(
    app: &App,
    jobs: &[usize],
    selected: usize,
    focused: bool,
    height: usize,
) -> Vec<Line<'static>> {
    if jobs.is_empty() {
        return vec![Line::from(Span::styled("none", DIM))];
    }
    jobs.iter()
        .enumerate()
        .skip(offset(selected, height))
        .take(height)
        .map(|(i, &job)| {
            let state = app.state(job);
            let line = Line::from(vec![
                Span::styled(format!("{} ", state.symbol()), state_style(state)),
                Span::raw(app.config.jobs[job].id.to_string()),
                Span::styled(format!("  {}", state.word()), state_style(state)),
            ]);
            if focused && i == selected {
                line.patch_style(SELECTED)
            } else {
                line
            }
        })
        .collect()
}

fn job_view(app: &App, v: &JobView, frame: &mut Frame, area: Rect) {
    let job = &app.config.jobs[v.job];
    let state = app.state(v.job);
    let row = app.loaded().and_then(|l| l.jobs.get(v.job));
    let [deps, dependants] = app.neighbours(v.job);
    let notes: Vec<&str> = job
        .notes
        .as_deref()
        .map(|n| n.lines().collect())
        .unwrap_or_default();
    let notes_height = notes.len().min(3) as u16;
    let list_height = (deps.len().max(dependants.len()).clamp(1, 8) + 2) as u16;
    let [info, lists, rest] = Layout::vertical([
        Constraint::Length(4 + notes_height),
        Constraint::Length(list_height),
        Constraint::Min(0),
    ])
    .areas(area);

    let mut status = vec![Span::styled(
        format!("{} {}", state.symbol(), state.word()),
        state_style(state),
    )];
    if let Some(because) = row.and_then(|r| r.outdated.as_ref()) {
        status.push(Span::raw(format!(" ({because})")));
    }
    if job.protect {
        status.push(Span::styled("  protected", Style::new().fg(Color::Red)));
    }
    if app.armed == Some(v.job) {
        status.push(Span::styled(
            " ARMED",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    let action = match &job.action {
        crate::config::Action::Run(run) => format!("run: {}", run.lines().next().unwrap_or("")),
        crate::config::Action::Function(name) => format!("function: {name}"),
    };
    let mut text = vec![Line::from(status), Line::from(Span::styled(action, DIM))];
    text.extend(notes.iter().take(3).map(|n| Line::from(n.to_string())));
    let title = match &job.title {
        Some(t) => format!(" {} — {t} ", job.id),
        None => format!(" {} ", job.id),
    };
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(title)),
        info,
    );

    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(lists);
    let inner_height = list_height.saturating_sub(2) as usize;
    for (area, title, jobs, slot, section) in [
        (left, "Dependencies", &deps, 0, Section::Dependencies),
        (right, "Dependants", &dependants, 1, Section::Dependants),
    ] {
        let focused = v.section == section;
        let lines = job_list(app, jobs, v.selected[slot], focused, inner_height);
        frame.render_widget(
            Paragraph::new(lines).block(section_block(
                format!(" {title} ({}) ", jobs.len()),
                focused,
            )),
            area,
        );
    }

    let [builds_area, config_area] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(rest);
    let builds = app
        .loaded()
        .and_then(|l| l.job_builds.as_ref())
        .filter(|(j, _)| *j == v.job)
        .map(|(_, b)| b.as_slice())
        .unwrap_or_default();
    let focused = v.section == Section::Builds;
    let height = builds_area.height.saturating_sub(2) as usize;
    let mut lines: Vec<Line> = builds
        .iter()
        .enumerate()
        .skip(offset(v.selected[2], height))
        .take(height)
        .map(|(i, b)| {
            let when = b.started_at.unwrap_or(b.created_at);
            let line = Line::from(vec![
                Span::raw(format!("#{:<6} ", b.id.0)),
                Span::styled(
                    format!("{} {:10} ", build_symbol(b.status), b.status.as_str()),
                    build_style(b.status),
                ),
                Span::raw(format!(
                    "{}  {:>8}  attempt {}",
                    when.format("%Y-%m-%d %H:%M:%S"),
                    b.duration(app.now).map(took).unwrap_or_default(),
                    b.attempt
                )),
            ]);
            if focused && i == v.selected[2] {
                line.patch_style(SELECTED)
            } else {
                line
            }
        })
        .collect();
    if builds.is_empty() {
        lines.push(Line::from(Span::styled("not built yet", DIM)));
    }
    frame.render_widget(
        Paragraph::new(lines).block(section_block(
            format!(" Builds ({}) ", builds.len()),
            focused,
        )),
        builds_area,
    );

    let value = app
        .config
        .mask_json(serde_json::to_value(job).unwrap_or_default());
    let yaml = serde_saphyr::to_string(&value).unwrap_or_else(|e| e.to_string());
    frame.render_widget(
        Paragraph::new(yaml)
            .scroll((v.config_scroll.min(u16::MAX as usize) as u16, 0))
            .block(section_block(
                " Config ".to_owned(),
                v.section == Section::Config,
            )),
        config_area,
    );
}

fn progress_lines(node: &ProgressNode, depth: usize, width: usize, out: &mut Vec<Line<'static>>) {
    for child in &node.children {
        let label = format!("{}{}", "  ".repeat(depth), child.name);
        out.push(progress_line(&label, child, width));
        progress_lines(child, depth + 1, width, out);
    }
}

fn progress_line(label: &str, node: &ProgressNode, width: usize) -> Line<'static> {
    let label_width = (width / 3).clamp(10, 30);
    let mut text = format!("{} ", pad(label, label_width));
    match node.fraction() {
        Some(f) => text.push_str(&format!("[{}] {:>3.0}% ", bar(f, 12), f * 100.0)),
        None => text.push_str(&format!("[{}]      ", "·".repeat(12))),
    }
    match node.total {
        Some(total) => text.push_str(&format!("{}/{total}", node.current)),
        None => text.push_str(&node.current.to_string()),
    }
    if let Some(status) = &node.status {
        text.push_str(&format!("  {status}"));
    }
    Line::from(clip(&text, width))
}

fn level_style(level: LogLevel) -> Style {
    match level {
        LogLevel::Debug => DIM,
        LogLevel::Info => Style::new(),
        LogLevel::Warning => Style::new().fg(Color::Yellow),
        LogLevel::Error | LogLevel::Critical => Style::new().fg(Color::Red),
    }
}

fn build_view(app: &App, v: &BuildView, frame: &mut Frame, area: Rect) {
    let Some(detail) = app
        .loaded()
        .and_then(|l| l.build.as_ref())
        .filter(|b| b.build.id == v.id)
    else {
        frame.render_widget(
            Paragraph::new(format!("build #{} is not in the database", v.id))
                .block(Block::bordered().title(format!(" Build #{} ", v.id))),
            area,
        );
        return;
    };
    let b = &detail.build;
    let width = area.width.saturating_sub(2) as usize;

    let mut info = vec![Line::from(vec![
        Span::styled(
            format!("{} {}", build_symbol(b.status), b.status.as_str()),
            build_style(b.status).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  attempt {}  {}{}",
            b.attempt,
            match b.started_at {
                Some(s) => format!("started {}", s.format("%Y-%m-%d %H:%M:%S")),
                None => format!("created {}", b.created_at.format("%Y-%m-%d %H:%M:%S")),
            },
            b.duration(app.now)
                .map(|d| format!("  took {}", took(d)))
                .unwrap_or_default()
        )),
    ])];
    let mut who = Vec::new();
    if let Some(host) = &b.host {
        who.push(format!("on {host}"));
    }
    if let Some(pid) = b.pid {
        let gone = app
            .loaded()
            .and_then(|l| {
                l.jobs
                    .iter()
                    .find(|r| r.running.is_some_and(|(id, _, _)| id == b.id))
            })
            .is_some_and(|r| r.runner_gone);
        who.push(if gone {
            format!("jobctl pid {pid} (gone: the next jobctl build here closes it)")
        } else {
            format!("jobctl pid {pid}")
        });
    }
    if let Some(worker) = &b.worker {
        who.push(format!("worker {worker}"));
    }
    if !detail.pins.is_empty() {
        let pins: Vec<String> = detail
            .pins
            .iter()
            .map(|p| match p.build_id {
                Some(id) => format!("{}#{id}", p.job_id),
                None => format!("{} (none)", p.job_id),
            })
            .collect();
        who.push(format!("uses {}", pins.join(", ")));
    }
    info.push(Line::from(Span::styled(clip(&who.join("  "), width), DIM)));

    // What it ended with: the return value, or the error and stderr's last lines.
    let mut result: Vec<Line> = Vec::new();
    if let Some(retval) = &b.retval {
        let text = serde_json::to_string(&app.config.mask_json(retval.clone())).unwrap_or_default();
        result.push(Line::from(vec![
            Span::styled("retval ", BOLD),
            Span::raw(clip(&text, width.saturating_sub(7))),
        ]));
    }
    if let Some(error) = &b.error {
        let mut why = error.clone();
        // "exit status 2" says it already; "runner died" does not.
        if let Some(code) = b.exit_code.filter(|c| !error.contains(&c.to_string())) {
            why.push_str(&format!(" (exit code {code})"));
        }
        if let Some(signal) = b.signal.filter(|s| !error.contains(&s.to_string())) {
            why.push_str(&format!(" (signal {signal})"));
        }
        if b.timed_out {
            why.push_str(" (timed out)");
        }
        let style = if b.status == BuildStatus::Failed {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        };
        result.push(Line::from(Span::styled(clip(&why, width), style)));
    }
    if let Some(tail) = &b.stderr_tail {
        let lines: Vec<&str> = tail.lines().collect();
        for line in &lines[lines.len().saturating_sub(4)..] {
            result.push(Line::from(Span::styled(
                format!("│ {}", clip(line, width.saturating_sub(2))),
                DIM,
            )));
        }
    }

    let mut progress = Vec::new();
    if detail.progress.reported || !detail.progress.children.is_empty() {
        progress.push(progress_line("(all)", &detail.progress, width));
        progress_lines(&detail.progress, 1, width, &mut progress);
    }

    let progress_height = if progress.is_empty() {
        0
    } else {
        (progress.len() as u16 + 2).min(area.height / 3)
    };
    let result_height = if result.is_empty() {
        0
    } else {
        result.len() as u16 + 2
    };
    let [info_area, progress_area, result_area, log_area] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(progress_height),
        Constraint::Length(result_height),
        Constraint::Min(3),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(info)
            .block(Block::bordered().title(format!(" Build #{} of {} ", b.id, b.job_id))),
        info_area,
    );
    if progress_height > 0 {
        frame.render_widget(
            Paragraph::new(progress).block(Block::bordered().title(" Progress ")),
            progress_area,
        );
    }
    if result_height > 0 {
        frame.render_widget(
            Paragraph::new(result).block(Block::bordered().title(" Result ")),
            result_area,
        );
    }
    log_pane(app, v, detail, frame, log_area);
}

fn log_pane(app: &App, v: &BuildView, detail: &BuildDetail, frame: &mut Frame, area: Rect) {
    let lines = app.log_lines(v);
    let height = area.height.saturating_sub(2) as usize;
    let width = area.width.saturating_sub(2) as usize;
    let last = v.log_at.unwrap_or(lines.len().saturating_sub(1));
    let first = (last + 1).saturating_sub(height);
    let needle = v.search.to_lowercase();
    let shown: Vec<Line> = lines
        .iter()
        .skip(first)
        .take(height)
        .enumerate()
        .map(|(i, &at)| {
            let log = &detail.logs[at];
            let stream = match log.stream {
                crate::store::Stream::Stdout => " ",
                crate::store::Stream::Stderr => "!",
                crate::store::Stream::Channel => "»",
            };
            let text = format!(
                "{} {:<7} {stream} {}",
                log.at.format("%H:%M:%S"),
                log.level.as_str(),
                app.config.mask(&log.message)
            );
            let mut line = Line::from(Span::styled(clip(&text, width), level_style(log.level)));
            if !needle.is_empty() && log.message.to_lowercase().contains(&needle) {
                line = line.patch_style(Style::new().bg(Color::Blue).fg(Color::White));
            }
            if v.log_at.is_some() && first + i == last {
                line = line.patch_style(SELECTED);
            }
            line
        })
        .collect();
    let mut title = format!(
        " Log ({} line{}{}{}) ",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
        match v.level {
            Some(l) => format!(", {l} and above"),
            None => String::new(),
        },
        if detail.logs_cut {
            ", older lines not loaded"
        } else {
            ""
        },
    );
    // A finished build's log has nothing more to follow.
    let finished = detail.build.status.is_finished();
    title.push_str(match (v.log_at.is_none(), finished) {
        (true, false) => "following ",
        (true, true) => "the end ",
        (false, false) => "scrolled: f follows ",
        (false, true) => "scrolled: f goes to the end ",
    });
    let body = if shown.is_empty() {
        Text::from(Span::styled("no log lines", DIM))
    } else {
        Text::from(shown)
    };
    frame.render_widget(
        Paragraph::new(body).block(Block::bordered().title(title)),
        area,
    );
}

fn graph_view(app: &App, v: &GraphView, frame: &mut Frame, area: Rect) {
    let columns = app.graph_columns(v.center);
    let selected = columns.selected(v);
    let neighbours: Vec<usize> = selected
        .map(|s| {
            let [mut deps, dependants] = app.neighbours(s);
            deps.extend(dependants);
            deps
        })
        .unwrap_or_default();
    let block = Block::bordered().title(format!(
        " Graph around {} ({} upstream, {} downstream) ",
        app.config.jobs[v.center].id,
        columns.upstream.iter().map(Vec::len).sum::<usize>(),
        columns.downstream.iter().map(Vec::len).sum::<usize>(),
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);

    // As many levels as fit at 18 columns or more, centred on the selected one.
    let min = -(columns.upstream.len() as i32);
    let max = columns.downstream.len() as i32;
    let fit = ((inner.width / 18).max(1) as i32).min(max - min + 1);
    let mut from = (v.column - fit / 2).max(min);
    if from + fit - 1 > max {
        from = (max - fit + 1).max(min);
    }
    let shown: Vec<i32> = (from..from + fit).collect();
    let areas = Layout::horizontal(shown.iter().map(|_| Constraint::Fill(1))).split(inner);
    for (&column, &col_area) in shown.iter().zip(areas.iter()) {
        let jobs = columns.get(column).unwrap_or_default();
        let title = match column {
            0 => "job".to_owned(),
            c if c < 0 => format!("upstream {}", -c),
            c => format!("downstream {c}"),
        };
        let mut title = format!("{title} ({})", jobs.len());
        if column == from && from > min {
            title = format!("« {title}");
        }
        if column == from + fit - 1 && column < max {
            title.push_str(" »");
        }
        let width = col_area.width.saturating_sub(1) as usize;
        let mut lines = vec![Line::from(Span::styled(clip(&title, width), BOLD))];
        let height = (col_area.height as usize).saturating_sub(1);
        // A long column keeps its last line to say where the window is.
        let rows = if jobs.len() > height {
            height.saturating_sub(1)
        } else {
            height
        };
        let at = if column == v.column { v.line } else { 0 };
        let skip = offset(at, rows);
        for (i, &job) in jobs.iter().enumerate().skip(skip).take(rows) {
            let state = app.state(job);
            let mark = if neighbours.contains(&job) {
                "›"
            } else {
                " "
            };
            let mut line = Line::from(vec![
                Span::raw(mark),
                Span::styled(format!("{} ", state.symbol()), state_style(state)),
                Span::styled(
                    clip(app.config.jobs[job].id.as_str(), width.saturating_sub(3)),
                    state_style(state),
                ),
            ]);
            if job == v.center {
                line = line.patch_style(BOLD);
            }
            if column == v.column && i == v.line {
                line = line.patch_style(SELECTED);
            }
            lines.push(line);
        }
        if jobs.len() > rows {
            let below = jobs.len().saturating_sub(skip + rows);
            let text = format!(
                "{}{}–{} of {}{}",
                if skip > 0 { "↑ " } else { "  " },
                skip + 1,
                skip + rows,
                jobs.len(),
                if below > 0 { " ↓" } else { "" }
            );
            lines.push(Line::from(Span::styled(clip(&text, width), DIM)));
        }
        frame.render_widget(Paragraph::new(lines), col_area);
    }
}

fn help(frame: &mut Frame, area: Rect) {
    const EVERYWHERE: &[(&str, &str)] = &[
        ("everywhere", ""),
        ("?", "this help"),
        ("q ctrl-c", "quit"),
        ("esc", "back"),
        ("g", "graph around the job"),
        ("b", "build with dependencies"),
        ("B", "build it alone"),
        ("d", "build, then downstream"),
        ("a", "arm a protected job"),
        ("c", "cancel running build"),
        ("R", "rebuild failed jobs"),
        ("r", "read the config again"),
        ("w", "the workers"),
        ("jobs", ""),
        ("↑↓ pgup pgdn", "select"),
        ("/", "filter by id or title"),
        ("s", "filter by status"),
        ("o", "graph / recent order"),
        ("enter", "open the job"),
    ];
    const VIEWS: &[(&str, &str)] = &[
        ("job", ""),
        ("tab ←→", "next section"),
        ("↑↓", "select, scroll"),
        ("enter", "open what is selected"),
        ("build", ""),
        ("↑↓ pgup home", "scroll the log"),
        ("f end", "follow the log"),
        ("l", "level all/info/warn/err"),
        ("/", "search the log"),
        ("n N", "next, previous match"),
        ("graph", ""),
        ("←→↑↓", "move"),
        ("enter", "centre on the job"),
        ("i", "open the job"),
    ];
    let lines = |keys: &[(&str, &str)]| -> Vec<Line<'static>> {
        keys.iter()
            .map(|(key, what)| {
                if what.is_empty() {
                    // In the keys' column, so a heading on the right is not read as the
                    // end of a line on the left.
                    Line::from(Span::styled(format!(" {key}"), BOLD.fg(Color::Cyan)))
                } else {
                    Line::from(vec![
                        Span::styled(format!(" {key:<12} "), BOLD),
                        Span::raw(what.to_string()),
                    ])
                }
            })
            .collect()
    };
    let (left, right) = (lines(EVERYWHERE), lines(VIEWS));
    let two = area.width >= 78;
    let width = if two { 78 } else { 40.min(area.width) };
    let rows = if two {
        left.len().max(right.len())
    } else {
        left.len() + right.len()
    };
    let height = (rows as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    let block = Block::bordered().title(" Keys (any key closes) ");
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    if two {
        let [l, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(inner);
        frame.render_widget(Paragraph::new(left), l);
        frame.render_widget(Paragraph::new(right), r);
    } else {
        let mut all = left;
        all.extend(right);
        frame.render_widget(Paragraph::new(all), inner);
    }
}
