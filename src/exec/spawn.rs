//! Starting a job's `sh`: its own process group, stdin from /dev/null, stdout and stderr
//! into pipes, the job channel on fd 3, and no other descriptor of jobctl's.
//!
//! ```text
//!   posix_spawn(/bin/sh)      file actions: /dev/null → 0, pipes → 1 2, channel → 3
//!        │                    attributes:   own process group, no blocked signal,
//!        │                                  SIGPIPE back to its default
//!        ▼
//!   Child ── wait: a pidfd in the runtime (Linux), or SIGCHLD + waitpid (any Unix)
//! ```
//!
//! Why posix_spawn: giving the child fd 3 through `std::process::Command` takes a
//! `pre_exec` closure, and with one std forks, copying jobctl's page tables (~1 ms a job).
//! posix_spawn is the platform's own vfork-style start, documented and kept by the libc
//! (glibc blocks even its internal signals around the clone, which no caller can), on
//! Linux, macOS and the BSDs alike. nix wraps it safely. The channel must be fd 3, a
//! single digit: dash, Debian's `sh`, cannot redirect to a descriptor above 9
//! (`>&"$JOBCTL_CHANNEL"`).
//!
//! Every job process jobctl starts is in [`LIVE`] until it is reaped, so the reaper
//! (`super::reaper`), which collects what jobs leave behind, never takes one of them.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockWriteGuard};

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

/// The descriptor a job finds its channel on.
pub const CHANNEL_FD: RawFd = 3;

/// Set to `sigchld`, jobs are waited for through SIGCHLD and `waitpid` even where pidfds
/// exist: the portable path, so that the same tests run both.
pub const WAIT_ENV: &str = "JOBCTL_WAIT";

/// What to start.
pub struct Spawn<'a> {
    pub program: &'a str,
    pub args: &'a [&'a OsStr],
    /// Added to (or replacing in) jobctl's own environment.
    pub env: &'a [(&'a OsStr, &'a OsStr)],
}

/// A started child: the read ends of its output pipes (non-blocking, not registered with
/// the runtime: the reader decides when) and a handle to wait on.
pub struct Spawned {
    pub child: Child,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub channel: OwnedFd,
}

/// The job processes started and not yet reaped.
static LIVE: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Held shared from a job's start until its process is in [`LIVE`], and exclusively by
/// the reaper while it lists jobctl's children: the reaper never sees a job's process
/// that is not listed yet, and jobs still start side by side.
static STARTING: RwLock<()> = RwLock::new(());

/// The live job processes, locked.
pub(crate) fn live() -> MutexGuard<'static, Option<HashSet<i32>>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// No job starts while this is held (the reaper's look at jobctl's children).
pub(crate) fn no_starts() -> RwLockWriteGuard<'static, ()> {
    STARTING
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child in a process group of its own (group id = its pid). Dropped before it was
/// waited for, its whole group is killed.
pub struct Child {
    pid: i32,
    waiter: Waiter,
    reaped: bool,
}

/// How the end of a child is noticed.
enum Waiter {
    /// Its pidfd turns readable (Linux 5.3 and later).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Pidfd(tokio::io::unix::AsyncFd<OwnedFd>),
    /// Any child's end raises SIGCHLD; then `waitpid(pid, WNOHANG)` says whether it was
    /// this one.
    Sigchld(tokio::signal::unix::Signal),
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the child to end (what it started may live on).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            // The waiter was armed before the child existed: an end it has not seen yet
            // is one still to come.
            match &mut self.waiter {
                #[cfg(any(target_os = "linux", target_os = "android"))]
                Waiter::Pidfd(fd) => {
                    let mut ready = fd.readable().await?;
                    if let Some(status) = try_reap(self.pid)? {
                        self.reaped = true;
                        return Ok(status);
                    }
                    ready.clear_ready();
                }
                Waiter::Sigchld(signal) => {
                    // Looked at first: a waiter made after the start may have missed it.
                    if let Some(status) = try_reap(self.pid)? {
                        self.reaped = true;
                        return Ok(status);
                    }
                    signal.recv().await;
                }
            }
        }
    }
}

/// Reaps the job process `pid` if it has ended (never blocks).
fn try_reap(pid: i32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: waitpid on our own child; `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        if let Some(live) = live().as_mut() {
            live.remove(&pid);
        }
        // Its runner kills what is left of its group now (`process`).
        super::warden::release(pid);
        return Ok(Some(ExitStatus::from_raw(status)));
    }
    if r == -1 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(None)
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid;
        // SAFETY: signals our own child's group; no memory is shared.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
        // Reap it off the async threads; KILL makes this quick.
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid out pointer.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if let Some(live) = live().as_mut() {
                live.remove(&pid);
            }
            super::warden::release(pid);
        });
    }
}

/// Starts `spec` (inside a tokio runtime: the child's end is watched through it).
pub fn spawn(spec: &Spawn<'_>) -> io::Result<Spawned> {
    let program = CString::new(spec.program)?;
    let mut argv: Vec<CString> = vec![program.clone()];
    for arg in spec.args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let envp = Environment::with(spec.env)?;
    let starting = STARTING
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Where a pipe cannot be made close-on-exec at once, no other job may start between
    // its making and its flag, and inherit it.
    #[cfg(target_vendor = "apple")]
    let _one_at_a_time = {
        static ONE: Mutex<()> = Mutex::new(());
        ONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (chan_r, chan_w) = pipe()?;
    let null = dev_null().ok_or_else(|| io::Error::other("cannot open /dev/null"))?;
    // dup2 leaves the new descriptor open across the exec; the originals are
    // close-on-exec, so the child keeps only 0-3.
    let dups = [
        (null, 0),
        (out_w.as_raw_fd(), 1),
        (err_w.as_raw_fd(), 2),
        (chan_w.as_raw_fd(), CHANNEL_FD),
    ];
    // The portable waiter listens before the child exists, so its end cannot be missed.
    let sigchld = match wait_by_pidfd() && cfg!(any(target_os = "linux", target_os = "android")) {
        true => None,
        false => Some(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::child(),
        )?),
    };
    let (pid, pidfd) = start(&program, &argv, &envp.entries(), dups)?;
    live().get_or_insert_with(HashSet::new).insert(pid);
    super::warden::watch(pid);
    drop(starting);
    drop((out_w, err_w, chan_w));
    let waiter = match (sigchld, pidfd) {
        (Some(signal), _) => Ok(Waiter::Sigchld(signal)),
        (None, Some(pidfd)) => pidfd_registered(pidfd),
        (None, None) => pidfd_waiter(pid),
    };
    let waiter = match waiter {
        Ok(waiter) => waiter,
        Err(err) => {
            // SAFETY: our own child, not yet waited for: killed and reaped here.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            if let Some(live) = live().as_mut() {
                live.remove(&pid);
            }
            super::warden::release(pid);
            return Err(err);
        }
    };
    Ok(Spawned {
        stdout: out_r,
        stderr: err_r,
        channel: chan_r,
        child: Child {
            pid,
            waiter,
            reaped: false,
        },
    })
}

/// Set to `posix_spawn`, jobs start through posix_spawn on Linux too (where jobctl's
/// own clone is the default): the portable path, so that the same tests run both.
pub const SPAWN_ENV: &str = "JOBCTL_SPAWN";

/// Starts the child with `dups` in place: its pid, and its pidfd when the start made one.
/// On Linux through jobctl's own clone unless [`SPAWN_ENV`] says `posix_spawn`.
fn start(
    program: &CStr,
    argv: &[CString],
    envp: &[&CStr],
    dups: [(RawFd, RawFd); 4],
) -> io::Result<(i32, Option<OwnedFd>)> {
    #[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
    {
        static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let fast =
            *FAST.get_or_init(|| std::env::var_os(SPAWN_ENV).is_none_or(|v| v != "posix_spawn"));
        if fast {
            return super::fast_spawn::start(&super::fast_spawn::Setup {
                program,
                argv,
                envp,
                dups,
            });
        }
    }
    start_posix(program, argv, envp, dups).map(|pid| (pid, None))
}

/// posix_spawn: its own process group, no blocked signal, SIGPIPE at its default.
fn start_posix(
    program: &CStr,
    argv: &[CString],
    envp: &[&CStr],
    dups: [(RawFd, RawFd); 4],
) -> io::Result<i32> {
    let mut actions = PosixSpawnFileActions::init()?;
    for (fd, target) in dups {
        actions.add_dup2(fd, target)?;
    }
    let attr = attributes()?;
    Ok(posix_spawn(program, &actions, &attr, argv, envp)?.as_raw())
}

/// Whether children are waited for through pidfds where they exist (not when
/// [`WAIT_ENV`] says `sigchld`); read once.
fn wait_by_pidfd() -> bool {
    static BY_PIDFD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BY_PIDFD.get_or_init(|| std::env::var_os(WAIT_ENV).is_none_or(|v| v != "sigchld"))
}

/// A pidfd for `pid`, watched by the runtime; SIGCHLD where the kernel has none (the
/// child may have ended already: its waiter looks before it waits).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pidfd_waiter(pid: i32) -> io::Result<Waiter> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        // ENOSYS (before Linux 5.3) or a seccomp filter: the portable way.
        return Ok(Waiter::Sigchld(tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::child(),
        )?));
    }
    // SAFETY: a new descriptor (checked above) that nothing else owns.
    pidfd_registered(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A pidfd watched by the runtime.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn pidfd_registered(fd: OwnedFd) -> io::Result<Waiter> {
    // SAFETY: the OwnedFd is owned by the AsyncFd from here on, open and unchanged.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    }
    .map_err(|err| err.into_parts().1)?;
    Ok(Waiter::Pidfd(fd))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn pidfd_registered(_fd: OwnedFd) -> io::Result<Waiter> {
    unreachable!("only Linux starts give a pidfd")
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn pidfd_waiter(_pid: i32) -> io::Result<Waiter> {
    Ok(Waiter::Sigchld(tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::child(),
    )?))
}

/// Its own process group, no blocked signal, SIGPIPE at its default: Rust ignores it, an
/// ignored signal stays ignored across exec, and a job's `yes | head` must not find it
/// so. Signals jobctl handles are set back to their default by the exec itself.
fn attributes() -> io::Result<PosixSpawnAttr> {
    let mut attr = PosixSpawnAttr::init()?;
    attr.set_pgroup(Pid::from_raw(0))?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut defaults = SigSet::empty();
    defaults.add(Signal::SIGPIPE);
    attr.set_sigdefault(&defaults)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    Ok(attr)
}

/// `/dev/null` for the jobs' stdin, opened once (close-on-exec; the dup2 onto fd 0
/// clears that in the child). `None` if it cannot be opened here.
fn dev_null() -> Option<RawFd> {
    static NULL: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
        .as_ref()
        .map(AsRawFd::as_raw_fd)
}

/// A pipe whose read end (jobctl's) does not block and whose write end (the job's)
/// does; both close-on-exec in jobctl (the child gets the write end by dup2).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    #[cfg(not(target_vendor = "apple"))]
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    #[cfg(target_vendor = "apple")]
    let (read, write) = {
        // No pipe2: made close-on-exec right after, under the start lock.
        let (read, write) = nix::unistd::pipe()?;
        for fd in [&read, &write] {
            fcntl(fd, FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        }
        (read, write)
    };
    fcntl(&read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((read, write))
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a value holds a NUL byte, which no process can receive",
        )
    })
}

/// A job's environment: jobctl's own (read once: jobctl never changes it) with the
/// job's entries added or replacing; each name once.
struct Environment {
    /// jobctl's entries that stay, made once for every job.
    own: Vec<&'static CStr>,
    /// The job's entries.
    extra: Vec<CString>,
}

impl Environment {
    fn with(extra: &[(&OsStr, &OsStr)]) -> io::Result<Environment> {
        static OWN: std::sync::OnceLock<Vec<(std::ffi::OsString, CString)>> =
            std::sync::OnceLock::new();
        let own = OWN.get_or_init(|| {
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.clone(), entry(&k, &v).ok()?)))
                .collect()
        });
        let own = own
            .iter()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| *e == k.as_os_str()))
            .map(|(_, e)| e.as_c_str())
            .collect();
        // Of a name given twice, the later value wins (as with `Command::env`).
        let extra = extra
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| !extra[i + 1..].iter().any(|(later, _)| later == k))
            .map(|(_, (k, v))| entry(k, v))
            .collect::<io::Result<_>>()?;
        Ok(Environment { own, extra })
    }

    /// Every `NAME=value`, jobctl's first.
    fn entries(&self) -> Vec<&CStr> {
        self.own
            .iter()
            .copied()
            .chain(self.extra.iter().map(CString::as_c_str))
            .collect()
    }
}

/// `NAME=value`.
fn entry(k: &OsStr, v: &OsStr) -> io::Result<CString> {
    // Room for the `=` and for the NUL CString adds.
    let mut entry = Vec::with_capacity(k.len() + v.len() + 2);
    entry.extend_from_slice(k.as_bytes());
    entry.push(b'=');
    entry.extend_from_slice(v.as_bytes());
    cstring(&entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_is_passed_once_and_the_later_value_wins() {
        let env = Environment::with(&[
            (OsStr::new("JOBCTL_T1"), OsStr::new("a")),
            (OsStr::new("PATH"), OsStr::new("/x")),
            (OsStr::new("JOBCTL_T1"), OsStr::new("b")),
        ])
        .unwrap();
        let env: Vec<String> = env
            .entries()
            .iter()
            .map(|e| e.to_string_lossy().into_owned())
            .collect();
        let of = |name: &str| -> Vec<&String> {
            env.iter()
                .filter(|e| e.starts_with(&format!("{name}=")))
                .collect()
        };
        assert_eq!(of("JOBCTL_T1"), ["JOBCTL_T1=b"]);
        assert_eq!(of("PATH"), ["PATH=/x"]);
    }
}
