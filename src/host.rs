//! What this machine says about a process: whether one runs under a number, whether it is
//! a zombie, and when it started (`/proc/PID/stat`). Whether a runner is alive is decided
//! here for everyone — the queue's rescue (the exact start recorded with a claim), the
//! recovery of builds a `jobctl build` planned, the dashboard — and whatever its program
//! is called: a program that embeds jobctl runs builds too.

use chrono::{DateTime, Utc};

/// A process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub zombie: bool,
    /// Its process group (field 5).
    pub pgrp: Option<u32>,
    /// When it started, in clock ticks after boot (field 22).
    pub start_ticks: Option<i64>,
}

/// The process under `pid`; `None` if there is none (or no `/proc`).
pub fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_stat(&text))
}

/// Reads a `stat` line. Its second field, the program's name in parentheses, may hold
/// anything (spaces, `)`, a `Z`): the fields are read after the last `)`.
fn parse_stat(text: &str) -> Stat {
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    Stat {
        zombie: fields.first() == Some(&"Z"),
        pgrp: fields.get(2).and_then(|g| g.parse().ok()),
        start_ticks: fields.get(19).and_then(|t| t.parse().ok()),
    }
}

/// When process `pid` started, in clock ticks after boot.
pub fn process_start(pid: u32) -> Option<i64> {
    stat(pid)?.start_ticks
}

/// Whether the process recorded as `pid`, started at tick `since`, is still there: a
/// process under that number, not a zombie, that started at that very tick (another one
/// took the number over otherwise).
pub fn alive_at(pid: u32, since: i64) -> bool {
    stat(pid).is_some_and(|s| !s.zombie && s.start_ticks == Some(since))
}

/// Whether a process `pid` that was running at `then` still is: one under that number,
/// not a zombie, that started before then (with two seconds of slack for the clock ticks).
/// Without `/proc`, a live process under the number is taken to be it.
pub fn alive_since(pid: u32, then: DateTime<Utc>) -> bool {
    // No signal: only whether a process has the number (EPERM: it does, someone else's).
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(err) = nix::sys::signal::kill(pid, None)
        && err != nix::errno::Errno::EPERM
    {
        return false;
    }
    let pid = pid.as_raw() as u32;
    let Some(stat) = stat(pid) else {
        return true;
    };
    if stat.zombie {
        return false;
    }
    match (stat.start_ticks, boot_time()) {
        (Some(ticks), Some(boot)) => {
            let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
                .ok()
                .flatten()
                .unwrap_or(100)
                .max(1);
            let started = boot + chrono::Duration::milliseconds(ticks.max(0) * 1000 / hz);
            started <= then + chrono::Duration::seconds(2)
        }
        _ => true,
    }
}

/// When this machine booted, from `/proc/stat`.
fn boot_time() -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse::<i64>()
        .ok()?;
    DateTime::from_timestamp(secs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_the_last_parenthesis() {
        let fields = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 4242 19";
        let plain = parse_stat(&format!("77 (jobctl) {fields}"));
        assert_eq!(
            plain,
            Stat {
                zombie: false,
                pgrp: Some(2),
                start_ticks: Some(4242)
            }
        );
        // A name that looks like the fields it precedes.
        let tricky =
            parse_stat("77 (a) Z 1 (b) ) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 99 19");
        assert_eq!((tricky.start_ticks, tricky.pgrp), (Some(99), Some(2)));
        assert!(!tricky.zombie);
        let zombie = parse_stat("78 (x) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 5 6");
        assert!(zombie.zombie);
        assert_eq!(
            parse_stat("garbage"),
            Stat {
                zombie: false,
                pgrp: None,
                start_ticks: None
            }
        );
    }

    #[test]
    fn this_process_is_alive_and_a_later_start_is_not_it() {
        let me = std::process::id();
        let since = process_start(me).expect("this process has a start");
        assert!(alive_at(me, since));
        assert!(
            !alive_at(me, since + 1),
            "another start under the same number"
        );
        assert!(alive_since(me, Utc::now()));
        assert!(
            !alive_since(me, Utc::now() - chrono::Duration::days(365 * 30)),
            "started after then: another process"
        );
        assert!(!alive_at(u32::MAX / 2, 1));
        assert!(!alive_since(u32::MAX / 2, Utc::now()), "no such process");
    }
}
