//! Running jobs. This first part is the job channel: how a running job talks back.
//!
//! ```text
//!   job process ──(fd named by $JOBCTL_CHANNEL, one JSON object per line)──► jobctl
//!        │                                                          parse → Message
//!        └─ `jobctl report progress|log|retval|skip …` writes those lines for shell scripts
//! ```
//!
//! The dispatcher, the process runner and the reporters that consume build events come with
//! `jobctl build` (see docs/channel.md for the protocol as jobs see it).

pub mod attempt;
pub mod channel;
pub mod dispatcher;
pub mod event;
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
mod fast_spawn;
pub mod function;
pub mod guard;
pub mod plan;
pub mod process;
pub mod reaper;
pub mod recover;
pub mod schedule;
pub mod spawn;
pub mod values;
pub mod warden;
pub mod worker;
