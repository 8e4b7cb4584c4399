//! Running one shell job: `sh -c "$run"` in a process group of its own, values passed as
//! positional parameters and environment variables (never pasted into shell text), stdout
//! and stderr read line by line, the job channel on fd 3
//! (`$JOBCTL_CHANNEL`). Started by [`super::spawn`].
//!
//! ```text
//!   sh -c RUN JOB ARG…  (own process group, `cd` to workdir, env = values, fd 3 = channel)
//!     stdout ─┐
//!     stderr ─┼─► one select! loop ─► lines masked, cut, capped (head + tail) ─► Output
//!     channel ┘        │               messages parsed (masked by `super::guard`)
//!                      ├─ exit ─► KILL what is left of the group, read what is there;
//!                      │          pipes still held after 100 ms: kill what left the
//!                      │          group (`super::reaper`), 100 ms more, then let go
//!                      └─ timeout / cancel ─► TERM the group, grace, KILL
//! ```
//!
//! Output is bounded: past `head` bytes, lines go to a ring of `tail` bytes and only the
//! last lines (where the error usually is) are kept, with a count of what was dropped.
//!
//! The pipes are watched through the runtime only from [`QUIET`] after the start: a job
//! that ends sooner (most jobs of a long plan) has its output read at its end, without
//! three epoll registrations.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe::Receiver;
use tokio::sync::{mpsc, watch};

use super::channel::{BadLine, CHANNEL_ENV, Message};
use super::spawn::{CHANNEL_FD, Spawn, spawn};
use crate::config::model::Masker;
use crate::limits::{LOG_HEAD, LOG_TAIL, MAX_LINE, MAX_MESSAGE};
use crate::vocab::Stream;

/// Lines of stderr kept for a failure's summary.
const STDERR_TAIL_LINES: usize = 20;

/// One shell job to run.
#[derive(Debug, Clone)]
pub struct ShellJob {
    /// The job's id, `$0` of the shell.
    pub name: String,
    /// The build this attempt records (`$JOBCTL_BUILD_ID`): what it leaves behind is
    /// found by it.
    pub build: i64,
    pub command: String,
    /// Positional parameters: `"$1"`, `"$@"`.
    pub args: Vec<String>,
    /// Added to jobctl's own environment.
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub timeout: Option<Duration>,
    /// How long a job has to end after TERM before it is killed.
    pub grace: Duration,
    /// Masks out of everything the job prints: the config's secrets and the database's
    /// password (the run's one masker).
    pub masker: Masker,
    pub limits: OutputLimits,
    /// How long it runs before its pipes are watched through the runtime ([`QUIET`]).
    pub quiet: Duration,
}

/// Linux's limit on one argument or `NAME=value` environment string, with its NUL.
const MAX_STRING: usize = 128 * 1024;

/// A job whose values do not all fit in arguments and environment variables. Those that
/// do not fit reach the shell through a file it reads before the command: arguments as
/// positional parameters (`set -- …`), other values as shell variables (not exported:
/// a program the job starts could not be given them either); `JOBCTL_ARGS` and
/// `JOBCTL_KWARGS` are also written as JSON files named by `JOBCTL_ARGS_FILE` and
/// `JOBCTL_KWARGS_FILE`, which programs can read.
struct Oversize<'a> {
    job: &'a ShellJob,
    /// All arguments move to the file when one does not fit (their order counts).
    args_in_file: bool,
    /// The environment entries (by index) that move to the file.
    vars_in_file: Vec<usize>,
}

/// What runs instead: the command reading the file first, what still fits.
#[derive(Debug, PartialEq)]
struct Prepared {
    command: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The start of the name of a folder of values, before the runner's pid: what a runner
/// killed with SIGKILL left is found by it (`super::recover`).
pub const VALUES_DIR_PREFIX: &str = "jobctl-values-";

/// A folder of a job's values, removed when the job has ended.
struct ValuesDir(PathBuf);

impl Drop for ValuesDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl<'a> Oversize<'a> {
    fn of(job: &'a ShellJob) -> Option<Oversize<'a>> {
        let args_in_file = job.args.iter().any(|a| a.len() + 1 > MAX_STRING);
        let vars_in_file: Vec<usize> = job
            .env
            .iter()
            .enumerate()
            .filter(|(_, (k, v))| k.len() + v.len() + 2 > MAX_STRING && is_shell_name(k))
            .map(|(i, _)| i)
            .collect();
        (args_in_file || !vars_in_file.is_empty()).then_some(Oversize {
            job,
            args_in_file,
            vars_in_file,
        })
    }

    /// The files to write (the shell text last) and what runs, given their folder.
    fn prepare(&self, dir: &Path) -> (Vec<(PathBuf, String)>, Prepared) {
        let mut script = String::new();
        let mut files = Vec::new();
        let mut env = Vec::new();
        if self.args_in_file {
            script.push_str("set --");
            for arg in &self.job.args {
                script.push(' ');
                script.push_str(&shell_quote(arg));
            }
            script.push('\n');
        }
        for (i, (name, value)) in self.job.env.iter().enumerate() {
            if !self.vars_in_file.contains(&i) {
                env.push((name.clone(), value.clone()));
                continue;
            }
            script.push_str(&format!("{name}={}\n", shell_quote(value)));
            if name == "JOBCTL_ARGS" || name == "JOBCTL_KWARGS" {
                let file = dir.join(format!("{}.json", name.to_lowercase()));
                env.push((format!("{name}_FILE"), file.display().to_string()));
                files.push((file, value.clone()));
            }
        }
        let sourced = dir.join("values.sh");
        let command = format!(
            ". {}\n{}",
            shell_quote(&sourced.display().to_string()),
            self.job.command
        );
        files.push((sourced, script));
        let args = if self.args_in_file {
            Vec::new()
        } else {
            self.job.args.clone()
        };
        (files, Prepared { command, args, env })
    }

    /// Writes the files in a new private folder.
    fn write(&self) -> std::io::Result<(Prepared, ValuesDir)> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("{VALUES_DIR_PREFIX}{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        let dir = ValuesDir(path);
        let (files, prepared) = self.prepare(&dir.0);
        for (file, text) in files {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt;
            // Readable by jobctl's user alone: the values may hold secrets.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)?
                .write_all(text.as_bytes())?;
        }
        Ok((prepared, dir))
    }
}

/// `'text'`, with each `'` written `'\''`: the shell reads it back byte for byte.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How much of a job's stdout and stderr is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Bytes kept from the start, passed on as they come.
    pub head: usize,
    /// Bytes kept from the end, passed on when the job ends.
    pub tail: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            head: LOG_HEAD,
            tail: LOG_TAIL,
        }
    }
}

/// What a running job produces, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Line {
        stream: Stream,
        text: String,
    },
    Message(Message),
    BadLine(BadLine),
    /// Lines left out between the head and the tail of the output.
    Dropped {
        lines: u64,
        bytes: u64,
    },
    /// The job runs, in this process group.
    Spawned {
        pgid: u32,
    },
    /// A channel message over [`MAX_MESSAGE`] was left out whole; `retval`: it was a
    /// return value (which fails the build).
    Oversized {
        bytes: usize,
        retval: bool,
    },
}

/// How the process ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    /// The last lines of stderr, masked.
    pub stderr_tail: Vec<String>,
    /// Whether its pipes were watched through the runtime before it ended; one that
    /// ended within [`ShellJob::quiet`] was read at its end instead.
    pub watched: bool,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.cancelled
    }

    /// `exit status 2`, `killed by signal 9`, `timed out`…
    /// Why it did not succeed (for a process that did not).
    pub fn reason(&self) -> crate::vocab::Reason {
        use crate::vocab::Reason;
        if self.cancelled {
            return Reason::cancelled("cancelled");
        }
        if self.timed_out {
            return Reason::TimedOut;
        }
        match (self.code, self.signal) {
            (Some(code), _) => Reason::Exit { code },
            (None, Some(signal)) => Reason::Signal { signal },
            _ => Reason::NoStatus,
        }
    }
}

/// How hard a run is being stopped; it only ever rises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Cancel {
    #[default]
    No,
    /// TERM, a grace period, then KILL (the first Ctrl-C).
    Term,
    /// KILL now (the second Ctrl-C).
    Kill,
}

/// Runs `job` to its end, sending what it prints and reports to `out`. Raising `cancel`
/// ends it (TERM, grace, KILL; or KILL at once) and marks the exit cancelled.
pub async fn run(
    job: &ShellJob,
    out: &mpsc::UnboundedSender<Output>,
    mut cancel: watch::Receiver<Cancel>,
) -> std::io::Result<Exit> {
    let channel_fd = CHANNEL_FD.to_string();
    // Values too long for Linux to pass go through a file the shell reads first.
    let (oversize, _values_dir) = match Oversize::of(job) {
        Some(big) => {
            let (prepared, dir) = big.write()?;
            (Some(prepared), Some(dir))
        }
        None => (None, None),
    };
    let (command, job_args, job_env) = match &oversize {
        Some(p) => (&p.command, &p.args, &p.env),
        None => (&job.command, &job.args, &job.env),
    };
    let command = in_workdir(command, &job.workdir)?;
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("-c"),
        OsStr::new(command.as_ref()),
        job.name.as_ref(),
    ];
    args.extend(job_args.iter().map(OsStr::new));
    let mut env: Vec<(&OsStr, &OsStr)> = job_env
        .iter()
        .map(|(k, v)| (OsStr::new(k), OsStr::new(v)))
        .collect();
    env.push((OsStr::new(CHANNEL_ENV), OsStr::new(&channel_fd)));
    let _running = super::reaper::running_build(job.build);
    let spawned = spawn(&Spawn {
        program: "/bin/sh",
        args: &args,
        env: &env,
    })
    .map_err(|err| match err.raw_os_error() {
        Some(libc::E2BIG) => std::io::Error::new(
            err.kind(),
            "the values are too long to pass: Linux takes at most 2 MiB of arguments and \
             environment in all (a `function:` job takes any size)",
        ),
        _ => err,
    })?;
    let mut child = spawned.child;
    let group = Some(child.pid() as i32);
    let _ = out.send(Output::Spawned { pgid: child.pid() });
    // Not watched through the runtime until QUIET has passed (see the module's note).
    let mut quiet = Some([spawned.stdout, spawned.stderr, spawned.channel]);
    let quiet_until = tokio::time::Instant::now() + job.quiet;
    let mut watched: [Option<Receiver>; 3] = [None, None, None];
    let mut exit = Exit::default();
    if job.quiet.is_zero() {
        // Watched from the start, whichever of its end and the pipes comes first.
        exit.watched = true;
        watch(&mut quiet, &mut watched, &[true; 3])?;
    }

    let mut state = Reader::new(job, out);
    // Read into spare capacity: nothing is zeroed first (most jobs print little).
    let mut bufs = [
        Vec::with_capacity(64 * 1024),
        Vec::with_capacity(64 * 1024),
        Vec::with_capacity(16 * 1024),
    ];
    let mut open = [true, true, true];
    let mut status = None;
    let deadline = job.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut terminating: Option<tokio::time::Instant> = None;
    // KILL was sent (or no more cancels can come): stop watching.
    let mut killing = false;
    // Once the job's process has ended: when what is left holding its pipes is killed,
    // then when they are no longer read.
    let mut leftovers: Option<tokio::time::Instant> = None;
    let mut last_read: Option<tokio::time::Instant> = None;

    while status.is_none() || open.iter().any(|o| *o) {
        let [out_buf, err_buf, chan_buf] = &mut bufs;
        let [out_pipe, err_pipe, chan_pipe] = &mut watched;
        tokio::select! {
            n = read(out_pipe.as_mut(), out_buf), if open[0] && out_pipe.is_some() => {
                open[0] = state.feed(Stream::Stdout, &out_buf[..n?]);
            }
            n = read(err_pipe.as_mut(), err_buf), if open[1] && err_pipe.is_some() => {
                open[1] = state.feed(Stream::Stderr, &err_buf[..n?]);
            }
            n = read(chan_pipe.as_mut(), chan_buf), if open[2] && chan_pipe.is_some() => {
                open[2] = state.feed(Stream::Channel, &chan_buf[..n?]);
            }
            _ = sleep_until(Some(quiet_until)), if quiet.is_some() && status.is_none() => {
                exit.watched = true;
                watch(&mut quiet, &mut watched, &open)?;
            }
            waited = child.wait(), if status.is_none() => {
                status = Some(waited?);
                // What the job left running in its group ends with it, so that no
                // orphan holds the pipes open or outlives the build.
                signal_group(group, libc::SIGKILL);
                // Ended before its pipes were watched: what it wrote is in them.
                if let Some(pipes) = &quiet {
                    for (k, pipe) in pipes.iter().enumerate() {
                        if open[k] {
                            open[k] = drain(pipe, &mut bufs[k], STREAMS[k], &mut state)?;
                        }
                    }
                    // A pipe still open is held by what is left of the group until the
                    // KILL lands: waited for through the runtime.
                    watch(&mut quiet, &mut watched, &open)?;
                }
                leftovers = Some(tokio::time::Instant::now() + LEFTOVER_GRACE);
            }
            _ = sleep_until(leftovers), if leftovers.is_some() => {
                // Something that left the job's group still holds a pipe: the build
                // ended with its process, and what it left is killed.
                super::reaper::kill_build_leftovers(job.build);
                leftovers = None;
                last_read = Some(tokio::time::Instant::now() + LEFTOVER_GRACE);
            }
            _ = sleep_until(last_read), if last_read.is_some() => {
                // Still held (by a process jobctl cannot see, off Linux): stop listening.
                for (k, open) in open.iter_mut().enumerate() {
                    if *open {
                        *open = state.feed(STREAMS[k], &[]);
                    }
                }
            }
            _ = sleep_until(deadline), if status.is_none() && terminating.is_none() => {
                exit.timed_out = true;
                signal_group(group, libc::SIGTERM);
                terminating = Some(tokio::time::Instant::now() + job.grace);
            }
            changed = cancel.changed(), if status.is_none() && !killing => {
                let level = if changed.is_err() { Cancel::Term } else { *cancel.borrow() };
                if level >= Cancel::Term {
                    exit.cancelled = true;
                }
                if level == Cancel::Kill {
                    signal_group(group, libc::SIGKILL);
                    killing = true;
                    terminating = None;
                } else if level == Cancel::Term && terminating.is_none() {
                    signal_group(group, libc::SIGTERM);
                    terminating = Some(tokio::time::Instant::now() + job.grace);
                }
                if changed.is_err() {
                    // The run is gone: nothing more will come; end as after a Ctrl-C.
                    killing = true;
                }
            }
            _ = sleep_until(terminating), if status.is_none() && terminating.is_some() => {
                signal_group(group, libc::SIGKILL);
                terminating = None;
                killing = true;
            }
        }
    }
    state.finish();
    let status = status.expect("the loop ends after the wait");
    exit.code = status.code();
    exit.signal = status.signal();
    exit.stderr_tail = state.stderr_tail.into_iter().collect();
    Ok(exit)
}

/// After a job's process has ended, how long what is already in its pipes is read before
/// what still holds them is killed, and again after that before they are let go.
const LEFTOVER_GRACE: Duration = Duration::from_millis(100);

/// `sh -c` text that runs `command` in `dir`. posix_spawn has no portable way to start a
/// child in another folder (`addchdir_np` is glibc's and Apple's), so the shell does it:
/// on the command's first line, so that the shell's line numbers stay the command's.
fn in_workdir<'c>(command: &'c str, dir: &Path) -> std::io::Result<std::borrow::Cow<'c, str>> {
    if is_current_dir(dir) {
        return Ok(command.into());
    }
    // Checked here, so that a missing folder fails the start with the reason, as a
    // failed chdir would.
    let dir = std::path::absolute(dir)?;
    if !std::fs::metadata(&dir)?.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
    }
    let dir = dir.display().to_string();
    Ok(format!("cd -P -- {} || exit 126; {command}", shell_quote(&dir)).into())
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

/// How long a job runs before its pipes are watched through the runtime. A job that
/// fills a pipe (64 KiB) sooner waits for the rest of this once.
pub const QUIET: Duration = Duration::from_millis(2);

const STREAMS: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::Channel];

/// Reads what is there into `buf`'s spare capacity (emptied first): 0 at the end. Never
/// ready for a pipe not watched.
async fn read(pipe: Option<&mut Receiver>, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => {
            buf.clear();
            pipe.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

/// Watches the still open pipes of `quiet` through the runtime from now on.
fn watch(
    quiet: &mut Option<[OwnedFd; 3]>,
    watched: &mut [Option<Receiver>; 3],
    open: &[bool; 3],
) -> std::io::Result<()> {
    if let Some(pipes) = quiet.take() {
        for ((pipe, slot), open) in pipes.into_iter().zip(watched.iter_mut()).zip(open) {
            if *open {
                // The read ends were made non-blocking with the pipes.
                *slot = Some(Receiver::from_owned_fd_unchecked(pipe)?);
            }
        }
    }
    Ok(())
}

/// Reads a pipe not watched until it is empty, feeding `state`: false at its end (no
/// writer left), true while a writer may still write.
fn drain(
    pipe: &OwnedFd,
    buf: &mut Vec<u8>,
    stream: Stream,
    state: &mut Reader<'_>,
) -> std::io::Result<bool> {
    loop {
        buf.clear();
        let spare = buf.spare_capacity_mut();
        // SAFETY: reads at most `spare.len()` bytes into the vector's spare capacity.
        let n = unsafe { libc::read(pipe.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::WouldBlock => return Ok(true),
                std::io::ErrorKind::Interrupted => continue,
                _ => return Err(err),
            }
        }
        // SAFETY: the kernel wrote `n` bytes.
        unsafe { buf.set_len(n as usize) };
        if !state.feed(stream, buf) {
            return Ok(false);
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn signal_group(group: Option<i32>, signal: i32) {
    if let Some(pgid) = group {
        // SAFETY: killpg has no memory effects; a group already gone gives ESRCH.
        unsafe {
            libc::killpg(pgid, signal);
        }
    }
}

/// Turns bytes from the three streams into masked, capped lines and messages.
struct Reader<'a> {
    out: &'a mpsc::UnboundedSender<Output>,
    masker: Masker,
    partial: [Vec<u8>; 3],
    /// A channel line over [`MAX_MESSAGE`] being skipped: its size so far, and whether it
    /// is a return value.
    skipping: Option<(usize, bool)>,
    cap: Cap,
    stderr_tail: VecDeque<String>,
}

impl<'a> Reader<'a> {
    fn new(job: &'a ShellJob, out: &'a mpsc::UnboundedSender<Output>) -> Self {
        Reader {
            out,
            masker: job.masker.clone(),
            partial: Default::default(),
            skipping: None,
            cap: Cap::new(job.limits),
            stderr_tail: VecDeque::new(),
        }
    }

    /// Takes what was read; returns whether the stream is still open (not at EOF).
    fn feed(&mut self, stream: Stream, bytes: &[u8]) -> bool {
        let i = stream as usize;
        if bytes.is_empty() {
            let rest = std::mem::take(&mut self.partial[i]);
            if !rest.is_empty() {
                self.line(stream, &rest);
            }
            if stream == Stream::Channel {
                self.end_skip(0);
            }
            return false;
        }
        if stream == Stream::Channel && self.skipping.is_some() {
            // The rest of an oversized message, up to its newline, is left out.
            match bytes.iter().position(|b| *b == b'\n') {
                None => {
                    self.end_skip_later(bytes.len());
                    return true;
                }
                Some(nl) => {
                    self.end_skip(nl);
                    let rest = &bytes[nl + 1..];
                    return rest.is_empty() || self.feed(stream, rest);
                }
            }
        }
        let mut buf = std::mem::take(&mut self.partial[i]);
        // Only the new bytes can hold a newline: a long line is not scanned again.
        let mut search = buf.len();
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = buf[search..].iter().position(|b| *b == b'\n') {
            self.line(stream, &buf[start..search + nl]);
            start = search + nl + 1;
            search = start;
        }
        buf.drain(..start);
        if stream == Stream::Channel {
            if buf.len() > MAX_MESSAGE {
                let retval = is_retval(&buf);
                self.skipping = Some((buf.len(), retval));
                buf.clear();
            }
        } else {
            // Cut long lines where no secret is split (each piece is masked alone), so
            // wait until a secret spanning the cut would be whole.
            while buf.len() >= MAX_LINE + self.masker.longest() {
                let cut = self.masker.cut(&buf, MAX_LINE);
                let rest = buf.split_off(cut);
                self.line(stream, &buf);
                buf = rest;
            }
        }
        self.partial[i] = buf;
        true
    }

    fn end_skip_later(&mut self, more: usize) {
        if let Some((bytes, _)) = &mut self.skipping {
            *bytes += more;
        }
    }

    /// The oversized message ended after `more` bytes: say so.
    fn end_skip(&mut self, more: usize) {
        if let Some((bytes, retval)) = self.skipping.take() {
            let _ = self.out.send(Output::Oversized {
                bytes: bytes + more,
                retval,
            });
        }
    }

    fn line(&mut self, stream: Stream, bytes: &[u8]) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let text = String::from_utf8_lossy(bytes);
        match stream {
            Stream::Channel => {
                // Parsed first and masked after (by the guard), so that JSON escapes
                // cannot hide a secret; a line that is not a message is masked here.
                let event = match Message::parse(&text) {
                    Ok(message) => Output::Message(message),
                    Err(mut bad) => {
                        bad.line = self.masker.mask(&bad.line);
                        Output::BadLine(bad)
                    }
                };
                let _ = self.out.send(event);
            }
            Stream::Stdout | Stream::Stderr => {
                let text = match self.masker.is_empty() {
                    true => text.into_owned(),
                    false => self.masker.mask(&text),
                };
                if stream == Stream::Stderr {
                    if self.stderr_tail.len() == STDERR_TAIL_LINES {
                        self.stderr_tail.pop_front();
                    }
                    self.stderr_tail.push_back(text.clone());
                }
                if let Some(line) = self.cap.push(stream, text) {
                    let _ = self.out.send(Output::Line { stream, text: line });
                }
            }
        }
    }

    fn finish(&mut self) {
        let (lines, bytes, tail) = self.cap.finish();
        if lines > 0 {
            let _ = self.out.send(Output::Dropped { lines, bytes });
        }
        for (stream, text) in tail {
            let _ = self.out.send(Output::Line { stream, text });
        }
    }
}

/// Whether the start of a channel line is a return value's (`"type": "retval"` in its
/// first bytes; a `type` written after a megabyte of value is not recognised).
fn is_retval(line: &[u8]) -> bool {
    let head = &line[..line.len().min(256)];
    let head: Vec<u8> = head
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    head.windows(15).any(|w| w == b"\"type\":\"retval\"")
}

/// Keeps the head of the output as it comes and a ring of its tail.
struct Cap {
    limits: OutputLimits,
    head_used: usize,
    tail: VecDeque<(Stream, String)>,
    tail_used: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl Cap {
    fn new(limits: OutputLimits) -> Self {
        Cap {
            limits,
            head_used: 0,
            tail: VecDeque::new(),
            tail_used: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }

    /// The line to pass on now, if it is within the head.
    fn push(&mut self, stream: Stream, text: String) -> Option<String> {
        let size = text.len() + 1;
        if self.head_used + size <= self.limits.head {
            self.head_used += size;
            return Some(text);
        }
        self.head_used = self.limits.head;
        self.tail_used += size;
        self.tail.push_back((stream, text));
        while self.tail_used > self.limits.tail && self.tail.len() > 1 {
            let (_, gone) = self.tail.pop_front().expect("not empty");
            self.tail_used -= gone.len() + 1;
            self.dropped_lines += 1;
            self.dropped_bytes += gone.len() as u64 + 1;
        }
        None
    }

    fn finish(&mut self) -> (u64, u64, Vec<(Stream, String)>) {
        (
            self.dropped_lines,
            self.dropped_bytes,
            std::mem::take(&mut self.tail).into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_head_and_tail() {
        let mut cap = Cap::new(OutputLimits { head: 20, tail: 20 });
        let passed: Vec<Option<String>> = (0..10)
            .map(|i| cap.push(Stream::Stdout, format!("line {i}")))
            .collect();
        assert_eq!(passed[0].as_deref(), Some("line 0"));
        assert_eq!(passed[1].as_deref(), Some("line 1"));
        assert!(passed[2..].iter().all(Option::is_none));
        let (lines, bytes, tail) = cap.finish();
        let tail: Vec<&str> = tail.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(tail, ["line 8", "line 9"]);
        assert_eq!((lines, bytes), (6, 42));
    }

    #[test]
    fn only_jobctls_own_directory_skips_the_cd() {
        let cwd = std::env::current_dir().unwrap();
        assert!(is_current_dir(&cwd));
        assert!(is_current_dir(&cwd.join(".")));
        assert!(is_current_dir(Path::new("")) && is_current_dir(Path::new(".")));
        assert!(!is_current_dir(&cwd.join("sub")));
        assert!(!is_current_dir(Path::new("sub")));
        assert_eq!(in_workdir("x", &cwd).unwrap(), "x");
        let tmp = std::env::temp_dir();
        let text = in_workdir("echo hi", &tmp).unwrap();
        assert_eq!(
            text,
            format!("cd -P -- '{}' || exit 126; echo hi", tmp.display())
        );
        let missing = in_workdir("x", Path::new("/nonexistent-jobctl")).unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    }

    fn job(args: Vec<String>, env: Vec<(&str, String)>) -> ShellJob {
        ShellJob {
            name: "j".into(),
            build: 0,
            command: "cmd \"$@\"".into(),
            args,
            env: env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            workdir: PathBuf::from("."),
            timeout: None,
            grace: Duration::from_secs(1),
            masker: Masker::default(),
            limits: OutputLimits { head: 1, tail: 1 },
            quiet: QUIET,
        }
    }

    /// Feeds `pieces` to a reader of a job with `secret`, as separate reads of stdout.
    fn read_pieces(secret: &str, pieces: &[&[u8]]) -> Vec<String> {
        let mut j = job(Vec::new(), Vec::new());
        j.masker = Masker::new([secret.to_owned()].iter());
        j.limits = OutputLimits::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut reader = Reader::new(&j, &tx);
        for piece in pieces {
            assert!(reader.feed(Stream::Stdout, piece));
        }
        assert!(!reader.feed(Stream::Stdout, &[]));
        reader.finish();
        drop(reader);
        drop(tx);
        let mut lines = Vec::new();
        while let Ok(output) = rx.try_recv() {
            if let Output::Line { text, .. } = output {
                lines.push(text);
            }
        }
        lines
    }

    #[test]
    fn a_secret_split_across_reads_is_masked_whole() {
        let secret = "tok-secret-123";
        let text = b"a tok-secret-123 b\ntok-secret-123\nend tok-secret-123";
        let masked = ["a ******** b", "********", "end ********"];
        // In the pieces a job's writes arrive in, and one byte a read.
        let pieces: [&[u8]; 4] = [
            b"a tok-",
            b"se",
            b"cret-123 b\ntok-secr",
            b"et-123\nend tok-secret-123",
        ];
        assert_eq!(read_pieces(secret, &pieces), masked);
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(read_pieces(secret, &bytes), masked);
    }

    #[test]
    fn values_that_fit_are_passed_as_they_are() {
        let small = job(vec!["a".into()], vec![("N", "x".repeat(MAX_STRING - 3))]);
        assert!(Oversize::of(&small).is_none());
    }

    #[test]
    fn values_that_do_not_fit_go_through_a_file_quoted() {
        let big = "it's ".repeat(30_000);
        let j = job(
            vec!["first".into(), big.clone()],
            vec![
                ("SMALL", "s".into()),
                ("BIG", big.clone()),
                ("JOBCTL_KWARGS", format!("{{\"BIG\": \"{big}\"}}")),
                ("not-a-name", big.clone()),
            ],
        );
        let over = Oversize::of(&j).unwrap();
        let (files, prepared) = over.prepare(Path::new("/v"));
        let script = &files.last().unwrap().1;
        let quoted = big.replace('\'', "'\\''");
        assert!(script.starts_with(&format!("set -- 'first' '{quoted}'\nBIG='{quoted}'\n")));
        assert!(script.contains("\nJOBCTL_KWARGS='{\"BIG\": "));
        assert_eq!(prepared.command, ". '/v/values.sh'\ncmd \"$@\"");
        assert!(
            prepared.args.is_empty(),
            "the arguments are set by the file"
        );
        let names: Vec<&str> = prepared.env.iter().map(|(k, _)| k.as_str()).collect();
        // A name the shell cannot take stays (and fails to spawn, saying why).
        assert_eq!(names, ["SMALL", "JOBCTL_KWARGS_FILE", "not-a-name"]);
        assert_eq!(prepared.env[1].1, "/v/jobctl_kwargs.json");
        let written: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(
            written,
            [
                Path::new("/v/jobctl_kwargs.json"),
                Path::new("/v/values.sh")
            ]
        );
    }
}
