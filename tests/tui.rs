//! The dashboard drawn on ratatui's TestBackend from a fixed database at a fixed time:
//! each view, and key sequences (navigate, filter, arm a protected job).

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use jobctl::config::Config;
use jobctl::store::status::config_hash;
use jobctl::store::{
    AnyStore, BuildId, LogLevel, LogRecord, NewBuild, OpenMode, Outcome, Pin, ProgressUpdate,
    Runner, Store, Stream, Write,
};
use jobctl::ui::tui::Source;
use jobctl::ui::tui::app::{App, Command, View};
use jobctl::ui::tui::data::{self, Snapshot};
use jobctl::ui::tui::draw;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::sync::Arc;

const CONFIG: &str = r#"
storage: sqlite://state.db
jobs:
  - id: setup
    run: ./setup.sh
  - id: crawl_a
    title: Crawl site A
    notes: |
      Fetches every page of site A.
      Owner: the data team.
    run: ./crawl.sh a
    dependencies: [setup]
  - id: crawl_b
    title: Crawl site B
    run: ./crawl.sh b
    dependencies: [setup]
  - id: process
    title: Process what was crawled
    run: ./process.sh
    kwargs:
      pages: !retval crawl_a
  - id: report
    run: ./report.sh
    dependencies: [process, crawl_b]
  - id: deploy
    title: Deploy the report
    run: ./deploy.sh
    protect: true
    dependencies: [report]
"#;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// The time every frame is drawn at.
fn now() -> DateTime<Utc> {
    t(600)
}

fn load_config(dir: &Path, text: &str) -> Arc<Config> {
    let path = dir.join("jobs.yaml");
    std::fs::write(&path, text).unwrap();
    Arc::new(jobctl::config::load(&path, &[]).unwrap())
}

async fn open(config: &Config) -> AnyStore {
    jobctl::store::open(&config.storage, config.dir(), OpenMode::Use)
        .await
        .unwrap()
}

async fn new_build(
    store: &AnyStore,
    config: &Config,
    job: &str,
    at: i64,
    pins: Vec<Pin>,
) -> BuildId {
    let j = config.job(job).unwrap();
    let ids = store
        .create_builds(
            &[NewBuild {
                job_id: job.into(),
                config: serde_json::to_value(j).unwrap(),
                config_hash: config_hash(j),
                pins,
                attempt: 1,
                created_at: t(at),
            }],
            &Runner {
                host: "ci-host".into(),
                pid: 4242,
                worker: None,
            },
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    ids[0]
}

/// Claims a planned build for the fixture's runner, as a run does before it starts it.
async fn claim(store: &AnyStore, build: BuildId) {
    use jobctl::store::queue::{Claimer, Queue};
    let claimer = Claimer {
        host: "ci-host".into(),
        pid: 4242,
        ..Claimer::this_process(None, Vec::new())
    };
    let claimed = store
        .claim(
            &claimer,
            1,
            Some(&[build]),
            std::time::Duration::from_secs(3600),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
}

async fn finished(store: &AnyStore, build: BuildId, start: i64, end: i64, outcome: Outcome) {
    claim(store, build).await;
    store
        .write(&[
            Write::Started {
                build,
                at: t(start),
                pins: Vec::new(),
                pgid: None,
            },
            Write::Finished {
                build,
                outcome,
                at: t(end),
            },
        ])
        .await
        .unwrap();
}

fn log(build: BuildId, at: i64, level: LogLevel, message: &str) -> Write {
    Write::Log(LogRecord {
        build,
        at: t(at),
        level,
        stream: if level >= LogLevel::Warning {
            Stream::Stderr
        } else {
            Stream::Stdout
        },
        message: message.into(),
    })
}

fn progress(build: BuildId, path: &[&str], current: i64, total: i64, status: &str) -> Write {
    Write::Progress(ProgressUpdate {
        build,
        path: path.iter().map(|p| p.to_string()).collect(),
        current,
        total: Some(total),
        status: (!status.is_empty()).then(|| status.to_owned()),
        at: t(590),
    })
}

/// setup and crawl_a succeeded, crawl_b failed, process runs with progress and logs,
/// report waits, deploy (protected) was never built.
async fn history(store: &AnyStore, config: &Config) -> BuildId {
    let setup = new_build(store, config, "setup", 0, Vec::new()).await;
    finished(store, setup, 1, 3, Outcome::Successful { retval: None }).await;
    let crawl_a = new_build(store, config, "crawl_a", 10, Vec::new()).await;
    finished(
        store,
        crawl_a,
        11,
        95,
        Outcome::Successful {
            retval: Some(serde_json::json!({"pages": 40, "dir": "/data/a"})),
        },
    )
    .await;
    let crawl_b = new_build(store, config, "crawl_b", 10, Vec::new()).await;
    finished(
        store,
        crawl_b,
        11,
        14,
        Outcome::Failed {
            exit_code: Some(2),
            signal: None,
            timed_out: false,
            reason: jobctl::vocab::Reason::Exit { code: 2 },
            stderr_tail: Some(
                "fetching http://b.example/\ncurl: (6) Could not resolve host: b.example".into(),
            ),
        },
    )
    .await;
    // Its pins come with its start, as a runner writes them.
    let process = new_build(store, config, "process", 100, Vec::new()).await;
    claim(store, process).await;
    let mut batch = vec![Write::Started {
        build: process,
        at: t(100),
        pins: vec![Pin {
            job_id: "crawl_a".into(),
            build_id: Some(crawl_a),
        }],
        pgid: Some(4300),
    }];
    for i in 0..30 {
        let level = match i {
            12 => LogLevel::Warning,
            25 => LogLevel::Error,
            _ => LogLevel::Info,
        };
        batch.push(log(
            process,
            100 + i * 10,
            level,
            &format!("processed page {i}"),
        ));
    }
    batch.push(progress(process, &["pages"], 30, 40, "page-30"));
    batch.push(progress(process, &["images", "png"], 3, 4, ""));
    batch.push(progress(process, &["images", "jpg"], 1, 4, "resizing"));
    store.write(&batch).await.unwrap();
    new_build(store, config, "report", 100, Vec::new()).await;
    process
}

struct Fixture {
    _dir: tempfile::TempDir,
    config: Arc<Config>,
    store: AnyStore,
    process: BuildId,
    /// The change token of the last read.
    token: std::sync::Mutex<Option<jobctl::store::ChangeToken>>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = load_config(dir.path(), CONFIG);
    let store = open(&config).await;
    let process = history(&store, &config).await;
    Fixture {
        _dir: dir,
        config,
        store,
        process,
        token: std::sync::Mutex::new(None),
    }
}

impl Fixture {
    fn app(&self) -> App {
        let mut app = App::new(self.config.clone(), "sqlite://state.db".into());
        app.now = now();
        app
    }

    /// An app that has read the database once.
    async fn ready(&self) -> App {
        let mut app = self.app();
        self.refresh(&mut app).await;
        app
    }

    /// Moves the jobs pane's selection down to `job`.
    async fn select(&self, app: &mut App, job: &str) {
        let job = self.config.job_index(job).unwrap();
        while app.selected != Some(job) {
            self.keys(app, &[KeyCode::Down]).await;
        }
    }

    /// From the jobs pane: opens the selected job, then its latest build.
    async fn open_latest_build(&self, app: &mut App) {
        let keys = [KeyCode::Enter, KeyCode::Tab, KeyCode::Tab, KeyCode::Enter];
        self.keys(app, &keys).await;
    }

    /// Reads what the app's views want, as the loop does after a key.
    async fn refresh(&self, app: &mut App) {
        let mut token = self.token.lock().unwrap().take();
        jobctl::ui::tui::read(app, &self.store, &mut token, true).await;
        assert!(app.loaded().is_some(), "read: {:?}", app.message);
        *self.token.lock().unwrap() = token;
    }

    /// Reads again only if the database changed, as the loop does on its tick.
    async fn tick(&self, app: &mut App) -> bool {
        let mut token = self.token.lock().unwrap().take();
        let changed = jobctl::ui::tui::read(app, &self.store, &mut token, false).await;
        *self.token.lock().unwrap() = token;
        changed
    }

    /// Presses keys one by one (reading the database after each, like the loop);
    /// returns the commands they gave.
    async fn keys(&self, app: &mut App, keys: &[KeyCode]) -> Vec<Command> {
        let mut commands = Vec::new();
        for &code in keys {
            commands.extend(app.key(KeyEvent::new(code, KeyModifiers::NONE)));
            self.refresh(app).await;
        }
        commands
    }
}

fn frame(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw::draw(app, f)).unwrap();
    // The config's temporary folder, named in the header, is not part of the picture.
    let dir = app.config.dir().display().to_string();
    terminal.backend().to_string().replace(&dir, "[dir]")
}

fn chars(text: &str) -> Vec<KeyCode> {
    text.chars().map(KeyCode::Char).collect()
}

#[tokio::test]
async fn jobs_pane_at_80x24() {
    let fx = fixture().await;
    let app = fx.ready().await;
    insta::assert_snapshot!(frame(&app, 80, 24));
}

#[tokio::test]
async fn jobs_pane_wide_with_titles() {
    let fx = fixture().await;
    let app = fx.ready().await;
    insta::assert_snapshot!(frame(&app, 120, 14));
}

#[tokio::test]
async fn filtering_by_text_and_status_and_sorting_by_activity() {
    let fx = fixture().await;
    let mut app = fx.ready().await;
    let mut keys = vec![KeyCode::Char('/')];
    keys.extend(chars("crawl"));
    fx.keys(&mut app, &keys).await;
    let typing = frame(&app, 80, 12);
    insta::assert_snapshot!("filter_typing", typing);
    fx.keys(
        &mut app,
        &[KeyCode::Enter, KeyCode::Char('s'), KeyCode::Char('s')],
    )
    .await;
    // "crawl" and failed: crawl_b alone.
    assert_eq!(app.visible, vec![fx.config.job_index("crawl_b").unwrap()]);
    fx.keys(&mut app, &[KeyCode::Esc, KeyCode::Char('o')]).await;
    insta::assert_snapshot!("recent_order", frame(&app, 80, 12));
}

#[tokio::test]
async fn job_detail_navigates_along_edges() {
    let fx = fixture().await;
    let mut app = fx.ready().await;
    // crawl_a: down once from setup, open.
    fx.keys(&mut app, &[KeyCode::Down, KeyCode::Enter]).await;
    insta::assert_snapshot!("job_crawl_a", frame(&app, 80, 30));
    // Tab to its dependants, open process.
    fx.keys(&mut app, &[KeyCode::Tab, KeyCode::Enter]).await;
    let View::Job(v) = app.view() else {
        panic!("a job view is open")
    };
    assert_eq!(fx.config.jobs[v.job].id.as_str(), "process");
    // Back twice: the jobs pane, still on crawl_a.
    fx.keys(&mut app, &[KeyCode::Esc, KeyCode::Esc]).await;
    assert_eq!(app.views, vec![View::Jobs]);
    assert_eq!(app.selected, fx.config.job_index("crawl_a"));
}

#[tokio::test]
async fn an_esc_read_together_with_the_next_key_counts_as_both() {
    // A terminal sends Alt+x as ESC x: Esc then `/` typed fast (or sent by a script on a
    // loaded machine) arrive as Alt+`/`. It must go back and open the filter, not vanish.
    let fx = fixture().await;
    let mut app = fx.ready().await;
    fx.keys(&mut app, &[KeyCode::Down, KeyCode::Enter]).await;
    assert!(matches!(app.view(), View::Job(_)));
    app.key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::ALT));
    fx.keys(&mut app, &chars("crawl")).await;
    assert_eq!(app.views, vec![View::Jobs]);
    assert_eq!(app.filter, "crawl");
}

#[tokio::test]
async fn build_detail_with_progress_tree_and_log() {
    let fx = fixture().await;
    let mut app = fx.ready().await;
    fx.select(&mut app, "process").await;
    fx.open_latest_build(&mut app).await;
    let View::Build(v) = app.view() else {
        panic!("a build view is open")
    };
    assert_eq!(v.id, fx.process);
    insta::assert_snapshot!("build_running", frame(&app, 80, 30));

    // Only warnings and above; then a search that jumps to its line.
    fx.keys(&mut app, &[KeyCode::Char('l'), KeyCode::Char('l')])
        .await;
    insta::assert_snapshot!("build_warnings", frame(&app, 80, 30));
    let mut keys = vec![KeyCode::Char('l'), KeyCode::Char('l'), KeyCode::Char('/')];
    keys.extend(chars("page 3"));
    keys.push(KeyCode::Enter);
    fx.keys(&mut app, &keys).await;
    let View::Build(v) = app.view() else {
        panic!("a build view is open")
    };
    assert_eq!(v.level, None, "the level filter cycled back to all");
    assert!(v.log_at.is_some(), "a found line stops following");

    // Nothing changed: a tick reads nothing.
    fx.keys(&mut app, &[KeyCode::Char('f')]).await;
    assert!(!fx.tick(&mut app).await);
    // A new line and progress arrive: the tick shows them (only activity moved).
    fx.store
        .write(&[
            log(fx.process, 500, LogLevel::Info, "a line that just arrived"),
            progress(fx.process, &["pages"], 40, 40, "page-40"),
        ])
        .await
        .unwrap();
    assert!(fx.tick(&mut app).await);
    let shown = frame(&app, 80, 30);
    assert!(shown.contains("a line that just arrived"), "{shown}");
    assert!(shown.contains("40/40  page-40"), "{shown}");
    fx.keys(&mut app, &[KeyCode::Esc, KeyCode::Esc]).await;
    let jobs = frame(&app, 80, 12);
    assert!(
        jobs.contains("92%"),
        "the jobs pane's bar moved too:\n{jobs}"
    );
}

#[tokio::test]
async fn a_failed_build_shows_its_error_and_stderr_tail() {
    let fx = fixture().await;
    let mut app = fx.ready().await;
    fx.select(&mut app, "crawl_b").await;
    fx.open_latest_build(&mut app).await;
    insta::assert_snapshot!(frame(&app, 80, 24));
}

#[tokio::test]
async fn a_protected_job_builds_only_when_armed() {
    let fx = fixture().await;
    let mut app = fx.ready().await;
    let deploy = fx.config.job_index("deploy").unwrap();
    fx.keys(&mut app, &[KeyCode::End]).await;
    assert_eq!(app.selected, Some(deploy));
    let refused = fx.keys(&mut app, &[KeyCode::Char('b')]).await;
    assert!(
        refused.is_empty(),
        "an unarmed protected job does not build"
    );
    insta::assert_snapshot!("protected_refused", frame(&app, 80, 12));
    let armed = fx.keys(&mut app, &[KeyCode::Char('a')]).await;
    assert!(armed.is_empty());
    insta::assert_snapshot!("protected_armed", frame(&app, 80, 12));
    let built = fx.keys(&mut app, &[KeyCode::Char('b')]).await;
    assert_eq!(
        built,
        vec![Command::Build {
            jobs: vec![deploy],
            deps: true,
            downstream: false,
            yes: true
        }]
    );
    assert_eq!(app.armed, None, "arming lasts one build");
    // Arming, then moving to another job, disarms.
    fx.keys(&mut app, &[KeyCode::Char('a'), KeyCode::Up]).await;
    assert_eq!(app.armed, None);
    // A job with a protected job nowhere near builds at once, without --yes.
    fx.keys(&mut app, &[KeyCode::Home]).await;
    let setup = fx.keys(&mut app, &[KeyCode::Char('B')]).await;
    assert_eq!(
        setup,
        vec![Command::Build {
            jobs: vec![fx.config.job_index("setup").unwrap()],
            deps: false,
            downstream: false,
            yes: false
        }]
    );
}

#[tokio::test]
async fn cancel_and_rebuild_failed_name_the_right_builds() {
    let fx = fixture().await;
    let mut app = fx.ready().await;
    fx.select(&mut app, "process").await;
    let cancel = fx.keys(&mut app, &[KeyCode::Char('c')]).await;
    assert_eq!(cancel, vec![Command::Cancel { build: fx.process }]);
    fx.keys(&mut app, &[KeyCode::Home]).await;
    assert!(fx.keys(&mut app, &[KeyCode::Char('c')]).await.is_empty());
    assert_eq!(
        app.message.as_deref(),
        Some("nothing running to cancel here")
    );
    let rebuild = fx.keys(&mut app, &[KeyCode::Char('R')]).await;
    assert_eq!(
        rebuild,
        vec![Command::Build {
            jobs: vec![fx.config.job_index("crawl_b").unwrap()],
            deps: true,
            downstream: false,
            yes: false
        }]
    );
    // d builds a job and then what it makes outdated downstream: crawl_a's reaches the
    // protected deploy, so it is armed first.
    fx.select(&mut app, "crawl_a").await;
    let crawl_a = fx.config.job_index("crawl_a").unwrap();
    assert!(fx.keys(&mut app, &[KeyCode::Char('d')]).await.is_empty());
    assert_eq!(
        app.message.as_deref(),
        Some("deploy is protected: press a to arm crawl_a, then d")
    );
    let downstream = fx
        .keys(&mut app, &[KeyCode::Char('a'), KeyCode::Char('d')])
        .await;
    assert_eq!(
        downstream,
        vec![Command::Build {
            jobs: vec![crawl_a],
            deps: true,
            downstream: true,
            yes: true
        }]
    );
    let quit = app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert_eq!(quit, Some(Command::Quit));
}

#[tokio::test]
async fn a_config_read_again_keeps_the_selection_and_a_broken_one_is_a_bar() {
    let fx = fixture().await;
    let mut app = fx.ready().await;
    // The job view of process, opened from the jobs pane.
    fx.select(&mut app, "process").await;
    fx.keys(&mut app, &[KeyCode::Enter]).await;
    let dir = fx.config.dir().to_path_buf();
    // setup, crawl_a and process are gone; new_first comes first.
    let edited = load_config(
        &dir,
        "storage: sqlite://state.db\njobs:\n  - {id: new_first, run: 'true'}\n  \
         - {id: crawl_b, run: 'true'}\n  - {id: report, run: 'true', dependencies: [crawl_b]}\n",
    );
    app.reload(edited.clone());
    assert_eq!(app.views.len(), 1, "the view of a job that is gone closed");
    assert_eq!(
        app.selected,
        edited.job_index("new_first"),
        "process is gone: the first job is selected"
    );
    fx.refresh(&mut app).await;
    assert_eq!(app.visible.len(), 3);
    assert_eq!(
        app.message.as_deref(),
        Some("config reloaded: 3 jobs (was 6)")
    );
    // Selected by id: report is found at its new index.
    let report = edited.job_index("report");
    while app.selected != report {
        fx.keys(&mut app, &[KeyCode::Down]).await;
    }
    fx.keys(&mut app, &[KeyCode::Enter]).await;
    app.reload(edited.clone());
    let View::Job(v) = app.view() else {
        panic!("the job view of a job still there stays open")
    };
    assert_eq!(edited.jobs[v.job].id.as_str(), "report");
    fx.keys(&mut app, &[KeyCode::Esc]).await;
    std::fs::write(
        dir.join("broken.yaml"),
        "jobs:\n  - {id: a, run: 'true', tmeout: 1h}\n  - {id: a, run: 'true'}\n",
    )
    .unwrap();
    let failure = jobctl::config::load(&dir.join("broken.yaml"), &[]).unwrap_err();
    let bar = jobctl::ui::tui::load_failure(&failure);
    app.config_error = Some(bar.replace(&dir.display().to_string(), "[dir]"));
    app.message = None;
    insta::assert_snapshot!("config_error_bar", frame(&app, 110, 12));
}

#[tokio::test]
async fn the_workers_view_lists_who_claims_builds() {
    use jobctl::store::queue::{Claimer, Queue};
    let fx = fixture().await;
    let worker = |name: &str, host: &str, labels: &[&str]| Claimer {
        id: format!("{name}-id"),
        name: Some(name.to_owned()),
        host: host.to_owned(),
        pid: 4242,
        since: None,
        labels: labels.iter().map(|l| l.to_string()).collect(),
    };
    let lease = std::time::Duration::from_secs(30);
    let (gpu, etl, old) = (
        worker("gpu-1", "box-a", &["gpu", "cuda"]),
        worker("etl-1", "box-b", &[]),
        worker("etl-0", "box-c", &[]),
    );
    fx.store
        .heartbeat(&gpu, 4, lease, false, t(590))
        .await
        .unwrap();
    fx.store
        .heartbeat(&etl, 2, lease, true, t(595))
        .await
        .unwrap();
    // Silent for longer than its lease: lost.
    fx.store
        .heartbeat(&old, 2, lease, false, t(400))
        .await
        .unwrap();
    let mut app = fx.ready().await;
    fx.keys(&mut app, &[KeyCode::Char('w')]).await;
    assert_eq!(app.view(), &View::Workers);
    insta::assert_snapshot!("workers_view", frame(&app, 90, 10));
    // A heartbeat moves no change token; the open view reads it on the next tick.
    fx.store
        .heartbeat(&old, 2, lease, false, t(599))
        .await
        .unwrap();
    assert!(fx.tick(&mut app).await, "the heartbeat was read");
    let workers = app.loaded().unwrap().workers.clone().unwrap();
    assert_eq!(
        (workers[0].name.as_str(), workers[0].heartbeat_at),
        ("etl-0", t(599))
    );
    fx.keys(&mut app, &[KeyCode::Esc]).await;
    assert_eq!(app.view(), &View::Jobs);
}

#[tokio::test]
async fn help_overlay_lists_the_keys() {
    let fx = fixture().await;
    let mut app = fx.ready().await;
    fx.keys(&mut app, &[KeyCode::Char('?')]).await;
    insta::assert_snapshot!(frame(&app, 80, 24));
    fx.keys(&mut app, &[KeyCode::Char('x')]).await;
    assert!(!app.help, "any key closes the help");
}

#[tokio::test]
async fn graph_of_a_job_with_fifty_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let mut text =
        String::from("storage: sqlite://state.db\njobs:\n  - id: root\n    run: 'true'\n");
    for i in 0..50 {
        text.push_str(&format!(
            "  - id: part_{i:02}\n    run: 'true'\n    dependencies: [root]\n"
        ));
    }
    let parts: Vec<String> = (0..50).map(|i| format!("part_{i:02}")).collect();
    text.push_str(&format!(
        "  - id: merge\n    run: 'true'\n    dependencies: [{}]\n  - id: publish\n    run: 'true'\n    dependencies: [merge]\n",
        parts.join(", ")
    ));
    let config = load_config(dir.path(), &text);
    let store = open(&config).await;
    for (i, part) in parts.iter().enumerate().take(20) {
        let id = new_build(&store, &config, part, i as i64, Vec::new()).await;
        let outcome = if i == 7 {
            Outcome::Failed {
                exit_code: Some(1),
                signal: None,
                timed_out: false,
                reason: jobctl::vocab::Reason::Exit { code: 1 },
                stderr_tail: None,
            }
        } else {
            Outcome::Successful { retval: None }
        };
        finished(&store, id, i as i64, i as i64 + 1, outcome).await;
    }
    let mut app = App::new(config.clone(), "sqlite://state.db".into());
    app.now = now();
    let graph = app.graph.clone();
    let loaded = data::load(&store, &config, &graph, app.wanted(), None, true)
        .await
        .unwrap();
    app.update(Snapshot::Ready(Box::new(loaded)));
    app.selected = config.job_index("merge");
    app.key(KeyEvent::new(KeyCode::Char('g'), KeyModifiers::NONE));
    insta::assert_snapshot!("graph_fifty", frame(&app, 80, 24));
    // Into the dependencies' column and down past the fold: it scrolls.
    for _ in 0..30 {
        app.key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    }
    app.key(KeyEvent::new(KeyCode::Left, KeyModifiers::NONE));
    for _ in 0..30 {
        app.key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    }
    insta::assert_snapshot!("graph_fifty_scrolled", frame(&app, 80, 24));
    // Enter centres the graph on the selected dependency.
    app.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    let View::Graph(v) = app.view() else {
        panic!("the graph stays open")
    };
    assert_eq!(config.jobs[v.center].id.as_str(), "part_30");
}

#[tokio::test]
async fn no_database_yet_is_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let config = load_config(dir.path(), CONFIG);
    let mut app = App::new(config.clone(), "sqlite://state.db".into());
    app.now = now();
    let Source::Waiting(message) = jobctl::ui::tui::connect(&config).await else {
        panic!("there is no database to open")
    };
    assert!(
        !dir.path().join("state.db").exists(),
        "looking creates nothing"
    );
    let message = message.replace(&dir.path().display().to_string(), "[dir]");
    app.update(Snapshot::NoDatabase { message });
    insta::assert_snapshot!(frame(&app, 80, 24));
    // Once a build made it, it opens.
    let store = open(&config).await;
    drop(store);
    assert!(matches!(
        jobctl::ui::tui::connect(&config).await,
        Source::Open(_)
    ));
}

#[tokio::test]
async fn a_build_whose_jobctl_died_here_says_so() {
    let fx = fixture().await;
    // A jobctl on this machine started `deploy`, then died (its pid is a finished `true`).
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let deploy = fx.config.job("deploy").unwrap();
    let ids = fx
        .store
        .create_builds(
            &[NewBuild {
                job_id: "deploy".into(),
                config: serde_json::to_value(deploy).unwrap(),
                config_hash: config_hash(deploy),
                pins: Vec::new(),
                attempt: 1,
                created_at: t(500),
            }],
            &Runner::this_process(),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    fx.store
        .start_build(
            ids[0],
            &Runner {
                pid,
                ..Runner::this_process()
            },
            t(500),
        )
        .await
        .unwrap();
    let mut app = fx.ready().await;
    let jobs = frame(&app, 80, 12);
    let line = jobs.lines().find(|l| l.contains("deploy")).unwrap();
    assert!(
        line.contains("running") && line.contains("runner gone"),
        "{jobs}"
    );
    fx.keys(&mut app, &[KeyCode::End]).await;
    fx.open_latest_build(&mut app).await;
    assert!(
        frame(&app, 80, 24).contains(&format!("jobctl pid {pid} (gone")),
        "{}",
        frame(&app, 80, 24)
    );
}
