//! A worker's jobs end with it. A `jobctl worker` killed with SIGKILL (or crashed) left
//! its jobs running; once its lease ran out a rescuer on another machine ran the same
//! build again beside them. So a worker starts a warden: a small process of its own
//! (this same program, as `jobctl __warden`), told over a pipe which process groups hold
//! its jobs. When that pipe closes — the worker is gone, however it went — the warden
//! kills every group it still holds, and exits.
//!
//! ```text
//!   jobctl worker ──stdin of the warden: "+PGID\n" at a start, "-PGID\n" at an end──► jobctl __warden
//!   (gone: the kernel closes the pipe) ──────────────────────────────────────────────► KILL each group left
//! ```
//!
//! What left its job's process group (`setsid`, a daemon) is not in a group the warden
//! knows: on the worker's own machine the next jobctl's rescue finds it (exec/reaper.rs,
//! by its `JOBCTL_BUILD_ID`).

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

/// The hidden command the warden runs as.
pub const COMMAND: &str = "__warden";

/// The write end of this process's warden's pipe, when it has one.
static PIPE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// The warden's pid (0: none): the reaper leaves it alone.
static PID: AtomicI32 = AtomicI32::new(0);

/// Starts this process's warden (a worker does, before it claims anything). Jobs started
/// before it are not in its care.
pub fn start() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg(COMMAND)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own group: a Ctrl-C, or a signal to the worker's group, is not for it.
        .process_group(0)
        .spawn()?;
    let stdin: OwnedFd = child.stdin.take().expect("piped").into();
    // A warden that does not read in time misses a message; the worker never waits on it.
    let flags = nix::fcntl::fcntl(&stdin, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&stdin, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    PID.store(child.id() as i32, Ordering::Relaxed);
    *pipe() = Some(std::fs::File::from(stdin));
    Ok(())
}

fn pipe() -> std::sync::MutexGuard<'static, Option<std::fs::File>> {
    PIPE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A job's process group started: killed by the warden if this process goes first.
pub fn watch(pgid: i32) {
    send(b'+', pgid);
}

/// A job's process group ended (or is being killed by this process).
pub fn release(pgid: i32) {
    send(b'-', pgid);
}

fn send(kind: u8, pgid: i32) {
    let mut pipe = pipe();
    let Some(file) = pipe.as_mut() else {
        return;
    };
    let mut line = [0u8; 16];
    let mut cursor = std::io::Cursor::new(&mut line[..]);
    let _ = writeln!(cursor, "{}{pgid}", kind as char);
    let len = cursor.position() as usize;
    // One write of a few bytes into a pipe is whole or nothing.
    let _ = file.write(&line[..len]);
}

/// Whether `pid` is this process's warden.
pub fn is_warden(pid: i32) -> bool {
    pid != 0 && PID.load(Ordering::Relaxed) == pid
}

/// The warden itself: reads which groups hold jobs until its input closes, then kills
/// those still held. Signals meant for the worker (TERM to drain it, INT, HUP) do not
/// end it: it ends with the worker.
pub fn run() {
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        // SAFETY: SIG_IGN installs no handler; nothing runs on the signal.
        let _ = unsafe { nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigIgn) };
    }
    let groups = held(std::io::stdin().lock());
    for pgid in groups {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The groups still held when `input` ends: each `+PGID` line adds one, `-PGID` takes it
/// away. A line that is neither, or a group of 1 or less (0 would be the warden's own,
/// 1 init's), is passed over.
fn held(input: impl BufRead) -> HashSet<i32> {
    let mut groups = HashSet::new();
    for line in input.split(b'\n') {
        let Ok(line) = line else {
            break;
        };
        let Some((&kind, digits)) = line.split_first() else {
            continue;
        };
        let Some(pgid) = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<i32>().ok())
            .filter(|&g| g > 1)
        else {
            continue;
        };
        match kind {
            b'+' => {
                groups.insert(pgid);
            }
            b'-' => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_groups_held_are_those_started_and_not_ended() {
        let input = b"+100\n+200\n-100\n+300\n+1\n+0\n+-5\nx400\n+\n\n+99999999999\n-300\n+500";
        let mut held: Vec<i32> = held(&input[..]).into_iter().collect();
        held.sort();
        assert_eq!(held, vec![200, 500]);
    }
}
