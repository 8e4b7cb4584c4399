use std::io::Write;

use super::{Context, write_out};
use crate::error::CliError;
use crate::store::status::{JobStatus, job_statuses};
use crate::store::{OpenMode, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print every resolved job with its status as JSON (`!retval X` as {"!retval": "X"},
    /// secrets by name)
    #[arg(long)]
    json: bool,
}

/// The jobs in file order with their status, computed from the builds in the database.
pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = ctx.store(config, OpenMode::Use).await?;
    // Builds left `running` by a jobctl that died are closed first, so that what this
    // prints is true (a read-only database is read as it is).
    let _ = crate::exec::recover::rescue(&store).await;
    let rows = store.job_builds().await?;
    let statuses = job_statuses(config, &config.graph(), &rows);
    if args.json {
        let mut jobs = Vec::with_capacity(config.jobs.len());
        for (job, status) in config.jobs.iter().zip(&statuses) {
            let mut value = serde_json::to_value(job).map_err(CliError::Json)?;
            let status = serde_json::to_value(status).map_err(CliError::Json)?;
            value["status"] = status["status"].clone();
            if let Some(because) = status.get("because") {
                value["outdated_because"] = because.clone();
            }
            jobs.push(value);
        }
        let value = config.mask_json(serde_json::Value::Array(jobs));
        let mut text = serde_json::to_string_pretty(&value).map_err(CliError::Json)?;
        text.push('\n');
        return write_out(out, &text);
    }
    let width = config
        .jobs
        .iter()
        .map(|j| j.id.as_str().len())
        .max()
        .unwrap_or(0)
        .clamp(2, crate::limits::MAX_ID);
    let title_width = config
        .jobs
        .iter()
        .map(|j| j.title.as_deref().map_or(0, |t| t.chars().count()))
        .max()
        .unwrap_or(0)
        .clamp(5, 50);
    let mut text = format!(
        "{:width$}  {:9}  {:title_width$}  DEPENDENCIES\n",
        "ID", "STATUS", "TITLE"
    );
    for (job, status) in config.jobs.iter().zip(&statuses) {
        let title: String = job
            .title
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(50)
            .collect();
        let deps: Vec<&str> = job.dependencies.iter().map(|d| d.as_str()).collect();
        let mut line = format!(
            "{:width$}  {:9}  {:title_width$}  {}",
            job.id.as_str(),
            status.as_str(),
            title,
            deps.join(", ")
        );
        if let JobStatus::Outdated { because } = status {
            line = format!("{}  ({})", line.trim_end(), because);
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text.extend(super::schedules_note(config));
    write_out(out, &config.mask(&text))
}
