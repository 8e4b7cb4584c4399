//! The program's edge: every error a command can end with, and the exit code it maps to.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the config is invalid (template, YAML or validation mistakes) |
//! | 2 | usage error: bad command line, unknown job, config file missing or unreadable |
//! | 70 | internal error: a bug in jobctl, please report it |

use std::process::ExitCode;

use crate::config::LoadError;

/// Documented exit codes (see docs/cli.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const CONFIG: u8 = 1;
    pub const USAGE: u8 = 2;
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
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    #[error("cannot encode JSON output")]
    Json(#[source] serde_json::Error),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Load(LoadError::Invalid(_)) => exit::CONFIG,
            CliError::Load(LoadError::Read { .. })
            | CliError::UnknownJob { .. }
            | CliError::BadVar(_) => exit::USAGE,
            CliError::Output(_) | CliError::Json(_) => exit::INTERNAL,
        }
    }

    /// The report for a person: config diagnostics as they are, other errors as
    /// `error: …` with their causes.
    pub fn report(&self, color: bool) -> String {
        if let CliError::Load(LoadError::Invalid(diagnostics)) = self {
            return diagnostics.render(color);
        }
        let mut out = format!("error: {self}");
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            out.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        out.push('\n');
        out
    }

    pub fn into_exit_code(self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }
}
