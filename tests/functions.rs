//! `function:` jobs through the real binary: the built-in `testing` function reports,
//! returns, fails and skips as told; its values flow to shell jobs and back; a function
//! this jobctl does not have is one clear error before anything runs.

mod common;

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

fn setup(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobs.yaml.j2"), config).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("jobctl")
        .unwrap()
        .current_dir(dir)
        .env_remove("JOBCTL_CONFIG")
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn show(dir: &Path, build: i64) -> Value {
    let (code, out, err) = run(dir, &["show", &build.to_string(), "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn builds(dir: &Path) -> Vec<Value> {
    let (code, out, err) = run(dir, &["builds", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn build_of<'a>(builds: &'a [Value], job: &str) -> &'a Value {
    builds.iter().find(|b| b["job_id"] == job).unwrap()
}

#[test]
fn the_testing_function_reports_and_its_value_flows_both_ways() {
    let dir = setup(
        r#"secrets: {token: "s3cr3t-value"}
jobs:
  - id: source
    run: '"$JOBCTL" report retval "{\"rows\": 3}"'
  - id: scripted
    function: testing
    kwargs:
      log_messages: [[warning, "careful"], "token is s3cr3t-value"]
      progress_steps:
        - {group: [load, users], current: 2, total: 4, status: "user 2"}
        - [[load, orders], 1, 2]
      retval: {got: !retval source, note: "from testing"}
  - id: consume
    run: printf '%s' "$1" > consumed.json
    args: [!retval scripted]
"#,
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "consume"]);
    assert_eq!(code, 0, "{out}{err}");
    let consumed: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("consumed.json")).unwrap()).unwrap();
    assert_eq!(
        consumed,
        serde_json::json!({"got": {"rows": 3}, "note": "from testing"})
    );

    let all = builds(d);
    let scripted = build_of(&all, "scripted")["id"].as_i64().unwrap();
    let shown = show(d, scripted);
    let load = &shown["progress"]["children"][0];
    assert_eq!(load["name"], "load");
    assert_eq!(
        (&load["current"], &load["total"]),
        (&Value::from(3), &Value::from(6))
    );
    let groups: Vec<&Value> = load["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["name"])
        .collect();
    assert_eq!(groups, ["users", "orders"]);
    let (_, logs, _) = run(d, &["logs", &scripted.to_string()]);
    assert!(logs.contains("careful"), "{logs}");
    assert!(
        logs.contains("token is ****"),
        "a secret is masked in a function's log: {logs}"
    );
    assert!(!logs.contains("s3cr3t-value"));
}

#[test]
fn the_testing_function_fails_and_skips_as_told() {
    let dir = setup(
        "jobs:
  - {id: broken, function: testing, kwargs: {fail: 'the disk is full'}}
  - {id: after, run: 'true', dependencies: [broken]}
  - {id: idle, function: testing, kwargs: {skip: 'nothing new'}}
  - {id: typo, function: testing, kwargs: {progress: []}}
",
    );
    let d = dir.path();
    let (code, out, _) = run(d, &["build", "--all"]);
    assert_eq!(code, 4, "{out}");
    let all = builds(d);
    let broken = build_of(&all, "broken");
    assert_eq!(broken["status"], "failed");
    assert_eq!(broken["error"], "the disk is full");
    assert_eq!(build_of(&all, "idle")["status"], "skipped");
    assert!(
        build_of(&all, "typo")["error"]
            .as_str()
            .unwrap()
            .starts_with("testing: unknown keyword `progress`"),
        "{all:#?}"
    );
    // `after` never started: it left no build behind.
    assert!(all.iter().all(|b| b["job_id"] != "after"), "{all:#?}");
    assert!(
        out.contains("not run after: broken did not succeed"),
        "{out}"
    );
}

#[test]
fn a_megabyte_return_value_flows_into_a_function() {
    let big = "x".repeat(1_000_000);
    let dir = setup(&format!(
        "jobs:
  - {{id: produce, function: testing, kwargs: {{retval: {big}}}}}
  - {{id: echo, function: testing, kwargs: {{retval: !retval produce}}}}
"
    ));
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "echo"]);
    assert_eq!(code, 0, "{out}{err}");
    let all = builds(d);
    assert_eq!(
        build_of(&all, "echo")["retval"].as_str().unwrap().len(),
        1_000_000
    );
}

#[test]
fn a_function_this_jobctl_lacks_is_an_error_before_anything_runs() {
    let dir = setup(
        "jobs:
  - {id: fine, run: touch ran}
  - {id: odd, function: testng}
  - {id: other, function: crawl_everything}
",
    );
    let d = dir.path();
    for command in [&["build", "--all"][..], &["check"][..]] {
        let (code, out, err) = run(d, command);
        assert_eq!(code, 1, "{out}{err}");
        insta::assert_snapshot!("unknown_function", err);
    }
    assert!(!d.join("ran").exists());
    assert!(!d.join(".jobctl").exists(), "nothing was recorded");
}

#[test]
fn a_function_times_out() {
    let dir = setup("jobs:\n  - {id: slow, function: sleep, args: [30], timeout: 300ms}\n");
    let d = dir.path();
    let (code, _, _) = run(d, &["build", "slow"]);
    assert_eq!(code, 4);
    let all = builds(d);
    assert_eq!(build_of(&all, "slow")["timed_out"], true);
    assert_eq!(build_of(&all, "slow")["error"], "timed out");
}
