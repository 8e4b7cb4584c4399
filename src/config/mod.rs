//! Loading a config, in three stages a user can see:
//!
//! ```text
//!   jobs.yaml.j2 ──render──► YAML text ──parse──► node tree ──resolve──► Config
//!   (minijinja, strict)      (serde-saphyr,        (keys, types, defaults,
//!                             tags and spans)        references, cycles)
//! ```
//!
//! Any stage can find mistakes. They are collected as [`Problem`]s at places in the
//! rendered text, then mapped back to the files the user wrote ([`render::SourceMap`])
//! and shown together as [`Diagnostics`]. Nothing runs while there is one.

pub mod diagnostic;
pub mod model;
pub mod node;
pub mod render;
pub mod resolve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use diagnostic::{Diagnostic, Diagnostics, Problem};
pub use model::{Action, Config, Defaults, Job, JobId, MASK, Schedule, Value};
use node::RenderedPos;
use render::{Renderer, SourceFile, SourcePos};

/// The config file used when none is named.
pub const DEFAULT_CONFIG: &str = "jobs.yaml.j2";

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read config file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Renders, parses and resolves the config at `path` with `vars` as template variables.
pub fn load(path: &Path, vars: &[(String, String)]) -> Result<Config, LoadError> {
    load_with(path, vars, None)
}

/// As [`load`]; with `functions`, a `function:` not among them is one more mistake of
/// the same report.
pub fn load_with(
    path: &Path,
    vars: &[(String, String)],
    functions: Option<&[String]>,
) -> Result<Config, LoadError> {
    let readable = std::fs::File::open(path).and_then(|file| match file.metadata()?.is_dir() {
        true => Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory",
        )),
        false => Ok(()),
    });
    readable.map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let renderer = Renderer::new(path, vars.to_vec());
    let (text, sources) = renderer.render_from().map_err(|failure| {
        LoadError::Invalid(Diagnostics {
            file: renderer.main_display_name(),
            items: vec![Diagnostic {
                message: failure.message,
                at: failure.pos,
                label: Some("here".into()),
                help: None,
                related: Vec::new(),
            }],
        })
    })?;
    let root = match node::parse(&text) {
        Ok(root) => root,
        Err(err) => {
            let mut problem = Problem::new(
                format!("invalid YAML: {}", err.message),
                RenderedPos::default(),
            );
            problem.pos = err.pos;
            return Err(invalid(&renderer, &text, vec![problem.label("here")]));
        }
    };
    match resolve::resolve_with(root, path.to_path_buf(), functions) {
        Ok(mut config) => {
            config.rendered = text;
            config.sources = sources;
            Ok(config)
        }
        Err(problems) => Err(invalid(&renderer, &text, problems)),
    }
}

/// Maps problems found in the rendered text back to the template files.
fn invalid(renderer: &Renderer, rendered: &str, mut problems: Vec<Problem>) -> LoadError {
    let map = renderer.source_map(rendered);
    let fallback = Arc::new(SourceFile {
        name: format!("{} (rendered)", renderer.main_display_name()),
        text: rendered.to_owned(),
    });
    let locate = |pos: RenderedPos| match &map {
        Some(map) => map.locate(rendered, pos),
        None => SourcePos {
            file: fallback.clone(),
            line: pos.line as usize,
            col: pos.col as usize,
            len: pos.len as usize,
        },
    };
    problems.sort_by_key(|p| p.pos.map(|pos| (pos.line, pos.col)));
    let items = problems
        .into_iter()
        .map(|p| {
            let item = Diagnostic {
                message: p.message,
                at: p.pos.map(locate),
                label: p.label,
                help: p.help,
                related: p
                    .related
                    .into_iter()
                    .map(|(label, pos)| (label, locate(pos)))
                    .collect(),
            };
            (item, p.within)
        })
        .collect();
    LoadError::Invalid(Diagnostics {
        file: renderer.main_display_name(),
        items: diagnostic::merge_expansions(items),
    })
}
