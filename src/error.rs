//! The program's edge: every error a command can end with, and the exit code it maps to.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the config is invalid (template, YAML or validation mistakes) |
//! | 2 | usage error: bad command line, unknown job or build, config file missing or unreadable |
//! | 3 | storage or channel error: the database, or a job's channel, cannot be reached, read or written |
//! | 4 | a command the config defines failed: a build (or one was not run because of it), a job's `cleanup` |
//! | 70 | internal error: a bug in jobctl, please report it |

use std::process::ExitCode;

use crate::config::LoadError;
use crate::store::{BuildId, StoreError};

/// Documented exit codes (see docs/cli.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const CONFIG: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const STORAGE: u8 = 3;
    pub const COMMAND: u8 = 4;
    pub const INTERNAL: u8 = 70;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("no job `{id}` in {config}{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownJob {
        id: String,
        config: String,
        suggestion: Option<String>,
    },
    #[error("`--var {0}` must look like NAME=VALUE")]
    BadVar(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no build {id} in {url}")]
    NoBuild { id: BuildId, url: String },
    #[error("`{0}` is neither a duration (30m, 2d) nor a time (2026-11-23T08:00:00Z)")]
    BadTime(String),
    #[error(
        "uninstall deletes every build, log and return value in {url}; run `jobctl uninstall --yes` to do it"
    )]
    UninstallNeedsYes { url: String },
    #[error("the cleanup of build {id} failed ({status}); the build is kept")]
    CleanupFailed { id: BuildId, status: String },
    #[error(
        "build {id} is {status}: its cleanup cannot run under it; `jobctl delete {id} --cancel` cancels it first"
    )]
    BuildNotFinished { id: BuildId, status: &'static str },
    #[error("build {id} did not end within {waited}s of its cancel; it is kept")]
    CancelTimedOut { id: BuildId, waited: u64 },
    #[error("cannot run the cleanup of build {id}")]
    CleanupSpawn {
        id: BuildId,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Channel(#[from] crate::exec::channel::SendError),
    #[error("{0}")]
    BadReport(String),
    #[error("name the jobs to build, or --all")]
    NothingToBuild,
    #[error("`{}` is not a label: a label is up to 64 letters, digits, `_`, `.` and `-`, such as `gpu`", crate::limits::visible(&crate::limits::cut_text(.0, 64)))]
    BadLabel(String),
    #[error("a worker has at most {max} labels, not {0}", max = crate::config::model::MAX_WORKER_LABELS)]
    TooManyLabels(usize),
    #[error("{} protected: run again with --yes to build {}", list(.0), if .0.len() == 1 { "it" } else { "them" })]
    Protected(Vec<String>),
    #[error("the build did not succeed: {failed} failed, {not_run} not run, {cancelled} cancelled")]
    BuildFailed {
        failed: usize,
        not_run: usize,
        cancelled: usize,
    },
    #[error(transparent)]
    Tui(#[from] crate::ui::tui::TuiError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    #[error("cannot encode JSON output")]
    Json(#[source] serde_json::Error),
}

/// `err` and its causes, `: `-joined; a cause an error already repeats in its own
/// message is said once.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(&format!(": {text}"));
        }
        source = cause.source();
    }
    out
}

/// `job `a`` / `jobs `a`, `b``.
fn list(ids: &[String]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| format!("`{id}`")).collect();
    let noun = if ids.len() == 1 { "job" } else { "jobs" };
    let verb = if ids.len() == 1 { "is" } else { "are" };
    format!("{noun} {} {verb}", quoted.join(", "))
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Load(LoadError::Invalid(_)) => exit::CONFIG,
            CliError::Load(LoadError::Read { .. })
            | CliError::UnknownJob { .. }
            | CliError::BadVar(_)
            | CliError::NoBuild { .. }
            | CliError::BadTime(_)
            | CliError::UninstallNeedsYes { .. }
            | CliError::BadReport(_)
            | CliError::BuildNotFinished { .. }
            | CliError::NothingToBuild
            | CliError::BadLabel(_)
            | CliError::TooManyLabels(_)
            | CliError::Protected(_)
            | CliError::Tui(crate::ui::tui::TuiError::NotATerminal)
            | CliError::Channel(
                crate::exec::channel::SendError::NoChannel
                | crate::exec::channel::SendError::BadChannel(_),
            ) => exit::USAGE,
            CliError::Store(_) | CliError::Channel(_) => exit::STORAGE,
            CliError::CleanupFailed { .. }
            | CliError::CancelTimedOut { .. }
            | CliError::CleanupSpawn { .. }
            | CliError::BuildFailed { .. } => exit::COMMAND,
            CliError::Output(_)
            | CliError::Json(_)
            | CliError::Runtime(_)
            | CliError::Tui(crate::ui::tui::TuiError::Terminal(_)) => exit::INTERNAL,
        }
    }

    /// The report for a person: config diagnostics as they are, other errors as
    /// `error: …` with their causes.
    pub fn report(&self, color: bool) -> String {
        if let CliError::Load(LoadError::Invalid(diagnostics)) = self {
            return diagnostics.render(color);
        }
        format!("error: {}\n", with_causes(self))
    }

    pub fn into_exit_code(self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}
