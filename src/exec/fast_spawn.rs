//! Linux's faster start of a job: `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` onto a
//! stack of jobctl's own, the way posix_spawn starts a child, without what glibc's
//! posix_spawn adds to every start: it maps a fresh stack and unmaps it after (the unmap
//! interrupts the cores that run jobctl's other threads), and its child sets every one of
//! the 64 signals back one by one. Measured on `true` jobs: 4-8% of a run's wall time
//! (docs/performance.md).
//!
//! ```text
//!   parent thread: block every signal (raw rt_sigprocmask: glibc's internal ones too)
//!        │ clone(VM, VFORK, PIDFD) ─► child on the thread's kept stack (guard page below):
//!        │                              setpgid, handled signals to default, dup2 ×4,
//!        │                              unblock all, execve (or write errno, _exit 127)
//!        ▼ (resumes once the child has exec'd or exited)
//!   restore the mask; pidfd checked (a kernel without CLONE_PIDFD leaves it -1)
//! ```
//!
//! Why it is sound, point by point:
//! - the child runs on a stack mapped for it, kept per thread (a thread's child runs
//!   while that thread waits, so no two children share one), with an inaccessible guard
//!   page below it: an overflow faults instead of writing over jobctl's heap;
//! - between the clone and the exec the child shares jobctl's memory: it only makes
//!   system calls through libc's thin wrappers (no allocation, no lock, no Rust runtime),
//!   reading a setup made before the clone;
//! - no signal handler of jobctl's may run in the child: every signal is blocked with the
//!   raw system call (pthread_sigmask cannot block the libc's internal signals, as glibc's
//!   own posix_spawn knows), handled signals are set back to their default in the child,
//!   then unblocked; SIGCHLD stays unblocked, which no one sends to a child without
//!   children;
//! - the pidfd is used only when the kernel gave one (≥ 0).
//!
//! Linux only (glibc or musl), behind `cfg`; `JOBCTL_SPAWN=posix_spawn` makes jobctl use
//! the portable path on Linux too, and the tests run both.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// What the child needs, made before the clone.
pub struct Setup<'a> {
    pub program: &'a CStr,
    pub argv: &'a [CString],
    pub envp: &'a [&'a CStr],
    /// Each descriptor and the number it becomes in the child (stdin, stdout, stderr,
    /// the channel).
    pub dups: [(RawFd, RawFd); 4],
}

/// Starts the child; its pid and, where the kernel gives one, its pidfd. Returns once the
/// child has exec'd (or failed to, with the reason).
pub fn start(setup: &Setup<'_>) -> io::Result<(libc::pid_t, Option<OwnedFd>)> {
    let argv = null_terminated(setup.argv.iter().map(CString::as_c_str));
    let envp = null_terminated(setup.envp.iter().copied());
    let mut child = ChildSetup {
        program: setup.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        dups: setup.dups,
        defaults: signals_to_default(),
        error: 0,
    };
    STACK.with(|stack| {
        let stack = stack.as_ref().map_err(|err| io::Error::from(err.kind()))?;
        clone_child(&mut child, stack)
    })
}

/// Everything the child reads: plain pointers and numbers, alive until the clone returns.
struct ChildSetup {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    dups: [(RawFd, RawFd); 4],
    /// Signals set back to their default action.
    defaults: &'static [libc::c_int],
    /// Written by the child when it cannot exec: the error number.
    error: libc::c_int,
}

/// The child's stack: 64 KiB usable, above one inaccessible guard page.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

const STACK_SIZE: usize = 64 * 1024;

impl Stack {
    fn map() -> io::Result<Stack> {
        // SAFETY: sysconf reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(4096);
        let len = STACK_SIZE + page;
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The stack grows down: its lowest page is the guard.
        // SAFETY: the first page of the mapping made above.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: the mapping made above, not used by anyone.
            unsafe { libc::munmap(base, len) };
            return Err(err);
        }
        Ok(Stack { base, len })
    }

    /// Where the child's stack starts (its top; 16-byte aligned, as the mapping is).
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which the clone's stack argument is.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping this Stack made; no child runs on it (the thread that owns
        // it is ending, and its children have exec'd).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

thread_local! {
    /// Each thread that starts jobs has its own: it waits while its child runs on it.
    static STACK: io::Result<Stack> = Stack::map();
}

/// Clones the child onto `stack`; its pid and pidfd once it has exec'd.
fn clone_child(
    setup: &mut ChildSetup,
    stack: &Stack,
) -> io::Result<(libc::pid_t, Option<OwnedFd>)> {
    let mut pidfd: libc::c_int = -1;
    // Every signal blocked, glibc's internal ones (32, 33) included, which
    // pthread_sigmask leaves alone: a jobctl handler must never run in the child, on
    // jobctl's memory. All but SIGCHLD, which no one sends a child without children (and
    // which, blocked here, woke an idle thread of jobctl's for ~30% of job ends).
    let blocked: u64 = !(1u64 << (libc::SIGCHLD - 1));
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask with valid 8-byte sets; the child runs `child_main` on its
    // own stack with `setup`, both alive until the clone returns (the calling thread
    // waits for the exec); the pidfd is written by the kernel.
    let (pid, error) = unsafe {
        sigprocmask_raw(libc::SIG_SETMASK, &blocked, &mut old);
        let pid = libc::clone(
            child_main,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            std::ptr::from_mut(setup).cast(),
            &mut pidfd as *mut libc::c_int,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
        );
        let error = (pid == -1).then(io::Error::last_os_error);
        sigprocmask_raw(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        (pid, error)
    };
    if let Some(error) = error {
        return Err(error);
    }
    // SAFETY: a descriptor the kernel made for this clone, owned by nothing else; only
    // when it made one.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    // SAFETY: the child has exec'd or exited; what it wrote is in our memory.
    let failed = unsafe { std::ptr::read_volatile(&setup.error) };
    if failed != 0 {
        // SAFETY: our own child, which has exited (127).
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(io::Error::from_raw_os_error(failed));
    }
    Ok((pid, pidfd))
}

/// rt_sigprocmask as the kernel has it: 8-byte sets, every signal (glibc's sigprocmask
/// would keep its internal ones unblocked).
///
/// # Safety
/// `set` and `old` point to valid 8-byte sets (or are null).
unsafe fn sigprocmask_raw(how: libc::c_int, set: *const u64, old: *mut u64) {
    // SAFETY: as the caller promises.
    unsafe {
        libc::syscall(libc::SYS_rt_sigprocmask, how, set, old, 8usize);
    }
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

/// Its own process group, default signal actions, the descriptors, no blocked signal,
/// the exec; the error number of the step that failed.
unsafe fn exec_child(setup: &ChildSetup) -> libc::c_int {
    // SAFETY: only system calls on the child's own state, with valid pointers. errno is
    // the parent thread's (the child shares its thread pointer); the parent, waiting,
    // does not read it.
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
        let none: u64 = 0;
        sigprocmask_raw(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(setup.program, setup.argv, setup.envp);
        errno()
    }
}

/// The signals a child sets back to their default action: those jobctl handles (Rust's
/// stack-overflow handlers, tokio's), read once, at the first start (the run has
/// registered its handlers by then), and SIGPIPE, which Rust ignores and which a job's
/// `yes | head` must not find ignored. Other ignored signals stay ignored, as posix_spawn
/// leaves them. The exec resets handled signals anyway: this is for a signal that reaches
/// the child between unblocking and the exec.
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

    /// The guard page is there: the mapping's lowest page is inaccessible (as
    /// /proc/self/maps shows it), so an overflow faults.
    #[test]
    fn the_stack_has_a_guard_page_below_it() {
        let stack = Stack::map().unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let base = stack.base as usize;
        let guard = maps
            .lines()
            .find(|l| l.starts_with(&format!("{base:x}-")))
            .unwrap_or_else(|| panic!("no mapping at {base:x}"));
        assert!(guard.contains(" ---p "), "{guard}");
        assert!((stack.top() as usize).is_multiple_of(16));
    }

    /// A failed exec comes back as its error, and the child is reaped.
    #[test]
    fn a_failed_exec_is_its_error() {
        let program = c"/nonexistent-jobctl-program";
        let argv = [CString::from(program)];
        let null = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        let fd = null.as_raw_fd();
        let err = start(&Setup {
            program,
            argv: &argv,
            envp: &[],
            dups: [(fd, 0), (fd, 1), (fd, 2), (fd, 3)],
        })
        .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}
