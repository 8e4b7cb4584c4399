use super::logs::parse_level;
use crate::error::CliError;
use crate::exec::channel::{Message, send};
use crate::store::LogLevel;

/// What a running job tells jobctl (see docs/channel.md).
#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// How far the job (or a group of its work) is
    Progress {
        /// The group this is about; repeat for a path (--group pages --group html)
        #[arg(long = "group", value_name = "NAME")]
        group: Vec<String>,
        /// Work done so far
        current: i64,
        /// Work to do in all, if known
        total: Option<i64>,
        /// A short line saying what is going on
        #[arg(long)]
        status: Option<String>,
    },
    /// A line for the build's log
    Log {
        /// debug, info, warning, error or critical
        #[arg(long, default_value = "info", value_parser = parse_level)]
        level: LogLevel,
        /// The message (words are joined with spaces)
        #[arg(required = true)]
        message: Vec<String>,
    },
    /// The build's return value, as JSON (`--string` for plain text)
    Retval {
        /// A JSON value, or with --string any text
        value: String,
        /// Take VALUE as a string, not as JSON
        #[arg(long)]
        string: bool,
    },
    /// End the build as skipped: there is nothing to do
    Skip {
        /// Why (words are joined with spaces)
        reason: Vec<String>,
    },
}

pub fn run(args: Args) -> Result<(), CliError> {
    let message = match args {
        Args::Progress {
            group,
            current,
            total,
            status,
        } => {
            if current < 0 || total.is_some_and(|t| t < 0) {
                return Err(CliError::BadReport(
                    "progress cannot be negative".to_owned(),
                ));
            }
            Message::Progress {
                group,
                current,
                total,
                status,
            }
        }
        Args::Log { level, message } => Message::Log {
            level,
            message: message.join(" "),
        },
        Args::Retval { value, string } => Message::Retval {
            value: if string {
                serde_json::Value::String(value)
            } else {
                serde_json::from_str(&value).map_err(|err| {
                    CliError::BadReport(format!(
                        "`{value}` is not JSON ({err}); use --string for plain text"
                    ))
                })?
            },
        },
        Args::Skip { reason } => Message::Skip {
            reason: reason.join(" "),
        },
    };
    send(&message)?;
    Ok(())
}
