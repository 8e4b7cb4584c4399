use std::io::Write;
use std::path::Path;

use super::{Context, find_build, parse_build_id, write_out};
use crate::error::CliError;
use crate::store::{BuildId, OpenMode, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The build's number
    #[arg(value_parser = parse_build_id)]
    build: BuildId,
    /// Print JSON: {"deleted": BUILD, "job": JOB, "cleanup_ran": true|false}
    #[arg(long)]
    json: bool,
}

/// Runs the job's `cleanup` (as the build recorded it) with the build's id and return value
/// in its environment; only if it succeeds is the build deleted with its pins, progress and
/// logs.
pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = ctx.store(config, OpenMode::Use).await?;
    let build = find_build(&store, config, args.build).await?;
    let cleanup = build.config.get("cleanup").and_then(|c| c.as_str());
    let mut said = String::new();
    if let Some(cleanup) = cleanup {
        let workdir = build
            .config
            .get("workdir")
            .and_then(|w| w.as_str())
            .unwrap_or(".");
        let retval = build
            .retval
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "null".to_owned());
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cleanup)
            .current_dir(config.dir().join(Path::new(workdir)))
            .env("JOBCTL_BUILD_ID", build.id.to_string())
            .env("JOBCTL_JOB_ID", &build.job_id)
            .env("JOBCTL_RETVAL", retval)
            .stdin(std::process::Stdio::null())
            .status()
            .await
            .map_err(|source| CliError::CleanupSpawn {
                id: build.id,
                source,
            })?;
        if !status.success() {
            return Err(CliError::CleanupFailed {
                id: build.id,
                status: status.to_string(),
            });
        }
        said.push_str(&format!("ran the cleanup of build {}\n", build.id));
    }
    store.delete_build(build.id).await?;
    if args.json {
        let value = serde_json::json!({
            "deleted": build.id,
            "job": build.job_id,
            "cleanup_ran": cleanup.is_some(),
        });
        return write_out(out, &format!("{value}\n"));
    }
    said.push_str(&format!("deleted build {} of {}\n", build.id, build.job_id));
    write_out(out, &said)
}
