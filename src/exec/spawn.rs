//! Starting a job's `sh` with posix_spawn: its own process group, stdin from /dev/null,
//! stdout and stderr into pipes, the job channel on fd 3, and no other descriptor of
//! jobctl's.
//!
//! Why not `std::process::Command`: giving the child fd 3 takes a `pre_exec` closure,
//! and with one std forks, copying jobctl's page tables: ~1 ms a job, more than `sh`
//! itself costs. posix_spawn (a vfork) with a dup2 file action does the same without the
//! copy. The channel must be fd 3, a single digit: dash, Debian's `sh`, cannot redirect
//! to a descriptor above 9 (`>&"$JOBCTL_CHANNEL"`).
//!
//! The child is waited for through a pidfd, so no SIGCHLD handler is involved.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe::Receiver;

/// The descriptor a job finds its channel on.
pub const CHANNEL_FD: RawFd = 3;

/// What to start.
pub struct Spawn<'a> {
    pub program: &'a str,
    pub args: &'a [&'a OsStr],
    /// Added to (or replacing in) jobctl's own environment.
    pub env: &'a [(&'a OsStr, &'a OsStr)],
    pub workdir: &'a Path,
}

/// A started child: the read ends of its output pipes and a handle to wait on.
pub struct Spawned {
    pub child: Child,
    pub stdout: Receiver,
    pub stderr: Receiver,
    pub channel: Receiver,
}

/// A child in a process group of its own (group id = its pid). Dropped before it was
/// waited for, its whole group is killed.
pub struct Child {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    reaped: bool,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the child to end (what it started may live on).
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            let mut guard = self.pidfd.readable().await?;
            let mut status = 0;
            // SAFETY: waitpid on our own child; `status` is a valid out pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return Ok(ExitStatus::from_raw(status));
            }
            if r == -1 {
                return Err(io::Error::last_os_error());
            }
            guard.clear_ready();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.pid;
        // SAFETY: signals and waits on our own child's group; no memory is shared.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
        // Reap it off the async threads; KILL makes this quick.
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: as above.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        });
    }
}

/// Starts `spec` (inside a tokio runtime: the pipes and the pidfd are registered with it).
pub fn spawn(spec: &Spawn<'_>) -> io::Result<Spawned> {
    let mut argv: Vec<CString> = vec![CString::new(spec.program)?];
    for arg in spec.args {
        argv.push(cstring(arg.as_bytes())?);
    }
    let envp = Environment::with(spec.env)?;
    // The child starts where jobctl is unless told otherwise: a chdir in the child holds
    // jobctl (posix_spawn returns once the child has exec'd), so none when it is the same.
    let workdir = match is_current_dir(spec.workdir) {
        true => None,
        false => Some(cstring(spec.workdir.as_os_str().as_bytes())?),
    };
    start(&argv, &envp, workdir.as_deref())
}

/// posix_spawn with the pipes, then the pidfd; `argv` starts with the program.
fn start(argv: &[CString], envp: &Environment, workdir: Option<&CStr>) -> io::Result<Spawned> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (chan_r, chan_w) = pipe()?;
    let argv_ptrs = null_terminated(argv.iter().map(CString::as_c_str));
    let envp_ptrs = null_terminated(envp.entries());

    let mut actions = FileActions::new()?;
    match dev_null() {
        // SAFETY: a valid descriptor and an initialised actions object.
        Some(null) => {
            check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut actions.0, null, 0) })?
        }
        // SAFETY: a NUL-terminated path and an initialised actions object.
        None => check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut actions.0,
                0,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })?,
    }
    for (fd, target) in [
        (out_w.as_raw_fd(), 1),
        (err_w.as_raw_fd(), 2),
        (chan_w.as_raw_fd(), CHANNEL_FD),
    ] {
        // SAFETY: valid descriptors and an initialised actions object.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut actions.0, fd, target) })?;
    }
    if let Some(workdir) = workdir {
        // SAFETY: a NUL-terminated path that outlives the spawn.
        check(unsafe {
            libc::posix_spawn_file_actions_addchdir_np(&mut actions.0, workdir.as_ptr())
        })?;
    }

    let mut attr = Attr::new()?;
    // SAFETY: the sigset functions fill the sets they are given; the attr is initialised.
    unsafe {
        let mut default: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut default);
        // Rust ignores SIGPIPE; a job's `yes | head` must not see it ignored.
        libc::sigaddset(&mut default, libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &default))?;
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        check(libc::posix_spawnattr_setsigmask(&mut attr.0, &mask))?;
        check(libc::posix_spawnattr_setpgroup(&mut attr.0, 0))?;
        check(libc::posix_spawnattr_setflags(
            &mut attr.0,
            (libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
        ))?;
    }

    let mut pid = 0;
    // SAFETY: every pointer is valid and NUL-terminated for the call's duration.
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            argv[0].as_ptr(),
            &actions.0,
            &attr.0,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    drop((out_w, err_w, chan_w));
    let kill = |err: io::Error| {
        // SAFETY: our own child, not yet waited for.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        err
    };
    // SAFETY: pidfd_open on our own, not yet reaped, child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(kill(io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: the OwnedFd is owned by the AsyncFd from here on, unchanged.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|err| kill(err.into_parts().1))?;
    let child = Child {
        pid,
        pidfd,
        reaped: false,
    };
    // The read ends were made non-blocking with the pipes; from here on dropping `child`
    // kills and reaps the process.
    Ok(Spawned {
        stdout: Receiver::from_owned_fd_unchecked(out_r)?,
        stderr: Receiver::from_owned_fd_unchecked(err_r)?,
        channel: Receiver::from_owned_fd_unchecked(chan_r)?,
        child,
    })
}

/// Whether `dir` is jobctl's working directory (read once: jobctl never changes it).
fn is_current_dir(dir: &Path) -> bool {
    static CWD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let here = || dir.components().all(|c| c == std::path::Component::CurDir);
    here()
        || CWD
            .get_or_init(|| std::env::current_dir().ok())
            .as_deref()
            .is_some_and(|cwd| cwd == dir)
}

/// `/dev/null` for the jobs' stdin, opened once (close-on-exec; the child's dup2 clears
/// that on its fd 0). `None` if it cannot be opened here: each child then opens it.
fn dev_null() -> Option<RawFd> {
    static NULL: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
        .as_ref()
        .map(AsRawFd::as_raw_fd)
}

/// A posix_spawn function's result: 0 or an error number.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// A pipe whose read end (jobctl's) does not block and whose write end (the job's)
/// does: each end is an open file of its own, with its own status flags.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETFL on our own descriptor; 0 clears O_NONBLOCK.
    if unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
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
    fn entries(&self) -> impl Iterator<Item = &CStr> {
        self.own
            .iter()
            .copied()
            .chain(self.extra.iter().map(CString::as_c_str))
    }
}

/// `NAME=value`.
fn entry(k: &OsStr, v: &OsStr) -> io::Result<CString> {
    let mut entry = Vec::with_capacity(k.len() + v.len() + 1);
    entry.extend_from_slice(k.as_bytes());
    entry.push(b'=');
    entry.extend_from_slice(v.as_bytes());
    cstring(&entry)
}

/// The pointers posix_spawn takes for `argv` and `envp`, valid while the strings are.
fn null_terminated<'a>(strings: impl Iterator<Item = &'a CStr>) -> Vec<*mut libc::c_char> {
    strings
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<FileActions> {
        let mut raw = MaybeUninit::uninit();
        // SAFETY: init fills the object.
        let rc = unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: initialised above.
        Ok(FileActions(unsafe { raw.assume_init() }))
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

struct Attr(libc::posix_spawnattr_t);

impl Attr {
    fn new() -> io::Result<Attr> {
        let mut raw = MaybeUninit::uninit();
        // SAFETY: init fills the object.
        let rc = unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: initialised above.
        Ok(Attr(unsafe { raw.assume_init() }))
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jobctls_own_directory_skips_the_chdir() {
        let cwd = std::env::current_dir().unwrap();
        assert!(is_current_dir(&cwd));
        assert!(is_current_dir(&cwd.join(".")));
        assert!(is_current_dir(Path::new("")) && is_current_dir(Path::new(".")));
        assert!(!is_current_dir(&cwd.join("sub")));
        assert!(!is_current_dir(Path::new("sub")));
    }

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
