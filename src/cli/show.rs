use std::io::Write;

use serde_json::json;

use super::{Context, find_build, fmt_elapsed, fmt_time, parse_build_id, write_out};
use crate::error::CliError;
use crate::store::progress::{render, tree};
use crate::store::{BuildId, OpenMode, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The build's number
    #[arg(value_parser = parse_build_id)]
    build: BuildId,
    /// Print JSON (the config included)
    #[arg(long)]
    json: bool,
    /// Also print the job's config as the build recorded it
    #[arg(long)]
    full: bool,
}

pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = ctx.store(config, OpenMode::Use).await?;
    // Builds left `running` by a jobctl that died are closed first, so that what this
    // prints is true (a read-only database is read as it is).
    let _ = crate::exec::recover::rescue(&store).await;
    let build = find_build(&store, config, args.build).await?;
    let pins = store.pins(build.id).await?;
    let progress = tree(&store.progress(build.id).await?);
    if args.json {
        let value = json!({"build": build, "pins": pins, "progress": progress});
        let mut text =
            serde_json::to_string_pretty(&config.mask_json(value)).map_err(CliError::Json)?;
        text.push('\n');
        return write_out(out, &text);
    }
    let mut text = format!(
        "build {}  {}  {}  (attempt {})\n",
        build.id, build.job_id, build.status, build.attempt
    );
    field(&mut text, "created", fmt_time(build.created_at));
    if let Some(at) = build.started_at {
        field(&mut text, "started", fmt_time(at));
    }
    if let Some(at) = build.finished_at {
        field(&mut text, "finished", fmt_time(at));
    }
    if let Some(d) = build.duration(chrono::Utc::now()) {
        field(&mut text, "duration", fmt_elapsed(d));
    }
    if let Some(host) = &build.host {
        let pid = build.pid.map(|p| format!(" pid {p}")).unwrap_or_default();
        let worker = build
            .worker
            .as_ref()
            .map(|w| format!(" worker {w}"))
            .unwrap_or_default();
        field(&mut text, "ran on", format!("{host}{pid}{worker}"));
    }
    for pin in &pins {
        let target = match pin.build_id {
            None => "no successful build".to_owned(),
            Some(b) if store.build(b).await?.is_none() => format!("build {b} (deleted)"),
            Some(b) => format!("build {b}"),
        };
        text.push_str(&format!("{:10}{} -> {target}\n", "pinned", pin.job_id));
    }
    if let Some(code) = build.exit_code {
        field(&mut text, "exit code", code.to_string());
    }
    if let Some(signal) = build.signal {
        field(&mut text, "signal", signal.to_string());
    }
    if build.timed_out {
        field(&mut text, "timed out", "yes".to_owned());
    }
    if let Some(error) = &build.error {
        field(&mut text, "reason", error.clone());
    }
    if let Some(retval) = &build.retval {
        let pretty = serde_json::to_string_pretty(retval).map_err(CliError::Json)?;
        field(&mut text, "retval", indent(&pretty));
    }
    if let Some(tail) = &build.stderr_tail {
        text.push_str("stderr (last lines):\n");
        for line in tail.lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    if !progress.children.is_empty() || progress.reported {
        text.push_str("progress:\n");
        for line in render(&progress).lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    if args.full {
        let pretty = serde_json::to_string_pretty(&build.config).map_err(CliError::Json)?;
        text.push_str("config:\n");
        for line in pretty.lines() {
            text.push_str(&format!("  {line}\n"));
        }
    }
    write_out(out, &config.mask(&text))
}

/// `name      value`: a field of the summary.
fn field(text: &mut String, name: &str, value: String) {
    text.push_str(&format!("{name:10}{value}\n"));
}

/// Continuation lines of a multi-line field, aligned under its value.
fn indent(text: &str) -> String {
    text.replace('\n', &format!("\n{:10}", ""))
}
