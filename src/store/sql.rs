//! The SQL both backends run. `$1` placeholders work in SQLite and PostgreSQL alike, and
//! every column is read as a type both decode (4-byte integers as `i32`, ids as `i64`,
//! JSON through `sqlx::types::Json`), so one body serves both: `impl_store!` writes the
//! `Store` impl for a backend type that has a `pool` and a `begin_write` method.

/// Columns of `builds`, in the order `build_from_row` reads them.
pub(super) const BUILD_COLUMNS: &str = "id, job_id, status, created_at, started_at, finished_at, \
     config, config_hash, retval, exit_code, signal, timed_out, error, stderr_tail, attempt, \
     host, pid, worker, pgid, cancel_requested_at, run_owner, lease_until, token, reason";

/// The row counts many-row statements are written with. Every statement of a batch is a
/// round trip to the database (another thread for SQLite), so rows go many at a time; and
/// a statement's text depends only on its row count, so with these few counts each text
/// is prepared once and kept in sqlx's cache. (Parsing a new 500-row text each time was a
/// third of SQLite's work in a run of `true` jobs; a cache of texts of every count held
/// ~10 MB at 10k jobs.) At most 256 rows of at most 15 values: within both databases'
/// limits on parameters.
const STATEMENT_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

/// `rows` in pieces of [`STATEMENT_ROWS`] sizes, largest first: the fewest statements.
pub(super) fn pieces<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let size = STATEMENT_ROWS
            .into_iter()
            .find(|&size| size <= rest.len())?;
        let (piece, after) = rest.split_at(size);
        rest = after;
        Some(piece)
    })
}

/// `rows` in pieces of at most 256, each made up to a [`STATEMENT_ROWS`] size by
/// repeating its last row: one statement for up to 256 rows, of one of five texts. Only
/// for statements a repeated row changes nothing in (an `IN` list, the rows an `UPDATE`
/// joins to, a count by key); never for an `INSERT`.
pub(super) fn padded<T: Clone>(rows: &[T]) -> impl Iterator<Item = Vec<T>> + '_ {
    rows.chunks(STATEMENT_ROWS[0]).map(|chunk| {
        let size = STATEMENT_ROWS
            .into_iter()
            .rev()
            .find(|&size| size >= chunk.len())
            .unwrap_or(STATEMENT_ROWS[0]);
        let mut piece = chunk.to_vec();
        piece.resize(size, chunk[chunk.len() - 1].clone());
        piece
    })
}

/// How a build ended, as written: with its start when that is written in the same batch
/// (one row update instead of two for a build that starts and ends within a batch).
pub(super) struct End<'a> {
    pub build: i64,
    pub outcome: &'a crate::store::Outcome,
    pub at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub pgid: Option<u32>,
}

/// The columns a finished build sets: retval, exit code, signal, timed out, error (the
/// reason's words, or a skip's), stderr tail, reason (JSON).
pub(super) type OutcomeColumns<'a> = (
    Option<&'a serde_json::Value>,
    Option<i32>,
    Option<i32>,
    bool,
    Option<String>,
    Option<&'a str>,
    Option<serde_json::Value>,
);

pub(super) fn outcome_columns(outcome: &crate::store::Outcome) -> OutcomeColumns<'_> {
    use crate::store::Outcome;
    let reason = |r: &crate::store::Reason| {
        (
            Some(r.to_string()),
            Some(serde_json::to_value(r).unwrap_or_default()),
        )
    };
    match outcome {
        Outcome::Successful { retval } => (retval.as_ref(), None, None, false, None, None, None),
        Outcome::Failed {
            exit_code,
            signal,
            timed_out,
            reason: why,
            stderr_tail,
        } => {
            let (words, json) = reason(why);
            (
                None,
                *exit_code,
                *signal,
                *timed_out,
                words,
                stderr_tail.as_deref(),
                json,
            )
        }
        Outcome::Cancelled { reason: why } => {
            let (words, json) = reason(why);
            (None, None, None, false, words, None, json)
        }
        Outcome::Skipped { reason } => (None, None, None, false, Some(reason.clone()), None, None),
    }
}

macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        impl $store {
            fn build_from_row(
                row: &<$db as sqlx::Database>::Row,
            ) -> std::result::Result<crate::store::Build, crate::store::StoreError> {
                use sqlx::Row as _;
                use sqlx::types::Json as J;
                let get = |e: sqlx::Error| crate::store::StoreError::query("read a build", e);
                let status: String = row.try_get(2).map_err(get)?;
                Ok(crate::store::Build {
                    id: crate::store::BuildId(row.try_get(0).map_err(get)?),
                    job_id: row.try_get(1).map_err(get)?,
                    status: crate::store::BuildStatus::parse(&status).ok_or_else(|| {
                        crate::store::StoreError::Corrupt {
                            what: "build status",
                            detail: status.clone(),
                        }
                    })?,
                    created_at: row.try_get(3).map_err(get)?,
                    started_at: row.try_get(4).map_err(get)?,
                    finished_at: row.try_get(5).map_err(get)?,
                    // One that does not read (nested past what the JSON parser takes,
                    // written by something other than jobctl) is null: the build still
                    // reads, and a worker that claims it fails it saying why.
                    config: row
                        .try_get::<J<serde_json::Value>, _>(6)
                        .map_or(serde_json::Value::Null, |j| j.0),
                    config_hash: row.try_get(7).map_err(get)?,
                    retval: row
                        .try_get::<Option<J<serde_json::Value>>, _>(8)
                        .map_err(get)?
                        .map(|j| j.0),
                    exit_code: row.try_get(9).map_err(get)?,
                    signal: row.try_get(10).map_err(get)?,
                    timed_out: row.try_get(11).map_err(get)?,
                    error: row.try_get(12).map_err(get)?,
                    stderr_tail: row.try_get(13).map_err(get)?,
                    attempt: row.try_get::<i32, _>(14).map_err(get)?.max(0) as u32,
                    host: row.try_get(15).map_err(get)?,
                    pid: row
                        .try_get::<Option<i32>, _>(16)
                        .map_err(get)?
                        .map(|p| p.max(0) as u32),
                    worker: row.try_get(17).map_err(get)?,
                    pgid: row
                        .try_get::<Option<i32>, _>(18)
                        .map_err(get)?
                        .map(|p| p.max(0) as u32),
                    cancel_requested_at: row.try_get(19).map_err(get)?,
                    run_owner: row.try_get(20).map_err(get)?,
                    lease_until: row.try_get(21).map_err(get)?,
                    token: row.try_get(22).map_err(get)?,
                    // One this jobctl does not know (written by a newer one), or that
                    // is not JSON at all, is left to its words: the build still reads.
                    reason: row
                        .try_get::<Option<J<serde_json::Value>>, _>(23)
                        .ok()
                        .flatten()
                        .and_then(|j| serde_json::from_value(j.0).ok()),
                })
            }

            /// Inserts `builds` (status `created`, planned by `runner` if given, for a lease
            /// of that long) with their pins, in the transaction `tx`, a few hundred rows
            /// per statement.
            async fn insert_builds(
                tx: &mut sqlx::Transaction<'static, $db>,
                builds: &[crate::store::NewBuild],
                runner: Option<(&crate::store::Runner, std::time::Duration)>,
            ) -> Result<Vec<crate::store::BuildId>, sqlx::Error> {
                Self::insert_reserved(tx, builds, runner, None, chrono::Utc::now()).await
            }

            /// As `insert_builds`; with `reserve`, the builds it marks are recorded
            /// reserved by that claimer (token 1) in the same statement. Every build a
            /// runner plans, reserved or not, holds a lease of the runner's length from
            /// now (`at` on SQLite, the database's clock on PostgreSQL: see
            /// `push_lease_end`), which its run renews: a run that is gone, on any host,
            /// holds up nothing it planned once the lease runs out.
            async fn insert_reserved(
                tx: &mut sqlx::Transaction<'static, $db>,
                builds: &[crate::store::NewBuild],
                runner: Option<(&crate::store::Runner, std::time::Duration)>,
                reserve: Option<(&crate::store::queue::Claimer, &[bool])>,
                at: chrono::DateTime<chrono::Utc>,
            ) -> Result<Vec<crate::store::BuildId>, sqlx::Error> {
                let mut ids = Vec::with_capacity(builds.len());
                let rows: Vec<(usize, &crate::store::NewBuild)> = builds.iter().enumerate().collect();
                let lease = runner.map(|(_, lease)| lease);
                let runner = runner.map(|(runner, _)| runner);
                for chunk in crate::store::sql::pieces(&rows) {
                    let mut insert: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "INSERT INTO builds (job_id, status, created_at, config, config_hash, \
                         attempt, host, pid, worker, run_owner, concurrency, runner_id, runner_since, \
                         token, lease_until) ",
                    );
                    insert.push_values(chunk, |mut row, (i, build)| {
                        let held = reserve.filter(|(_, marked)| marked[*i]).map(|(c, _)| c);
                        row.push_bind(build.job_id.as_str())
                            .push_bind("created")
                            .push_bind(build.created_at)
                            .push_bind(sqlx::types::Json(&build.config))
                            .push_bind(build.config_hash.as_str())
                            .push_bind(build.attempt as i32)
                            .push_bind(runner.map(|r| r.host.as_str()))
                            .push_bind(runner.map(|r| r.pid as i32))
                            .push_bind(runner.and_then(|r| r.worker.as_deref()))
                            // Kept for the run that planned it: only its runner claims it.
                            .push_bind(runner.map(|_| crate::store::queue::this_process_id()))
                            .push_bind(crate::store::queue::concurrency_of(&build.config) as i32)
                            .push_bind(held.map(|c| c.id.clone()))
                            .push_bind(held.and_then(|c| c.since))
                            .push_bind(if held.is_some() { 1i64 } else { 0 });
                        match lease {
                            Some(lease) if Self::PG => {
                                let secs = lease.min(crate::limits::MAX_DURATION).as_secs_f64();
                                row.push("now() + make_interval(secs => ")
                                    .push_bind_unseparated(secs)
                                    .push_unseparated(")");
                            }
                            lease => {
                                row.push_bind(lease.map(|lease| crate::limits::after(at, lease)));
                            }
                        }
                    });
                    insert.push(" RETURNING id");
                    // One statement numbers its rows in order: sorted, the ids follow the
                    // rows (RETURNING itself promises no order).
                    let mut new: Vec<i64> = insert
                        .build_query_scalar()

                        .fetch_all(&mut **tx)
                        .await?;
                    new.sort_unstable();
                    ids.extend(new.into_iter().map(crate::store::BuildId));
                }
                let pins: Vec<(i64, &crate::store::Pin)> = builds
                    .iter()
                    .zip(&ids)
                    .flat_map(|(b, id)| b.pins.iter().map(move |p| (id.0, p)))
                    .collect();
                Self::insert_pins(tx, &pins).await?;
                Ok(ids)
            }

            /// Inserts pins, `(build, pin)`, many rows per statement.
            async fn insert_pins(
                tx: &mut sqlx::Transaction<'static, $db>,
                pins: &[(i64, &crate::store::Pin)],
            ) -> Result<(), sqlx::Error> {
                for chunk in crate::store::sql::pieces(&pins) {
                    let mut insert: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "INSERT INTO build_pins (build_id, dep_job_id, dep_build_id) ",
                    );
                    insert.push_values(chunk, |mut row, (build, pin)| {
                        row.push_bind(*build)
                            .push_bind(pin.job_id.as_str())
                            .push_bind(pin.build_id.map(|b| b.0));
                    });
                    insert.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Marks builds running, `(build, at, process group)`, many per statement.
            async fn start_builds(
                tx: &mut sqlx::Transaction<'static, $db>,
                starts: &[(i64, chrono::DateTime<chrono::Utc>, Option<u32>)],
            ) -> Result<(), sqlx::Error> {
                for chunk in crate::store::sql::pieces(&starts) {
                    let mut update: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "UPDATE builds SET status = 'running', started_at = v.column2, \
                         pgid = COALESCE(v.column3, builds.pgid) FROM (",
                    );
                    update.push_values(chunk, |mut row, (build, at, pgid)| {
                        row.push_bind(*build)
                            .push_bind(*at)
                            .push_bind(pgid.map(|p| p as i32));
                    });
                    // A build claimed (or reserved) by its run, and not ended or taken back
                    // meanwhile (see "Found by id" in store/queue.rs).
                    update.push(
                        ") AS v WHERE builds.id = v.column1 AND builds.status || '' IN ('created', 'running') \
                         AND builds.runner_id IS NOT NULL",
                    );
                    update.build().execute(&mut **tx).await?;
                }
                Ok(())
            }

            /// Records how builds ended (and where the end carries it, their start), many
            /// per statement. A build never started gets its end time as start time.
            async fn finish_builds(
                tx: &mut sqlx::Transaction<'static, $db>,
                ends: &[crate::store::sql::End<'_>],
            ) -> Result<(), sqlx::Error> {
                for chunk in crate::store::sql::pieces(&ends) {
                    let mut update: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "UPDATE builds SET status = v.column2, finished_at = v.column3, \
                         retval = v.column4, exit_code = v.column5, signal = v.column6, \
                         timed_out = v.column7, error = v.column8, stderr_tail = v.column9, \
                         started_at = COALESCE(v.column10, builds.started_at, v.column3), \
                         pgid = COALESCE(v.column11, builds.pgid), reason = v.column12 FROM (",
                    );
                    update.push_values(chunk, |mut row, end| {
                        let (retval, exit_code, signal, timed_out, error, stderr_tail, reason) =
                            crate::store::sql::outcome_columns(end.outcome);
                        row.push_bind(end.build)
                            .push_bind(end.outcome.status().as_str())
                            .push_bind(end.at)
                            .push_bind(retval.map(sqlx::types::Json))
                            .push_bind(exit_code)
                            .push_bind(signal)
                            .push_bind(timed_out)
                            .push_bind(error)
                            .push_bind(stderr_tail)
                            .push_bind(end.started_at)
                            .push_bind(end.pgid.map(|p| p as i32))
                            .push_bind(reason.map(sqlx::types::Json));
                    });
                    update.push(") AS v WHERE builds.id = v.column1");
                    update.build().execute(&mut **tx).await?;
                }
                Ok(())
            }
        }

        impl crate::store::Store for $store {
            async fn create_build(
                &self,
                build: &crate::store::NewBuild,
            ) -> crate::store::Result<crate::store::BuildId> {
                let q = |source| crate::store::StoreError::query("record a new build", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                let ids = Self::insert_builds(&mut tx, std::slice::from_ref(build), None)
                    .await
                    .map_err(q)?;
                tx.commit().await.map_err(q)?;
                Ok(ids[0])
            }

            async fn create_builds(
                &self,
                builds: &[crate::store::NewBuild],
                runner: &crate::store::Runner,
                lease: std::time::Duration,
            ) -> crate::store::Result<Vec<crate::store::BuildId>> {
                let q = |source| crate::store::StoreError::query("record the planned builds", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                let ids = Self::insert_builds(&mut tx, builds, Some((runner, lease))).await.map_err(q)?;
                tx.commit().await.map_err(q)?;
                Ok(ids)
            }

            async fn start_build(
                &self,
                id: crate::store::BuildId,
                runner: &crate::store::Runner,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<()> {
                sqlx::query(
                    "UPDATE builds SET status = 'running', started_at = $2, host = $3, pid = $4, \
                     worker = $5 WHERE id = $1",
                )
                .bind(id.0)
                .bind(at)
                .bind(&runner.host)
                .bind(runner.pid as i32)
                .bind(&runner.worker)
                .execute(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("mark a build running", source))?;
                Ok(())
            }

            async fn finish_build(
                &self,
                id: crate::store::BuildId,
                outcome: &crate::store::Outcome,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<()> {
                let q = |source| crate::store::StoreError::query("record how a build ended", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                let end = crate::store::sql::End { build: id.0, outcome, at, started_at: None, pgid: None };
                Self::finish_builds(&mut tx, &[end]).await.map_err(q)?;
                tx.commit().await.map_err(q)?;
                Ok(())
            }

            async fn write(&self, batch: &[crate::store::Write]) -> crate::store::Result<()> {
                self.write_fenced(batch, &[]).await.map(|_| ())
            }

            async fn write_fenced(
                &self,
                batch: &[crate::store::Write],
                fences: &[(crate::store::BuildId, i64)],
            ) -> crate::store::Result<Vec<crate::store::BuildId>> {
                use crate::store::Write;
                if batch.is_empty() {
                    return Ok(Vec::new());
                }
                let q = |source| crate::store::StoreError::query("write builds, logs and progress", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                // Fenced builds whose claim is no longer this runner's: nothing of theirs
                // is written (read under the write lock, so no claim moves meanwhile).
                let mut stale: Vec<crate::store::BuildId> = Vec::new();
                for chunk in fences.chunks(500) {
                    let mut select: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "SELECT id, token, status FROM builds WHERE id IN (",
                    );
                    let mut ids = select.separated(", ");
                    for (build, _) in chunk {
                        ids.push_bind(build.0);
                    }
                    select.push(")");
                    select.push(Self::SHARE_ROWS);
                    let rows: Vec<(i64, i64, String)> =
                        select.build_query_as().fetch_all(&mut *tx).await.map_err(q)?;
                    let now: std::collections::HashMap<i64, (i64, String)> =
                        rows.into_iter().map(|(id, token, status)| (id, (token, status))).collect();
                    for (build, token) in chunk {
                        let holds = now.get(&build.0).is_some_and(|(t, status)| {
                            t == token && (status == "running" || status == "created")
                        });
                        if !holds {
                            stale.push(*build);
                        }
                    }
                }
                let kept: Vec<Write>;
                let batch: &[Write] = if stale.is_empty() {
                    batch
                } else {
                    kept = batch
                        .iter()
                        .filter(|w| !stale.contains(&w.build()))
                        .cloned()
                        .collect();
                    &kept
                };
                // Builds start (and learn their process group) before their lines are
                // written, and end after. A build that also ends in this batch starts
                // with its end: one row update.
                let ending: std::collections::HashSet<i64> = batch
                    .iter()
                    .filter_map(|w| match w {
                        Write::Finished { build, .. } => Some(build.0),
                        _ => None,
                    })
                    .collect();
                let mut starts = Vec::new();
                let mut start_of = std::collections::HashMap::new();
                let mut pins = Vec::new();
                for w in batch {
                    if let Write::Started { build, at, pins: p, pgid } = w {
                        if ending.contains(&build.0) {
                            start_of.insert(build.0, (*at, *pgid));
                        } else {
                            starts.push((build.0, *at, *pgid));
                        }
                        pins.extend(p.iter().map(|pin| (build.0, pin)));
                    }
                }
                Self::start_builds(&mut tx, &starts).await.map_err(q)?;
                Self::insert_pins(&mut tx, &pins).await.map_err(q)?;
                for w in batch {
                    if let Write::ProcessGroup { build, pgid } = w {
                        sqlx::query("UPDATE builds SET pgid = $2 WHERE id = $1")
                            .bind(build.0)
                            .bind(*pgid as i32)
                            .execute(&mut *tx)
                            .await
                            .map_err(q)?;
                    }
                }
                let logs: Vec<&crate::store::LogRecord> = batch
                    .iter()
                    .filter_map(|w| match w {
                        Write::Log(l) => Some(l),
                        _ => None,
                    })
                    .collect();
                for chunk in crate::store::sql::pieces(&logs) {
                    let mut insert: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "INSERT INTO logs (build_id, at, level, stream, message) ",
                    );
                    insert.push_values(chunk, |mut row, log| {
                        row.push_bind(log.build.0)
                            .push_bind(log.at)
                            .push_bind(log.level as i32)
                            .push_bind(log.stream.as_str())
                            .push_bind(log.message.clone());
                    });
                    insert.build().execute(&mut *tx).await.map_err(q)?;
                }
                // The latest update per (build, group), in first-reported order: one
                // statement cannot update a row twice.
                let mut latest: Vec<&crate::store::ProgressUpdate> = Vec::new();
                let mut seen: std::collections::HashMap<(i64, &[String]), usize> =
                    std::collections::HashMap::new();
                for w in batch {
                    let Write::Progress(p) = w else { continue };
                    match seen.entry((p.build.0, p.path.as_slice())) {
                        std::collections::hash_map::Entry::Occupied(e) => latest[*e.get()] = p,
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(latest.len());
                            latest.push(p);
                        }
                    }
                }
                for chunk in crate::store::sql::pieces(&latest) {
                    let mut upsert: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "INSERT INTO progress (build_id, path, seq, current, total, status_line, updated_at) ",
                    );
                    // A new group goes after the build's groups so far, in batch order;
                    // a group seen before keeps its place.
                    let mut k = 0usize;
                    upsert.push_values(chunk, |mut row, p| {
                        k += 1;
                        row.push_bind(p.build.0)
                            .push_bind(serde_json::to_string(&p.path).expect("strings serialize"))
                            .push("(SELECT COALESCE(MAX(seq), 0) FROM progress WHERE build_id = ")
                            .push_bind_unseparated(p.build.0)
                            .push_unseparated(format!(") + {k}"))
                            .push_bind(p.current)
                            .push_bind(p.total)
                            .push_bind(p.status.clone())
                            .push_bind(p.at);
                    });
                    upsert.push(
                        " ON CONFLICT (build_id, path) DO UPDATE SET current = excluded.current, \
                         total = excluded.total, status_line = excluded.status_line, \
                         updated_at = excluded.updated_at",
                    );
                    upsert.build().execute(&mut *tx).await.map_err(q)?;
                }
                // One statement cannot update a row twice: a build's last end counts.
                let mut ends: Vec<crate::store::sql::End<'_>> = Vec::new();
                let mut end_of: std::collections::HashMap<i64, usize> =
                    std::collections::HashMap::new();
                let mut discards = Vec::new();
                for w in batch {
                    match w {
                        Write::Finished { build, outcome, at } => {
                            let (started_at, pgid) = match start_of.get(&build.0) {
                                Some(&(started_at, pgid)) => (Some(started_at), pgid),
                                None => (None, None),
                            };
                            let end = crate::store::sql::End { build: build.0, outcome, at: *at, started_at, pgid };
                            match end_of.entry(build.0) {
                                std::collections::hash_map::Entry::Occupied(e) => ends[*e.get()] = end,
                                std::collections::hash_map::Entry::Vacant(e) => {
                                    e.insert(ends.len());
                                    ends.push(end);
                                }
                            }
                        }
                        Write::Discard { build } => discards.push(build.0),
                        _ => {}
                    }
                }
                Self::finish_builds(&mut tx, &ends).await.map_err(q)?;
                for chunk in crate::store::sql::pieces(&discards) {
                    let mut delete: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                        "DELETE FROM builds WHERE status = 'created' AND id IN (",
                    );
                    let mut ids = delete.separated(", ");
                    for id in chunk {
                        ids.push_bind(*id);
                    }
                    delete.push(")");
                    delete.build().execute(&mut *tx).await.map_err(q)?;
                }
                tx.commit().await.map_err(q)?;
                Ok(stale)
            }

            async fn builds(
                &self,
                filter: &crate::store::BuildFilter,
            ) -> crate::store::Result<Vec<crate::store::Build>> {
                let mut query: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(format!(
                    "SELECT {} FROM builds WHERE 1 = 1",
                    crate::store::sql::BUILD_COLUMNS
                ));
                if let Some(job) = &filter.job {
                    query.push(" AND job_id = ").push_bind(job.clone());
                }
                if let Some(status) = filter.status {
                    if !status.is_finished() {
                        // Lets SQLite use the partial index of open builds.
                        query.push(" AND status IN ('created', 'running')");
                    }
                    query.push(" AND status = ").push_bind(status.as_str());
                }
                query.push(" ORDER BY id DESC");
                if let Some(limit) = filter.limit {
                    query.push(" LIMIT ").push_bind(i64::from(limit));
                }
                let rows = query
                    .build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|source| crate::store::StoreError::query("list builds", source))?;
                rows.iter().map(Self::build_from_row).collect()
            }

            async fn build(
                &self,
                id: crate::store::BuildId,
            ) -> crate::store::Result<Option<crate::store::Build>> {
                let sql = format!(
                    "SELECT {} FROM builds WHERE id = $1",
                    crate::store::sql::BUILD_COLUMNS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.0)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|source| crate::store::StoreError::query("read a build", source))?;
                row.as_ref().map(Self::build_from_row).transpose()
            }

            async fn pins(
                &self,
                id: crate::store::BuildId,
            ) -> crate::store::Result<Vec<crate::store::Pin>> {
                let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
                    "SELECT dep_job_id, dep_build_id FROM build_pins WHERE build_id = $1 \
                     ORDER BY dep_job_id",
                )
                .bind(id.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("read a build's pins", source))?;
                Ok(rows
                    .into_iter()
                    .map(|(job_id, build)| crate::store::Pin {
                        job_id,
                        build_id: build.map(crate::store::BuildId),
                    })
                    .collect())
            }

            async fn progress(
                &self,
                id: crate::store::BuildId,
            ) -> crate::store::Result<Vec<crate::store::ProgressRow>> {
                type Row = (String, i64, Option<i64>, Option<String>, chrono::DateTime<chrono::Utc>);
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT path, current, total, status_line, updated_at FROM progress \
                     WHERE build_id = $1 ORDER BY seq",
                )
                .bind(id.0)
                .fetch_all(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("read a build's progress", source))?;
                rows.into_iter()
                    .map(|(path, current, total, status, updated_at)| {
                        let path = serde_json::from_str(&path).map_err(|e| {
                            crate::store::StoreError::Corrupt {
                                what: "progress path",
                                detail: e.to_string(),
                            }
                        })?;
                        Ok(crate::store::ProgressRow {
                            path,
                            current,
                            total,
                            status,
                            updated_at,
                        })
                    })
                    .collect()
            }

            async fn logs(
                &self,
                id: crate::store::BuildId,
                filter: &crate::store::LogFilter,
            ) -> crate::store::Result<Vec<crate::store::LogRow>> {
                let mut query: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "SELECT id, at, level, stream, message FROM logs WHERE build_id = ",
                );
                query.push_bind(id.0);
                if let Some(level) = filter.min_level {
                    query.push(" AND level >= ").push_bind(level as i32);
                }
                if let Some(since) = filter.since {
                    query.push(" AND at >= ").push_bind(since);
                }
                if let Some(after) = filter.after_id {
                    query.push(" AND id > ").push_bind(after);
                }
                if let Some(tail) = filter.tail {
                    query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(tail));
                } else {
                    query.push(" ORDER BY id");
                    if let Some(limit) = filter.limit {
                        query.push(" LIMIT ").push_bind(i64::from(limit));
                    }
                }
                type Row = (i64, chrono::DateTime<chrono::Utc>, i32, String, String);
                let mut rows: Vec<Row> = query
                    .build_query_as()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|source| crate::store::StoreError::query("read a build's log", source))?;
                if filter.tail.is_some() {
                    rows.reverse();
                }
                rows.into_iter()
                    .map(|(row_id, at, level, stream, message)| {
                        Ok(crate::store::LogRow {
                            id: row_id,
                            build: id,
                            at,
                            level: crate::store::LogLevel::from_number(i64::from(level)),
                            stream: crate::store::Stream::parse(&stream).ok_or_else(|| {
                                crate::store::StoreError::Corrupt {
                                    what: "log stream",
                                    detail: stream.clone(),
                                }
                            })?,
                            message,
                        })
                    })
                    .collect()
            }

            async fn job_builds(&self) -> crate::store::Result<Vec<crate::store::JobBuilds>> {
                type Row = (
                    String,
                    i64,
                    Option<i64>,
                    Option<String>,
                    Option<chrono::DateTime<chrono::Utc>>,
                    Option<chrono::DateTime<chrono::Utc>>,
                    Option<i64>,
                    Option<chrono::DateTime<chrono::Utc>>,
                    Option<String>,
                    i64,
                );
                let rows: Vec<Row> = sqlx::query_as(
                    "WITH agg AS ( \
                       SELECT job_id, \
                         MAX(CASE WHEN status IN ('successful', 'failed', 'skipped', 'cancelled') \
                             THEN id END) AS finished_id, \
                         MAX(CASE WHEN status = 'successful' THEN id END) AS success_id, \
                         SUM(CASE WHEN status = 'running' THEN 1 ELSE 0 END) AS running, \
                         SUM(CASE WHEN status = 'created' THEN 1 ELSE 0 END) AS queued \
                       FROM builds GROUP BY job_id) \
                     SELECT agg.job_id, agg.running, f.id, f.status, f.started_at, f.finished_at, \
                            s.id, s.finished_at, s.config_hash, agg.queued \
                     FROM agg \
                     LEFT JOIN builds f ON f.id = agg.finished_id \
                     LEFT JOIN builds s ON s.id = agg.success_id",
                )
                .fetch_all(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("read the jobs' latest builds", source))?;
                rows.into_iter()
                    .map(|(job_id, running, fid, fstatus, fstart, fat, sid, sat, shash, queued)| {
                        let finished = match (fid, fstatus, fat) {
                            (Some(id), Some(status), Some(at)) => Some(crate::store::Finished {
                                id: crate::store::BuildId(id),
                                status: crate::store::BuildStatus::parse(&status).ok_or_else(
                                    || crate::store::StoreError::Corrupt {
                                        what: "build status",
                                        detail: status.clone(),
                                    },
                                )?,
                                started_at: fstart,
                                at,
                            }),
                            _ => None,
                        };
                        let success = match (sid, sat, shash) {
                            (Some(id), Some(at), Some(config_hash)) => {
                                Some(crate::store::Success {
                                    id: crate::store::BuildId(id),
                                    at,
                                    config_hash,
                                })
                            }
                            _ => None,
                        };
                        Ok(crate::store::JobBuilds {
                            job_id,
                            running: running > 0,
                            queued: queued > 0,
                            finished,
                            success,
                        })
                    })
                    .collect()
            }

            async fn prune_logs(
                &self,
                prune: &crate::store::PruneLogs,
            ) -> crate::store::Result<u64> {
                let mut query: sqlx::QueryBuilder<$db> =
                    sqlx::QueryBuilder::new("DELETE FROM logs WHERE 1 = 1");
                if let Some(job) = &prune.job {
                    query
                        .push(" AND build_id IN (SELECT id FROM builds WHERE job_id = ")
                        .push_bind(job.clone())
                        .push(")");
                }
                if let Some(build) = prune.build {
                    query.push(" AND build_id = ").push_bind(build.0);
                }
                if let Some(level) = prune.level {
                    query.push(" AND level = ").push_bind(level as i32);
                }
                if let Some(before) = prune.older_than {
                    query.push(" AND at < ").push_bind(before);
                }
                let done = query
                    .build()
                    .execute(&self.pool)
                    .await
                    .map_err(|source| crate::store::StoreError::query("delete old log lines", source))?;
                Ok(done.rows_affected())
            }

            async fn request_cancel(
                &self,
                id: crate::store::BuildId,
                at: chrono::DateTime<chrono::Utc>,
            ) -> crate::store::Result<bool> {
                let done = sqlx::query(
                    "UPDATE builds SET cancel_requested_at = COALESCE(cancel_requested_at, $2) \
                     WHERE id = $1 AND status IN ('created', 'running')",
                )
                .bind(id.0)
                .bind(at)
                .execute(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("request a cancel", source))?;
                Ok(done.rows_affected() > 0)
            }

            async fn cancel_requests(
                &self,
                runner: &crate::store::Runner,
            ) -> crate::store::Result<Vec<crate::store::BuildId>> {
                let ids: Vec<(i64,)> = sqlx::query_as(
                    "SELECT id FROM builds WHERE cancel_requested_at IS NOT NULL \
                     AND host = $1 AND pid = $2 AND status IN ('created', 'running') ORDER BY id",
                )
                .bind(&runner.host)
                .bind(runner.pid as i32)
                .fetch_all(&self.pool)
                .await
                .map_err(|source| crate::store::StoreError::query("read cancel requests", source))?;
                Ok(ids.into_iter().map(|(id,)| crate::store::BuildId(id)).collect())
            }


            async fn delete_build(&self, id: crate::store::BuildId) -> crate::store::Result<bool> {
                let q = |source| crate::store::StoreError::query("delete a build", source);
                let mut tx = self.begin_write().await.map_err(q)?;
                for sql in [
                    "DELETE FROM logs WHERE build_id = $1",
                    "DELETE FROM progress WHERE build_id = $1",
                    "DELETE FROM build_pins WHERE build_id = $1",
                ] {
                    sqlx::query(sql).bind(id.0).execute(&mut *tx).await.map_err(q)?;
                }
                let done = sqlx::query("DELETE FROM builds WHERE id = $1")
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(q)?;
                tx.commit().await.map_err(q)?;
                Ok(done.rows_affected() > 0)
            }

            async fn uninstall(&self) -> crate::store::Result<()> {
                for sql in [
                    "DROP TABLE IF EXISTS build_waits",
                    "DROP TABLE IF EXISTS build_labels",
                    "DROP TABLE IF EXISTS workers",
                    "DROP TABLE IF EXISTS logs",
                    "DROP TABLE IF EXISTS progress",
                    "DROP TABLE IF EXISTS build_pins",
                    "DROP TABLE IF EXISTS builds",
                    "DROP TABLE IF EXISTS _sqlx_migrations",
                ] {
                    sqlx::query(sql).execute(&self.pool).await.map_err(|source| {
                        crate::store::StoreError::query("drop jobctl's tables", source)
                    })?;
                }
                Ok(())
            }

            async fn changes(&self) -> crate::store::Result<crate::store::ChangeToken> {
                type Row = (
                    Option<i64>,
                    i64,
                    Option<i64>,
                    Option<i64>,
                    Option<i64>,
                    Option<String>,
                );
                let row: Row = sqlx::query_as(crate::store::sql::CHANGES)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|source| {
                        crate::store::StoreError::query("read what changed", source)
                    })?;
                let (max_build, open, running, created, max_log, progress) = row;
                Ok(crate::store::ChangeToken {
                    builds: format!("{max_build:?} {open} {running:?} {created:?}"),
                    activity: format!("{max_log:?} {progress:?}"),
                })
            }

            async fn schema_version(&self) -> crate::store::Result<i64> {
                Self::applied_version(&self.pool).await.map_err(|source| {
                    crate::store::StoreError::query("read the schema version", source)
                })
            }
        }
    };
}

pub(super) use impl_store;

/// What moves when anything a viewer shows changes: a build made, started or ended, a log
/// line, a progress report of a running build. Every part is read through an index (the
/// primary keys, the partial index `builds_running`, progress by build), so asking four
/// times a second costs next to nothing, whatever the history's size. (SQLite uses a
/// partial index only for a query that repeats its `IN` list: `status = 'running'` alone
/// scans every build.)
pub(super) const CHANGES: &str = "SELECT \
      (SELECT MAX(id) FROM builds), \
      open.n, open.running, open.created, \
      (SELECT MAX(id) FROM logs), \
      (SELECT CAST(MAX(p.updated_at) AS TEXT) FROM progress p \
         WHERE p.build_id IN (SELECT id FROM builds WHERE status IN ('created', 'running'))) \
    FROM (SELECT COUNT(*) AS n, \
            CAST(SUM(CASE WHEN status = 'running' THEN id ELSE 0 END) AS BIGINT) AS running, \
            CAST(SUM(CASE WHEN status = 'created' THEN id ELSE 0 END) AS BIGINT) AS created \
          FROM builds WHERE status IN ('created', 'running')) open";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_few_pieces_of_few_sizes_in_order() {
        let sizes = |n: usize| -> Vec<usize> {
            let rows: Vec<usize> = (0..n).collect();
            let pieces: Vec<&[usize]> = pieces(&rows).collect();
            assert_eq!(pieces.concat(), rows, "every row once, in order");
            pieces.iter().map(|p| p.len()).collect()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), [1]);
        assert_eq!(sizes(21), [16, 4, 1]);
        assert_eq!(sizes(300), [256, 16, 16, 4, 4, 4]);
        assert_eq!(sizes(1203).len(), 4 + 2 + 3 + 3);
    }

    #[test]
    fn padded_pieces_repeat_their_last_row_up_to_a_statement_size() {
        let padded_of = |n: usize| -> Vec<Vec<usize>> {
            let rows: Vec<usize> = (0..n).collect();
            padded(&rows).collect()
        };
        assert!(padded_of(0).is_empty());
        assert_eq!(padded_of(1), [vec![0]]);
        assert_eq!(padded_of(2), [vec![0, 1, 1, 1]]);
        let big = padded_of(300);
        assert_eq!(big.iter().map(Vec::len).collect::<Vec<_>>(), [256, 64]);
        assert_eq!(big[1][..44], (256..300).collect::<Vec<_>>()[..]);
        assert!(big[1][44..].iter().all(|&r| r == 299));
        for n in [5, 17, 63, 64, 65, 257, 1000] {
            let pieces = padded_of(n);
            let mut seen: Vec<usize> = pieces.concat();
            seen.dedup();
            assert_eq!(
                seen,
                (0..n).collect::<Vec<_>>(),
                "every row, in order ({n})"
            );
            assert!(pieces.iter().all(|p| STATEMENT_ROWS.contains(&p.len())));
        }
    }
}
