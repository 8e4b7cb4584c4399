//! What a new user trips on in the first hour, through the real binary: statuses that tell
//! the truth, commands that do what they say, names that are checked.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{run, setup};
use serde_json::Value;

fn statuses(dir: &Path) -> Vec<(String, String, Option<Value>)> {
    let (code, out, err) = run(dir, &["jobs", "--json"]);
    assert_eq!(code, 0, "{err}");
    let jobs: Vec<Value> = serde_json::from_str(&out).unwrap();
    jobs.iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_owned(),
                j["status"].as_str().unwrap().to_owned(),
                j.get("outdated_because").cloned(),
            )
        })
        .collect()
}

const PIPELINE: &str = "jobs:
  - {id: crawl_alpha, run: 'echo {{ v }}'}
  - {id: process_alpha, run: 'true', dependencies: [crawl_alpha]}
  - {id: report, run: 'true', dependencies: [process_alpha]}
";

/// A config change upstream makes everything downstream outdated, saying where it
/// starts; `jobs`, `jobs --json` and `--plan` agree.
#[test]
fn a_config_change_upstream_makes_dependants_outdated() {
    let dir = setup(&PIPELINE.replace("{{ v }}", "one"));
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(d.join("jobs.yaml.j2"), PIPELINE.replace("{{ v }}", "two")).unwrap();
    let got = statuses(d);
    assert_eq!(got[0].1, "outdated");
    assert_eq!(
        got[0].2,
        Some(serde_json::json!({"reason": "config_changed"}))
    );
    for (job, status, because) in &got[1..] {
        assert_eq!(status, "outdated", "{job}");
        assert_eq!(
            because,
            &Some(
                serde_json::json!({"reason": "upstream", "job": "crawl_alpha", "status": "outdated"})
            ),
            "{job}"
        );
    }
    let (_, jobs, _) = run(d, &["jobs"]);
    assert!(
        jobs.contains("report         outdated  ")
            && jobs.contains("(upstream crawl_alpha outdated)"),
        "{jobs}"
    );
    let (_, plan, _) = run(d, &["build", "report", "--plan"]);
    assert_eq!(
        plan,
        "build crawl_alpha    (outdated: config changed)
build process_alpha  (outdated: upstream crawl_alpha outdated)
build report         (outdated: upstream crawl_alpha outdated)
"
    );
}

/// A job whose latest build said `skip` is current; one whose only build was cancelled
/// says so.
#[test]
fn skipped_is_current_and_cancelled_says_so() {
    let dir = setup(
        r#"jobs:
  - {id: quiet, run: '"$JOBCTL" report skip "nothing new upstream"'}
  - {id: after, run: 'true', dependencies: [quiet]}
"#,
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    let got = statuses(d);
    assert_eq!(got[0].1, "success");
    assert_eq!(got[1].1, "success");

    let dir = setup("jobs:\n  - {id: slow, run: 'sleep 30'}\n");
    let d = dir.path();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .args(["build", "slow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains(" start "));
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().unwrap();
    assert_eq!(statuses(d)[0].1, "cancelled");
    let (_, plan, _) = run(d, &["build", "slow", "--plan"]);
    assert_eq!(plan, "build slow  (its last build was cancelled)\n");
}

/// `jobctl build slow` in the background, once build 1 has logged `started`.
fn build_until_started(d: &Path) -> std::process::Child {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .args(["build", "slow"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until("the job's start", Duration::from_secs(20), || {
        run(d, &["logs", "1"]).1.contains("started")
    });
    child
}

/// A build left `running` by a jobctl killed with SIGKILL is closed by the next command
/// that reads status (not only the next `build`), with its real run time.
#[test]
fn a_dead_runners_build_is_closed_by_any_reading_command() {
    let dir = setup("jobs:\n  - {id: slow, run: 'echo started; sleep 30'}\n");
    let d = dir.path();
    let mut child = build_until_started(d);
    child.kill().unwrap();
    child.wait().unwrap();
    // Long enough that "time until recovery" and "run time" differ.
    std::thread::park_timeout(Duration::from_millis(1500));
    let (code, out, err) = run(d, &["builds", "--json"]);
    assert_eq!(code, 0, "{err}");
    let builds: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(builds[0]["status"], "failed", "{out}");
    let started =
        chrono::DateTime::parse_from_rfc3339(builds[0]["started_at"].as_str().unwrap()).unwrap();
    let finished =
        chrono::DateTime::parse_from_rfc3339(builds[0]["finished_at"].as_str().unwrap()).unwrap();
    let ran = finished - started;
    assert!(
        ran < chrono::Duration::milliseconds(1500),
        "recorded {ran} of run time"
    );
}

/// Unknown names are mistakes (exit 2, with a suggestion), not empty answers.
#[test]
fn unknown_jobs_and_builds_are_mistakes() {
    let dir = setup("jobs:\n  - {id: crawl, run: 'true'}\n");
    let d = dir.path();
    let (code, _, _) = run(d, &["build", "crawl"]);
    assert_eq!(code, 0);
    for (args, said) in [
        (
            &["builds", "crawk"][..],
            "error: no job `crawk` in jobs.yaml.j2 (did you mean `crawl`?)\n",
        ),
        (
            &["prune", "--job", "crawk"],
            "error: no job `crawk` in jobs.yaml.j2 (did you mean `crawl`?)\n",
        ),
    ] {
        let (code, out, err) = run(d, args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (2, "", said),
            "{args:?}"
        );
    }
    let (code, _, err) = run(d, &["prune", "--build", "999"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: no build 999 in "), "{err}");
    // A job gone from the config keeps its history.
    std::fs::write(
        d.join("jobs.yaml.j2"),
        "jobs:\n  - {id: other, run: 'true'}\n",
    )
    .unwrap();
    let (code, out, err) = run(d, &["builds", "crawl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("crawl"), "{out}");
}

/// `delete` refuses a build that is still running (its cleanup would run under it);
/// `--cancel` cancels it, waits for it, then deletes it.
#[test]
fn delete_refuses_a_running_build_unless_told_to_cancel_it() {
    let dir =
        setup("jobs:\n  - {id: slow, run: 'echo started; sleep 30', cleanup: 'touch cleaned'}\n");
    let d = dir.path();
    let mut child = build_until_started(d);
    let (code, out, err) = run(d, &["delete", "1"]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(
        err,
        "error: build 1 is running: its cleanup cannot run under it; `jobctl delete 1 --cancel` cancels it first\n"
    );
    assert!(!d.join("cleaned").exists());
    let (code, out, err) = run(d, &["delete", "1", "--cancel"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("deleted build 1 of slow\n"), "{out}");
    assert!(d.join("cleaned").exists());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4));
}

/// `show` is a summary (the recorded config only with `--full`), and a pin to a build
/// since deleted says so.
#[test]
fn show_is_a_summary_and_names_deleted_pins() {
    let dir = setup(
        "jobs:
  - {id: up, run: 'true'}
  - {id: down, run: 'true', dependencies: [up]}
",
    );
    let d = dir.path();
    let (code, _, _) = run(d, &["build", "down"]);
    assert_eq!(code, 0);
    let (code, _, _) = run(d, &["delete", "1"]);
    assert_eq!(code, 0);
    let (_, show, _) = run(d, &["show", "2"]);
    assert!(
        show.contains("pinned    up -> build 1 (deleted)\n"),
        "{show}"
    );
    assert!(!show.contains("config:"), "{show}");
    assert!(show.lines().count() < 15, "{show}");
    let (_, full, _) = run(d, &["show", "2", "--full"]);
    assert!(
        full.contains("config:\n  {\n    \"id\": \"down\""),
        "{full}"
    );
}

/// `graph --json`: nodes, edges (dependency → dependant) and layers.
#[test]
fn graph_has_json() {
    let dir = setup(
        "jobs:
  - {id: a, title: First, run: 'true'}
  - {id: b, run: 'true', dependencies: [a]}
",
    );
    let (code, out, err) = run(dir.path(), &["graph", "--json"]);
    assert_eq!(code, 0, "{err}");
    let value: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "nodes": [{"id": "a", "title": "First"}, {"id": "b", "title": null}],
            "edges": [{"from": "a", "to": "b"}],
            "layers": [["a"], ["b"]],
        })
    );
}

/// `--fail-fast` names every job it did not start, with why; the count matches the
/// lines.
#[test]
fn fail_fast_names_every_job_it_did_not_start() {
    let dir = setup(
        "jobs:
  - {id: bad, run: 'exit 1'}
  - {id: after_bad, run: 'true', dependencies: [bad]}
  - id: slow
    # Ends once bad's failure is recorded (or after a minute, when the test fails).
    run: |
      i=0
      until \"$JOBCTL\" builds bad --status failed | grep -q failed || [ $i -ge 600 ]; do
        sleep 0.1; i=$((i + 1))
      done
  - {id: later1, run: 'true', dependencies: [slow]}
  - {id: later2, run: 'true', dependencies: [slow]}
",
    );
    let d = dir.path();
    let (code, out, _) = run(d, &["build", "--all", "-j", "2", "--fail-fast"]);
    assert_eq!(code, 4, "{out}");
    let not_run: Vec<&str> = out.lines().filter(|l| l.contains(" not run ")).collect();
    let summary = out.lines().find(|l| l.contains("succeeded")).unwrap();
    let counted: usize = summary
        .split(", ")
        .find_map(|p| p.strip_suffix(" not run"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(not_run.len(), counted, "{out}");
    assert!(
        out.contains("not run after_bad: bad did not succeed"),
        "{out}"
    );
    for job in ["later1", "later2"] {
        assert!(
            out.contains(&format!(
                "not run {job}: the run stopped after bad failed (--fail-fast)"
            )),
            "{out}"
        );
    }
}

/// A PostgreSQL database that is not there is said plainly, with what to do, and without
/// the server's source line (`at line 948` read like a line of the config).
#[test]
fn a_missing_postgres_database_says_what_to_do() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Reachable (a test database made and dropped), or skipped outside CI.
    let Some(_pg) = rt.block_on(common::PgDatabase::create("first_hour_missing")) else {
        return;
    };
    let base = common::postgres_base_url();
    let url = format!(
        "{}/jobctl_surely_missing_db",
        base.rsplit_once('/').unwrap().0
    );
    let dir = setup(&format!(
        "storage: {url}\njobs:\n  - {{id: a, run: 'true'}}\n"
    ));
    let (code, _, err) = run(dir.path(), &["jobs"]);
    assert_eq!(code, 3);
    assert!(
        err.contains("the database `jobctl_surely_missing_db` does not exist on the server of ")
            && err.ends_with(
                ": create it (`createdb jobctl_surely_missing_db`), then run `jobctl install`\n"
            ),
        "{err}"
    );
    assert!(!err.contains("at line"), "{err}");
}

/// A job waiting out its retry delay holds no `-j` slot: with `-j 2`, while `flaky` waits
/// to retry, `b` and `c` run side by side (their intervals overlap).
#[test]
fn a_job_waiting_to_retry_holds_no_slot() {
    let dir = setup(
        r#"jobs:
  - {id: flaky, run: 'test -e ok || { touch ok; exit 1; }', retries: 1, retry_delay: 3s}
  - {id: b, run: 'date +%s.%N > b.start; sleep 1; date +%s.%N > b.end'}
  - {id: c, run: 'date +%s.%N > c.start; sleep 1; date +%s.%N > c.end'}
"#,
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "--all", "-j", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let at = |f: &str| -> f64 {
        std::fs::read_to_string(d.join(f))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (b, c) = ((at("b.start"), at("b.end")), (at("c.start"), at("c.end")));
    assert!(
        b.0 < c.1 && c.0 < b.1,
        "b {b:?} and c {c:?} ran one after the other"
    );
}

/// `build JOB --downstream` builds JOB, then what depends on it (as JobControl's
/// dependants build did), each with its reason; without it, only JOB.
#[test]
fn downstream_builds_what_depends_on_a_job() {
    let dir = setup(
        "jobs:
  - {id: a, run: 'true'}
  - {id: b, run: 'true', dependencies: [a]}
  - {id: c, run: 'true', dependencies: [b]}
  - {id: other, run: 'true'}
",
    );
    let d = dir.path();
    let (code, _, _) = run(d, &["build", "--all"]);
    assert_eq!(code, 0);
    let (_, plan, _) = run(d, &["build", "a", "--force", "--plan"]);
    assert_eq!(plan, "build a  (--force)\n");
    let (_, plan, _) = run(d, &["build", "a", "--force", "--downstream", "--plan"]);
    assert_eq!(
        plan,
        "build a  (--force)\nbuild b  (upstream a rebuilt)\nbuild c  (upstream b rebuilt)\n"
    );
    let (code, out, err) = run(d, &["build", "a", "--force", "--downstream"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("3 succeeded\n"), "{out}");
    // Up to date: nothing downstream is made outdated, nothing runs.
    let (_, plan, _) = run(d, &["build", "a", "--downstream", "--plan"]);
    assert_eq!(
        plan,
        "nothing to build: everything asked for is up to date\n"
    );
}
