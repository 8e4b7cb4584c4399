//! `jobctl cancel`: a queued build is cancelled at once (and what waits on it is closed
//! as not run); a running one is asked to stop, and its runner, wherever it runs, ends
//! it within a second or so.

use std::io::Write;

use super::{Context, find_build, known_job, parse_build_id, write_out};
use crate::error::CliError;
use crate::store::queue::Queue;
use crate::store::{BuildFilter, BuildId, BuildStatus, OpenMode, Store};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The builds to cancel
    #[arg(value_parser = parse_build_id, required_unless_present = "job")]
    builds: Vec<BuildId>,
    /// Cancel every queued and running build of this job
    #[arg(long, conflicts_with = "builds")]
    job: Option<String>,
}

pub async fn run(ctx: &Context, args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = ctx.store(config, OpenMode::Use).await?;
    let mut builds = Vec::new();
    match &args.job {
        Some(job) => {
            known_job(&store, config, job).await?;
            for status in [BuildStatus::Created, BuildStatus::Running] {
                builds.extend(
                    store
                        .builds(&BuildFilter {
                            job: Some(job.clone()),
                            status: Some(status),
                            limit: None,
                        })
                        .await?,
                );
            }
            builds.sort_by_key(|b| b.id);
        }
        None => {
            for id in &args.builds {
                builds.push(find_build(&store, config, *id).await?);
            }
        }
    }
    let mut text = String::new();
    if builds.is_empty() {
        text.push_str("nothing to cancel: no build of it is queued or running\n");
    }
    for build in builds {
        let now = chrono::Utc::now();
        let said = match build.status {
            BuildStatus::Created
                if store
                    .cancel_queued(build.id, "cancelled (jobctl cancel)", now)
                    .await? =>
            {
                "cancelled (it was queued)".to_owned()
            }
            BuildStatus::Created | BuildStatus::Running
                if store.request_cancel(build.id, now).await? =>
            {
                match &build.worker {
                    Some(worker) => format!("asked worker {worker} to stop it"),
                    None => "asked its runner to stop it".to_owned(),
                }
            }
            _ => {
                let status = store
                    .build(build.id)
                    .await?
                    .map_or(build.status, |b| b.status);
                format!("already ended ({status})")
            }
        };
        text.push_str(&format!("build {} of {}: {said}\n", build.id, build.job_id));
    }
    write_out(out, &text)
}
