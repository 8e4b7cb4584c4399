use std::io::Write;
use std::time::Duration;

use super::{Context, find_build, fmt_time, parse_build_id, parse_since, write_out};
use crate::error::CliError;
use crate::store::{BuildId, LogFilter, LogLevel, LogRow, OpenMode, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The build's number
    #[arg(value_parser = parse_build_id)]
    build: BuildId,
    /// Only this level and above (debug, info, warning, error, critical)
    #[arg(long, value_parser = parse_level)]
    level: Option<LogLevel>,
    /// Only lines since this long ago (30m, 2d) or this time (RFC 3339)
    #[arg(long)]
    since: Option<String>,
    /// Keep printing new lines until the build has finished
    #[arg(short, long)]
    follow: bool,
    /// Print one JSON object per line
    #[arg(long)]
    json: bool,
    /// Print only the lines as they were stored (secrets still masked), control
    /// characters and all, for piping
    #[arg(long, conflicts_with = "json")]
    raw: bool,
}

pub(super) fn parse_level(text: &str) -> Result<LogLevel, String> {
    LogLevel::parse(text)
        .ok_or_else(|| "unknown log level (known: debug, info, warning, error, critical)".into())
}

/// How often `--follow` looks for new lines. The log may be written by another process
/// or machine, so there is nothing to wait on but the database.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = ctx.store(config, OpenMode::Use).await?;
    // Builds left `running` by a jobctl that died are closed first, so that what this
    // prints is true (a read-only database is read as it is).
    let _ = crate::exec::recover::rescue(&store).await;
    find_build(&store, config, args.build).await?;
    let mut filter = LogFilter {
        min_level: args.level,
        since: args.since.as_deref().map(parse_since).transpose()?,
        after_id: None,
        limit: None,
        tail: None,
    };
    loop {
        // Whether the build had finished before this read: then the read has it all.
        let finished = !args.follow
            || store
                .build(args.build)
                .await?
                .is_none_or(|b| b.status.is_finished());
        let rows = store.logs(args.build, &filter).await?;
        if let Some(last) = rows.last() {
            filter.after_id = Some(last.id);
        }
        if args.raw {
            let mut text = String::new();
            for row in &rows {
                text.push_str(&row.message);
                text.push('\n');
            }
            out.write_all(config.mask(&text).as_bytes())
                .map_err(CliError::Output)?;
        } else {
            let text = format_rows(&rows, args.json)?;
            write_out(out, &config.mask(&text))?;
        }
        out.flush().map_err(CliError::Output)?;
        if finished {
            return Ok(());
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
        // A build whose runner died while it was followed ends here too.
        let _ = crate::exec::recover::rescue(&store).await;
    }
}

fn format_rows(rows: &[LogRow], json: bool) -> Result<String, CliError> {
    let mut text = String::new();
    for row in rows {
        if json {
            text.push_str(&serde_json::to_string(row).map_err(CliError::Json)?);
        } else {
            text.push_str(&format!(
                "{} {:8} {:7} {}",
                fmt_time(row.at),
                row.level.as_str(),
                row.stream.as_str(),
                row.message
            ));
        }
        text.push('\n');
    }
    Ok(text)
}
