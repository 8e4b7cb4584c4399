//! `jobctl tui`: the dashboard (see `ui::tui`).

use super::Context;
use crate::error::CliError;
use crate::ui::tui::{self, Launch};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> Result<(), CliError> {
    // Owned, not kept to the end of the process: the dashboard replaces it when the
    // file changes.
    let config = std::sync::Arc::new(crate::config::load(&ctx.config, &ctx.vars)?);
    let launch = Launch {
        config: ctx.config.clone(),
        vars: ctx.vars.clone(),
    };
    Ok(tui::run(config, launch).await?)
}
