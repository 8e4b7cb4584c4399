//! `function:` jobs: async Rust functions that a program embedding jobctl registers by
//! name, and the built-in ones (`testing`, `sleep`).
//!
//! ```text
//!   Registry ── name ──► fn(Call) -> Future<Result<Json, FunctionError>>
//!                              │ Call { args, kwargs, context }
//!                              └─ context.progress / log / skip ──► Output (as a shell
//!                                 job's channel messages, secrets masked) ──► dispatcher
//! ```
//!
//! A function runs as a task of its own: a panic fails its build instead of jobctl, a
//! timeout or a cancel drops it (its `.await` points are where it stops).
//!
//! ```no_run
//! use jobctl::exec::function::{Call, FunctionError, Registry};
//!
//! fn main() -> std::process::ExitCode {
//!     let mut functions = Registry::with_builtins();
//!     functions.register("count", |call: Call| async move {
//!         let n = call.kwargs.get("n").and_then(|v| v.as_i64()).unwrap_or(10);
//!         for i in 1..=n {
//!             call.context.progress(&[], i, Some(n), None);
//!         }
//!         Ok::<_, FunctionError>(serde_json::json!({ "counted": n }))
//!     });
//!     jobctl::cli::main_with(functions)
//! }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value as Json};
use tokio::sync::{mpsc, watch};

use super::channel::Message;
use super::process::{Cancel, Output};
use crate::config::model::Masker;
use crate::vocab::{BuildId, LogLevel};

/// What a function is called with.
pub struct Call {
    /// `args`, `!retval` and `!secret` resolved, as JSON.
    pub args: Vec<Json>,
    /// `kwargs`, resolved likewise.
    pub kwargs: Map<String, Json>,
    /// Reporting progress, logs and skips back; which build this is.
    pub context: JobContext,
}

/// Why a function's build failed: a message for the build's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FunctionError {
    pub message: String,
}

impl FunctionError {
    pub fn new(message: impl Into<String>) -> FunctionError {
        FunctionError {
            message: message.into(),
        }
    }
}

/// A registered function.
pub type Function =
    Arc<dyn Fn(Call) -> BoxFuture<'static, Result<Json, FunctionError>> + Send + Sync>;

/// The functions `function:` jobs may name.
#[derive(Clone, Default)]
pub struct Registry {
    functions: BTreeMap<String, Function>,
}

impl Registry {
    /// No functions at all.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The built-in functions: `testing`, `sleep` and `noop`.
    pub fn with_builtins() -> Registry {
        let mut registry = Registry::new();
        registry.register("testing", testing);
        registry.register("sleep", sleep);
        // Does nothing and succeeds: what a build costs jobctl itself (benchmarks).
        registry.register("noop", |_: Call| async { Ok(Json::Null) });
        registry
    }

    /// Adds (or replaces) the function `name`. It returns the build's return value
    /// (`null` for none) or the error that fails the build.
    pub fn register<F, Fut>(&mut self, name: &str, function: F)
    where
        F: Fn(Call) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Json, FunctionError>> + Send + 'static,
    {
        self.functions.insert(
            name.to_owned(),
            Arc::new(move |call| Box::pin(function(call))),
        );
    }

    pub fn get(&self, name: &str) -> Option<&Function> {
        self.functions.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.functions.keys().map(String::as_str)
    }
}

/// A running function's way back to jobctl. Cheap to clone.
#[derive(Clone)]
pub struct JobContext {
    build: BuildId,
    job: String,
    out: mpsc::UnboundedSender<Output>,
    masker: Arc<Masker>,
}

impl JobContext {
    pub fn build_id(&self) -> BuildId {
        self.build
    }

    pub fn job_id(&self) -> &str {
        &self.job
    }

    /// How far `group` (a path of names, empty for the job as a whole) is.
    pub fn progress(&self, group: &[&str], current: i64, total: Option<i64>, status: Option<&str>) {
        self.send(Message::Progress {
            group: group.iter().map(|g| (*g).to_owned()).collect(),
            current: current.max(0),
            total: total.map(|t| t.max(0)),
            status: status.map(str::to_owned),
        });
    }

    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.send(Message::Log {
            level,
            message: message.into(),
        });
    }

    /// The build ends `skipped` (with this reason) when the function returns without error.
    pub fn skip(&self, reason: impl Into<String>) {
        self.send(Message::Skip {
            reason: reason.into(),
        });
    }

    fn send(&self, message: Message) {
        let _ = self.out.send(Output::Message(self.mask(message)));
    }

    /// The message with every secret's value replaced, as a shell job's would be.
    fn mask(&self, message: Message) -> Message {
        if self.masker.is_empty() {
            return message;
        }
        let line = serde_json::to_string(&message).expect("a message serializes");
        let masked = self.masker.mask(&line);
        if masked == line {
            return message;
        }
        Message::parse(&masked).unwrap_or(message)
    }
}

/// How a function's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FunctionExit {
    Returned(Json),
    Failed(String),
    TimedOut,
    Cancelled,
}

/// One attempt of a function job.
pub struct FunctionJob {
    pub build: BuildId,
    pub job: String,
    pub args: Vec<Json>,
    pub kwargs: Map<String, Json>,
    pub timeout: Option<Duration>,
    /// Masks out of what the function reports, returns and fails with.
    pub masker: Masker,
}

/// Runs `function` to its end, a timeout, or a cancel; what it reports goes to `out`.
pub async fn run(
    function: &Function,
    job: FunctionJob,
    out: &mpsc::UnboundedSender<Output>,
    mut cancel: watch::Receiver<Cancel>,
) -> FunctionExit {
    let context = JobContext {
        build: job.build,
        job: job.job,
        out: out.clone(),
        masker: Arc::new(job.masker),
    };
    let call = Call {
        args: job.args,
        kwargs: job.kwargs,
        context: context.clone(),
    };
    let mut task = tokio::spawn(function(call));
    let deadline = job.timeout.map(|t| tokio::time::Instant::now() + t);
    let exit = loop {
        tokio::select! {
            joined = &mut task => break match joined {
                Ok(Ok(value)) => FunctionExit::Returned(value),
                Ok(Err(err)) => FunctionExit::Failed(err.message),
                Err(err) if err.is_panic() => {
                    let payload = err.into_panic();
                    let text = payload
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    FunctionExit::Failed(format!("the function panicked: {text}"))
                }
                Err(_) => FunctionExit::Cancelled,
            },
            _ = until(deadline) => {
                task.abort();
                break FunctionExit::TimedOut;
            }
            changed = cancel.changed() => {
                if changed.is_err() || *cancel.borrow() >= Cancel::Term {
                    task.abort();
                    break FunctionExit::Cancelled;
                }
            }
        }
    };
    match exit {
        FunctionExit::Returned(value) if !context.masker.is_empty() => {
            let text = value.to_string();
            let masked = context.masker.mask(&text);
            FunctionExit::Returned(serde_json::from_str(&masked).unwrap_or(Json::String(masked)))
        }
        FunctionExit::Failed(message) => FunctionExit::Failed(context.masker.mask(&message)),
        other => other,
    }
}

async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The keyword arguments `testing` takes.
const TESTING_KWARGS: &[&str] = &[
    "progress_steps",
    "log_messages",
    "retval",
    "fail",
    "skip",
    "step_duration",
];

/// A job that does what it is told, in the spirit of JobControl's `testing_job`: logs
/// `log_messages` (`[level, message]` pairs or plain strings), reports each of
/// `progress_steps` (`{group, current, total, status}` or `[group, current, total]`)
/// with `step_duration` (seconds or `250ms`) between them, then fails (`fail: true` or a
/// message), skips (`skip: true` or a reason), or returns `retval`.
async fn testing(call: Call) -> Result<Json, FunctionError> {
    let kw = &call.kwargs;
    if let Some(unknown) = kw.keys().find(|k| !TESTING_KWARGS.contains(&k.as_str())) {
        return Err(FunctionError::new(format!(
            "testing: unknown keyword `{unknown}` (it takes {})",
            TESTING_KWARGS.join(", ")
        )));
    }
    let step = match kw.get("step_duration") {
        None | Some(Json::Null) => Duration::ZERO,
        Some(value) => duration(value)?,
    };
    for message in list(kw.get("log_messages"), "log_messages")? {
        let (level, text) = match message {
            Json::String(text) => (LogLevel::Info, text.clone()),
            Json::Array(pair) if pair.len() == 2 => (level(&pair[0])?, text_of(&pair[1])),
            Json::Object(map) => (
                map.get("level").map_or(Ok(LogLevel::Info), level)?,
                map.get("message").map(text_of).unwrap_or_default(),
            ),
            other => {
                return Err(FunctionError::new(format!(
                    "testing: a log message is a string, [level, message] or {{level, message}}, not {other}"
                )));
            }
        };
        call.context.log(level, text);
    }
    for progress in list(kw.get("progress_steps"), "progress_steps")? {
        let (group, current, total, status) = progress_step(progress)?;
        let group: Vec<&str> = group.iter().map(String::as_str).collect();
        call.context
            .progress(&group, current, total, status.as_deref());
        if !step.is_zero() {
            tokio::time::sleep(step).await;
        }
    }
    match kw.get("fail") {
        None | Some(Json::Null | Json::Bool(false)) => {}
        Some(Json::Bool(true)) => return Err(FunctionError::new("failed as asked (fail: true)")),
        Some(reason) => return Err(FunctionError::new(text_of(reason))),
    }
    match kw.get("skip") {
        None | Some(Json::Null | Json::Bool(false)) => {}
        Some(Json::Bool(true)) => call.context.skip("skipped as asked (skip: true)"),
        Some(reason) => call.context.skip(text_of(reason)),
    }
    Ok(kw.get("retval").cloned().unwrap_or(Json::Null))
}

/// Waits `seconds` (args[0] or kwargs `seconds`, a number or a duration like `2s`),
/// reporting progress each tenth of the way.
async fn sleep(call: Call) -> Result<Json, FunctionError> {
    let value = call
        .kwargs
        .get("seconds")
        .or_else(|| call.args.first())
        .ok_or_else(|| {
            FunctionError::new("sleep: say how long (`args: [5]` or `kwargs: {seconds: 5}`)")
        })?;
    let total = duration(value)?;
    for i in 1..=10 {
        tokio::time::sleep(total / 10).await;
        call.context.progress(&[], i, Some(10), None);
    }
    Ok(Json::Null)
}

fn list<'a>(value: Option<&'a Json>, name: &str) -> Result<&'a [Json], FunctionError> {
    match value {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(other) => Err(FunctionError::new(format!(
            "testing: `{name}` must be a list, not {other}"
        ))),
    }
}

fn text_of(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn level(value: &Json) -> Result<LogLevel, FunctionError> {
    match value {
        Json::String(name) => LogLevel::parse(name),
        Json::Number(n) => n.as_i64().map(LogLevel::from_number),
        _ => None,
    }
    .ok_or_else(|| {
        FunctionError::new(format!(
            "testing: `{value}` is not a log level (debug, info, warning, error, critical, or a number)"
        ))
    })
}

fn duration(value: &Json) -> Result<Duration, FunctionError> {
    let bad = || {
        FunctionError::new(format!(
            "`{value}` is not a duration (seconds, or 250ms, 2s, 1m)"
        ))
    };
    match value {
        Json::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(bad),
        Json::String(text) => crate::config::model::parse_duration(text).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

type Step = (Vec<String>, i64, Option<i64>, Option<String>);

fn progress_step(value: &Json) -> Result<Step, FunctionError> {
    let group = |v: Option<&Json>| -> Result<Vec<String>, FunctionError> {
        match v {
            None | Some(Json::Null) => Ok(Vec::new()),
            Some(Json::String(name)) => Ok(vec![name.clone()]),
            Some(Json::Array(names)) => Ok(names.iter().map(text_of).collect()),
            Some(other) => Err(FunctionError::new(format!(
                "testing: a progress group is a name or a list of names, not {other}"
            ))),
        }
    };
    let number = |v: Option<&Json>| -> Result<Option<i64>, FunctionError> {
        match v {
            None | Some(Json::Null) => Ok(None),
            Some(v) => v.as_i64().filter(|n| *n >= 0).map(Some).ok_or_else(|| {
                FunctionError::new(format!(
                    "testing: `{v}` is not a count (a whole number ≥ 0)"
                ))
            }),
        }
    };
    match value {
        Json::Array(items) if (2..=4).contains(&items.len()) => Ok((
            group(items.first())?,
            number(items.get(1))?.unwrap_or(0),
            number(items.get(2))?,
            items.get(3).map(text_of),
        )),
        Json::Object(map) => Ok((
            group(map.get("group"))?,
            number(map.get("current"))?.unwrap_or(0),
            number(map.get("total"))?,
            map.get("status").map(text_of),
        )),
        other => Err(FunctionError::new(format!(
            "testing: a progress step is {{group, current, total, status}} or [group, current, total], not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kwargs: Json) -> (Call, mpsc::UnboundedReceiver<Output>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let call = Call {
            args: Vec::new(),
            kwargs: kwargs.as_object().cloned().unwrap_or_default(),
            context: JobContext {
                build: BuildId(1),
                job: "t".into(),
                out: tx,
                masker: Arc::new(Masker::default()),
            },
        };
        (call, rx)
    }

    fn messages(mut rx: mpsc::UnboundedReceiver<Output>) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(Output::Message(m)) = rx.try_recv() {
            out.push(m);
        }
        out
    }

    #[tokio::test]
    async fn testing_reports_what_it_is_told_then_returns() {
        let (c, rx) = call(serde_json::json!({
            "log_messages": [["warning", "careful"], "plain"],
            "progress_steps": [{"group": ["a", "b"], "current": 1, "total": 2, "status": "x"}, [[], 5, 10]],
            "retval": {"n": 1},
        }));
        assert_eq!(testing(c).await, Ok(serde_json::json!({"n": 1})));
        assert_eq!(
            messages(rx),
            vec![
                Message::Log {
                    level: LogLevel::Warning,
                    message: "careful".into()
                },
                Message::Log {
                    level: LogLevel::Info,
                    message: "plain".into()
                },
                Message::Progress {
                    group: vec!["a".into(), "b".into()],
                    current: 1,
                    total: Some(2),
                    status: Some("x".into()),
                },
                Message::Progress {
                    group: vec![],
                    current: 5,
                    total: Some(10),
                    status: None
                },
            ]
        );
    }

    #[tokio::test]
    async fn testing_fails_skips_and_refuses_unknown_keywords() {
        let (c, _) = call(serde_json::json!({"fail": "boom"}));
        assert_eq!(testing(c).await, Err(FunctionError::new("boom")));
        let (c, rx) = call(serde_json::json!({"skip": "nothing new"}));
        assert_eq!(testing(c).await, Ok(Json::Null));
        assert_eq!(
            messages(rx),
            vec![Message::Skip {
                reason: "nothing new".into()
            }]
        );
        let (c, _) = call(serde_json::json!({"progress": []}));
        let err = testing(c).await.unwrap_err();
        assert!(err.message.contains("unknown keyword `progress`"), "{err}");
        let (c, _) = call(serde_json::json!({"step_duration": "soon"}));
        assert!(
            testing(c)
                .await
                .unwrap_err()
                .message
                .contains("not a duration")
        );
    }
}
