//! The queue's story, run unchanged against SQLite and the real PostgreSQL: enqueue a
//! diamond, claim in batches, dependants ready only after success, a failure closes what
//! waits on it as not run, a stale token's write is refused, an expired lease is rescued,
//! de-duplication, cancel of a queued build, labels, and `concurrency` inside the claim.

mod common;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobctl::store::queue::{
    Claimed, Claimer, Ending, Enqueue, Enqueued, Queue, Suspect, dedup_key,
};
use jobctl::store::{
    AnyStore, BuildId, BuildStatus, LogFilter, LogLevel, LogRecord, NewBuild, OpenMode, Outcome,
    ProgressUpdate, Runner, Store, Stream, Write,
};
use jobctl::vocab::Reason;
use serde_json::{Value, json};

fn job(id: &str, deps: &[&str], extra: Value) -> Enqueue {
    let mut config = json!({"id": id, "run": "true", "args": [], "kwargs": {}, "env": {},
        "dependencies": deps, "retries": 0, "retry_delay": "0s", "concurrency": 1, "workdir": "."});
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let concurrency = config["concurrency"].as_u64().unwrap() as u32;
    Enqueue {
        dedup_key: Some(dedup_key(id, &config)),
        build: NewBuild {
            job_id: id.to_owned(),
            config,
            config_hash: format!("hash-{id}"),
            pins: Vec::new(),
            attempt: 1,
            created_at: Utc::now(),
        },
        waits_on: Vec::new(),
        labels: Vec::new(),
        concurrency,
    }
}

fn worker(name: &str, labels: &[&str]) -> Claimer {
    let mut c = Claimer::this_process(
        Some(name.to_owned()),
        labels.iter().map(|l| l.to_string()).collect(),
    );
    c.id = format!("{}-{name}", c.id);
    c
}

const LEASE: Duration = Duration::from_secs(30);

fn ok() -> Ending {
    Ending::Done(Outcome::Successful {
        retval: Some(json!(1)),
    })
}

async fn status(store: &AnyStore, id: BuildId) -> (BuildStatus, Option<String>) {
    let b = store.build(id).await.unwrap().unwrap();
    (b.status, b.error)
}

/// The one build `claimer` can claim at `at`.
async fn claim_one(store: &AnyStore, claimer: &Claimer, at: DateTime<Utc>, what: &str) -> Claimed {
    let mut claimed = store.claim(claimer, 4, None, LEASE, at).await.unwrap();
    assert_eq!(claimed.len(), 1, "{what}: {claimed:?}");
    claimed.remove(0)
}

async fn story(store: AnyStore) {
    let w1 = worker("w1", &[]);
    let w2 = worker("w2", &["gpu"]);
    let now = Utc::now();

    // A diamond: a, then b and c, then d.
    let mut batch = vec![
        job("a", &[], json!({})),
        job("b", &["a"], json!({})),
        job("c", &["a"], json!({})),
        job("d", &["b", "c"], json!({})),
    ];
    batch[1].waits_on = vec![0];
    batch[2].waits_on = vec![0];
    batch[3].waits_on = vec![1, 2];
    let ids: Vec<BuildId> = store
        .enqueue(&batch, None, now)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(
        store
            .enqueue(&batch, None, now)
            .await
            .unwrap()
            .iter()
            .zip(&ids)
            .all(|(again, first)| again.deduplicated && again.id == *first),
        "enqueueing the same builds again returns the queued ones"
    );

    // Only a is ready; a claim of four takes it alone.
    let claimed = store.claim(&w1, 4, None, LEASE, Utc::now()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let a = &claimed[0];
    assert_eq!((a.id, a.job_id.as_str(), a.attempt), (ids[0], "a", 1));
    assert!(a.token > 0);
    assert_eq!(status(&store, ids[0]).await.0, BuildStatus::Running);
    assert!(
        store
            .claim(&w2, 4, None, LEASE, Utc::now())
            .await
            .unwrap()
            .is_empty()
    );

    // A stale token changes nothing.
    assert!(
        !store
            .end_claimed(a.id, a.token + 1, &ok(), Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(status(&store, ids[0]).await.0, BuildStatus::Running);
    assert_eq!(store.renew(&w1, None, LEASE).await.unwrap(), vec![ids[0]]);
    assert_eq!(
        store.renew(&w1, Some(&[ids[0]]), LEASE).await.unwrap(),
        vec![ids[0]]
    );
    // A build its runner no longer tracks is not renewed (it is rescued when its lease
    // ends), nor is another runner's.
    assert!(store.renew(&w1, Some(&[]), LEASE).await.unwrap().is_empty());
    assert!(
        store
            .renew(&w2, Some(&[ids[0]]), LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .end_claimed(a.id, a.token, &ok(), Utc::now())
            .await
            .unwrap()
    );
    // Ending twice is refused: the token no longer holds a running build.
    assert!(
        !store
            .end_claimed(a.id, a.token, &ok(), Utc::now())
            .await
            .unwrap()
    );

    // b and c are ready now, in one batch; their pins name a's build.
    let bc = store.claim(&w2, 4, None, LEASE, Utc::now()).await.unwrap();
    assert_eq!(
        bc.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![ids[1], ids[2]]
    );
    assert_eq!(bc[0].pins.len(), 1);
    assert_eq!(bc[0].pins[0].build_id, Some(ids[0]));
    assert_eq!(store.pins(ids[1]).await.unwrap(), bc[0].pins);
    assert!(
        store
            .end_claimed(bc[0].id, bc[0].token, &ok(), Utc::now())
            .await
            .unwrap()
    );
    assert!(
        store
            .claim(&w1, 4, None, LEASE, Utc::now())
            .await
            .unwrap()
            .is_empty(),
        "d waits for c"
    );
    // c fails: d is closed as not run, naming it.
    let failed = Outcome::Failed {
        exit_code: Some(1),
        signal: None,
        timed_out: false,
        reason: jobctl::vocab::Reason::Exit { code: 1 },
        stderr_tail: None,
    };
    assert!(
        store
            .end_claimed(
                bc[1].id,
                bc[1].token,
                &Ending::Done(failed.clone()),
                Utc::now()
            )
            .await
            .unwrap()
    );
    let (d_status, d_error) = status(&store, ids[3]).await;
    assert_eq!(d_status, BuildStatus::Cancelled);
    assert_eq!(
        d_error.as_deref(),
        Some(format!("not run: upstream c (build {}) failed", ids[2]).as_str())
    );
    assert_eq!(
        store.build(ids[3]).await.unwrap().unwrap().reason,
        Some(Reason::Upstream {
            job: "c".into(),
            build: ids[2],
            cancelled: false
        })
    );

    // A retry: the failed build stays failed, a new attempt takes its place in the waits.
    let mut pair = vec![job("r", &[], json!({})), job("after_r", &["r"], json!({}))];
    pair[1].waits_on = vec![0];
    let rids: Vec<BuildId> = store
        .enqueue(&pair, None, Utc::now())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let r = store
        .claim(&w1, 1, None, LEASE, Utc::now())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(r.id, rids[0]);
    let then = Utc::now();
    let retry = Ending::Retry {
        outcome: failed.clone(),
        not_before: then + chrono::Duration::milliseconds(300),
    };
    assert!(
        store
            .end_claimed(r.id, r.token, &retry, Utc::now())
            .await
            .unwrap()
    );
    assert!(
        store
            .claim(
                &w1,
                4,
                None,
                LEASE,
                then + chrono::Duration::milliseconds(299)
            )
            .await
            .unwrap()
            .is_empty(),
        "a retry waits out its delay"
    );
    let r2 = claim_one(
        &store,
        &w1,
        then + chrono::Duration::milliseconds(300),
        "the retry, once due",
    )
    .await;
    assert_eq!((r2.job_id.as_str(), r2.attempt), ("r", 2));
    assert!(r2.id > rids[1]);
    assert!(
        store
            .end_claimed(r2.id, r2.token, &ok(), Utc::now())
            .await
            .unwrap()
    );
    let after = store
        .claim(&w1, 4, None, LEASE, Utc::now())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(after.id, rids[1]);
    assert_eq!(after.pins[0].build_id, Some(r2.id));
    assert!(
        store
            .end_claimed(after.id, after.token, &ok(), Utc::now())
            .await
            .unwrap()
    );

    // An expired lease is rescued: retried when attempts remain, and the first runner's
    // late end is refused.
    let lost = store
        .enqueue(&[job("lost", &[], json!({"retries": 1}))], None, Utc::now())
        .await
        .unwrap()[0]
        .id;
    let l = store
        .claim(&w1, 1, None, Duration::from_millis(1), Utc::now())
        .await
        .unwrap()
        .remove(0);
    // Looked at a second later, its 1 ms lease has expired (and the retry is due
    // from then).
    let later = Utc::now() + chrono::Duration::seconds(1);
    let rescued = store
        .rescue("another-host", &|_| None, later)
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].id, lost);
    assert!(rescued[0].reason.contains("worker w1"), "{rescued:?}");
    let again = rescued[0].retried_as.expect("retried");
    assert!(
        !store
            .end_claimed(l.id, l.token, &ok(), Utc::now())
            .await
            .unwrap()
    );
    let failed = store.build(lost).await.unwrap().unwrap();
    assert_eq!(failed.status, BuildStatus::Failed);
    assert_eq!(
        failed.reason,
        Some(Reason::RunnerLost {
            worker: true,
            who: format!("worker w1 on {}", w1.host),
            gone: false,
        })
    );
    assert_eq!(
        failed.error.as_deref(),
        Some(
            format!(
                "worker lost: worker w1 on {} did not renew its lease",
                w1.host
            )
            .as_str()
        )
    );
    assert!(
        store
            .claim(&w2, 4, None, LEASE, Utc::now())
            .await
            .unwrap()
            .is_empty(),
        "the retry is due from the rescue"
    );
    let l2 = claim_one(&store, &w2, later, "the rescued build's retry").await;
    assert_eq!((l2.id, l2.attempt), (again, 2));
    // A runner on this host that is provably gone is rescued at once, lease or not; its
    // last attempt fails.
    let rescued = store
        .rescue(&w2.host, &|_| Some(0), Utc::now())
        .await
        .unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(rescued[0].retried_as, None);
    assert!(rescued[0].reason.ends_with("is gone"), "{rescued:?}");

    // Hand back (a draining worker): queued again, and the next claim has a new token.
    let h = store
        .enqueue(&[job("h", &[], json!({}))], None, Utc::now())
        .await
        .unwrap()[0]
        .id;
    let h1 = store
        .claim(&w1, 1, None, LEASE, Utc::now())
        .await
        .unwrap()
        .remove(0);
    assert!(
        store
            .end_claimed(h, h1.token, &Ending::HandBack, Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(status(&store, h).await.0, BuildStatus::Created);
    let h2 = store
        .claim(&w2, 1, None, LEASE, Utc::now())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(h2.id, h);
    assert!(h2.token > h1.token);
    // The first claim's late lines and progress are refused, the second's written.
    let said = |text: &str| {
        vec![
            Write::Log(LogRecord {
                build: h,
                at: Utc::now(),
                level: LogLevel::Info,
                stream: Stream::Stdout,
                message: text.to_owned(),
            }),
            Write::Progress(ProgressUpdate {
                build: h,
                path: vec![text.to_owned()],
                current: 1,
                total: Some(2),
                status: None,
                at: Utc::now(),
            }),
        ]
    };
    let refused = store
        .write_fenced(&said("late"), &[(h, h1.token)])
        .await
        .unwrap();
    assert_eq!(refused, vec![h], "a stale token's writes are refused");
    let kept = store
        .write_fenced(&said("current"), &[(h, h2.token)])
        .await
        .unwrap();
    assert!(kept.is_empty());
    let logs = store.logs(h, &LogFilter::default()).await.unwrap();
    let lines: Vec<&str> = logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(lines, ["current"]);
    let tree = store.progress(h).await.unwrap();
    assert_eq!(format!("{tree:?}").matches("late").count(), 0, "{tree:?}");
    assert!(
        !store
            .end_claimed(h, h1.token, &ok(), Utc::now())
            .await
            .unwrap()
    );
    assert!(
        store
            .end_claimed(h, h2.token, &ok(), Utc::now())
            .await
            .unwrap()
    );
    // Once ended, even its own claim's writes are refused.
    let after_end = store
        .write_fenced(&said("after the end"), &[(h, h2.token)])
        .await
        .unwrap();
    assert_eq!(after_end, vec![h]);
    assert_eq!(store.logs(h, &LogFilter::default()).await.unwrap().len(), 1);

    // Cancel of a queued build closes what waits on it.
    let mut pair = vec![job("x", &[], json!({})), job("after_x", &["x"], json!({}))];
    pair[1].waits_on = vec![0];
    let xs: Vec<BuildId> = store
        .enqueue(&pair, None, Utc::now())
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert!(
        store
            .cancel_queued(xs[0], "cancelled (jobctl cancel)", Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(status(&store, xs[0]).await.0, BuildStatus::Cancelled);
    assert_eq!(
        status(&store, xs[1]).await.1.as_deref(),
        Some(format!("not run: upstream x (build {}) was cancelled", xs[0]).as_str())
    );
    assert!(
        !store
            .cancel_queued(xs[0], "again", Utc::now())
            .await
            .unwrap()
    );

    // Labels: a gpu job waits for a worker that has the label.
    let mut gpu = job("train", &[], json!({"labels": ["gpu"]}));
    gpu.labels = vec!["gpu".into()];
    let g = store.enqueue(&[gpu], None, Utc::now()).await.unwrap()[0].id;
    assert!(
        store
            .claim(&w1, 4, None, LEASE, Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    let g1 = store
        .claim(&w2, 4, None, LEASE, Utc::now())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(g1.id, g);
    assert!(
        store
            .end_claimed(g, g1.token, &ok(), Utc::now())
            .await
            .unwrap()
    );

    // Concurrency: three builds of a job limited to 2 (no de-duplication: different
    // arguments); one claim takes two, the third waits until one ends.
    let three: Vec<Enqueue> = (0..3)
        .map(|i| job("limited", &[], json!({"concurrency": 2, "args": [i]})))
        .collect();
    let ls = store.enqueue(&three, None, Utc::now()).await.unwrap();
    assert!(ls.iter().all(|e| !e.deduplicated));
    let first = store.claim(&w1, 8, None, LEASE, Utc::now()).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(
        store
            .claim(&w2, 8, None, LEASE, Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .end_claimed(first[0].id, first[0].token, &ok(), Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .claim(&w2, 8, None, LEASE, Utc::now())
            .await
            .unwrap()
            .len(),
        1
    );

    // A `jobctl build` run's own builds are claimed by it alone, and only those asked.
    let own = worker("run", &[]);
    let mine = store
        .enqueue(&[job("own", &[], json!({}))], Some(&own.id), Utc::now())
        .await
        .unwrap()[0]
        .id;
    assert!(
        store
            .claim(&w1, 8, None, LEASE, Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    // Cancelling it is its run's to do (on request), not the queue's.
    assert!(
        !store
            .cancel_queued(mine, "cancelled (jobctl cancel)", Utc::now())
            .await
            .unwrap()
    );
    let got = store
        .claim(&own, 8, Some(&[mine]), LEASE, Utc::now())
        .await
        .unwrap();
    assert_eq!(got.len(), 1);

    // Workers and their heartbeats.
    store
        .heartbeat(&w1, 4, LEASE, false, Utc::now())
        .await
        .unwrap();
    store
        .heartbeat(&w2, 2, LEASE, true, Utc::now())
        .await
        .unwrap();
    store.worker_stopped(&w1, Utc::now()).await.unwrap();
    let workers = store.workers().await.unwrap();
    let state = |name: &str| {
        workers
            .iter()
            .find(|w| w.name == name)
            .unwrap()
            .state(Utc::now())
    };
    assert_eq!((state("w1"), state("w2")), ("stopped", "draining"));
    assert_eq!(workers.iter().find(|w| w.name == "w2").unwrap().running, 1);
}

/// One enqueue of many builds, some under the same key, one waiting on a build queued
/// before: each key is queued once, a build that waits counts what it waits on.
async fn one_batch(store: AnyStore) {
    let before = store
        .enqueue(&[job("x", &[], json!({}))], None, Utc::now())
        .await
        .unwrap()[0];
    let mut batch: Vec<Enqueue> = (0..300)
        .map(|i| job(&format!("n{}", i % 150), &[], json!({})))
        .collect();
    batch.push(job("x", &[], json!({})));
    let mut waiter = job("w", &["x", "n0"], json!({}));
    waiter.waits_on = vec![300, 0, 150];
    waiter.labels = vec!["gpu".into(), "gpu".into()];
    batch.push(waiter);
    let made = store.enqueue(&batch, None, Utc::now()).await.unwrap();
    assert_eq!(made.len(), 302);
    for i in 0..150 {
        assert!(!made[i].deduplicated, "{i}");
        assert_eq!(made[i + 150].id, made[i].id, "{i}");
        assert!(made[i + 150].deduplicated, "{i}");
    }
    assert_eq!(
        made[300],
        Enqueued {
            id: before.id,
            deduplicated: true
        }
    );
    let mut ids: Vec<BuildId> = made[..150].iter().map(|m| m.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150, "a build of each key");
    // The waiter waits on x (queued before) and n0: ready only when both succeeded.
    let gpu = worker("g", &["gpu"]);
    let mut claimed = Vec::new();
    loop {
        let got = store
            .claim(&gpu, 64, None, LEASE, Utc::now())
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        claimed.extend(got);
    }
    assert_eq!(claimed.len(), 151, "everything but the waiter");
    assert!(claimed.iter().all(|c| c.job_id != "w"));
    let ends: Vec<(BuildId, i64, Ending)> = claimed
        .iter()
        .filter(|c| c.job_id != "x")
        .map(|c| (c.id, c.token, ok()))
        .collect();
    assert!(
        store
            .end_many(&ends, Utc::now())
            .await
            .unwrap()
            .iter()
            .all(|d| *d)
    );
    assert!(
        store
            .claim(&gpu, 4, None, LEASE, Utc::now())
            .await
            .unwrap()
            .is_empty(),
        "x is running"
    );
    let x = claimed.iter().find(|c| c.job_id == "x").unwrap();
    assert_eq!(
        store
            .end_many(&[(x.id, x.token, ok())], Utc::now())
            .await
            .unwrap(),
        [true]
    );
    let w = store.claim(&gpu, 4, None, LEASE, Utc::now()).await.unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].job_id, "w");
    assert!(
        store
            .claim(&worker("plain", &[]), 4, None, LEASE, Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A `jobctl build` run that died on this host, through the one rescue: a build it
/// started is failed "runner died" with its last sign of life as its end (nobody runs it
/// again); a planned one whose job has processes left (it started, unrecorded) is failed
/// too, those killed first; planned ones with nothing left — reserved or not — are
/// removed; a run still alive is left alone.
async fn a_dead_run(store: AnyStore) {
    let me = Runner::this_process();
    let claimer = Claimer::this_process(None, Vec::new());
    let planned: Vec<NewBuild> = ["a", "b", "c", "d"]
        .iter()
        .map(|j| job(j, &[], json!({})).build)
        .collect();
    let made = store
        .plan_builds(&planned, &me, &claimer, LEASE)
        .await
        .unwrap();
    assert!(made.iter().all(|(_, reserved)| *reserved), "{made:?}");
    let [a, b, c, d] = [made[0].0, made[1].0, made[2].0, made[3].0];
    // Planned, not reserved (its job's concurrency was full).
    let e = store
        .create_builds(&[job("e", &[], json!({})).build], &me, LEASE)
        .await
        .unwrap()[0];
    let started = Utc::now() - chrono::Duration::seconds(60);
    let last_line = started + chrono::Duration::seconds(5);
    store.start_build(a, &me, started).await.unwrap();
    store
        .write_fenced(
            &[Write::Log(LogRecord {
                build: a,
                at: last_line,
                level: LogLevel::Info,
                stream: Stream::Stdout,
                message: "working".into(),
            })],
            &[],
        )
        .await
        .unwrap();
    let judged = std::sync::Mutex::new(Vec::new());
    let judge = |s: &Suspect| {
        judged.lock().unwrap().push(s.build);
        assert_eq!(s.pid, me.pid);
        match s.build {
            x if x == d => None,
            x if x == b => Some(1),
            _ => Some(0),
        }
    };
    let rescued = store.rescue(&me.host, &judge, Utc::now()).await.unwrap();
    let mut seen = judged.into_inner().unwrap();
    seen.sort();
    assert_eq!(
        seen,
        vec![a, b, c, d, e],
        "every open build of this host judged"
    );
    let said: Vec<(BuildId, &str)> = rescued.iter().map(|r| (r.id, r.reason.as_str())).collect();
    let died = format!(
        "runner died: jobctl (pid {}) on {} is gone",
        me.pid, me.host
    );
    let removed = format!(
        "removed: planned by jobctl (pid {}) on {}, which died before it started",
        me.pid, me.host
    );
    assert_eq!(
        said,
        vec![
            (a, died.as_str()),
            (b, died.as_str()),
            (c, removed.as_str()),
            (e, removed.as_str())
        ]
    );
    assert!(rescued.iter().all(|r| r.retried_as.is_none()));
    let first = store.build(a).await.unwrap().unwrap();
    assert_eq!(first.status, BuildStatus::Failed);
    assert!(
        matches!(
            &first.reason,
            Some(Reason::RunnerLost {
                worker: false,
                gone: true,
                ..
            })
        ),
        "{:?}",
        first.reason
    );
    assert_eq!(
        first.finished_at.map(|t| t.timestamp_millis()),
        Some(last_line.timestamp_millis()),
        "it ended when last seen"
    );
    assert_eq!(status(&store, b).await.0, BuildStatus::Failed);
    for gone in [c, e] {
        assert!(store.build(gone).await.unwrap().is_none(), "{gone:?}");
    }
    assert_eq!(status(&store, d).await.0, BuildStatus::Created);
    // Rescued once: nothing is left for a second look but the live run's build.
    let again = store
        .rescue(&me.host, &|_| Some(0), Utc::now())
        .await
        .unwrap();
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), vec![d]);
}

/// A `jobctl build` run on another host that is gone (the machine died): what it planned
/// and never started, reserved or not (held back by its job's concurrency), holds a lease
/// that its run renews, and is removed by a rescuer here once that lease runs out. It
/// was left `created` for good when only reserved builds had a lease: shown queued,
/// and not to be cancelled, since only its run could.
async fn a_run_elsewhere_gone(store: AnyStore) {
    let elsewhere = Runner {
        host: "other-host".into(),
        pid: 4242,
        worker: None,
    };
    let claimer = Claimer::this_process(None, Vec::new());
    // Recorded with a lease that has run out by the next statement.
    let made = store
        .plan_builds(
            &[job("a", &[], json!({})).build],
            &elsewhere,
            &claimer,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert!(made[0].1, "{made:?}");
    let a = made[0].0;
    let e = store
        .create_builds(
            &[job("e", &[], json!({})).build],
            &elsewhere,
            Duration::ZERO,
        )
        .await
        .unwrap()[0];
    let judge = |s: &Suspect| panic!("a build of another host judged here: {s:?}");
    // SQLite compares leases to the rescuer's clock; PostgreSQL to its own.
    let later = || Utc::now() + chrono::Duration::seconds(1);
    // Its run renews both: nothing is rescued.
    let mut renewed = store.renew(&claimer, None, LEASE).await.unwrap();
    renewed.sort();
    assert_eq!(renewed, vec![a, e]);
    assert!(
        store
            .rescue("this-host", &judge, later())
            .await
            .unwrap()
            .is_empty()
    );
    // Its run stops renewing: both go, said so, and nothing else changes.
    store.renew(&claimer, None, Duration::ZERO).await.unwrap();
    let rescued = store.rescue("this-host", &judge, later()).await.unwrap();
    let said: Vec<(BuildId, &str)> = rescued.iter().map(|r| (r.id, r.reason.as_str())).collect();
    let removed = "removed: planned by jobctl (pid 4242) on other-host, whose lease ran out before it started";
    assert_eq!(said, vec![(a, removed), (e, removed)]);
    for gone in [a, e] {
        assert!(store.build(gone).await.unwrap().is_none(), "{gone:?}");
    }
    assert!(
        store
            .rescue("this-host", &judge, later())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn queue_story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    story(common::sqlite_store(dir.path()).await).await;
    let dir = tempfile::tempdir().unwrap();
    one_batch(common::sqlite_store(dir.path()).await).await;
    let dir = tempfile::tempdir().unwrap();
    a_dead_run(common::sqlite_store(dir.path()).await).await;
    let dir = tempfile::tempdir().unwrap();
    a_run_elsewhere_gone(common::sqlite_store(dir.path()).await).await;
}

/// A fresh database named after `what`, installed, and the store on it; `None` where
/// PostgreSQL cannot be reached outside CI (said once by `PgDatabase`).
async fn postgres(what: &str, dir: &Path) -> Option<(common::PgDatabase, AnyStore)> {
    let db = common::PgDatabase::create(what).await?;
    let store = jobctl::store::open(&db.url, dir, OpenMode::Install)
        .await
        .unwrap();
    Some((db, store))
}

#[tokio::test]
async fn queue_story_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_db, store)) = postgres("queue", dir.path()).await else {
        return;
    };
    story(store).await;
    let (_db, store) = postgres("queue_batch", dir.path()).await.unwrap();
    one_batch(store).await;
    let (_db, store) = postgres("queue_dead_run", dir.path()).await.unwrap();
    a_dead_run(store).await;
    let (_db, store) = postgres("queue_run_elsewhere", dir.path()).await.unwrap();
    a_run_elsewhere_gone(store).await;
}
