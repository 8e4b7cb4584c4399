//! The resolved config: what the rest of jobctl works with. Every value here has been
//! checked; nothing downstream re-validates.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::node::RenderedPos;

/// A job's id: `[A-Za-z0-9_.-]+`, unique in a config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Arc<str>);

impl JobId {
    /// Checks the characters and the length; `None` if the id is empty, longer than
    /// [`crate::limits::MAX_ID`] or has other characters.
    pub fn parse(id: &str) -> Option<JobId> {
        let ok = !id.is_empty()
            && id.len() <= crate::limits::MAX_ID
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        ok.then(|| JobId(Arc::from(id)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The longest label.
pub const MAX_LABEL: usize = 64;

/// The most labels a worker has (each is a value in its claims' statement).
pub const MAX_WORKER_LABELS: usize = 256;

/// Whether `label` can be a label (of a job's `labels:`, or of a worker's `--labels`): up
/// to [`MAX_LABEL`] letters, digits, `_`, `.` and `-`.
pub fn is_label(label: &str) -> bool {
    label.len() <= MAX_LABEL && JobId::parse(label).is_some()
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A value in `args`, `kwargs` or `env`: plain data, or a reference resolved when the job
/// runs. In JSON a reference is written `{"!retval": "JOB"}` / `{"!secret": "NAME"}`: the
/// secret's value is never part of a resolved config.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(ValueMap),
    /// The return value of the job's latest successful build.
    Retval(JobId),
    /// A value from the config's `secrets`, by name.
    Secret(String),
}

impl Value {
    /// Every `!retval` target inside this value, in document order.
    pub fn retval_targets<'a>(&'a self, out: &mut Vec<&'a JobId>) {
        match self {
            Value::Retval(id) => out.push(id),
            Value::List(items) => items.iter().for_each(|v| v.retval_targets(out)),
            Value::Map(map) => map.iter().for_each(|(_, v)| v.retval_targets(out)),
            _ => {}
        }
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::List(items) => s.collect_seq(items),
            Value::Map(map) => map.serialize(s),
            Value::Retval(id) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("!retval", id)?;
                m.end()
            }
            Value::Secret(name) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("!secret", name)?;
                m.end()
            }
        }
    }
}

/// A small mapping that keeps its order: `kwargs`, `env` and mappings inside values.
/// A list of pairs: these maps have a handful of entries, are read in order and looked up
/// rarely, and a hash map for each of 100k jobs costs more than the jobs themselves.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueMap(Vec<(String, Value)>);

impl ValueMap {
    pub fn with_capacity(n: usize) -> Self {
        ValueMap(Vec::with_capacity(n))
    }

    /// Sets `key`, replacing an earlier value in its place.
    pub fn insert(&mut self, key: String, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// Appends `key`, which the caller knows is not in the map yet (a YAML mapping's
    /// keys are unique).
    pub fn push_new(&mut self, key: String, value: Value) {
        debug_assert!(self.get(&key).is_none());
        self.0.push((key, value));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Extend<(String, Value)> for ValueMap {
    fn extend<I: IntoIterator<Item = (String, Value)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl IntoIterator for ValueMap {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Serialize for ValueMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// What a job runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A shell command, run with `sh -c`.
    Run(String),
    /// A function registered by name in the program that embeds jobctl.
    Function(String),
}

/// A cron schedule, kept as written; checked when loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub expr: String,
}

impl Schedule {
    /// The parsed expression (parsed again: a parsed one is 336 bytes, and every job of a
    /// large config would carry one).
    pub fn cron(&self) -> croner::Cron {
        self.expr
            .parse()
            .expect("schedules are checked when the config is loaded")
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expr)
    }
}

/// A job after defaults are applied and references are checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: JobId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(flatten)]
    pub action: Action,
    pub args: Vec<Value>,
    pub kwargs: ValueMap,
    pub env: ValueMap,
    /// Declared dependencies first, then `!retval` targets not declared, each once.
    pub dependencies: Vec<JobId>,
    #[serde(serialize_with = "serialize_opt_duration")]
    pub timeout: Option<Duration>,
    pub retries: u32,
    #[serde(serialize_with = "serialize_duration")]
    pub retry_delay: Duration,
    pub protect: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    pub concurrency: u32,
    /// What a worker must have to run it (`jobctl worker --labels`); sorted, each once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Where the job runs, relative to the config's folder unless absolute.
    pub workdir: PathBuf,
    /// Where each dependency was named (parallel to `dependencies`), for diagnostics.
    #[serde(skip)]
    pub dependency_pos: Vec<RenderedPos>,
    /// Where the job's `id` stands in the rendered config.
    #[serde(skip)]
    pub pos: RenderedPos,
}

/// Settings every job starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub retry_delay: Duration,
    pub concurrency: u32,
    pub workdir: Option<PathBuf>,
    pub env: ValueMap,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            timeout: None,
            retries: 0,
            retry_delay: Duration::from_secs(10),
            concurrency: 1,
            workdir: None,
            env: ValueMap::default(),
        }
    }
}

/// A loaded, valid config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file as the user named it.
    pub path: PathBuf,
    /// The rendered YAML (secrets in it are not masked: see [`Config::masked_yaml`]).
    pub rendered: String,
    /// The files its template read: the config file and what it includes or imports
    /// (watched by the dashboard, which loads the config again when one changes).
    pub sources: Vec<PathBuf>,
    /// The storage URL as written (`sqlite://…` or `postgresql://…`).
    pub storage: String,
    pub defaults: Defaults,
    /// Secret values by name: never printed, never stored.
    pub secrets: IndexMap<String, String>,
    /// How long logs are kept, by level name (`debug` … `critical`), where the config
    /// says; `jobctl prune` uses its own defaults for the others.
    pub retention: IndexMap<String, Duration>,
    pub jobs: Vec<Job>,
    pub(crate) index: std::collections::HashMap<JobId, usize>,
    /// Where each secret value stands in the rendered text, for masking.
    pub(crate) secret_spans: Vec<RenderedPos>,
}

/// What stands in for a secret's value wherever it would be shown.
pub const MASK: &str = "********";

impl Config {
    /// The graph of its jobs (node `i` is `jobs[i]`); dependencies on jobs that do not
    /// exist are left out (the loader reports them).
    pub fn graph(&self) -> crate::graph::JobGraph {
        let mut edges = Vec::new();
        for (i, job) in self.jobs.iter().enumerate() {
            for dep in &job.dependencies {
                if let Some(&d) = self.index.get(dep) {
                    edges.push((d, i));
                }
            }
        }
        crate::graph::JobGraph::from_edges(self.jobs.len(), &edges)
    }

    /// The job with this id, by index in `jobs`.
    pub fn job_index(&self, id: &str) -> Option<usize> {
        JobId::parse(id).and_then(|id| self.index.get(&id).copied())
    }

    /// The folder relative paths in the config (storage, workdir) start from.
    pub fn dir(&self) -> &std::path::Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        }
    }

    pub fn job(&self, id: &str) -> Option<&Job> {
        self.job_index(id).map(|i| &self.jobs[i])
    }

    /// The rendered YAML with every secret value replaced by [`MASK`]: the values under
    /// `secrets:` and any other place where a secret's text appears.
    pub fn masked_yaml(&self) -> String {
        let mut lines: Vec<String> = self.rendered.lines().map(str::to_owned).collect();
        let mut spans = self.secret_spans.clone();
        // Right to left on a line, so earlier columns stay valid.
        spans.sort_by_key(|p| (p.line, std::cmp::Reverse(p.col)));
        for span in spans {
            let Some(line) = lines.get_mut(span.line.saturating_sub(1) as usize) else {
                continue;
            };
            let chars: Vec<char> = line.chars().collect();
            let start = (span.col.saturating_sub(1) as usize).min(chars.len());
            let end = (start + span.len as usize).min(chars.len());
            let mut quoted = String::new();
            quoted.extend(&chars[..start]);
            quoted.push_str(&format!("\"{MASK}\""));
            quoted.extend(&chars[end..]);
            *line = quoted;
        }
        let mut text = lines.join("\n");
        if self.rendered.ends_with('\n') {
            text.push('\n');
        }
        mask_secrets(&text, self.secrets.values())
    }
}

impl Config {
    /// `text` with every secret's value masked.
    pub fn mask(&self, text: &str) -> String {
        mask_secrets(text, self.secrets.values())
    }

    /// A JSON value with every secret's value masked inside its strings (keys too).
    pub fn mask_json(&self, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        if self.secrets.is_empty() {
            return value;
        }
        match value {
            J::String(s) => J::String(self.mask(&s)),
            J::Array(items) => J::Array(items.into_iter().map(|v| self.mask_json(v)).collect()),
            J::Object(map) => J::Object(
                map.into_iter()
                    .map(|(k, v)| (self.mask(&k), self.mask_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// Replaces each secret's text in `text` by [`MASK`]. Values shorter than four characters
/// are left alone: masking every `1` or `a` would hide more than it protects.
pub fn mask_secrets<'a>(text: &str, secrets: impl Iterator<Item = &'a String>) -> String {
    Masker::new(secrets).mask(text)
}

/// Every form in which a secret's value may show up in what a job prints: as it is,
/// JSON-escaped (`printf '%s' "$JOBCTL_KWARGS"` prints it so; dash's `echo` then turns
/// `\\` into `\`), shell-quoted (as jobctl's values
/// file and `set -x` write it), and base64 of the whole value (as GitHub Actions masks).
/// Made once per job; [`Masker::mask`] replaces each form by [`MASK`].
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so that a form containing another is replaced whole.
    forms: Vec<String>,
}

impl Masker {
    pub fn new<'a>(secrets: impl Iterator<Item = &'a String>) -> Masker {
        use base64::Engine as _;
        let mut forms = Vec::new();
        for value in secrets.filter(|s| s.chars().count() >= 4) {
            let json = serde_json::to_string(value).expect("a string serializes");
            let json = json[1..json.len() - 1].to_owned();
            // dash's `echo "$JOBCTL_KWARGS"` turns the JSON's `\\` back into `\`.
            let echoed = json.replace("\\\\", "\\");
            let quoted = value.replace('\'', "'\\''");
            let base64 = base64::engine::general_purpose::STANDARD.encode(value);
            let unpadded = base64.trim_end_matches('=').to_owned();
            forms.extend([value.clone(), json, echoed, quoted, base64, unpadded]);
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        Masker { forms }
    }

    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// The longest form's length in bytes: a cut in a stream of text must look this far
    /// ahead to be sure it does not split one.
    pub fn longest(&self) -> usize {
        self.forms.first().map_or(0, String::len)
    }

    pub fn mask(&self, text: &str) -> String {
        let mut text = std::borrow::Cow::Borrowed(text);
        for form in &self.forms {
            if text.contains(form.as_str()) {
                text = text.replace(form.as_str(), MASK).into();
            }
        }
        text.into_owned()
    }

    /// Where to cut `bytes` at about `at` without splitting a form of a secret (which
    /// would then be masked in neither piece), nor a UTF-8 character where one can be
    /// kept whole: `at`, moved back to a character's start, or to the end of a form that
    /// spans it. `bytes` should reach `at + longest()` for the answer to be final.
    pub fn cut(&self, bytes: &[u8], at: usize) -> usize {
        let at = at.min(bytes.len());
        // A UTF-8 character is at most 4 bytes: its start is at most 3 back.
        let cut = (at.saturating_sub(3)..=at)
            .rev()
            .find(|&i| i == bytes.len() || bytes[i] & 0xC0 != 0x80)
            .filter(|&i| i > 0)
            .unwrap_or(at);
        let mut end = cut;
        for form in &self.forms {
            let form = form.as_bytes();
            // Every occurrence inside this window starts before the cut and ends after.
            let from = cut.saturating_sub(form.len() - 1);
            let to = (cut + form.len() - 1).min(bytes.len());
            if to - from < form.len() {
                continue;
            }
            if let Some(found) = bytes[from..to].windows(form.len()).rposition(|w| w == form) {
                end = end.max(from + found + form.len());
            }
        }
        end
    }
}

/// `1h`, `30m`, `1h30m`, `90s`, `500ms`, `2d`, `1w`; a bare integer is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a duration cannot be empty".into());
    }
    let total = parse_any_duration(text)?;
    if total > crate::limits::MAX_DURATION {
        return Err(format!(
            "`{text}` is too long a duration (at most {}, about a century)",
            format_duration(crate::limits::MAX_DURATION)
        ));
    }
    Ok(total)
}

/// [`parse_duration`] without its bound.
fn parse_any_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration (write it like `90s`, `30m`, `1h30m` or `2d`)"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}` is too long a duration"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "sec" | "secs" => Duration::from_secs(n),
            "m" | "min" | "mins" => Duration::from_secs(n.saturating_mul(60)),
            "h" | "hr" | "hrs" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "w" => Duration::from_secs(n.saturating_mul(604_800)),
            "" => {
                return Err(format!(
                    "`{text}` needs a unit after {n} (ms, s, m, h, d or w)"
                ));
            }
            other => {
                return Err(format!(
                    "`{other}` is not a unit of time in `{text}` (use ms, s, m, h, d or w)"
                ));
            }
        };
        total = total.saturating_add(part);
    }
    Ok(total)
}

/// The shortest way to write a duration that [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

impl Job {
    /// The job a build's snapshot (its `config`, as `jobs --json` shows a job) describes:
    /// what a worker runs, whatever its own config says. A snapshot this jobctl cannot
    /// read (written by a newer one, or edited by hand) is an error naming the field.
    pub fn from_snapshot(snapshot: &serde_json::Value) -> Result<Job, String> {
        use serde_json::Value as J;
        let obj = snapshot
            .as_object()
            .ok_or("the snapshot is not a JSON object")?;
        let text = |key: &str| -> Result<Option<String>, String> {
            match obj.get(key) {
                None | Some(J::Null) => Ok(None),
                Some(J::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("`{key}` is not a string")),
            }
        };
        let number = |key: &str, default: u64| -> Result<u64, String> {
            match obj.get(key) {
                None | Some(J::Null) => Ok(default),
                Some(v) => v.as_u64().ok_or(format!("`{key}` is not a number")),
            }
        };
        let duration = |key: &str| -> Result<Option<Duration>, String> {
            text(key)?
                .map(|t| parse_duration(&t).map_err(|e| format!("`{key}`: {e}")))
                .transpose()
        };
        let map = |key: &str| -> Result<ValueMap, String> {
            match obj.get(key) {
                None | Some(J::Null) => Ok(ValueMap::default()),
                Some(J::Object(m)) => Ok(ValueMap(
                    m.iter()
                        .map(|(k, v)| (k.clone(), Value::from_snapshot(v)))
                        .collect(),
                )),
                Some(_) => Err(format!("`{key}` is not an object")),
            }
        };
        let list = |key: &str| -> Result<Vec<J>, String> {
            match obj.get(key) {
                None | Some(J::Null) => Ok(Vec::new()),
                Some(J::Array(items)) => Ok(items.clone()),
                Some(_) => Err(format!("`{key}` is not a list")),
            }
        };
        let names = |key: &str| -> Result<Vec<String>, String> {
            list(key)?
                .into_iter()
                .map(|v| match v {
                    J::String(s) => Ok(s),
                    _ => Err(format!("`{key}` holds a value that is not a string")),
                })
                .collect()
        };
        let id = text("id")?.ok_or("`id` is missing")?;
        let action = match (text("run")?, text("function")?) {
            (Some(run), _) => Action::Run(run),
            (None, Some(function)) => Action::Function(function),
            (None, None) => return Err("neither `run` nor `function` is there".into()),
        };
        let dependencies = names("dependencies")?
            .iter()
            .map(|d| JobId::parse(d).ok_or(format!("`{d}` is not a job id")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Job {
            id: JobId::parse(&id).ok_or(format!("`{id}` is not a job id"))?,
            title: text("title")?,
            notes: text("notes")?,
            action,
            args: list("args")?.iter().map(Value::from_snapshot).collect(),
            kwargs: map("kwargs")?,
            env: map("env")?,
            dependencies,
            timeout: duration("timeout")?,
            retries: number("retries", 0)?.min(u64::from(u32::MAX)) as u32,
            retry_delay: duration("retry_delay")?.unwrap_or(Duration::from_secs(5)),
            protect: obj.get("protect").and_then(J::as_bool).unwrap_or(false),
            cleanup: text("cleanup")?,
            schedule: text("schedule")?.map(|expr| Schedule { expr }),
            concurrency: number("concurrency", 1)?.clamp(1, 10_000) as u32,
            labels: names("labels")?,
            workdir: PathBuf::from(text("workdir")?.unwrap_or_else(|| ".".into())),
            dependency_pos: Vec::new(),
            pos: RenderedPos::default(),
        })
    }
}

impl Value {
    /// A value as a snapshot writes it: `{"!retval": JOB}` and `{"!secret": NAME}` are
    /// references again.
    pub fn from_snapshot(json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::List(items.iter().map(Value::from_snapshot).collect()),
            J::Object(m) => {
                if m.len() == 1 {
                    let (k, v) = m.iter().next().expect("one entry");
                    match (k.as_str(), v.as_str()) {
                        ("!retval", Some(job)) => {
                            if let Some(id) = JobId::parse(job) {
                                return Value::Retval(id);
                            }
                        }
                        ("!secret", Some(name)) => return Value::Secret(name.to_owned()),
                        _ => {}
                    }
                }
                Value::Map(ValueMap(
                    m.iter()
                        .map(|(k, v)| (k.clone(), Value::from_snapshot(v)))
                        .collect(),
                ))
            }
        }
    }
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

fn serialize_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_duration(*d)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        for (text, secs) in [
            ("90", 90),
            ("90s", 90),
            ("30m", 1800),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("2d", 172_800),
            ("1w", 604_800),
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(d.as_secs(), secs, "{text}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5").is_ok());
    }

    #[test]
    fn durations_stop_at_a_century() {
        assert_eq!(
            parse_duration("36500d").unwrap(),
            crate::limits::MAX_DURATION
        );
        assert_eq!(
            parse_duration("5214w 2d").unwrap(),
            crate::limits::MAX_DURATION
        );
        for long in [
            "36500d 1ms",
            "36501d",
            "99999999d",
            "3153600001",
            "18446744073709551615s",
        ] {
            let err = parse_duration(long).unwrap_err();
            assert!(err.contains("too long a duration"), "{long}: {err}");
        }
    }

    #[test]
    fn ids_take_only_safe_characters() {
        assert!(JobId::parse("crawl_example.com-2").is_some());
        for bad in ["", "a b", "a/b", "ü", "a:b"] {
            assert!(JobId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn every_form_of_a_secret_is_masked() {
        let secret = r#"pa"ss\w'rd"#.to_string();
        let masker = Masker::new([secret].iter());
        for leak in [
            r#"pa"ss\w'rd"#,
            r#"{"TOKEN": "pa\"ss\\w'rd"}"#,
            r#"TOKEN='pa"ss\w'\''rd'"#,
            "cGEic3NcdydyZA==",
            "x cGEic3NcdydyZA y",
        ] {
            let masked = masker.mask(leak);
            assert!(masked.contains(MASK), "{leak} -> {masked}");
            assert!(!masked.contains("ss\\w"), "{leak} -> {masked}");
            assert!(!masked.contains("cGEic3Nc"), "{leak} -> {masked}");
        }
    }

    #[test]
    fn a_cut_never_splits_a_secret_or_a_character() {
        let masker = Masker::new(["s3cr3t-token".to_string()].iter());
        let text = b"aaaaas3cr3t-tokenbbbb";
        for at in 6..17 {
            assert_eq!(masker.cut(text, at), 17, "at {at}");
        }
        assert_eq!(masker.cut(text, 3), 3);
        assert_eq!(masker.cut(text, 18), 18);
        let text = "aé".as_bytes();
        assert_eq!(Masker::default().cut(text, 2), 1);
        assert_eq!(Masker::default().cut(b"abc", 10), 3);
    }

    #[test]
    fn short_secrets_are_not_masked_everywhere() {
        let secrets = ["s3cr3t-token".to_string(), "ab".to_string()];
        assert_eq!(
            mask_secrets("x s3cr3t-token ab", secrets.iter()),
            "x ******** ab"
        );
    }
}
