use std::io::Write;
use std::path::Path;

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{Context, find_build, parse_build_id, write_out};
use crate::config::model::parse_duration;
use crate::error::CliError;
use crate::exec::process::{self, Cancel, Output, OutputLimits, ShellJob};
use crate::store::queue::Queue;
use crate::store::{BuildId, OpenMode, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The build's number
    #[arg(value_parser = parse_build_id)]
    build: BuildId,
    /// Print JSON: {"deleted": BUILD, "job": JOB, "cleanup_ran": true|false}
    #[arg(long)]
    json: bool,
    /// A build still queued or running is cancelled first (and waited for, up to a
    /// minute); without this it is refused
    #[arg(long)]
    cancel: bool,
}

/// How long `--cancel` waits for the build to end.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

/// Runs the job's `cleanup` (as the build recorded it) with the build's id and return value
/// in its environment; only if it succeeds is the build deleted with its pins, progress and
/// logs.
pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = ctx.store(config, OpenMode::Use).await?;
    let mut build = find_build(&store, config, args.build).await?;
    if !build.status.is_finished() {
        if !args.cancel {
            return Err(CliError::BuildNotFinished {
                id: build.id,
                status: build.status.as_str(),
            });
        }
        // Its runner, wherever it is, sees the request and ends it; one that died is
        // closed by the recovery.
        // Queued for workers: cancelled at once; else its runner is asked.
        if !store
            .cancel_queued(
                build.id,
                "cancelled (jobctl delete --cancel)",
                chrono::Utc::now(),
            )
            .await?
        {
            store.request_cancel(build.id, chrono::Utc::now()).await?;
        }
        let until = tokio::time::Instant::now() + CANCEL_WAIT;
        while !build.status.is_finished() {
            if tokio::time::Instant::now() >= until {
                return Err(CliError::CancelTimedOut {
                    id: build.id,
                    waited: CANCEL_WAIT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = crate::exec::recover::rescue(&store).await;
            build = find_build(&store, config, args.build).await?;
        }
    }
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
        // The same start as a build's: its own process group, what it leaves killed,
        // its output masked and bounded, the job's timeout, Ctrl-C.
        let job = ShellJob {
            name: build.job_id.clone(),
            build: build.id.0,
            command: cleanup.to_owned(),
            args: Vec::new(),
            env: vec![
                ("JOBCTL_BUILD_ID".into(), build.id.to_string()),
                ("JOBCTL_JOB_ID".into(), build.job_id.clone()),
                ("JOBCTL_RETVAL".into(), retval),
            ],
            workdir: config.dir().join(Path::new(workdir)),
            timeout: build
                .config
                .get("timeout")
                .and_then(|t| t.as_str())
                .and_then(|t| parse_duration(t).ok()),
            grace: Duration::from_secs(5),
            masker: crate::store::masker(config.secrets.values(), &config.storage),
            limits: OutputLimits::default(),
            quiet: crate::exec::process::QUIET,
        };
        crate::exec::reaper::become_subreaper();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_cancel, cancel) = watch::channel(Cancel::No);
        let exit = tokio::select! {
            exit = process::run(&job, &tx, cancel) => exit,
            // Dropping the run kills the cleanup's process group.
            _ = tokio::signal::ctrl_c() => {
                return Err(CliError::CleanupFailed { id: build.id, status: "cancelled (Ctrl-C)".into() });
            }
        }
        .map_err(|source| CliError::CleanupSpawn {
            id: build.id,
            source,
        })?;
        drop(tx);
        crate::exec::reaper::sweep_all(Duration::from_secs(2)).await;
        while let Ok(output) = rx.try_recv() {
            if let Output::Line { text, .. } = output {
                said.push_str(&text);
                said.push('\n');
            }
        }
        if !exit.success() {
            write_out(out, &said)?;
            return Err(CliError::CleanupFailed {
                id: build.id,
                status: exit.reason().to_string(),
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
