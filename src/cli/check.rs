use std::io::Write;

use super::{Context, write_out};
use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Loads the config; on success says how many jobs it has.
pub fn run(ctx: &Context, _args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load_runnable()?;
    let n = config.jobs.len();
    let mut text = format!(
        "{}: ok, {n} {}\n",
        config.path.display(),
        if n == 1 { "job" } else { "jobs" }
    );
    text.extend(super::schedules_note(config));
    write_out(out, &text)
}
