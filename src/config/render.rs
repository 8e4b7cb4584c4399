//! The render stage: the config template through minijinja, and the map from rendered lines
//! back to the lines the user wrote.
//!
//! ```text
//!   jobs.yaml.j2 ──► minijinja (strict) ──► rendered YAML ──► parse ──► resolve
//!        │                                        ▲
//!        └─(only when a mistake must be shown)──► instrumented render ──► SourceMap
//! ```
//!
//! minijinja does not say which template line produced an output line. When a mistake has
//! to be shown, the template is rendered a second time with an invisible marker at the end
//! of every line of template text; each output line then carries the file and line it came
//! from, macro bodies and included files included. The markers are Unicode space characters,
//! so Jinja's whitespace control treats them as the spaces they sit beside. The map is only
//! trusted if the second output, markers removed, is the first output to the byte;
//! otherwise positions are given in the rendered text, which is then shown instead.
//! The happy path renders once and pays nothing for this.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::{AutoEscape, Environment, ErrorKind, TemplateSource, UndefinedBehavior, Value};

use super::node::RenderedPos;

/// A file the user wrote (or, as a fallback, the rendered text), kept for snippets.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user would write it: relative to where they stand when they gave
    /// a relative `-c`.
    pub name: String,
    pub text: String,
}

/// A place in a file the user wrote.
#[derive(Debug, Clone)]
pub struct SourcePos {
    pub file: Arc<SourceFile>,
    /// 1-based line and column (column in characters).
    pub line: usize,
    pub col: usize,
    /// Length of the marked region in characters (at least 1 where the line has room).
    pub len: usize,
}

/// A template that failed to render: what minijinja said and where.
#[derive(Debug)]
pub struct TemplateFailure {
    pub message: String,
    pub pos: Option<SourcePos>,
}

/// Renders one config template with its includes and imports.
pub struct Renderer {
    dir: PathBuf,
    display_dir: PathBuf,
    main: String,
    vars: Vec<(String, String)>,
}

type Loaded = Arc<Mutex<Vec<(String, Arc<SourceFile>)>>>;

impl Renderer {
    /// `path` as the user gave it; templates it includes are found relative to its folder.
    pub fn new(path: &Path, vars: Vec<(String, String)>) -> Self {
        let display_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if display_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            display_dir.clone()
        };
        let main = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Renderer {
            dir,
            display_dir,
            main,
            vars,
        }
    }

    /// Renders the template as it is: the text that is parsed.
    pub fn render(&self) -> Result<String, Box<TemplateFailure>> {
        self.render_from().map(|(text, _)| text)
    }

    /// As [`Renderer::render`], with the paths of the files the template read.
    pub fn render_from(&self) -> Result<(String, Vec<PathBuf>), Box<TemplateFailure>> {
        let loaded = Loaded::default();
        let env = self.environment(&loaded, false);
        let result = env
            .get_template(&self.main)
            .and_then(|template| template.render(self.context()));
        let text = result.map_err(|err| Box::new(self.failure(&err, &loaded)))?;
        let max = limit(SIZE_ENV, DEFAULT_MAX_RENDERED) as usize;
        if text.len() > max {
            return Err(Box::new(TemplateFailure {
                message: format!(
                    "the rendered config is {} bytes, over the limit of {max} bytes \
                     (set {SIZE_ENV} to raise it)",
                    text.len()
                ),
                pos: None,
            }));
        }
        let sources = match loaded.lock() {
            Ok(files) => files.iter().map(|(name, _)| self.dir.join(name)).collect(),
            Err(_) => vec![self.dir.join(&self.main)],
        };
        Ok((text, sources))
    }

    /// Renders again with line markers and builds the map back to template lines. `None`
    /// when the instrumented output does not reduce to `plain` (then no map can be trusted).
    pub fn source_map(&self, plain: &str) -> Option<SourceMap> {
        let loaded = Loaded::default();
        let env = self.environment(&loaded, true);
        let marked = env
            .get_template(&self.main)
            .and_then(|template| template.render(self.context()))
            .ok()?;
        let files = loaded.lock().ok()?.iter().map(|(_, f)| f.clone()).collect();
        SourceMap::build(&marked, plain, files)
    }

    /// The display name of the main config file.
    pub fn main_display_name(&self) -> String {
        display_name(&self.display_dir, &self.main)
    }

    fn context(&self) -> Value {
        Value::from_pairs(
            self.vars
                .iter()
                .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str()))),
        )
    }

    fn environment(&self, loaded: &Loaded, instrument: bool) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_debug(true);
        env.add_function("env", env_function);
        // Loops and macros cannot run for ever (10^12 iterations used to).
        env.set_fuel(Some(limit(FUEL_ENV, DEFAULT_FUEL)));
        let dir = self.dir.clone();
        let display_dir = self.display_dir.clone();
        let loaded = loaded.clone();
        let main = self.main.clone();
        env.set_loader(move |name| {
            let text = match read_template(&dir, name, name == main) {
                Ok(Some(text)) => text,
                Ok(None) => return Ok(None),
                Err(message) => {
                    return Err(minijinja::Error::new(ErrorKind::InvalidOperation, message));
                }
            };
            let mut files = loaded.lock().expect("template loader lock");
            let file_id = files.len();
            let source = if instrument {
                instrument_template(&text, file_id)
            } else {
                text.clone()
            };
            files.push((
                name.to_owned(),
                Arc::new(SourceFile {
                    name: display_name(&display_dir, name),
                    text,
                }),
            ));
            Ok(Some(TemplateSource::new(source)))
        });
        env
    }

    fn failure(&self, err: &minijinja::Error, loaded: &Loaded) -> TemplateFailure {
        // An error inside an included template comes wrapped; the innermost one with a
        // place is the one the user needs to see.
        let mut innermost = err;
        let mut cur: &dyn std::error::Error = err;
        while let Some(next) = cur.source() {
            if let Some(jinja) = next.downcast_ref::<minijinja::Error>()
                && jinja.line().is_some()
            {
                innermost = jinja;
            }
            cur = next;
        }
        let err = innermost;
        let files = loaded.lock().map(|f| f.clone()).unwrap_or_default();
        let spelled = err.name().zip(err.range()).and_then(|(name, range)| {
            let file = &files.iter().find(|(n, _)| n == name)?.1;
            file.text.get(range).map(str::trim).map(str::to_owned)
        });
        let message = match (err.kind(), err.detail(), spelled) {
            (ErrorKind::OutOfFuel, _, _) => format!(
                "the template ran too long: it took more than {} steps (set {FUEL_ENV} to \
                 raise the limit)",
                limit(FUEL_ENV, DEFAULT_FUEL)
            ),
            (ErrorKind::UndefinedError, _, Some(expr)) if !expr.contains('\n') => format!(
                "undefined variable: `{expr}` is not defined (pass it with `--var NAME=VALUE` or `{{% set %}}` it)"
            ),
            (kind, Some(detail), _) => format!("{}: {}", describe_kind(kind), detail),
            (kind, None, _) => describe_kind(kind).to_owned(),
        };
        let pos = err.name().and_then(|name| {
            let file = files.iter().find(|(n, _)| n == name)?.1.clone();
            let (line, col, len) = match (err.range(), err.line()) {
                (Some(range), _) if range.start <= file.text.len() => {
                    let before = &file.text[..range.start];
                    let line = before.matches('\n').count() + 1;
                    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                    let col = file.text[line_start..range.start].chars().count() + 1;
                    let end = range.end.min(file.text.len());
                    let len = file
                        .text
                        .get(range.start..end)
                        .map_or(1, |s| s.lines().next().unwrap_or("").chars().count());
                    (line, col, len.max(1))
                }
                (_, Some(line)) => (line, 1, 1),
                _ => return None,
            };
            Some(SourcePos {
                file,
                line,
                col,
                len,
            })
        });
        TemplateFailure { message, pos }
    }
}

fn display_name(display_dir: &Path, name: &str) -> String {
    display_dir.join(name).to_string_lossy().into_owned()
}

/// Template instructions one render may run (minijinja's fuel), unless `JOBCTL_TEMPLATE_FUEL`
/// says otherwise: a 100k-job config takes a few million.
pub const DEFAULT_FUEL: u64 = 50_000_000;
pub const FUEL_ENV: &str = "JOBCTL_TEMPLATE_FUEL";

/// The rendered config's size at most, unless `JOBCTL_MAX_CONFIG_BYTES` says otherwise;
/// also the size of one file a template includes.
pub const DEFAULT_MAX_RENDERED: u64 = 256 * 1024 * 1024;
pub const SIZE_ENV: &str = "JOBCTL_MAX_CONFIG_BYTES";

/// A limit from the environment, or its default.
fn limit(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The text of template `name`, for `{% include %}`, `{% import %}` and the config
/// itself: only a regular file in the config's folder or below it (no absolute path, no
/// `..` out of it, no link that leads out), of at most the size limit. `Ok(None)`: no
/// such file. A refusal says why and echoes nothing of the file.
fn read_template(dir: &Path, name: &str, main: bool) -> Result<Option<String>, String> {
    use std::io::Read as _;
    let outside = || {
        format!(
            "`{name}` is outside the config's folder: templates can include only files in \
             it or below it"
        )
    };
    if !main
        && Path::new(name).components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(outside());
    }
    let path = dir.join(name);
    // Looked at before it is opened: opening a FIFO would wait for a writer.
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(format!(
                "`{name}` is not a regular file (a device, a pipe or a folder cannot be a \
                 template)"
            ));
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot read template `{}`: {err}", path.display())),
    }
    let file = std::fs::File::open(&path)
        .map_err(|err| format!("cannot read template `{}`: {err}", path.display()))?;
    if !main {
        // A link inside the folder may lead out of it.
        let root = std::fs::canonicalize(dir).map_err(|err| err.to_string())?;
        let real = std::fs::canonicalize(&path).map_err(|err| err.to_string())?;
        if !real.starts_with(&root) {
            return Err(outside());
        }
    }
    let max = limit(SIZE_ENV, DEFAULT_MAX_RENDERED);
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|err| format!("cannot read template `{}`: {err}", path.display()))?;
    if text.len() as u64 > max {
        return Err(format!(
            "`{name}` is over the limit of {max} bytes (set {SIZE_ENV} to raise it)"
        ));
    }
    Ok(Some(text))
}

fn describe_kind(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::OutOfFuel => "the template ran too long",
        ErrorKind::SyntaxError => "template syntax error",
        ErrorKind::UndefinedError => "undefined variable",
        ErrorKind::TemplateNotFound => "template not found",
        ErrorKind::UnknownFunction => "unknown function",
        ErrorKind::UnknownFilter => "unknown filter",
        ErrorKind::UnknownTest => "unknown test",
        ErrorKind::MissingArgument => "missing argument",
        ErrorKind::TooManyArguments => "too many arguments",
        ErrorKind::InvalidOperation => "template error",
        ErrorKind::BadEscape => "bad string escape",
        _ => "template error",
    }
}

/// `env("NAME")` or `env("NAME", default)`: the process environment, for secrets and
/// per-machine settings. Without a default an unset variable is an error, like any
/// undefined value in a strict template.
fn env_function(name: String, default: Option<Value>) -> Result<Value, minijinja::Error> {
    match std::env::var(&name) {
        Ok(value) => Ok(Value::from(value)),
        Err(_) => default.ok_or_else(|| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "environment variable `{name}` is not set (give a default: env('{name}', ''))"
                ),
            )
        }),
    }
}

const MARK_START: char = '\u{2000}';
const MARK_DIGIT0: u32 = 0x2001; // eight digits, U+2001..=U+2008
const MARK_SEP: char = '\u{2009}';
const MARK_END: char = '\u{200A}';

fn is_mark_char(c: char) -> bool {
    ('\u{2000}'..='\u{200A}').contains(&c)
}

fn push_octal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 24];
    let mut i = 0;
    loop {
        digits[i] = (n % 8) as u8;
        i += 1;
        n /= 8;
        if n == 0 {
            break;
        }
    }
    for &d in digits[..i].iter().rev() {
        out.push(char::from_u32(MARK_DIGIT0 + u32::from(d)).expect("marker digit"));
    }
}

fn push_marker(out: &mut String, file: usize, line: usize) {
    out.push(MARK_START);
    push_octal(out, file);
    out.push(MARK_SEP);
    push_octal(out, line);
    out.push(MARK_END);
}

/// Puts a marker naming `(file, line)` before every newline of template text (outside
/// `{{ }}`, `{% %}` and `{# #}`), and at the end of a last line without a newline.
fn instrument_template(text: &str, file: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    let mut line = 1;
    let mut rest = text;
    let mut in_data_at_end = true;
    while !rest.is_empty() {
        // Template text up to the next tag opener.
        let next_tag = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|open| rest.find(open).map(|i| (i, *open)))
            .min_by_key(|(i, _)| *i);
        let data_end = next_tag.map_or(rest.len(), |(i, _)| i);
        for c in rest[..data_end].chars() {
            if c == '\n' {
                push_marker(&mut out, file, line);
                line += 1;
            }
            out.push(c);
        }
        rest = &rest[data_end..];
        in_data_at_end = true;
        if let Some((_, open)) = next_tag {
            let close = match open {
                "{{" => "}}",
                "{%" => "%}",
                _ => "#}",
            };
            let tag_end = rest[2..]
                .find(close)
                .map_or(rest.len(), |i| i + 2 + close.len());
            let tag = &rest[..tag_end];
            line += tag.matches('\n').count();
            out.push_str(tag);
            rest = &rest[tag_end..];
            in_data_at_end = false;
        }
    }
    if in_data_at_end && !text.ends_with('\n') {
        push_marker(&mut out, file, line);
    }
    out
}

/// For each rendered line, the template file and line it came from.
pub struct SourceMap {
    lines: Vec<(usize, usize)>,
    files: Vec<Arc<SourceFile>>,
}

impl SourceMap {
    fn build(marked: &str, plain: &str, files: Vec<Arc<SourceFile>>) -> Option<SourceMap> {
        let mut stripped = String::with_capacity(plain.len());
        let mut lines: Vec<Option<(usize, usize)>> = Vec::new();
        let mut current: Option<(usize, usize)> = None;
        let mut chars = marked.chars().peekable();
        while let Some(c) = chars.next() {
            if c == MARK_START {
                let mut file = 0usize;
                let mut line = 0usize;
                let mut in_line = false;
                for d in chars.by_ref() {
                    match d {
                        MARK_SEP => in_line = true,
                        MARK_END => break,
                        _ if (MARK_DIGIT0..MARK_DIGIT0 + 8).contains(&(d as u32)) => {
                            let digit = (d as u32 - MARK_DIGIT0) as usize;
                            if in_line {
                                line = line * 8 + digit;
                            } else {
                                file = file * 8 + digit;
                            }
                        }
                        _ => return None,
                    }
                }
                // The first marker on a line wins: a template line that ends in an
                // `{% include %}` or a macro call is followed by its own marker.
                current = current.or(Some((file, line)));
                continue;
            }
            if is_mark_char(c) {
                // A marker cut apart (a filter trimmed part of it): its place is lost.
                continue;
            }
            stripped.push(c);
            if c == '\n' {
                lines.push(current.take());
            }
        }
        lines.push(current.take());
        if stripped != plain {
            return None;
        }
        // A line whose newline came from a value (a multi-line string) has no marker of
        // its own: it belongs to the line the value was written on, the next marked one.
        let mut next = None;
        let mut filled = vec![(0, 0); lines.len()];
        for (i, line) in lines.iter().enumerate().rev() {
            if line.is_some() {
                next = *line;
            }
            filled[i] = next.or_else(|| lines.iter().rev().flatten().next().copied())?;
        }
        if filled.iter().any(|&(file, _)| file >= files.len()) {
            return None;
        }
        Some(SourceMap {
            lines: filled,
            files,
        })
    }

    /// Where the user wrote what ended up at `pos` in the rendered text.
    pub fn locate(&self, rendered: &str, pos: RenderedPos) -> SourcePos {
        let index = (pos.line.saturating_sub(1) as usize).min(self.lines.len() - 1);
        let (file, line) = self.lines[index];
        let file = self.files[file].clone();
        let source_line = file.text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let rendered_line = rendered.lines().nth(index).unwrap_or("");
        let (col, len) = map_column(
            rendered_line,
            source_line,
            pos.col as usize,
            pos.len as usize,
        );
        SourcePos {
            file,
            line,
            col,
            len,
        }
    }
}

/// Maps a column of a rendered line to the template line it came from. Text before and
/// after the substituted parts lines up exactly; a place inside a substitution points at
/// the start of the first `{{` that could have produced it.
fn map_column(rendered: &str, source: &str, col: usize, len: usize) -> (usize, usize) {
    let r: Vec<char> = rendered.chars().collect();
    let s: Vec<char> = source.chars().collect();
    if r == s {
        return (col, len);
    }
    let prefix = r.iter().zip(&s).take_while(|(a, b)| a == b).count();
    let suffix = r
        .iter()
        .rev()
        .zip(s.iter().rev())
        .take_while(|(a, b)| a == b)
        .count()
        .min(r.len().min(s.len()) - prefix);
    let c0 = col.saturating_sub(1);
    if c0 + len <= prefix {
        return (col, len);
    }
    if c0 >= r.len() - suffix {
        let from_end = r.len().saturating_sub(c0);
        return (s.len() - from_end + 1, len.min(from_end).max(1));
    }
    // Inside what the template substituted: point at the expression that produced it.
    let start = c0.min(prefix);
    let end = s.len() - suffix;
    let window: String = s[start..end].iter().collect();
    let (from, to) = match window.find("{{") {
        Some(b) => {
            let from = start + window[..b].chars().count();
            let rest: String = s[from..].iter().collect();
            let to = rest
                .find("}}")
                .map_or(s.len(), |j| from + rest[..j].chars().count() + 2);
            (from, to)
        }
        None => (start, end.max(start + 1)),
    };
    (from + 1, (to - from).max(1))
}

/// The marked text of a template with the markers spelled `<file:line>`.
#[cfg(test)]
fn debug_instrument(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for c in instrument_template(text, 0).chars() {
        match c {
            MARK_START => out.push('<'),
            MARK_SEP => out.push(':'),
            MARK_END => out.push('>'),
            c if (MARK_DIGIT0..MARK_DIGIT0 + 8).contains(&(c as u32)) => {
                let _ = write!(out, "{}", c as u32 - MARK_DIGIT0);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_go_before_newlines_of_template_text_only() {
        let text = "a: 1\n{% if x %}\nb: {{ y }}\n{% endif %}";
        assert_eq!(
            debug_instrument(text),
            "a: 1<0:1>\n{% if x %}<0:2>\nb: {{ y }}<0:3>\n{% endif %}"
        );
        assert_eq!(
            debug_instrument("x\n{#\n\n#}\ny"),
            "x<0:1>\n{#\n\n#}<0:4>\ny<0:5>"
        );
    }

    #[test]
    fn columns_map_through_substitutions() {
        let src = "  - id: crawl_{{ name }}";
        let out = "  - id: crawl_example_com";
        // `id` is before any substitution.
        assert_eq!(map_column(out, src, 5, 2), (5, 2));
        // inside the substituted value: the expression.
        assert_eq!(map_column(out, src, 15, 3), (15, 10));
        let src = "    timeout: {{ t }} # comment";
        let out = "    timeout: 5x # comment";
        assert_eq!(map_column(out, src, 19, 7), (24, 7));
        // A place past the end of the rendered line (an "unexpected end" error).
        assert_eq!(map_column("a: b", "a: {{ x }}", 5, 1), (11, 1));
        assert_eq!(map_column("a: b", "a: {{ x }}", 40, 1), (11, 1));
    }
}
