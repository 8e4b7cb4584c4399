//! `jobctl tui`: the dashboard (see `ui::tui`).

use super::Context;
use crate::error::CliError;
use crate::ui::tui::{self, Launch};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Context, _args: Args) -> Result<(), CliError> {
    let config = ctx.load()?;
    let launch = Launch {
        config: ctx.config.clone(),
        vars: ctx.vars.clone(),
    };
    Ok(tui::run(config, launch).await?)
}
