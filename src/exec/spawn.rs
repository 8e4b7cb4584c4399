//! Starting a job's `sh`: its own process group, stdin from /dev/null, stdout and stderr
//! into pipes, the job channel on fd 3, and no other descriptor of jobctl's.
//!
//! Why not `std::process::Command`: giving the child fd 3 takes a `pre_exec` closure,
//! and with one std forks, copying jobctl's page tables: ~1 ms a job, more than `sh`
//! itself costs. A vfork-style clone (the child borrows jobctl's memory until its exec)
//! does the same without the copy; it is posix_spawn's way, done here without the work
//! posix_spawn adds to every child (see [`start`]). The channel must be fd 3, a single
//! digit: dash, Debian's `sh`, cannot redirect to a descriptor above 9
//! (`>&"$JOBCTL_CHANNEL"`).
//!
//! The child is waited for through a pidfd, so no SIGCHLD handler is involved.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

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

/// A started child: the read ends of its output pipes (non-blocking, not registered with
/// the runtime: the reader decides when) and a handle to wait on.
pub struct Spawned {
    pub child: Child,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub channel: OwnedFd,
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
    // jobctl (the start returns once the child has exec'd), so none when it is the same.
    let workdir = match is_current_dir(spec.workdir) {
        true => None,
        false => Some(cstring(spec.workdir.as_os_str().as_bytes())?),
    };
    start(&argv, &envp, workdir.as_deref())
}

/// Starts the child with the pipes; `argv` starts with the program.
///
/// A `clone` with `CLONE_VM | CLONE_VFORK`, as posix_spawn does, but with what posix_spawn
/// pays for every child left out: it maps a new stack and unmaps it (the unmap interrupts
/// jobctl's other threads' cores), asks for the stack limit, and the child resets all 64
/// signals one by one; a pidfd takes a syscall of its own. Here the stack is the thread's
/// own and kept, the pidfd comes with the clone (`CLONE_PIDFD`), and the child resets only
/// the signals jobctl handles. The calling thread waits (vfork) until the child has
/// exec'd or failed to.
fn start(argv: &[CString], envp: &Environment, workdir: Option<&CStr>) -> io::Result<Spawned> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (chan_r, chan_w) = pipe()?;
    let argv_ptrs = null_terminated(argv.iter().map(CString::as_c_str));
    let envp_ptrs = null_terminated(envp.entries());
    let mut setup = ChildSetup {
        program: argv[0].as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        stdin: dev_null(),
        dups: [
            (out_w.as_raw_fd(), 1),
            (err_w.as_raw_fd(), 2),
            (chan_w.as_raw_fd(), CHANNEL_FD),
        ],
        workdir: workdir.map_or(std::ptr::null(), CStr::as_ptr),
        defaults: signals_to_default(),
        error: 0,
    };
    let (pid, pidfd) = CHILD_STACK.with(|stack| clone_child(&mut setup, stack))?;
    drop((out_w, err_w, chan_w));
    // SAFETY: a new descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // SAFETY: the OwnedFd is owned by the AsyncFd from here on, unchanged.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|err| {
            // SAFETY: our own child, not yet waited for.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            err.into_parts().1
        })?;
    let child = Child {
        pid,
        pidfd,
        reaped: false,
    };
    // From here on dropping `child` kills and reaps the process.
    Ok(Spawned {
        stdout: out_r,
        stderr: err_r,
        channel: chan_r,
        child,
    })
}

/// Everything the child needs, made before the clone: between the clone and the exec
/// the child shares jobctl's memory, so it only makes system calls (no allocation, no
/// lock another thread may hold).
struct ChildSetup {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// `/dev/null`, open; `None`: the child opens it.
    stdin: Option<RawFd>,
    /// Each descriptor and the number it becomes in the child.
    dups: [(RawFd, RawFd); 3],
    /// Null: stay in jobctl's directory.
    workdir: *const libc::c_char,
    /// Signals set back to their default action.
    defaults: &'static [libc::c_int],
    /// Written by the child when it cannot exec: the error number.
    error: libc::c_int,
}

/// The child's stack, one per thread that starts jobs: the thread waits while its child
/// runs on it (vfork), so no two children share one. Kept, so its pages are touched once.
const CHILD_STACK_SIZE: usize = 64 * 1024;

thread_local! {
    static CHILD_STACK: std::cell::RefCell<Vec<u128>> =
        std::cell::RefCell::new(vec![0; CHILD_STACK_SIZE / 16]);
}

/// Clones the child onto `stack`; its pid and pidfd once it has exec'd.
fn clone_child(
    setup: &mut ChildSetup,
    stack: &std::cell::RefCell<Vec<u128>>,
) -> io::Result<(libc::pid_t, RawFd)> {
    let mut stack = stack.borrow_mut();
    // The stack grows down from its end (16-byte aligned: the elements are u128).
    let top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();
    let mut pidfd: libc::c_int = -1;
    // SAFETY: the sets are filled by sigfillset/pthread_sigmask before being read; the
    // child runs `child_main` on its own stack with `setup`, both alive until the clone
    // returns (the calling thread waits for the exec); pidfd is written by the kernel.
    let (pid, error) = unsafe {
        // Every signal stays blocked in the child until its handlers are reset: a
        // jobctl handler must never run on the child's stack, in jobctl's memory. All
        // but SIGCHLD, which the child, having no children, is not sent: blocked here,
        // another job's end during the clone was queued for the process and woke one of
        // jobctl's idle threads (database, blocking pool) just to drop it, at ~30% of all
        // job ends; unblocked, the kernel drops it unsent (its action is the default).
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut blocked);
        libc::sigdelset(&mut blocked, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_SETMASK, &blocked, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            std::ptr::from_mut(setup).cast(),
            &mut pidfd as *mut libc::c_int,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
        );
        let error = (pid == -1).then(io::Error::last_os_error);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        (pid, error)
    };
    if let Some(error) = error {
        return Err(error);
    }
    // SAFETY: the child has exec'd or exited; what it wrote is in our memory.
    let failed = unsafe { std::ptr::read_volatile(&setup.error) };
    if failed != 0 {
        // SAFETY: our own child, which has exited (127), and its pidfd.
        unsafe {
            libc::waitpid(pid, std::ptr::null_mut(), 0);
            libc::close(pidfd);
        }
        return Err(io::Error::from_raw_os_error(failed));
    }
    Ok((pid, pidfd))
}

/// The child, from the clone to the exec; it returns only to exit when the exec failed.
extern "C" fn child_main(setup: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `setup` is the parent's ChildSetup, alive while the parent waits.
    let setup = unsafe { &mut *setup.cast::<ChildSetup>() };
    // SAFETY: system calls on the child's own descriptors and signal state.
    let error = unsafe { exec_child(setup) };
    // SAFETY: the parent reads this after the clone returns.
    unsafe {
        std::ptr::write_volatile(&mut setup.error, error);
        libc::_exit(127)
    }
}

/// Its own process group, default signal actions, the descriptors, the folder, no
/// blocked signal, the exec; the error number of the step that failed.
unsafe fn exec_child(setup: &ChildSetup) -> libc::c_int {
    // SAFETY: only system calls on the child's own state, with valid pointers.
    unsafe {
        let errno = || *libc::__errno_location();
        if libc::setpgid(0, 0) == -1 {
            return errno();
        }
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for &signal in setup.defaults {
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
        match setup.stdin {
            Some(null) => {
                if libc::dup2(null, 0) == -1 {
                    return errno();
                }
            }
            None => {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                if null == -1 {
                    return errno();
                }
                if null != 0 {
                    libc::dup2(null, 0);
                    libc::close(null);
                }
            }
        }
        for &(fd, target) in &setup.dups {
            // A descriptor already on its number keeps it, without close-on-exec.
            let done = match fd == target {
                true => libc::fcntl(fd, libc::F_SETFD, 0),
                false => libc::dup2(fd, target),
            };
            if done == -1 {
                return errno();
            }
        }
        if !setup.workdir.is_null() && libc::chdir(setup.workdir) == -1 {
            return errno();
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(setup.program, setup.argv, setup.envp);
        errno()
    }
}

/// The signals a child sets back to their default action: those jobctl handles (Rust's
/// stack-overflow handlers, tokio's Ctrl-C and TERM), read once, at the first start (the
/// run has registered its handlers by then), and SIGPIPE, which Rust ignores and which a
/// job's `yes | head` must not find ignored. Other ignored signals stay ignored, as
/// posix_spawn leaves them. An exec resets handled signals anyway: this is for a signal
/// that reaches the child between unblocking and exec.
fn signals_to_default() -> &'static [libc::c_int] {
    static SIGNALS: std::sync::OnceLock<Vec<libc::c_int>> = std::sync::OnceLock::new();
    SIGNALS.get_or_init(|| {
        let mut signals = vec![libc::SIGPIPE];
        for signal in 1..=libc::SIGRTMAX() {
            if matches!(signal, libc::SIGKILL | libc::SIGSTOP | libc::SIGPIPE) {
                continue;
            }
            // SAFETY: reads the action into a zeroed struct; changes nothing.
            let handled = unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                libc::sigaction(signal, std::ptr::null(), &mut action) == 0
                    && action.sa_sigaction != libc::SIG_DFL
                    && action.sa_sigaction != libc::SIG_IGN
            };
            if handled {
                signals.push(signal);
            }
        }
        signals
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
    // Room for the `=` and for the NUL CString adds.
    let mut entry = Vec::with_capacity(k.len() + v.len() + 2);
    entry.extend_from_slice(k.as_bytes());
    entry.push(b'=');
    entry.extend_from_slice(v.as_bytes());
    cstring(&entry)
}

/// The pointers execve takes for `argv` and `envp`, valid while the strings are.
fn null_terminated<'a>(strings: impl Iterator<Item = &'a CStr>) -> Vec<*const libc::c_char> {
    strings
        .map(CStr::as_ptr)
        .chain(std::iter::once(std::ptr::null()))
        .collect()
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
