use std::io::Write;

use super::{Context, write_out};
use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// The rendered YAML, as jobctl parsed it, with secret values masked.
pub fn run(ctx: &Context, _args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let mut text = config.masked_yaml();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    write_out(out, &text)
}
