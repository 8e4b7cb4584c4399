//! The database sink of a runner: what its builds report (starts, process groups, log
//! lines, progress, ends) gathered into batches and written in one transaction each,
//! by a task of its own so that the runner's loop never waits on the database.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;

use super::channel::Message;
use super::process::Output;
use crate::store::{
    AnyStore, BuildId, LogLevel, LogRecord, ProgressUpdate, Store, StoreError, Stream, Write,
};

/// The turn to write to the database, shared by a run's writers.
pub(crate) type WriteTurn = Arc<tokio::sync::Mutex<()>>;

/// Writes waiting past this many make the loop wait for the batch being written.
const FLUSH_AT: usize = 5000;

/// Runs database work on a thread of tokio's blocking pool, driven by the run's runtime
/// (its I/O still goes through the run's thread). Building a batch's many-row statements
/// takes ~1 ms of CPU: on the run's thread that was 1 ms with no job noticed or started.
pub(crate) fn off_loop<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(work))
}

/// What came of writing a batch: builds whose writes the database refused, each with
/// why, and builds whose claim is no longer this runner's (nothing of theirs written).
#[derive(Debug, Default)]
pub(crate) struct Written {
    unstored: Vec<(BuildId, String)>,
    stale: Vec<BuildId>,
}

/// Writes a batch in one transaction, fenced by the tokens of `fences`. When that
/// fails, each build's writes are tried in a transaction of their own: a build whose data
/// the database refuses fails alone (returned, with why), and the run goes on. When the
/// database does not answer a plain read either, it is the database that failed, and the
/// batch's error is the run's.
async fn write_batch(
    store: &AnyStore,
    writes: Vec<Write>,
    fences: Vec<(BuildId, i64)>,
) -> Result<Written, StoreError> {
    let err = match store.write_fenced(&writes, &fences).await {
        Ok(stale) => {
            return Ok(Written {
                unstored: Vec::new(),
                stale,
            });
        }
        Err(err) => err,
    };
    if store.schema_version().await.is_err() {
        return Err(err);
    }
    let mut by_build: indexmap::IndexMap<BuildId, Vec<Write>> = indexmap::IndexMap::new();
    for write in writes {
        by_build.entry(write.build()).or_default().push(write);
    }
    let mut written = Written::default();
    for (build, writes) in by_build {
        let fence: Vec<(BuildId, i64)> = fences.iter().filter(|f| f.0 == build).copied().collect();
        match store.write_fenced(&writes, &fence).await {
            Ok(stale) => written.stale.extend(stale),
            Err(err) => written
                .unstored
                .push((build, format!("cannot store its output: {err}"))),
        }
    }
    Ok(written)
}

/// The database sink: builds' changes, log lines and progress waiting to be written in
/// one transaction; progress keeps only the latest value per build and group. A batch is
/// written by a task of its own, so the loop goes on starting jobs meanwhile; one batch
/// at a time, so they land in order. After a failed write it keeps the error and drops
/// what comes.
pub(crate) struct Sink {
    writes: Vec<Write>,
    progress_at: HashMap<(BuildId, Vec<String>), usize>,
    pub(crate) failure: Option<StoreError>,
    turn: WriteTurn,
    /// The batch being written.
    writing: Option<tokio::task::JoinHandle<Result<Written, StoreError>>>,
    /// Builds whose writes the database refused, and why: the loop fails them.
    pub(crate) unstored: Vec<(BuildId, String)>,
    /// The token of each build this runner holds a claim on: their writes are made
    /// only while the claim is still theirs.
    fences: HashMap<BuildId, i64>,
    /// Builds whose writes were refused for a stale token: the loop stops them.
    pub(crate) stale: Vec<BuildId>,
}

impl Sink {
    pub(crate) fn new(turn: WriteTurn) -> Sink {
        Sink {
            writes: Vec::new(),
            progress_at: HashMap::new(),
            failure: None,
            turn,
            writing: None,
            unstored: Vec::new(),
            fences: HashMap::new(),
            stale: Vec::new(),
        }
    }

    /// From now on, `build`'s writes carry its claim's `token`.
    pub(crate) fn fence(&mut self, build: BuildId, token: i64) {
        self.fences.insert(build, token);
    }

    /// `build` has ended here: nothing more is written about it.
    pub(crate) fn unfence(&mut self, build: BuildId) {
        self.fences.remove(&build);
    }

    pub(crate) fn len(&self) -> usize {
        self.writes.len()
    }

    pub(crate) fn push(&mut self, write: Write) {
        if self.failure.is_none() {
            self.writes.push(write);
        }
    }

    /// A build's process group: in its start, if that is still waiting to be written.
    pub(crate) fn process_group(&mut self, build: BuildId, pgid: u32) {
        for write in self.writes.iter_mut().rev() {
            if let Write::Started {
                build: b,
                pgid: slot,
                ..
            } = write
                && *b == build
            {
                *slot = Some(pgid);
                return;
            }
        }
        self.push(Write::ProcessGroup { build, pgid });
    }

    pub(crate) fn fail(&mut self, err: StoreError) {
        self.writes.clear();
        self.progress_at.clear();
        self.failure.get_or_insert(err);
    }

    pub(crate) fn add(&mut self, build: BuildId, output: &Output) {
        if self.failure.is_some() {
            return;
        }
        let at = Utc::now();
        let log = |level, stream, message: String| {
            Write::Log(LogRecord {
                build,
                at,
                level,
                stream,
                message,
            })
        };
        match output {
            Output::Line { stream, text } => {
                let level = if *stream == Stream::Stderr {
                    LogLevel::Warning
                } else {
                    LogLevel::Info
                };
                self.writes.push(log(level, *stream, text.clone()));
            }
            Output::Message(Message::Log { level, message }) => {
                self.writes
                    .push(log(*level, Stream::Channel, message.clone()));
            }
            Output::Message(Message::Progress {
                group,
                current,
                total,
                status,
            }) => {
                let update = Write::Progress(ProgressUpdate {
                    build,
                    path: group.clone(),
                    current: *current,
                    total: *total,
                    status: status.clone(),
                    at,
                });
                match self.progress_at.get(&(build, group.clone())) {
                    Some(&i) => self.writes[i] = update,
                    None => {
                        self.progress_at
                            .insert((build, group.clone()), self.writes.len());
                        self.writes.push(update);
                    }
                }
            }
            // An oversized message reaches the sink as the guard's warning.
            Output::Message(Message::Retval { .. } | Message::Skip { .. })
            | Output::Spawned { .. }
            | Output::Oversized { .. } => {}
            Output::BadLine(bad) => {
                self.writes
                    .push(log(LogLevel::Warning, Stream::Channel, bad.to_string()));
            }
            Output::Dropped { lines, bytes } => {
                self.writes.push(log(
                    LogLevel::Warning,
                    Stream::Stdout,
                    format!("[{lines} lines ({bytes} bytes) of output left out]"),
                ));
            }
        }
    }

    /// Hands what waits to a writing task. While the batch before is still being
    /// written, what waits stays and gathers more (up to [`FLUSH_AT`] writes; then the
    /// loop waits for the batch before).
    pub(crate) async fn flush(&mut self, store: &Arc<AnyStore>) {
        if let Some(writing) = &self.writing
            && !writing.is_finished()
            && self.writes.len() < FLUSH_AT
        {
            return;
        }
        self.settle().await;
        if self.writes.is_empty() || self.failure.is_some() {
            return;
        }
        let writes = std::mem::take(&mut self.writes);
        self.progress_at.clear();
        let mut fences: Vec<(BuildId, i64)> = Vec::new();
        if !self.fences.is_empty() {
            let mut seen = std::collections::HashSet::new();
            for write in &writes {
                let build = write.build();
                if let Some(&token) = self.fences.get(&build)
                    && seen.insert(build)
                {
                    fences.push((build, token));
                }
            }
        }
        let store = store.clone();
        let turn = self.turn.clone();
        self.writing = Some(off_loop(async move {
            let _turn = turn.lock().await;
            write_batch(&store, writes, fences).await
        }));
    }

    /// Waits for the batch being written, if any.
    pub(crate) async fn settle(&mut self) {
        if let Some(writing) = self.writing.take() {
            match writing.await {
                Ok(Ok(written)) => {
                    self.unstored.extend(written.unstored);
                    self.stale.extend(written.stale);
                }
                Ok(Err(err)) => self.fail(err),
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            }
        }
    }

    /// Writes everything that waits and waits for it.
    pub(crate) async fn finish(&mut self, store: &Arc<AnyStore>) {
        self.settle().await;
        self.flush(store).await;
        self.settle().await;
    }
}
