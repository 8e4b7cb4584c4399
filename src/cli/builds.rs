use std::io::Write;

use super::{Context, fmt_elapsed, fmt_time, write_out};
use crate::error::CliError;
use crate::store::{BuildFilter, BuildStatus, OpenMode, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this job's builds
    job: Option<String>,
    /// Only builds with this status (created, running, successful, failed, skipped, cancelled)
    #[arg(long, value_parser = parse_status)]
    status: Option<BuildStatus>,
    /// At most this many builds
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

fn parse_status(text: &str) -> Result<BuildStatus, String> {
    BuildStatus::parse(text).ok_or_else(|| {
        let known: Vec<&str> = BuildStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown build status (known: {})", known.join(", "))
    })
}

pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = ctx.store(config, OpenMode::Use).await?;
    // Builds left `running` by a jobctl that died are closed first, so that what this
    // prints is true (a read-only database is read as it is).
    let _ = crate::exec::recover::rescue(&store).await;
    if let Some(job) = &args.job {
        super::known_job(&store, config, job).await?;
    }
    let builds = store
        .builds(&BuildFilter {
            job: args.job,
            status: args.status,
            limit: Some(args.limit),
        })
        .await?;
    if args.json {
        let value = serde_json::to_value(&builds).map_err(CliError::Json)?;
        let mut text =
            serde_json::to_string_pretty(&config.mask_json(value)).map_err(CliError::Json)?;
        text.push('\n');
        return write_out(out, &text);
    }
    let now = chrono::Utc::now();
    let width = builds
        .iter()
        .map(|b| b.job_id.len())
        .max()
        .unwrap_or(0)
        // Stored ids may predate the bound on ids; a column is never wider.
        .clamp(3, crate::limits::MAX_ID);
    let mut text = format!(
        "{:>6}  {:width$}  {:10}  {:>7}  {:20}  DURATION\n",
        "ID", "JOB", "STATUS", "ATTEMPT", "STARTED"
    );
    for b in &builds {
        let started = b.started_at.map(fmt_time).unwrap_or_default();
        let duration = b.duration(now).map(fmt_elapsed).unwrap_or_default();
        let line = format!(
            "{:>6}  {:width$}  {:10}  {:>7}  {:20}  {duration}",
            b.id.0,
            b.job_id,
            b.status.as_str(),
            b.attempt,
            started
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    write_out(out, &text)
}
