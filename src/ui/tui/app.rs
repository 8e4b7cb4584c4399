//! The dashboard's state and what keys do to it. Drawing is in `draw.rs`; reading the
//! database is in `data.rs`. A key never does I/O: it changes the state, or returns a
//! [`Command`] for the loop to carry out (start a build, cancel one, quit).

use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::data::{Loaded, Snapshot, State, Wanted};
use crate::config::Config;
use crate::graph::JobGraph;
use crate::vocab::{BuildId, LogLevel};

/// What the loop must do for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    /// `jobctl build JOB…`, with the dependencies that need it or without them, and
    /// with what its new build makes outdated downstream (`--downstream`); `yes` when a
    /// protected job among them was armed.
    Build {
        jobs: Vec<usize>,
        deps: bool,
        downstream: bool,
        yes: bool,
    },
    /// Read the config file again.
    Reload,
    /// Cancel the run that builds this build.
    Cancel {
        build: BuildId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Dependencies before what depends on them.
    Graph,
    /// Running first, then the most recently finished; never built last.
    Recent,
}

#[derive(Debug, Clone, PartialEq)]
pub enum View {
    Jobs,
    Job(JobView),
    Build(BuildView),
    Graph(GraphView),
    /// The workers that claim queued builds (`jobctl workers`).
    Workers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Dependencies,
    Dependants,
    Builds,
    Config,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub job: usize,
    pub section: Section,
    /// The selected line of the dependencies, dependants and builds lists.
    pub selected: [usize; 3],
    pub config_scroll: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BuildView {
    pub id: BuildId,
    /// The last log line shown (an index into the filtered lines); `None` follows the end.
    pub log_at: Option<usize>,
    /// Only lines of this level and above.
    pub level: Option<LogLevel>,
    pub search: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GraphView {
    pub center: usize,
    /// The selected column (by distance, negative upstream) and line in it.
    pub column: i32,
    pub line: usize,
}

/// A line being typed at the bottom: the jobs filter or a log search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Filter,
    Search,
}

pub struct App {
    /// The config as last loaded; replaced by [`App::reload`] when the file changes.
    pub config: Arc<Config>,
    pub graph: Arc<JobGraph>,
    /// Why the file as it is now could not be loaded (the config before it is in use).
    pub config_error: Option<String>,
    /// Shown in the header: where the builds are read from.
    pub database: String,
    pub snapshot: Snapshot,
    pub now: chrono::DateTime<chrono::Utc>,
    pub views: Vec<View>,
    pub filter: String,
    pub state_filter: Option<State>,
    pub sort: Sort,
    /// The selected job in the jobs pane (a job index).
    pub selected: Option<usize>,
    /// The jobs the pane lists, in order (filtered and sorted).
    pub visible: Vec<usize>,
    pub input: Option<Input>,
    pub help: bool,
    /// A protected job armed for one build.
    pub armed: Option<usize>,
    pub message: Option<String>,
    /// Each job's place in graph order.
    rank: Vec<usize>,
}

impl App {
    pub fn new(config: Arc<Config>, database: String) -> Self {
        let graph = Arc::new(config.graph());
        let rank = ranks(&graph);
        let mut app = App {
            config,
            graph,
            config_error: None,
            database,
            snapshot: Snapshot::NoDatabase {
                message: "reading the database…".to_owned(),
            },
            now: chrono::Utc::now(),
            views: vec![View::Jobs],
            filter: String::new(),
            state_filter: None,
            sort: Sort::Graph,
            selected: None,
            visible: Vec::new(),
            input: None,
            help: false,
            armed: None,
            message: None,
            rank,
        };
        app.refilter();
        app
    }

    pub fn view(&self) -> &View {
        self.views
            .last()
            .expect("the jobs view stays at the bottom")
    }

    pub fn loaded(&self) -> Option<&Loaded> {
        match &self.snapshot {
            Snapshot::Ready(loaded) => Some(loaded),
            Snapshot::NoDatabase { .. } => None,
        }
    }

    /// A job's state; not built while there is no database.
    pub fn state(&self, job: usize) -> State {
        self.loaded()
            .and_then(|l| l.jobs.get(job))
            .map_or(State::NotBuilt, |r| r.state)
    }

    /// What the next read must bring besides the jobs.
    pub fn wanted(&self) -> Wanted {
        match self.view() {
            View::Job(v) => Wanted {
                job: Some(v.job),
                ..Wanted::default()
            },
            View::Build(v) => Wanted {
                build: Some(v.id),
                ..Wanted::default()
            },
            View::Workers => Wanted {
                workers: true,
                ..Wanted::default()
            },
            View::Jobs | View::Graph(_) => Wanted::default(),
        }
    }

    /// Takes a new snapshot; the selection stays on the same job.
    pub fn update(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
        self.refilter();
    }

    /// Takes the config read again from its file. What is selected and open stays on
    /// the same jobs, by id; a view of a job that is gone is closed. The snapshot read
    /// for the old jobs is dropped: the loop reads the store again.
    pub fn reload(&mut self, config: Arc<Config>) {
        let old = std::mem::replace(&mut self.config, config);
        self.graph = Arc::new(self.config.graph());
        self.rank = ranks(&self.graph);
        self.config_error = None;
        let new = &self.config;
        let map = |job: usize| new.job_index(old.jobs.get(job)?.id.as_str());
        self.selected = self.selected.and_then(map);
        self.armed = self.armed.and_then(map);
        let mut views = Vec::with_capacity(self.views.len());
        for view in self.views.drain(..) {
            let kept = match view {
                View::Job(mut v) => map(v.job).map(|job| {
                    v.job = job;
                    View::Job(v)
                }),
                View::Graph(mut v) => map(v.center).map(|center| {
                    v.center = center;
                    View::Graph(v)
                }),
                other => Some(other),
            };
            match kept {
                Some(view) => views.push(view),
                // What was opened from a job that is gone goes with it.
                None => break,
            }
        }
        self.views = views;
        let before = old.jobs.len();
        let now = self.config.jobs.len();
        self.message = Some(match now.cmp(&before) {
            std::cmp::Ordering::Equal => format!("config reloaded: {now} jobs"),
            _ => format!("config reloaded: {now} jobs (was {before})"),
        });
        self.snapshot = match std::mem::replace(
            &mut self.snapshot,
            Snapshot::NoDatabase {
                message: String::new(),
            },
        ) {
            Snapshot::NoDatabase { message } => Snapshot::NoDatabase { message },
            Snapshot::Ready(_) => Snapshot::NoDatabase {
                message: "reading the database…".to_owned(),
            },
        };
        self.refilter();
    }

    /// Recomputes the jobs the pane lists.
    pub fn refilter(&mut self) {
        let needle = self.filter.to_lowercase();
        let mut visible: Vec<usize> = (0..self.config.jobs.len())
            .filter(|&i| self.state_filter.is_none_or(|s| self.state(i) == s))
            .filter(|&i| {
                needle.is_empty() || {
                    let job = &self.config.jobs[i];
                    job.id.as_str().to_lowercase().contains(&needle)
                        || job
                            .title
                            .as_deref()
                            .is_some_and(|t| t.to_lowercase().contains(&needle))
                }
            })
            .collect();
        match self.sort {
            Sort::Graph => visible.sort_by_key(|&i| self.rank[i]),
            Sort::Recent => {
                let rows = self.loaded().map(|l| &l.jobs);
                visible.sort_by_key(|&i| {
                    let row = rows.and_then(|r| r.get(i));
                    let running = row.is_some_and(|r| r.running.is_some());
                    let activity = row.and_then(|r| r.activity());
                    (
                        !running,
                        std::cmp::Reverse(activity.is_some()),
                        std::cmp::Reverse(activity),
                        self.rank[i],
                    )
                });
            }
        }
        self.visible = visible;
        if self.selected.is_none_or(|s| !self.visible.contains(&s)) {
            self.selected = self.visible.first().copied();
        }
    }

    /// The job the keys act on: the open job, the graph's selected one, the pane's.
    pub fn current_job(&self) -> Option<usize> {
        match self.view() {
            View::Jobs => self.selected,
            View::Job(v) => Some(v.job),
            View::Graph(v) => self.graph_columns(v.center).selected(v).or(Some(v.center)),
            View::Build(v) => self
                .loaded()
                .and_then(|l| l.build.as_ref())
                .filter(|b| b.build.id == v.id)
                .and_then(|b| self.config.job_index(&b.build.job_id)),
            View::Workers => None,
        }
    }

    /// Handles one key; returns what the loop must do, if anything.
    pub fn key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind != KeyEventKind::Press {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Command::Quit);
        }
        if key.modifiers.contains(KeyModifiers::ALT) && matches!(key.code, KeyCode::Char(_)) {
            // A terminal sends Alt+x as ESC x, so an Esc followed quickly by a key (a fast
            // typist, a loaded machine, a script) is read as one Alt key. The dashboard
            // binds no Alt keys: take it as the two keys it was.
            let esc = self.key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
            if esc.is_some() {
                return esc;
            }
            return self.key(KeyEvent::new(key.code, key.modifiers - KeyModifiers::ALT));
        }
        if let Some(input) = self.input.clone() {
            self.type_key(input, key);
            return None;
        }
        if self.help {
            // Any key closes the help; `q` still quits.
            self.help = false;
            return (key.code == KeyCode::Char('q')).then_some(Command::Quit);
        }
        self.message = None;
        let job_before = self.current_job();
        let command = self.view_key(key);
        if self.current_job() != job_before && self.armed.is_some() {
            self.armed = None;
        }
        command
    }

    fn type_key(&mut self, input: Input, key: KeyEvent) {
        let text = match input {
            Input::Filter => &mut self.filter,
            Input::Search => match self.views.last_mut() {
                Some(View::Build(v)) => &mut v.search,
                _ => {
                    self.input = None;
                    return;
                }
            },
        };
        match key.code {
            KeyCode::Enter => self.input = None,
            KeyCode::Esc => {
                text.clear();
                self.input = None;
            }
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Char(c) => text.push(c),
            _ => {}
        }
        match input {
            Input::Filter => self.refilter(),
            Input::Search => {
                if key.code == KeyCode::Enter {
                    self.jump_to_match(true);
                }
            }
        }
    }

    fn view_key(&mut self, key: KeyEvent) -> Option<Command> {
        match key.code {
            KeyCode::Char('q') => return Some(Command::Quit),
            KeyCode::Char('?') => {
                self.help = true;
                return None;
            }
            KeyCode::Esc | KeyCode::Backspace if self.views.len() > 1 => {
                self.views.pop();
                return None;
            }
            KeyCode::Char('g') => {
                if let Some(job) = self.current_job() {
                    self.views.push(View::Graph(GraphView {
                        center: job,
                        column: 0,
                        line: 0,
                    }));
                }
                return None;
            }
            KeyCode::Char('b') => return self.build(false),
            KeyCode::Char('B') => return self.build(true),
            KeyCode::Char('d') => {
                let job = self.current_job()?;
                return self.start(vec![job], true, true);
            }
            KeyCode::Char('w') => {
                if self.view() != &View::Workers {
                    self.views.push(View::Workers);
                }
                return None;
            }
            KeyCode::Char('r') => {
                self.message = Some("reading the config again…".to_owned());
                return Some(Command::Reload);
            }
            KeyCode::Char('a') => {
                self.arm();
                return None;
            }
            KeyCode::Char('c') => return self.cancel(),
            KeyCode::Char('R') => return self.rebuild_failed(),
            _ => {}
        }
        let view = self.views.pop().expect("a view");
        let base = self.views.len();
        let view = match view {
            View::Jobs => {
                self.jobs_key(key);
                View::Jobs
            }
            View::Job(v) => self.job_key(v, key),
            View::Build(v) => self.build_key(v, key),
            View::Graph(v) => self.graph_key(v, key),
            View::Workers => View::Workers,
        };
        // A key may have opened a view on top of this one.
        let pushed = self.views.split_off(base);
        self.views.push(view);
        self.views.extend(pushed);
        None
    }

    fn jobs_key(&mut self, key: KeyEvent) {
        let at = self
            .selected
            .and_then(|s| self.visible.iter().position(|&j| j == s));
        let last = self.visible.len().saturating_sub(1);
        let moved = |to: usize| Some(to.min(last));
        let to = match key.code {
            KeyCode::Down | KeyCode::Char('j') => at.map_or(Some(0), |a| moved(a + 1)),
            KeyCode::Up | KeyCode::Char('k') => at.map(|a| a.saturating_sub(1)),
            KeyCode::PageDown => at.map_or(Some(0), |a| moved(a + 10)),
            KeyCode::PageUp => at.map(|a| a.saturating_sub(10)),
            KeyCode::Home => Some(0),
            KeyCode::End => Some(last),
            KeyCode::Char('/') => {
                self.input = Some(Input::Filter);
                None
            }
            KeyCode::Char('s') => {
                self.state_filter = match self.state_filter {
                    None => Some(State::ALL[0]),
                    Some(s) => {
                        let at = State::ALL.iter().position(|x| *x == s).unwrap_or(0);
                        State::ALL.get(at + 1).copied()
                    }
                };
                self.refilter();
                None
            }
            KeyCode::Char('o') => {
                self.sort = match self.sort {
                    Sort::Graph => Sort::Recent,
                    Sort::Recent => Sort::Graph,
                };
                self.refilter();
                None
            }
            KeyCode::Esc => {
                self.filter.clear();
                self.state_filter = None;
                self.refilter();
                None
            }
            KeyCode::Enter => {
                if let Some(job) = self.selected {
                    self.open_job(job);
                }
                None
            }
            _ => None,
        };
        if let Some(to) = to
            && let Some(&job) = self.visible.get(to)
        {
            self.selected = Some(job);
        }
    }

    fn open_job(&mut self, job: usize) {
        self.views.push(View::Job(JobView {
            job,
            section: Section::Dependencies,
            selected: [0; 3],
            config_scroll: 0,
        }));
    }

    fn open_build(&mut self, id: BuildId) {
        self.views.push(View::Build(BuildView {
            id,
            log_at: None,
            level: None,
            search: String::new(),
        }));
    }

    /// The lists of the job view: dependencies, dependants (job indices).
    pub fn neighbours(&self, job: usize) -> [Vec<usize>; 2] {
        [self.graph.dependencies(job), self.graph.dependants(job)]
    }

    fn job_key(&mut self, mut v: JobView, key: KeyEvent) -> View {
        let [deps, dependants] = self.neighbours(v.job);
        let builds: Vec<BuildId> = self
            .loaded()
            .and_then(|l| l.job_builds.as_ref())
            .filter(|(j, _)| *j == v.job)
            .map(|(_, b)| b.iter().map(|b| b.id).collect())
            .unwrap_or_default();
        let lens = [deps.len(), dependants.len(), builds.len()];
        let slot = match v.section {
            Section::Dependencies => Some(0),
            Section::Dependants => Some(1),
            Section::Builds => Some(2),
            Section::Config => None,
        };
        let step = |v: &mut JobView, by: isize| match slot {
            Some(s) => {
                let last = lens[s].saturating_sub(1) as isize;
                v.selected[s] = (v.selected[s] as isize + by).clamp(0, last) as usize;
            }
            None => v.config_scroll = (v.config_scroll as isize + by).max(0) as usize,
        };
        match key.code {
            KeyCode::Tab | KeyCode::Right | KeyCode::Char('l') => {
                v.section = next_section(v.section, 1);
            }
            KeyCode::BackTab | KeyCode::Left | KeyCode::Char('h') => {
                v.section = next_section(v.section, -1);
            }
            KeyCode::Down | KeyCode::Char('j') => step(&mut v, 1),
            KeyCode::Up | KeyCode::Char('k') => step(&mut v, -1),
            KeyCode::PageDown => step(&mut v, 10),
            KeyCode::PageUp => step(&mut v, -10),
            KeyCode::Enter => match slot {
                Some(0) => {
                    if let Some(&job) = deps.get(v.selected[0]) {
                        self.open_job(job);
                    }
                }
                Some(1) => {
                    if let Some(&job) = dependants.get(v.selected[1]) {
                        self.open_job(job);
                    }
                }
                Some(_) => {
                    if let Some(&id) = builds.get(v.selected[2]) {
                        self.open_build(id);
                    }
                }
                None => {}
            },
            _ => {}
        }
        View::Job(v)
    }

    /// The log lines the build view shows (level filter applied), as indices.
    pub fn log_lines(&self, v: &BuildView) -> Vec<usize> {
        let Some(detail) = self
            .loaded()
            .and_then(|l| l.build.as_ref())
            .filter(|b| b.build.id == v.id)
        else {
            return Vec::new();
        };
        detail
            .logs
            .iter()
            .enumerate()
            .filter(|(_, l)| v.level.is_none_or(|min| l.level >= min))
            .map(|(i, _)| i)
            .collect()
    }

    fn build_key(&mut self, mut v: BuildView, key: KeyEvent) -> View {
        let count = self.log_lines(&v).len();
        let last = count.saturating_sub(1);
        let at = v.log_at.unwrap_or(last);
        let scroll = |v: &mut BuildView, to: usize| {
            v.log_at = (to < last).then_some(to);
        };
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => scroll(&mut v, at.saturating_sub(1)),
            KeyCode::Down | KeyCode::Char('j') => scroll(&mut v, at + 1),
            KeyCode::PageUp => scroll(&mut v, at.saturating_sub(10)),
            KeyCode::PageDown => scroll(&mut v, at + 10),
            KeyCode::Home => scroll(&mut v, 0),
            KeyCode::End | KeyCode::Char('f') => v.log_at = None,
            KeyCode::Char('l') => {
                v.level = match v.level {
                    None => Some(LogLevel::Info),
                    Some(LogLevel::Debug | LogLevel::Info) => Some(LogLevel::Warning),
                    Some(LogLevel::Warning) => Some(LogLevel::Error),
                    Some(LogLevel::Error | LogLevel::Critical) => None,
                };
                v.log_at = None;
            }
            KeyCode::Char('/') => {
                v.search.clear();
                self.input = Some(Input::Search);
            }
            KeyCode::Char('n') => {
                self.views.push(View::Build(v));
                self.jump_to_match(true);
                return self.views.pop().expect("just pushed");
            }
            KeyCode::Char('N') => {
                self.views.push(View::Build(v));
                self.jump_to_match(false);
                return self.views.pop().expect("just pushed");
            }
            _ => {}
        }
        View::Build(v)
    }

    /// Moves the open build's log to the next (or previous) line holding the search.
    fn jump_to_match(&mut self, forward: bool) {
        let Some(View::Build(v)) = self.views.last() else {
            return;
        };
        if v.search.is_empty() {
            return;
        }
        let lines = self.log_lines(v);
        let Some(detail) = self.loaded().and_then(|l| l.build.as_ref()) else {
            return;
        };
        let needle = v.search.to_lowercase();
        let hit = |i: &usize| {
            detail.logs[lines[*i]]
                .message
                .to_lowercase()
                .contains(&needle)
        };
        let at = v.log_at.unwrap_or(lines.len());
        let found = if forward {
            (at + 1..lines.len())
                .find(hit)
                .or_else(|| (0..=at.min(lines.len().saturating_sub(1))).find(hit))
        } else {
            (0..at)
                .rev()
                .find(hit)
                .or_else(|| (at..lines.len()).rev().find(hit))
        };
        let message = match found {
            Some(_) => None,
            None => Some(format!("`{}` is not in the log", v.search)),
        };
        if let Some(View::Build(v)) = self.views.last_mut()
            && let Some(found) = found
        {
            v.log_at = Some(found);
        }
        self.message = message;
    }

    fn graph_key(&mut self, mut v: GraphView, key: KeyEvent) -> View {
        let columns = self.graph_columns(v.center);
        match key.code {
            KeyCode::Left | KeyCode::Char('h') if columns.get(v.column - 1).is_some() => {
                v.column -= 1;
                v.line = 0;
            }
            KeyCode::Right | KeyCode::Char('l') if columns.get(v.column + 1).is_some() => {
                v.column += 1;
                v.line = 0;
            }
            KeyCode::Up | KeyCode::Char('k') => v.line = v.line.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => {
                let len: usize = columns.get(v.column).map_or(1, |c| c.len());
                v.line = (v.line + 1).min(len.saturating_sub(1));
            }
            KeyCode::Enter => {
                if let Some(job) = columns.selected(&v) {
                    v = GraphView {
                        center: job,
                        column: 0,
                        line: 0,
                    };
                }
            }
            KeyCode::Char('i') => {
                if let Some(job) = columns.selected(&v) {
                    self.open_job(job);
                }
            }
            _ => {}
        }
        View::Graph(v)
    }

    /// The jobs around `center`, by distance: upstream columns, the job, downstream.
    pub fn graph_columns(&self, center: usize) -> Columns {
        let walk = |next: &dyn Fn(usize) -> Vec<usize>| {
            let mut seen = vec![false; self.config.jobs.len()];
            seen[center] = true;
            let mut levels: Vec<Vec<usize>> = Vec::new();
            let mut frontier = vec![center];
            loop {
                let mut level = Vec::new();
                for &job in &frontier {
                    for n in next(job) {
                        if !seen[n] {
                            seen[n] = true;
                            level.push(n);
                        }
                    }
                }
                if level.is_empty() {
                    break;
                }
                level.sort_by_key(|&j| self.rank[j]);
                frontier = level.clone();
                levels.push(level);
            }
            levels
        };
        Columns {
            upstream: walk(&|j| self.graph.dependencies(j)),
            center,
            downstream: walk(&|j| self.graph.dependants(j)),
        }
    }

    fn build(&mut self, alone: bool) -> Option<Command> {
        let job = self.current_job()?;
        self.start(vec![job], !alone, false)
    }

    fn rebuild_failed(&mut self) -> Option<Command> {
        let failed: Vec<usize> = (0..self.config.jobs.len())
            .filter(|&j| self.state(j) == State::Failed)
            .collect();
        if failed.is_empty() {
            self.message = Some("no job has failed".to_owned());
            return None;
        }
        self.start(failed, true, false)
    }

    /// A build command, unless a protected job among those it may run is not armed.
    fn start(&mut self, jobs: Vec<usize>, deps: bool, downstream: bool) -> Option<Command> {
        let mut reach = if deps {
            self.graph.closure(&jobs)
        } else {
            jobs.clone()
        };
        if downstream {
            reach.extend(self.graph.downstream(&jobs));
        }
        let protected: Vec<usize> = reach
            .into_iter()
            .filter(|&j| self.config.jobs[j].protect)
            .collect();
        let armed = self.armed.take();
        let confirmed = jobs.len() == 1 && armed == Some(jobs[0]);
        if !protected.is_empty() && !confirmed {
            let names: Vec<&str> = protected
                .iter()
                .map(|&j| self.config.jobs[j].id.as_str())
                .collect();
            self.message = Some(match jobs.as_slice() {
                [one] => format!(
                    "{} is protected: press a to arm {}, then {}",
                    names.join(", "),
                    self.config.jobs[*one].id,
                    if downstream { 'd' } else { 'b' }
                ),
                _ => format!("{} is protected: build it on its own", names.join(", ")),
            });
            return None;
        }
        let names: Vec<&str> = jobs
            .iter()
            .map(|&j| self.config.jobs[j].id.as_str())
            .collect();
        self.message = Some(format!(
            "building {}{}{}",
            names.join(" "),
            if deps { "" } else { " (without dependencies)" },
            if downstream {
                " and what it makes outdated downstream"
            } else {
                ""
            }
        ));
        Some(Command::Build {
            jobs,
            deps,
            downstream,
            yes: !protected.is_empty(),
        })
    }

    fn arm(&mut self) {
        let Some(job) = self.current_job() else {
            return;
        };
        if self.armed == Some(job) {
            self.armed = None;
            self.message = Some("disarmed".to_owned());
        } else if self
            .graph
            .closure(&[job])
            .into_iter()
            .chain(self.graph.downstream(&[job]))
            .any(|j| self.config.jobs[j].protect)
        {
            self.armed = Some(job);
            self.message = Some(format!(
                "ARMED {}: press b (or d) to build it (--yes); moving away disarms",
                self.config.jobs[job].id
            ));
        } else {
            self.message = Some(format!(
                "{} is not protected: b builds it",
                self.config.jobs[job].id
            ));
        }
    }

    fn cancel(&mut self) -> Option<Command> {
        let build = match self.view() {
            View::Build(v) => self
                .loaded()
                .and_then(|l| l.build.as_ref())
                .filter(|b| b.build.id == v.id && !b.build.status.is_finished())
                .map(|b| b.build.id),
            _ => self.current_job().and_then(|j| {
                self.loaded()
                    .and_then(|l| l.jobs.get(j))
                    .and_then(|r| r.running.map(|(id, _, _)| id))
            }),
        };
        match build {
            Some(build) => Some(Command::Cancel { build }),
            None => {
                self.message = Some("nothing running to cancel here".to_owned());
                None
            }
        }
    }
}

/// Each job's place in graph order.
fn ranks(graph: &JobGraph) -> Vec<usize> {
    let mut rank = vec![0; graph.len()];
    for (at, job) in graph.topo_order().into_iter().enumerate() {
        rank[job] = at;
    }
    rank
}

fn next_section(section: Section, by: i32) -> Section {
    const ORDER: [Section; 4] = [
        Section::Dependencies,
        Section::Dependants,
        Section::Builds,
        Section::Config,
    ];
    let at = ORDER.iter().position(|s| *s == section).unwrap_or(0) as i32;
    ORDER[(at + by).rem_euclid(ORDER.len() as i32) as usize]
}

/// A job's neighbourhood by distance.
pub struct Columns {
    /// Nearest first.
    pub upstream: Vec<Vec<usize>>,
    pub center: usize,
    pub downstream: Vec<Vec<usize>>,
}

impl Columns {
    /// The column at a distance: negative upstream, 0 the job, positive downstream.
    pub fn get(&self, column: i32) -> Option<Vec<usize>> {
        match column {
            0 => Some(vec![self.center]),
            c if c < 0 => self.upstream.get((-c - 1) as usize).cloned(),
            c => self.downstream.get((c - 1) as usize).cloned(),
        }
    }

    pub fn selected(&self, v: &GraphView) -> Option<usize> {
        self.get(v.column).and_then(|c| c.get(v.line).copied())
    }
}
