use std::io::Write;

use super::{Context, write_out};
use crate::error::CliError;
use crate::store::{OpenMode, Store, redact_url};

#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// Really drop every table, build, log and return value
    #[arg(long)]
    yes: bool,
}

/// Applies the migrations this jobctl has to the configured database.
pub async fn install(ctx: &Context, _args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let store = ctx.store(config, OpenMode::Install).await?;
    let version = store.schema_version().await?;
    write_out(
        out,
        &format!(
            "jobctl schema version {version} is installed in {}\n",
            redact_url(&config.storage)
        ),
    )
}

pub async fn uninstall(
    ctx: &Context,
    args: UninstallArgs,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let config = ctx.load()?;
    if !args.yes {
        return Err(CliError::UninstallNeedsYes {
            url: redact_url(&config.storage),
        });
    }
    let store = ctx.store(config, OpenMode::Connect).await?;
    store.uninstall().await?;
    write_out(
        out,
        &format!(
            "dropped jobctl's tables from {}\n",
            redact_url(&config.storage)
        ),
    )
}
