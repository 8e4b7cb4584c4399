//! The resolve stage: the node tree to a [`Config`], every key checked, defaults applied,
//! `!retval` targets added to dependencies. Mistakes are collected, not returned at the
//! first: a user fixing a config wants to see all of them at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;

use super::diagnostic::Problem;
use super::model::{
    Action, Config, Defaults, Job, JobId, Schedule, Value, ValueMap, parse_duration,
};
use super::node::{Node, NodeKind, RenderedPos};
use crate::limits::{MAX_ID, MAX_TITLE, cut_text};

pub const DEFAULT_STORAGE: &str = "sqlite://.jobctl/state.db";

const TOP_KEYS: &[&str] = &["storage", "defaults", "secrets", "retention", "jobs"];
const LOG_LEVELS: &[&str] = &["debug", "info", "warning", "error", "critical"];
const DEFAULT_KEYS: &[&str] = &[
    "timeout",
    "retries",
    "retry_delay",
    "concurrency",
    "workdir",
    "env",
];
const JOB_KEYS: &[&str] = &[
    "id",
    "title",
    "notes",
    "run",
    "function",
    "args",
    "kwargs",
    "env",
    "dependencies",
    "timeout",
    "retries",
    "retry_delay",
    "protect",
    "cleanup",
    "schedule",
    "concurrency",
    "workdir",
    "labels",
];
const MAX_RETRIES: i64 = 1000;
/// Labels a job may ask a worker for.
pub const MAX_LABELS: usize = 16;

/// Turns the parsed tree into a config, or every mistake found in it.
/// The config's `rendered` text is left empty for the caller to fill.
/// The tree is consumed: each job's nodes are freed once the job is resolved, so a large
/// config never holds both in full.
pub fn resolve(root: Node, path: PathBuf) -> Result<Config, Vec<Problem>> {
    resolve_with(root, path, None)
}

/// As [`resolve`]; with `functions`, a `function:` that is not among them is a mistake
/// like any other (where it stands, with a suggestion), found in the same pass.
pub fn resolve_with(
    root: Node,
    path: PathBuf,
    functions: Option<&[String]>,
) -> Result<Config, Vec<Problem>> {
    let mut r = Resolver {
        functions: functions.map(<[String]>::to_vec),
        ..Resolver::default()
    };
    let config = r.config(root, path);
    let mut problems = r.problems;
    if let Some(config) = &config {
        problems.extend(cycle_problems(config));
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(problems),
    }
}

#[derive(Default)]
struct Resolver {
    problems: Vec<Problem>,
    /// The functions a `function:` may name, when the caller knows them.
    functions: Option<Vec<String>>,
    secrets: IndexMap<String, String>,
    secret_spans: Vec<RenderedPos>,
}

impl Resolver {
    fn config(&mut self, root: Node, path: PathBuf) -> Option<Config> {
        self.no_tag(&root);
        if root.kind == NodeKind::Null {
            self.problems.push(
                Problem::new("the config is empty", root.pos)
                    .help("start the file with `jobs:` followed by a list of jobs, each with an `id` and a `run` command"),
            );
            return None;
        }
        let NodeKind::Map(entries) = root.kind else {
            let found = root.kind.describe();
            self.problems.push(
                Problem::new(
                    format!("the config must be a mapping with a `jobs` list, found {found}"),
                    root.pos,
                )
                .label(format!("this is {found}"))
                .help("start the file with `jobs:` followed by a list of jobs"),
            );
            return None;
        };
        let mut storage = None;
        let mut defaults_node = None;
        let mut secrets_node = None;
        let mut retention_node = None;
        let mut jobs_node = None;
        let mut unknown_keys = false;
        for (key, value) in entries {
            let Some(name) = self.key(&key, TOP_KEYS, "top-level key", "") else {
                unknown_keys = true;
                continue;
            };
            match name {
                "storage" => storage = Some(value),
                "defaults" => defaults_node = Some(value),
                "secrets" => secrets_node = Some(value),
                "retention" => retention_node = Some(value),
                _ => jobs_node = Some(value),
            }
        }
        let storage = storage.and_then(|node| self.storage(&node));
        if let Some(node) = secrets_node {
            self.secrets(&node);
        }
        let retention = retention_node
            .map(|node| self.retention(&node))
            .unwrap_or_default();
        let defaults = defaults_node
            .map(|node| self.defaults(&node))
            .unwrap_or_default();
        let Some(jobs_node) = jobs_node else {
            if unknown_keys {
                // `job:` for `jobs:` is reported as that; "no jobs" would say it twice.
                return None;
            }
            self.problems.push(
                Problem::new("the config has no `jobs` list", root.pos)
                    .label("expected `jobs:` in this mapping")
                    .help("add `jobs:` with a list of jobs, each with an `id` and a `run` command"),
            );
            return None;
        };
        let jobs = self.jobs(jobs_node, &defaults);
        let index = self.check_ids(&jobs);
        self.check_references(&jobs, &index);
        Some(Config {
            path,
            rendered: String::new(),
            sources: Vec::new(),
            storage: storage.unwrap_or_else(|| DEFAULT_STORAGE.to_owned()),
            defaults,
            secrets: std::mem::take(&mut self.secrets),
            retention,
            jobs,
            index,
            secret_spans: std::mem::take(&mut self.secret_spans),
        })
    }

    /// A mapping key as a known name; an unknown one is reported with a suggestion.
    /// `what` names the key in messages; `place` follows the key's name (` in `defaults``).
    fn key<'a>(
        &mut self,
        key: &'a Node,
        known: &[&'static str],
        what: &str,
        place: &str,
    ) -> Option<&'a str> {
        self.no_tag(key);
        let NodeKind::Str(name) = &key.kind else {
            self.problems.push(
                Problem::new(
                    format!("a {what} must be a name, found {}", key.kind.describe()),
                    key.pos,
                )
                .label("not a key name"),
            );
            return None;
        };
        if known.contains(&name.as_str()) {
            return Some(name);
        }
        let mut problem = Problem::new(format!("unknown {what} `{name}`{place}"), key.pos);
        problem = match suggest(name, known.iter().copied()) {
            Some(s) => problem.label(format!("did you mean `{s}`?")),
            None => problem
                .label("unknown key")
                .help(format!("known keys: {}", known.join(", "))),
        };
        self.problems.push(problem);
        None
    }

    /// Reports a tag on a node where no tag is allowed.
    fn no_tag(&mut self, node: &Node) -> bool {
        match node.tag.as_deref() {
            None => true,
            Some(tag) if is_core_tag(tag) => true,
            Some(tag @ ("!retval" | "!secret")) => {
                self.problems.push(
                    Problem::new(format!("`{tag}` cannot be used here"), node.pos)
                        .label("only values inside `args`, `kwargs` or `env` take this tag")
                        .help(format!(
                            "`{tag}` stands for a value the job receives when it runs; it can \
                             stand anywhere inside a job's `args`, `kwargs` or `env`"
                        )),
                );
                false
            }
            Some(tag) => {
                self.unknown_tag(tag, node.pos);
                false
            }
        }
    }

    fn unknown_tag(&mut self, tag: &str, pos: RenderedPos) {
        let mut problem = Problem::new(format!("unknown tag `{tag}`"), pos);
        problem = match suggest(tag, ["!retval", "!secret"].into_iter()) {
            Some(s) => problem.label(format!("did you mean `{s}`?")),
            None => problem
                .label("unknown tag")
                .help("jobctl knows two tags: `!retval JOB` and `!secret NAME`"),
        };
        self.problems.push(problem);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.problems.push(
            Problem::new(
                format!("{what} must be {expected}, found {}", node.kind.describe()),
                node.pos,
            )
            .label(format!("expected {expected}")),
        );
    }

    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        if !self.no_tag(node) {
            return None;
        }
        match &node.kind {
            NodeKind::Str(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    /// A string, or a number or boolean taken as its text (titles, notes, secrets).
    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        if !self.no_tag(node) {
            return None;
        }
        match &node.kind {
            NodeKind::Str(s) => Some(s.to_string()),
            NodeKind::Int(i) => Some(i.to_string()),
            NodeKind::Float(f) => Some(f.to_string()),
            NodeKind::Bool(b) => Some(b.to_string()),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        if !self.no_tag(node) {
            return None;
        }
        match node.kind {
            NodeKind::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, what, "`true` or `false`");
                None
            }
        }
    }

    fn int_in(&mut self, node: &Node, what: &str, min: i64, max: i64) -> Option<i64> {
        if !self.no_tag(node) {
            return None;
        }
        match node.kind {
            NodeKind::Int(i) if (min..=max).contains(&i) => Some(i),
            NodeKind::Int(i) => {
                self.problems.push(
                    Problem::new(
                        format!("{what} must be between {min} and {max}, found {i}"),
                        node.pos,
                    )
                    .label("out of range"),
                );
                None
            }
            _ => {
                self.wrong_type(node, what, "a whole number");
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        if !self.no_tag(node) {
            return None;
        }
        let parsed = match &node.kind {
            NodeKind::Int(i) if *i >= 0 => parse_duration(&i.to_string()),
            NodeKind::Str(s) => parse_duration(s),
            _ => {
                self.wrong_type(node, what, "a duration such as `30m` or `1h30m`");
                return None;
            }
        };
        match parsed {
            Ok(d) => Some(d),
            Err(reason) => {
                // A duration, but past the bound (see `parse_duration`).
                let too_long = reason.contains("too long");
                self.problems.push(
                    Problem::new(format!("bad {what}: {reason}"), node.pos)
                        .label(if too_long { "too long" } else { "not a duration" })
                        .help(if too_long && what.contains("timeout") {
                            "the longest is 36500d; `timeout: none` sets no limit at all"
                        } else if too_long {
                            "the longest is 36500d"
                        } else {
                            "durations are written like `90s`, `30m`, `1h30m`, `2d`; a bare number is seconds"
                        }),
                );
                None
            }
        }
    }

    /// `timeout`: a duration, or `null`/`none` for no limit.
    fn timeout(&mut self, node: &Node) -> Option<Option<Duration>> {
        match &node.kind {
            NodeKind::Null if node.tag.is_none() => Some(None),
            NodeKind::Str(s) if s == "none" && node.tag.is_none() => Some(None),
            _ => self.duration(node, "`timeout`").map(Some),
        }
    }

    fn storage(&mut self, node: &Node) -> Option<String> {
        let url = self.string(node, "`storage`")?;
        let scheme = url.split_once(':').map(|(s, _)| s);
        match scheme {
            Some("sqlite" | "postgres" | "postgresql") => Some(url),
            _ => {
                self.problems.push(
                    Problem::new(
                        format!("`storage` has an unknown scheme: `{url}`"),
                        node.pos,
                    )
                    .label("not a storage URL jobctl knows")
                    .help(
                        "use `sqlite://PATH` (the default is sqlite://.jobctl/state.db) or \
                             `postgresql://USER@HOST/DATABASE`",
                    ),
                );
                None
            }
        }
    }

    fn secrets(&mut self, node: &Node) {
        if !self.no_tag(node) {
            return;
        }
        let NodeKind::Map(entries) = &node.kind else {
            if node.kind != NodeKind::Null {
                self.wrong_type(node, "`secrets`", "a mapping of names to values");
            }
            return;
        };
        for (key, value) in entries {
            let Some(name) = self.text(key, "a secret's name") else {
                continue;
            };
            if let Some(text) = self.text(value, "a secret's value") {
                self.secret_spans.push(value.pos);
                self.secrets.insert(name, text);
            }
        }
    }

    /// How long logs of each level are kept: `retention: {debug: 7d, error: 1y}`.
    fn retention(&mut self, node: &Node) -> IndexMap<String, Duration> {
        let mut retention = IndexMap::new();
        if !self.no_tag(node) {
            return retention;
        }
        let NodeKind::Map(entries) = &node.kind else {
            if node.kind != NodeKind::Null {
                self.wrong_type(node, "`retention`", "a mapping of log levels to durations");
            }
            return retention;
        };
        for (key, value) in entries {
            if let Some(level) = self.key(key, LOG_LEVELS, "log level", " in `retention`")
                && let Some(d) = self.duration(value, "retention")
            {
                retention.insert(level.to_owned(), d);
            }
        }
        retention
    }

    fn defaults(&mut self, node: &Node) -> Defaults {
        let mut defaults = Defaults::default();
        if !self.no_tag(node) {
            return defaults;
        }
        let NodeKind::Map(entries) = &node.kind else {
            if node.kind != NodeKind::Null {
                self.wrong_type(node, "`defaults`", "a mapping");
            }
            return defaults;
        };
        for (key, value) in entries {
            match self.key(key, DEFAULT_KEYS, "key", " in `defaults`") {
                Some("timeout") => {
                    if let Some(t) = self.timeout(value) {
                        defaults.timeout = t;
                    }
                }
                Some("retries") => {
                    if let Some(n) = self.int_in(value, "`retries`", 0, MAX_RETRIES) {
                        defaults.retries = n as u32;
                    }
                }
                Some("retry_delay") => {
                    if let Some(d) = self.duration(value, "`retry_delay`") {
                        defaults.retry_delay = d;
                    }
                }
                Some("concurrency") => {
                    if let Some(n) = self.int_in(value, "`concurrency`", 1, 10_000) {
                        defaults.concurrency = n as u32;
                    }
                }
                Some("workdir") => {
                    if let Some(dir) = self.string(value, "`workdir`") {
                        defaults.workdir = Some(PathBuf::from(dir));
                    }
                }
                Some(_) => {
                    let mut retvals = Vec::new();
                    defaults.env = self.env_map(value, "`env`", &mut retvals);
                    for (_, pos) in retvals {
                        self.problems.push(
                            Problem::new("`!retval` cannot be used in `defaults`", pos)
                                .label("every job would depend on this job, itself included")
                                .help("put the `!retval` in the `env` of the jobs that need it"),
                        );
                    }
                }
                None => {}
            }
        }
        defaults
    }

    fn jobs(&mut self, node: Node, defaults: &Defaults) -> Vec<Job> {
        if !self.no_tag(&node) {
            return Vec::new();
        }
        match node.kind {
            NodeKind::Seq(items) => {
                let mut jobs = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(job) = self.job(&item, defaults) {
                        jobs.push(job);
                    }
                }
                jobs
            }
            NodeKind::Null => Vec::new(),
            _ => {
                self.wrong_type(&node, "`jobs`", "a list of jobs");
                Vec::new()
            }
        }
    }

    /// A job, its mistakes marked with its id (see [`Problem::within`]).
    fn job(&mut self, node: &Node, defaults: &Defaults) -> Option<Job> {
        let first = self.problems.len();
        let job = self.job_fields(node, defaults);
        if let Some(job) = &job {
            for problem in &mut self.problems[first..] {
                problem.within.get_or_insert_with(|| job.id.to_string());
            }
        }
        job
    }

    fn job_fields(&mut self, node: &Node, defaults: &Defaults) -> Option<Job> {
        if !self.no_tag(node) {
            return None;
        }
        let NodeKind::Map(entries) = &node.kind else {
            self.problems.push(
                Problem::new(
                    format!("a job must be a mapping, found {}", node.kind.describe()),
                    node.pos,
                )
                .label("expected `id: …`, `run: …` and so on")
                .help("each item under `jobs:` is a mapping such as `- id: fetch` / `  run: ./fetch.sh`"),
            );
            return None;
        };
        let mut id: Option<(JobId, RenderedPos)> = None;
        let mut id_seen = false;
        let mut job = Job {
            id: JobId::parse("_").expect("placeholder id"),
            title: None,
            notes: None,
            action: Action::Run(String::new()),
            args: Vec::new(),
            kwargs: ValueMap::default(),
            env: defaults.env.clone(),
            dependencies: Vec::new(),
            timeout: defaults.timeout,
            retries: defaults.retries,
            retry_delay: defaults.retry_delay,
            protect: false,
            cleanup: None,
            schedule: None,
            concurrency: defaults.concurrency,
            labels: Vec::new(),
            workdir: defaults
                .workdir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".")),
            dependency_pos: Vec::new(),
            pos: node.pos,
        };
        let mut action: Option<(Action, &Node)> = None;
        let mut action_seen = false;
        let mut declared: Vec<(String, RenderedPos)> = Vec::new();
        let mut retvals: Vec<(String, RenderedPos)> = Vec::new();
        for (key, value) in entries {
            let Some(name) = self.key(key, JOB_KEYS, "job key", "") else {
                continue;
            };
            match name {
                "id" => {
                    id_seen = true;
                    if let Some(text) = self.text(value, "a job's `id`") {
                        match JobId::parse(&text) {
                            Some(parsed) => id = Some((parsed, value.pos)),
                            None if text.len() > MAX_ID => self.problems.push(
                                Problem::new(
                                    format!(
                                        "a job id of {} bytes is too long (the limit is {MAX_ID})",
                                        text.len()
                                    ),
                                    value.pos,
                                )
                                .label("this id"),
                            ),
                            None => self.problems.push(
                                Problem::new(format!("bad job id `{text}`"), value.pos)
                                    .label("only letters, digits, `_`, `.` and `-`")
                                    .help("a job id is made of A-Z, a-z, 0-9, `_`, `.` and `-`, so it can be typed in a shell and a URL unquoted"),
                            ),
                        }
                    }
                }
                "title" => {
                    job.title = self.text(value, "`title`");
                    if let Some(title) = &job.title
                        && title.chars().count() > MAX_TITLE
                    {
                        self.problems.push(
                            Problem::new(
                                format!(
                                    "a title of {} characters is too long (the limit is {MAX_TITLE})",
                                    title.chars().count()
                                ),
                                value.pos,
                            )
                            .label("this title")
                            .help("put longer text under `notes`"),
                        );
                    }
                }
                "notes" => job.notes = self.text(value, "`notes`"),
                "run" | "function" => {
                    action_seen = true;
                    let what = if name == "run" { "`run`" } else { "`function`" };
                    let Some(text) = self.string(value, what) else {
                        continue;
                    };
                    if text.trim().is_empty() {
                        self.problems.push(
                            Problem::new(format!("{what} is empty"), value.pos)
                                .label("nothing to run"),
                        );
                        continue;
                    }
                    if name == "function"
                        && let Some(known) = &self.functions
                        && !known.contains(&text)
                    {
                        let mut problem = Problem::new(
                            format!("no function `{text}` is registered in this jobctl"),
                            value.pos,
                        );
                        problem = match suggest(&text, known.iter().map(String::as_str)) {
                            Some(near) => problem.label(format!("did you mean `{near}`?")),
                            None => problem.label("unknown function"),
                        };
                        self.problems.push(problem.help(format!(
                            "the functions here: {}; a program that embeds jobctl registers its own",
                            known.join(", ")
                        )));
                        continue;
                    }
                    let this = if name == "run" {
                        Action::Run(text)
                    } else {
                        Action::Function(text)
                    };
                    if let Some((_, first)) = &action {
                        self.problems.push(
                            Problem::new("a job has either `run` or `function`, not both", key.pos)
                                .label("second way to run the job")
                                .related("first one here", first.pos),
                        );
                    } else {
                        action = Some((this, key));
                    }
                }
                "args" => {
                    if !self.no_tag(value) {
                        continue;
                    }
                    match &value.kind {
                        NodeKind::Seq(items) => {
                            job.args = items
                                .iter()
                                .filter_map(|item| self.passed_value(item, &mut retvals))
                                .collect();
                        }
                        NodeKind::Null => {}
                        _ => self.wrong_type(value, "`args`", "a list"),
                    }
                }
                "kwargs" => job.kwargs = self.env_map(value, "`kwargs`", &mut retvals),
                "env" => {
                    let own = self.env_map(value, "`env`", &mut retvals);
                    job.env.extend(own);
                }
                "dependencies" => {
                    if !self.no_tag(value) {
                        continue;
                    }
                    match &value.kind {
                        NodeKind::Seq(items) => {
                            for item in items {
                                if let Some(dep) = self.text(item, "a dependency") {
                                    declared.push((dep, item.pos));
                                }
                            }
                        }
                        NodeKind::Null => {}
                        _ => self.wrong_type(value, "`dependencies`", "a list of job ids"),
                    }
                }
                "timeout" => {
                    if let Some(t) = self.timeout(value) {
                        job.timeout = t;
                    }
                }
                "retries" => {
                    if let Some(n) = self.int_in(value, "`retries`", 0, MAX_RETRIES) {
                        job.retries = n as u32;
                    }
                }
                "retry_delay" => {
                    if let Some(d) = self.duration(value, "`retry_delay`") {
                        job.retry_delay = d;
                    }
                }
                "protect" => {
                    if let Some(b) = self.bool(value, "`protect`") {
                        job.protect = b;
                    }
                }
                "cleanup" => job.cleanup = self.string(value, "`cleanup`"),
                "schedule" => job.schedule = self.schedule(value),
                "concurrency" => {
                    if let Some(n) = self.int_in(value, "`concurrency`", 1, 10_000) {
                        job.concurrency = n as u32;
                    }
                }
                "labels" => job.labels = self.labels(value),
                _ => {
                    if let Some(dir) = self.string(value, "`workdir`") {
                        job.workdir = PathBuf::from(dir);
                    }
                }
            }
        }
        if !id_seen {
            self.problems.push(
                Problem::new("a job has no `id`", node.pos)
                    .label("this job")
                    .help("give every job a unique `id` made of letters, digits, `_`, `.` and `-`"),
            );
        }
        match action {
            Some((a, _)) => job.action = a,
            None if id_seen && !action_seen => {
                let name = id.as_ref().map_or("?".to_owned(), |(id, _)| id.to_string());
                self.problems.push(
                    Problem::new(format!("job `{name}` has nothing to run"), node.pos)
                        .label("no `run` or `function`")
                        .help("add `run:` with a shell command (or `function:` with a registered function)"),
                );
            }
            None => {}
        }
        let (id, id_pos) = id?;
        job.id = id;
        job.pos = id_pos;
        // Declared dependencies first, then `!retval` targets, each once.
        for (dep, pos) in declared.into_iter().chain(retvals) {
            let Some(dep_id) = JobId::parse(&dep) else {
                self.problems.push(
                    Problem::new(format!("`{}` is not a job id", cut_text(&dep, 80)), pos)
                        .label("only letters, digits, `_`, `.` and `-`"),
                );
                continue;
            };
            if !job.dependencies.contains(&dep_id) {
                job.dependencies.push(dep_id);
                job.dependency_pos.push(pos);
            }
        }
        // Kept even when a key was wrong, so that jobs naming it are not also reported.
        Some(job)
    }

    fn schedule(&mut self, node: &Node) -> Option<Schedule> {
        let expr = self.string(node, "`schedule`")?;
        match expr.parse::<croner::Cron>() {
            Ok(_) => Some(Schedule { expr }),
            Err(err) => {
                self.problems.push(
                    Problem::new(format!("bad cron schedule `{expr}`: {}", cron_reason(&err)), node.pos)
                        .label("not a cron expression")
                        .help("five fields: minute hour day-of-month month day-of-week, e.g. `30 2 * * *` (02:30 daily), or `@daily`"),
                );
                None
            }
        }
    }

    /// `labels`: a list of names a worker must have, made of the characters of a job id.
    fn labels(&mut self, node: &Node) -> Vec<String> {
        let mut labels = Vec::new();
        if !self.no_tag(node) {
            return labels;
        }
        match &node.kind {
            NodeKind::Seq(items) => {
                for item in items {
                    let Some(label) = self.text(item, "a label") else {
                        continue;
                    };
                    if !super::model::is_label(&label) {
                        self.problems.push(
                            Problem::new(format!("`{}` is not a label", crate::limits::visible(&cut_text(&label, 64))), item.pos)
                                .label("not a label")
                                .help("a label is up to 64 letters, digits, `_`, `.` and `-`, such as `gpu`"),
                        );
                        continue;
                    }
                    labels.push(label);
                }
                if labels.len() > MAX_LABELS {
                    self.problems.push(
                        Problem::new(format!("a job has at most {MAX_LABELS} labels"), node.pos)
                            .label(format!("{} labels", labels.len())),
                    );
                    labels.truncate(MAX_LABELS);
                }
            }
            NodeKind::Null => {}
            _ => self.wrong_type(node, "`labels`", "a list of labels"),
        }
        labels.sort();
        labels.dedup();
        labels
    }

    /// `kwargs` and `env`: names usable as environment variables, any values.
    fn env_map(
        &mut self,
        node: &Node,
        what: &str,
        retvals: &mut Vec<(String, RenderedPos)>,
    ) -> ValueMap {
        let mut map = ValueMap::default();
        if !self.no_tag(node) {
            return map;
        }
        let NodeKind::Map(entries) = &node.kind else {
            if node.kind != NodeKind::Null {
                self.wrong_type(node, what, "a mapping");
            }
            return map;
        };
        for (key, value) in entries {
            let Some(name) = self.text(key, "a name") else {
                continue;
            };
            if !is_env_name(&name) {
                self.problems.push(
                    Problem::new(
                        format!("`{name}` in {what} cannot be an environment variable name"),
                        key.pos,
                    )
                    .label("use letters, digits and `_`, not starting with a digit")
                    .help(format!(
                        "{what} reach a shell command as environment variables; try `{}`",
                        env_suggestion(&name)
                    )),
                );
                continue;
            }
            if let Some(v) = self.passed_value(value, retvals) {
                map.push_new(name, v);
            }
        }
        map
    }

    /// A value that reaches a process as one string (an `args` item, a `kwargs` or `env`
    /// entry): a NUL byte cannot, so it is a mistake here rather than when building.
    fn passed_value(
        &mut self,
        node: &Node,
        retvals: &mut Vec<(String, RenderedPos)>,
    ) -> Option<Value> {
        let value = self.value(node, retvals)?;
        if let Value::Str(text) = &value
            && text.contains('\0')
        {
            self.problems.push(
                Problem::new(
                    "a value holds a NUL byte, which no process can receive",
                    node.pos,
                )
                .label("this value")
                .help("inside a list or a mapping it would reach the job as JSON (`\\u0000`)"),
            );
            return None;
        }
        Some(value)
    }

    /// A value inside `args`, `kwargs` or `env`, where `!retval` and `!secret` may stand.
    fn value(&mut self, node: &Node, retvals: &mut Vec<(String, RenderedPos)>) -> Option<Value> {
        match node.tag.as_deref() {
            None => {}
            Some(tag) if is_core_tag(tag) => {}
            Some(tag @ ("!retval" | "!secret")) => {
                let NodeKind::Str(name) = &node.kind else {
                    self.problems.push(
                        Problem::new(
                            format!(
                                "`{tag}` needs a name after it, found {}",
                                node.kind.describe()
                            ),
                            node.pos,
                        )
                        .label(if tag == "!retval" {
                            "expected a job id"
                        } else {
                            "expected a secret's name"
                        }),
                    );
                    return None;
                };
                if tag == "!retval" {
                    retvals.push((name.to_string(), node.pos));
                    // Checked, and reported if wrong, once all jobs are known.
                    return JobId::parse(name).map(Value::Retval);
                }
                if !self.secrets.contains_key(name.as_str()) {
                    let mut problem = Problem::new(
                        format!("`!secret {name}` names a secret that is not defined"),
                        node.pos,
                    );
                    problem = match suggest(name, self.secrets.keys().map(String::as_str)) {
                        Some(s) => problem.label(format!("did you mean `{s}`?")),
                        None => problem.label("no such secret").help(
                            "define it under the top-level `secrets:` mapping, e.g. \
                             `secrets: {api_token: \"{{ env('API_TOKEN') }}\"}`",
                        ),
                    };
                    self.problems.push(problem);
                    return None;
                }
                return Some(Value::Secret(name.to_string()));
            }
            Some(tag) => {
                self.unknown_tag(tag, node.pos);
                return None;
            }
        }
        Some(match &node.kind {
            NodeKind::Null => Value::Null,
            NodeKind::Bool(b) => Value::Bool(*b),
            NodeKind::Int(i) => Value::Int(*i),
            NodeKind::Float(f) => Value::Float(*f),
            NodeKind::Str(s) => Value::Str(s.to_string()),
            NodeKind::Seq(items) => Value::List(
                items
                    .iter()
                    .map(|item| self.value(item, retvals))
                    .collect::<Option<_>>()?,
            ),
            NodeKind::Map(entries) => {
                let mut map = ValueMap::with_capacity(entries.len());
                for (key, value) in entries {
                    let key = self.text(key, "a key")?;
                    map.push_new(key, self.value(value, retvals)?);
                }
                Value::Map(map)
            }
        })
    }

    fn check_ids(&mut self, jobs: &[Job]) -> HashMap<JobId, usize> {
        let mut index: HashMap<JobId, usize> = HashMap::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            if let Some(&first) = index.get(&job.id) {
                self.problems.push(
                    Problem::new(format!("duplicate job id `{}`", job.id), job.pos)
                        .label("defined again here")
                        .related("first defined here", jobs[first].pos)
                        .help(
                            "job ids must be unique; in a macro, build the id from its arguments",
                        ),
                );
            } else {
                index.insert(job.id.clone(), i);
            }
        }
        index
    }

    fn check_references(&mut self, jobs: &[Job], index: &HashMap<JobId, usize>) {
        for job in jobs {
            for (dep, pos) in job.dependencies.iter().zip(&job.dependency_pos) {
                if index.contains_key(dep) {
                    continue;
                }
                let mut problem = Problem::new(
                    format!("job `{}` depends on `{dep}`, which is not defined", job.id),
                    *pos,
                );
                problem = match suggest(dep.as_str(), index.keys().map(JobId::as_str)) {
                    Some(s) => problem.label(format!("did you mean `{s}`?")),
                    None => problem.label("no job has this id"),
                };
                self.problems.push(problem);
            }
        }
    }
}

/// Every dependency cycle, each named in the order work would flow around it.
fn cycle_problems(config: &Config) -> Vec<Problem> {
    let graph = config.graph();
    graph
        .cycles()
        .into_iter()
        .map(|cycle| {
            let jobs = &config.jobs;
            let names: Vec<&str> = cycle.iter().map(|&i| jobs[i].id.as_str()).collect();
            let first = cycle[0];
            let last = cycle[cycle.len() - 1];
            let pos_of = |job: usize, dep: usize| {
                let j = &jobs[job];
                j.dependencies
                    .iter()
                    .position(|d| d == &jobs[dep].id)
                    .map_or(j.pos, |k| j.dependency_pos[k])
            };
            if cycle.len() == 1 {
                return Problem::new(
                    format!("job `{}` depends on itself", names[0]),
                    pos_of(first, first),
                )
                .label("a job cannot wait for itself")
                .help("remove this dependency (a `!retval` of the job itself counts as one)");
            }
            let mut path = names.join(" -> ");
            path.push_str(" -> ");
            path.push_str(names[0]);
            let links: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(&from, &to)| format!("`{}` depends on `{}`", jobs[to].id, jobs[from].id))
                .collect();
            let mut problem =
                Problem::new(format!("dependency cycle: {path}"), pos_of(first, last))
                    .label(format!(
                        "`{}` depends on `{}`, closing the cycle",
                        names[0], jobs[last].id
                    ))
                    .help(format!(
                        "{}; remove one of these dependencies",
                        links.join(", ")
                    ));
            for w in cycle.windows(2) {
                problem = problem.related(
                    format!("`{}` depends on `{}`", jobs[w[1]].id, jobs[w[0]].id),
                    pos_of(w[1], w[0]),
                );
            }
            problem
        })
        .collect()
}

fn cron_reason(err: &croner::errors::CronError) -> String {
    let text = err.to_string();
    let text = text
        .strip_prefix("Invalid pattern: ")
        .or_else(|| text.strip_prefix("Component error: "))
        .unwrap_or(&text)
        .trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text.to_owned(),
    }
}

fn is_core_tag(tag: &str) -> bool {
    tag.starts_with("tag:yaml.org,2002:") || tag.starts_with("!!")
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn env_suggestion(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

/// The closest known word, if one is close enough to be what was meant.
pub fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, c)| *score >= 0.8 || strsim::levenshtein(word, c) <= 1)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(suggest("titel", JOB_KEYS.iter().copied()), Some("title"));
        assert_eq!(
            suggest("dependncies", JOB_KEYS.iter().copied()),
            Some("dependencies")
        );
        assert_eq!(suggest("zzz", JOB_KEYS.iter().copied()), None);
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("input_storage"));
        assert!(!is_env_name("input-storage"));
        assert!(!is_env_name("1x"));
        assert_eq!(env_suggestion("input-storage"), "input_storage");
    }
}
