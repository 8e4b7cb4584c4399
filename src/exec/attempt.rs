//! One attempt of a build: its values resolved, its process or function run, what it
//! reports guarded (secrets masked, sizes bounded) and passed on, and how it ended.
//! `jobctl build`'s runner and `jobctl worker` both run builds through here.

use std::collections::HashMap;
use std::path::Path;

use indexmap::IndexMap;
use serde_json::Value as Json;
use tokio::sync::{mpsc, watch};

use super::channel::Message;
use super::dispatcher::Options;
use super::function::{self, FunctionExit, FunctionJob};
use super::guard::Guard;
use super::process::{self, Cancel, Output, ShellJob};
use super::values::{resolve, to_arg};
use crate::config::model::Masker;
use crate::config::{Action, Job, JobId};
use crate::vocab::Reason;
use crate::vocab::{BuildId, Outcome};

/// What an attempt runs in: the job, and what its runner gives every job.
pub struct Attempt<'a> {
    pub spec: &'a Job,
    pub build: BuildId,
    pub secrets: &'a IndexMap<String, String>,
    /// The folder a relative `workdir` is taken from.
    pub dir: &'a Path,
    pub options: &'a Options,
    pub masker: &'a Masker,
    /// The runner's process, for the job's environment (what it leaves behind is found
    /// by it).
    pub runner_pid: u32,
}

pub fn failed(error: String) -> Outcome {
    Outcome::failed(Reason::error(error))
}

/// How an attempt's work ended, shell or function.
enum Ended {
    Shell(process::Exit),
    Function(FunctionExit),
}

/// One attempt: the process or function, and what it reported (each output, guarded,
/// goes to `send` as it comes).
pub async fn attempt(
    a: &Attempt<'_>,
    retvals: &HashMap<JobId, Json>,
    cancel: &watch::Receiver<Cancel>,
    send: &(dyn Fn(Output) + Sync),
) -> Outcome {
    let options = a.options;
    let spec = a.spec;
    let build = a.build;
    let secrets = a.secrets;
    // Every `!retval` needs a return value to stand for.
    let mut used = Vec::new();
    for v in spec
        .args
        .iter()
        .chain(spec.kwargs.iter().map(|(_, v)| v))
        .chain(spec.env.iter().map(|(_, v)| v))
    {
        v.retval_targets(&mut used);
    }
    if let Some(dep) = used.into_iter().find(|dep| !retvals.contains_key(*dep)) {
        return failed(format!(
            "`!retval {dep}`: {dep} has no successful build with a return value"
        ));
    }
    let args: Vec<Json> = spec
        .args
        .iter()
        .map(|v| resolve(v, retvals, secrets))
        .collect();
    let kwargs: serde_json::Map<String, Json> = spec
        .kwargs
        .iter()
        .map(|(k, v)| (k.to_owned(), resolve(v, retvals, secrets)))
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let work = async {
        let ended = match &spec.action {
            Action::Run(command) => {
                let shell = shell_job(a, command, &args, &kwargs, retvals);
                match process::run(&shell, &tx, cancel.clone()).await {
                    Ok(exit) => Ok(Ended::Shell(exit)),
                    Err(err) => Err(format!(
                        "cannot start `sh` in {}: {err}",
                        shell.workdir.display()
                    )),
                }
            }
            Action::Function(name) => match options.functions.get(name) {
                None => Err(format!("no function `{name}` is registered in this jobctl")),
                Some(function) => {
                    let call = FunctionJob {
                        build,
                        job: spec.id.to_string(),
                        args: args.clone(),
                        kwargs: kwargs.clone(),
                        timeout: spec.timeout,
                        masker: a.masker.clone(),
                    };
                    Ok(Ended::Function(
                        function::run(function, call, &tx, cancel.clone()).await,
                    ))
                }
            },
        };
        drop(tx);
        ended
    };
    let mut retval = None;
    let mut skip = None;
    // Secrets masked after decoding, NUL made visible, every kind of report bounded.
    let mut guard = Guard::new(a.masker);
    let forward = async {
        // What is waiting is taken at once and a group's progress within it kept only at
        // its latest: a job reporting faster than anyone can look is not slowed, and
        // nothing piles up in memory.
        let mut burst: Vec<Output> = Vec::new();
        let send = |output: Output, retval: &mut Option<Json>, skip: &mut Option<String>| {
            match &output {
                Output::Message(Message::Retval { value }) => *retval = Some(value.clone()),
                Output::Message(Message::Skip { reason }) => *skip = Some(reason.clone()),
                _ => {}
            }
            send(output);
        };
        while let Some(first) = rx.recv().await {
            burst.extend(guard.admit(first));
            while burst.len() < 4096 {
                match rx.try_recv() {
                    Ok(output) => burst.extend(guard.admit(output)),
                    Err(_) => break,
                }
            }
            for output in coalesce(&mut burst) {
                send(output, &mut retval, &mut skip);
            }
        }
        for output in guard.finish() {
            send(output, &mut retval, &mut skip);
        }
    };
    let (ended, ()) = tokio::join!(work, forward);
    if let Some(why) = guard.retval_refused() {
        return failed(why.to_owned());
    }
    let cancelled = || Outcome::Cancelled {
        reason: Reason::cancelled("cancelled (Ctrl-C)"),
    };
    let succeeded = |retval: Option<Json>, skip: Option<String>| match skip {
        Some(reason) => Outcome::Skipped { reason },
        None => Outcome::Successful { retval },
    };
    match ended {
        Err(error) => failed(error),
        Ok(Ended::Function(exit)) => match exit {
            FunctionExit::Returned(value) if value.is_null() => succeeded(retval, skip),
            FunctionExit::Returned(value) => {
                let depth = crate::limits::json_depth(&value);
                if depth > crate::limits::MAX_RETVAL_DEPTH {
                    return failed(super::guard::too_deep(depth));
                }
                let size = value.to_string().len();
                if size > crate::limits::MAX_RETVAL {
                    return failed(super::guard::too_large(size));
                }
                succeeded(Some(guard.json(value)), skip)
            }
            FunctionExit::Failed(error) => failed(error),
            FunctionExit::TimedOut => Outcome::Failed {
                exit_code: None,
                signal: None,
                timed_out: true,
                reason: Reason::TimedOut,
                stderr_tail: None,
            },
            FunctionExit::Cancelled => cancelled(),
        },
        Ok(Ended::Shell(exit)) => {
            if exit.cancelled {
                return cancelled();
            }
            if exit.success() {
                return succeeded(retval, skip);
            }
            let tail = exit.stderr_tail.join("\n");
            Outcome::Failed {
                exit_code: exit.code,
                signal: exit.signal,
                timed_out: exit.timed_out,
                reason: exit.reason(),
                stderr_tail: (!tail.is_empty()).then(|| tail + "\n"),
            }
        }
    }
}

/// The outputs of a burst in order, each group's progress only once: its latest value,
/// where the group first reported in the burst.
pub(crate) fn coalesce(burst: &mut Vec<Output>) -> impl Iterator<Item = Output> + '_ {
    let mut latest: HashMap<Vec<String>, usize> = HashMap::new();
    let mut keep = vec![true; burst.len()];
    for i in 0..burst.len() {
        if let Output::Message(Message::Progress { group, .. }) = &burst[i] {
            match latest.get(group) {
                Some(&first) => {
                    burst.swap(first, i);
                    keep[i] = false;
                }
                None => {
                    latest.insert(group.clone(), i);
                }
            }
        }
    }
    let mut keep = keep.into_iter();
    burst.drain(..).filter(move |_| keep.next().unwrap_or(true))
}

/// The process a shell job's attempt runs: values as parameters and environment.
fn shell_job(
    a: &Attempt<'_>,
    command: &str,
    args: &[Json],
    kwargs: &serde_json::Map<String, Json>,
    retvals: &HashMap<JobId, Json>,
) -> ShellJob {
    let spec = a.spec;
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.to_owned(), to_arg(&resolve(v, retvals, a.secrets))))
        .collect();
    env.extend(kwargs.iter().map(|(k, v)| (k.clone(), to_arg(v))));
    env.push(("JOBCTL_ARGS".into(), Json::Array(args.to_vec()).to_string()));
    env.push((
        "JOBCTL_KWARGS".into(),
        Json::Object(kwargs.clone()).to_string(),
    ));
    env.push(("JOBCTL_JOB_ID".into(), spec.id.to_string()));
    env.push(("JOBCTL_BUILD_ID".into(), a.build.to_string()));
    env.push(("JOBCTL_RUNNER_PID".into(), a.runner_pid.to_string()));
    if let Some(exe) = current_exe() {
        env.push(("JOBCTL".into(), exe.to_owned()));
    }
    ShellJob {
        name: spec.id.to_string(),
        build: a.build.0,
        command: with_args(command, !args.is_empty()),
        args: args.iter().map(to_arg).collect(),
        env,
        workdir: a.dir.join(&spec.workdir),
        timeout: spec.timeout,
        grace: a.options.grace,
        masker: a.masker.clone(),
        limits: a.options.limits,
        quiet: super::process::QUIET,
    }
}

/// This binary's path, for `$JOBCTL` (read once).
fn current_exe() -> Option<&'static str> {
    static EXE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    EXE.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    })
    .as_deref()
}

/// `run: ./crawl.sh` with `args` gets them: a one-line command that does not use the
/// positional parameters itself is followed by `"$@"`. A command that says `$1`, `$@`…
/// (or spans lines, or has a comment) takes them where it says.
pub fn with_args(command: &str, has_args: bool) -> String {
    let bytes = command.as_bytes();
    let uses_positional = bytes.windows(2).any(|w| {
        w[0] == b'$' && (w[1].is_ascii_digit() && w[1] != b'0' || w[1] == b'@' || w[1] == b'*')
    }) || command.contains("${");
    if !has_args || uses_positional || command.contains('\n') || command.contains('#') {
        return command.to_owned();
    }
    format!("{} \"$@\"", command.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Stream;

    fn progress(group: &str, current: i64) -> Output {
        Output::Message(Message::Progress {
            group: vec![group.to_owned()],
            current,
            total: None,
            status: None,
        })
    }

    #[test]
    fn a_burst_keeps_each_groups_latest_progress_in_place() {
        let line = Output::Line {
            stream: Stream::Stdout,
            text: "hello".into(),
        };
        let mut burst = vec![
            progress("a", 1),
            progress("b", 1),
            line.clone(),
            progress("a", 2),
            progress("a", 3),
            progress("b", 2),
        ];
        let out: Vec<Output> = coalesce(&mut burst).collect();
        assert_eq!(out, vec![progress("a", 3), progress("b", 2), line]);
        assert!(burst.is_empty());
    }

    #[test]
    fn args_follow_a_plain_command() {
        assert_eq!(with_args("./crawl.sh", true), "./crawl.sh \"$@\"");
        assert_eq!(with_args("./crawl.sh", false), "./crawl.sh");
        for own in [
            "echo \"$1\"",
            "printf '%s\\n' \"$@\"",
            "echo $*",
            "echo ${1:-x}",
            "a\nb",
            "./x # note",
        ] {
            assert_eq!(with_args(own, true), own);
        }
    }
}
