use std::io::Write;

use super::{Context, write_out};
use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// The rendered YAML, as jobctl parsed it, with secret values and the database's
/// password masked.
pub fn run(ctx: &Context, _args: Args, out: &mut dyn Write) -> Result<(), CliError> {
    let config = ctx.load()?;
    let mut text = config.masked_yaml();
    // The database's password, where `storage:` holds one, is as secret as `secrets:`.
    for password in crate::store::url_passwords(&config.storage) {
        text = text.replace(password, crate::config::model::MASK);
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    write_out(out, &text)
}
