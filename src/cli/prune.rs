use std::io::Write;

use super::logs::parse_level;
use super::{Context, parse_build_id, write_out};
use crate::config::model::parse_duration;
use crate::error::CliError;
use crate::store::{BuildId, LogLevel, OpenMode, PruneLogs, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this job's builds
    #[arg(long)]
    job: Option<String>,
    /// Only this build
    #[arg(long, value_parser = parse_build_id)]
    build: Option<BuildId>,
    /// Lines older than this (30d, 12h; 0s for all), whatever their level's retention
    #[arg(long)]
    older_than: Option<String>,
    /// Only lines of this level
    #[arg(long, value_parser = parse_level)]
    level: Option<LogLevel>,
    /// Print JSON: {"deleted_log_lines": N}
    #[arg(long)]
    json: bool,
}

/// Deletes log lines. Without `--older-than`, each level keeps its retention: the config's
/// `retention:`, else debug 15d, info 30d, warning 90d, error 183d, critical 366d.
pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let older_than = args
        .older_than
        .as_deref()
        .map(|t| parse_duration(t).map_err(|_| CliError::BadTime(t.to_owned())))
        .transpose()?;
    let store = ctx.store(config, OpenMode::Use).await?;
    if let Some(job) = &args.job {
        super::known_job(&store, config, job).await?;
    }
    if let Some(build) = args.build {
        super::find_build(&store, config, build).await?;
    }
    let now = chrono::Utc::now();
    let levels: Vec<LogLevel> = match args.level {
        Some(level) => vec![level],
        None => LogLevel::ALL.to_vec(),
    };
    let mut deleted = 0;
    for level in levels {
        let keep = older_than.unwrap_or_else(|| {
            config
                .retention
                .get(level.as_str())
                .copied()
                .unwrap_or_else(|| level.default_retention())
        });
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        deleted += store
            .prune_logs(&PruneLogs {
                job: args.job.clone(),
                build: args.build,
                level: Some(level),
                older_than: now.checked_sub_signed(keep),
            })
            .await?;
    }
    if args.json {
        return write_out(out, &format!("{{\"deleted_log_lines\": {deleted}}}\n"));
    }
    let noun = if deleted == 1 { "line" } else { "lines" };
    write_out(out, &format!("deleted {deleted} log {noun}\n"))
}
