//! The database sink of a runner: the writes its builds make (starts, process groups, log
//! lines, progress, ends) gathered into batches and written in one transaction each,
//! by a task of its own so that the runner's loop never waits on the database. The
//! runner turns what its builds say into [`Write`]s (`exec::event::record`); the sink
//! knows nothing of processes.

use std::collections::HashMap;
use std::sync::Arc;

use super::{AnyStore, BuildId, Store, StoreError, Write};

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

    /// Adds a write to the batch; a build's progress keeps only its latest value per
    /// group until the batch is written.
    pub(crate) fn push(&mut self, write: Write) {
        if self.failure.is_some() {
            return;
        }
        if let Write::Progress(update) = &write {
            let key = (update.build, update.path.clone());
            match self.progress_at.get(&key) {
                Some(&i) => {
                    self.writes[i] = write;
                    return;
                }
                None => {
                    self.progress_at.insert(key, self.writes.len());
                }
            }
        }
        self.writes.push(write);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ProgressUpdate;

    fn progress(build: i64, path: &[&str], current: i64) -> Write {
        Write::Progress(ProgressUpdate {
            build: BuildId(build),
            path: path.iter().map(|p| p.to_string()).collect(),
            current,
            total: None,
            status: None,
            at: chrono::Utc::now(),
        })
    }

    fn currents(sink: &Sink) -> Vec<(i64, i64)> {
        sink.writes
            .iter()
            .filter_map(|w| match w {
                Write::Progress(p) => Some((p.build.0, p.current)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_batch_keeps_the_latest_progress_of_each_build_and_group_in_first_place() {
        let mut sink = Sink::new(WriteTurn::default());
        sink.push(progress(1, &[], 1));
        sink.push(progress(2, &[], 1));
        sink.push(progress(1, &["a"], 1));
        sink.push(progress(1, &[], 2));
        sink.push(Write::Discard { build: BuildId(3) });
        sink.push(progress(1, &[], 3));
        assert_eq!(sink.len(), 4);
        assert_eq!(currents(&sink), vec![(1, 3), (2, 1), (1, 1)]);
        // Once failed, the sink takes nothing more.
        sink.fail(StoreError::ReadOnlyWrite { action: "test" });
        sink.push(progress(1, &[], 4));
        assert_eq!(sink.len(), 0);
    }

    #[test]
    fn a_process_group_joins_a_start_still_waiting_or_goes_alone() {
        let mut sink = Sink::new(WriteTurn::default());
        sink.push(Write::Started {
            build: BuildId(1),
            at: chrono::Utc::now(),
            pins: Vec::new(),
            pgid: None,
        });
        sink.process_group(BuildId(1), 42);
        sink.process_group(BuildId(2), 43);
        assert!(matches!(
            sink.writes[..],
            [
                Write::Started { pgid: Some(42), .. },
                Write::ProcessGroup { pgid: 43, .. }
            ]
        ));
    }
}
