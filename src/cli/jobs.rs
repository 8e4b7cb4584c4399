use std::io::Write;

use super::{Context, write_out};
use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print every resolved job as JSON (`!retval X` as {"!retval": "X"}, secrets by name)
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    if args.json {
        let jobs = serde_json::to_value(&config.jobs).map_err(CliError::Json)?;
        let mut text =
            serde_json::to_string_pretty(&config.mask_json(jobs)).map_err(CliError::Json)?;
        text.push('\n');
        return write_out(out, &text);
    }
    let width = config
        .jobs
        .iter()
        .map(|j| j.id.as_str().len())
        .max()
        .unwrap_or(0)
        .max(2);
    let title_width = config
        .jobs
        .iter()
        .map(|j| j.title.as_deref().map_or(0, |t| t.chars().count()))
        .max()
        .unwrap_or(0)
        .clamp(5, 50);
    let mut text = format!("{:width$}  {:title_width$}  DEPENDENCIES\n", "ID", "TITLE");
    for job in &config.jobs {
        let title: String = job
            .title
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(50)
            .collect();
        let deps: Vec<&str> = job.dependencies.iter().map(|d| d.as_str()).collect();
        let line = format!(
            "{:width$}  {:title_width$}  {}",
            job.id.as_str(),
            title,
            deps.join(", ")
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    write_out(out, &config.mask(&text))
}
