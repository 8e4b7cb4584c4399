//! `jobctl build` through the real binary on real SQLite files.

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::alive;
use serde_json::{Value, json};

fn jobctl(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("jobctl").unwrap();
    cmd.current_dir(dir)
        .env_remove("JOBCTL_CONFIG")
        .env("NO_COLOR", "1");
    cmd
}

fn setup(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jobs.yaml.j2"), config).unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = jobctl(dir).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn builds(dir: &Path) -> Vec<Value> {
    let (code, out, err) = run(dir, &["builds", "--json", "--limit", "100"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn build_of<'a>(builds: &'a [Value], job: &str) -> &'a Value {
    builds.iter().find(|b| b["job_id"] == job).unwrap()
}

#[test]
fn a_diamond_builds_in_order_and_records_its_pins() {
    let dir = setup(
        "jobs:
  - {id: a, run: echo a >> order.txt}
  - {id: b, run: echo b >> order.txt, dependencies: [a]}
  - {id: c, run: echo c >> order.txt, dependencies: [a]}
  - {id: d, run: echo d >> order.txt, dependencies: [b, c]}
  - {id: other, run: echo other >> other.txt}
",
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "d", "-j", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("4 succeeded\n"), "{out}");
    let order = std::fs::read_to_string(d.join("order.txt")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(order.first(), Some(&"a"));
    assert_eq!(order.last(), Some(&"d"));
    assert_eq!(order.len(), 4);
    assert!(!d.join("other.txt").exists(), "only what d needs");

    let all = builds(d);
    let id = |job: &str| build_of(&all, job)["id"].as_i64().unwrap();
    let (_, shown, _) = run(d, &["show", &id("d").to_string(), "--json"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["pins"],
        json!([{"job_id": "b", "build_id": id("b")}, {"job_id": "c", "build_id": id("c")}])
    );

    // Up to date now: nothing to do; a change upstream rebuilds what follows it.
    let (_, out, _) = run(d, &["build", "d"]);
    assert_eq!(
        out,
        "nothing to build: everything asked for is up to date\n"
    );
    let (_, out, _) = run(d, &["build", "a", "--force"]);
    assert!(out.ends_with("1 succeeded\n"), "{out}");
    let (_, out, _) = run(d, &["build", "d", "--plan"]);
    assert_eq!(
        out,
        "build b  (outdated: a succeeded since)\nbuild c  (outdated: a succeeded since)\nbuild d  (outdated: a succeeded since)\n"
    );
}

#[test]
fn a_failure_stops_its_dependants_and_nothing_else() {
    let dir = setup(
        "jobs:
  - {id: bad, run: 'echo doomed >&2; exit 3'}
  - {id: after_bad, run: touch after_bad, dependencies: [bad]}
  - {id: good, run: touch good}
  - {id: after_good, run: touch after_good, dependencies: [good]}
",
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "--all", "-j", "1"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains(" not run after_bad: bad did not succeed\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "2 succeeded, 1 failed, 1 not run\nfailed: bad (build 1): exit status 3\n  | doomed\n"
        ),
        "{out}"
    );
    assert_eq!(
        err,
        "error: the build did not succeed: 1 failed, 1 not run, 0 cancelled\n"
    );
    assert!(d.join("good").exists() && d.join("after_good").exists());
    assert!(!d.join("after_bad").exists());
    let all = builds(d);
    let bad = build_of(&all, "bad");
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["exit_code"], 3);
    assert_eq!(bad["stderr_tail"], "doomed\n");
}

#[test]
fn return_values_flow_to_dependants() {
    let dir = setup(
        r#"jobs:
  - id: text
    run: '"$JOBCTL" report retval --string "hello world"'
  - id: number
    run: '"$JOBCTL" report retval 42'
  - id: nested
    run: |
      echo '{"type":"retval","value":{"list":[1,2.5,null,"ß"],"ok":true}}' >&"$JOBCTL_CHANNEL"
  - id: consume
    run: printf '%s|' "$@" "$N" "$NESTED" > consumed.txt
    args: [!retval text, !retval number]
    kwargs:
      N: !retval number
      NESTED: !retval nested
  - id: big
    run: printf '{"type":"retval","value":"%s"}\n' "$(head -c 1000000 /dev/zero | tr '\0' x)" >&3
"#,
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("consumed.txt")).unwrap(),
        r#"hello world|42|42|{"list":[1,2.5,null,"ß"],"ok":true}|"#
    );
    let all = builds(d);
    let big = build_of(&all, "big");
    assert_eq!(big["retval"].as_str().unwrap().len(), 1_000_000);
    assert_eq!(build_of(&all, "nested")["retval"]["list"][3], "ß");
}

#[test]
fn injected_values_are_data() {
    let payloads = [
        "$(touch pwned-subst)",
        "`touch pwned-backtick`",
        "; touch pwned-semicolon",
        "it's \"quoted\"",
        "two\nlines",
        "{a,b}",
        "-n",
        "*",
        "non\u{a0}breaking space",
        "$HOME and ${PATH}",
        "|| touch pwned-or",
        "back\\slash",
    ];
    let args: Vec<String> = payloads
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    let config = format!(
        "jobs:\n  - id: show\n    run: 'for a in \"$@\"; do printf \"%s\" \"$a\" | od -An -tx1 | tr -d \" \\n\"; echo; done > args.txt'\n    args: [{}]\n",
        args.join(", ")
    );
    let dir = setup(&config);
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "show"]);
    assert_eq!(code, 0, "{out}{err}");
    let got = std::fs::read_to_string(d.join("args.txt")).unwrap();
    let want: String = payloads
        .iter()
        .map(|p| p.bytes().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect();
    assert_eq!(got, want);
    let pwned: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("pwned"))
        .collect();
    assert!(pwned.is_empty(), "{pwned:?}");
}

#[test]
fn a_protected_job_needs_yes() {
    let dir = setup("jobs:\n  - {id: publish, run: touch published, protect: true}\n");
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "publish"]);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "error: job `publish` is protected: run again with --yes to build it\n"
    );
    assert!(!d.join("published").exists());
    let (code, _, _) = run(d, &["build", "publish", "--yes"]);
    assert_eq!(code, 0);
    assert!(d.join("published").exists());
    let (code, _, err) = run(d, &["build"]);
    assert_eq!(code, 2);
    assert_eq!(err, "error: name the jobs to build, or --all\n");
}

#[test]
fn a_secret_never_reaches_the_database() {
    let dir = setup(
        "secrets: {token: \"tok-77ab-secret\"}
jobs:
  - id: leak
    run: 'echo \"token is $TOKEN\"; echo \"$TOKEN\" >&2; \"$JOBCTL\" report retval --string \"$TOKEN\"'
    env: {TOKEN: !secret token}
",
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "leak"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, logs, _) = run(d, &["logs", "1"]);
    assert!(logs.contains("token is ********"), "{logs}");
    let all = builds(d);
    assert_eq!(build_of(&all, "leak")["retval"], "********");
    for file in std::fs::read_dir(d.join(".jobctl")).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(15).any(|w| w == b"tok-77ab-secret"),
            "the secret is in the database files"
        );
    }
}

#[tokio::test]
async fn a_killed_jobctl_leaves_nothing_running_after_the_next_start() {
    use std::io::BufRead;

    use jobctl::store::{BuildId, OpenMode, Store};

    let dir = setup(
        "jobs:
  - {id: slow, run: 'sleep 42.4242 & sleep 42.4242; wait'}
  - {id: quick, run: 'true'}
",
    );
    let d = dir.path();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .args(["build", "slow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines.next().unwrap().unwrap();
    assert!(started.ends_with("start   slow (build 1)"), "{started}");
    // The row says when the job's process group is known.
    let store = jobctl::store::open("sqlite://.jobctl/state.db", d, OpenMode::Use)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store
        .build(BuildId(1))
        .await
        .unwrap()
        .unwrap()
        .pgid
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never started"
        );
        tokio::task::yield_now().await;
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    assert!(alive("sleep 42.4242"), "the job outlives a killed jobctl");

    let (code, out, err) = run(d, &["build", "quick"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("closed build 1 of slow: runner died: jobctl (pid "),
        "{out}"
    );
    assert!(!alive("sleep 42.4242"), "an orphan survived the next start");
    let slow = store.build(BuildId(1)).await.unwrap().unwrap();
    assert_eq!(slow.status, jobctl::store::BuildStatus::Failed);
    assert!(slow.error.unwrap().starts_with("runner died"));
}

#[test]
fn a_job_printing_a_gigabyte_keeps_jobctl_small_and_its_last_line() {
    let dir = setup(
        "jobs:
  - id: loud
    run: head -c 1000000000 /dev/zero | tr '\\0' x | fold -w 1000; echo 'the very last line'
",
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "loud"]);
    assert_eq!(code, 0, "{out}{err}");
    // The peak memory of the children this test waited for: the jobctl just run.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    let peak_mb = usage.ru_maxrss / 1024;
    assert!(peak_mb < 64, "jobctl peaked at {peak_mb} MB");
    let (_, logs, _) = run(d, &["logs", "1"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines.last().unwrap().ends_with("the very last line"),
        "{:?}",
        lines.last()
    );
    assert!(
        logs.contains("lines (") && logs.contains("bytes) of output left out]"),
        "the log says what was dropped"
    );
}

#[test]
fn ctrl_c_cancels_every_job_and_records_it() {
    use std::io::BufRead;

    let dir = setup(
        "jobs:
  - {id: one, run: 'sleep 23.2323'}
  - {id: two, run: 'trap \"\" TERM; sleep 23.2323'}
  - {id: after, run: 'true', dependencies: [one]}
",
    );
    let d = dir.path();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .args(["build", "--all", "-j", "2", "--grace", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let line = lines.next().unwrap().unwrap();
        assert!(line.contains(" start "), "{line}");
    }
    while !alive("sleep 23.2323") {
        std::thread::yield_now();
    }
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{rest:?}");
    assert!(!alive("sleep 23.2323"), "a job survived Ctrl-C");
    assert_eq!(
        rest.last().unwrap(),
        "0 succeeded, 1 not run, 2 cancelled",
        "{rest:?}"
    );
    let all = builds(d);
    assert_eq!(build_of(&all, "one")["status"], "cancelled");
    assert_eq!(build_of(&all, "two")["status"], "cancelled");
}

#[test]
fn every_line_of_the_last_job_is_kept() {
    let dir = setup("jobs:\n  - {id: count, run: seq 1 20000}\n");
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "count"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, logs, _) = run(d, &["logs", "1"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 20000);
    assert!(lines[19999].ends_with(" 20000"), "{}", lines[19999]);
}

#[test]
fn a_retval_with_nothing_to_stand_for_fails_the_build_clearly() {
    let dir = setup(
        "jobs:
  - {id: producer, run: 'true'}
  - {id: consumer, run: 'touch ran', args: [!retval producer]}
",
    );
    let d = dir.path();
    let (code, out, _) = run(d, &["build", "consumer", "--deps", "none"]);
    assert_eq!(code, 4, "{out}");
    assert!(
        out.ends_with(
            "0 succeeded, 1 failed\nfailed: consumer (build 1): `!retval producer`: producer has no successful build with a return value\n"
        ),
        "{out}"
    );
    assert!(!d.join("ran").exists());
}

#[test]
fn a_terminal_gets_the_live_tree_and_a_pipe_plain_lines() {
    let config = r#"jobs:
  - id: crawl
    run: |
      "$JOBCTL" report progress --group pages 1 4 --status "page 1"
      sleep 0.6
      "$JOBCTL" report progress --group pages 4 4
"#;
    let dir = setup(config);
    let d = dir.path();
    // `script` gives jobctl a pseudo-terminal (util-linux, on every Debian).
    let bin = assert_cmd::cargo::cargo_bin("jobctl");
    let out = std::process::Command::new("script")
        .current_dir(d)
        .env("TERM", "xterm")
        .args([
            "-qec",
            &format!("stty rows 30 cols 100; '{}' build crawl", bin.display()),
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("\x1b[J"),
        "the live area is redrawn: {screen:?}"
    );
    assert!(screen.contains("▸ crawl #1"), "{screen:?}");
    assert!(screen.contains("└─ pages"), "{screen:?}");
    assert!(screen.contains("page 1"), "{screen:?}");
    assert!(screen.trim_end().ends_with("1 succeeded"), "{screen:?}");

    let (code, out, err) = run(d, &["build", "crawl", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\x1b'), "no escape codes in a pipe: {out:?}");
    assert!(out.ends_with("1 succeeded\n"), "{out}");
}

#[test]
fn a_second_ctrl_c_kills_without_waiting_out_the_grace() {
    use std::io::BufRead;

    let dir = setup("jobs:\n  - {id: stubborn, run: 'trap \"\" TERM; sleep 27.2727'}\n");
    let d = dir.path();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .args(["build", "stubborn", "--grace", "600"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains(" start "));
    while !alive("sleep 27.2727") {
        std::thread::yield_now();
    }
    let interrupt = || {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
    };
    interrupt();
    let line = lines.next().unwrap().unwrap();
    assert!(line.contains("cancelling"), "{line}");
    interrupt();
    // With a 600 s grace, only the second Ctrl-C can end this run.
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("killing every job")),
        "{rest:?}"
    );
    assert!(!alive("sleep 27.2727"));
    assert_eq!(build_of(&builds(d), "stubborn")["status"], "cancelled");
}
