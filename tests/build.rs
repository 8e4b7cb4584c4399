//! `jobctl build` through the real binary on real SQLite files.

mod common;

use std::path::Path;

use common::{alive, build_of, builds, peak_rss, run, setup};
use serde_json::{Value, json};

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

/// A job whose `sh` cannot start (its folder is not there) fails with the reason, its
/// build is recorded failed, and the run goes on with what does not depend on it.
#[test]
fn a_job_that_cannot_start_fails_with_the_reason() {
    let dir = setup(
        "jobs:
  - {id: nowhere, run: touch never, workdir: /nonexistent-jobctl-folder}
  - {id: after, run: touch after, dependencies: [nowhere]}
  - {id: fine, run: touch fine}
",
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "--all", "-j", "1"]);
    assert_eq!(code, 4, "{out}{err}");
    let reason = "cannot start `sh` in /nonexistent-jobctl-folder: No such file or directory \
                  (os error 2)";
    assert!(
        out.ends_with(&format!(
            "1 succeeded, 1 failed, 1 not run\nfailed: nowhere (build 1): {reason}\n"
        )),
        "{out}"
    );
    assert!(d.join("fine").exists() && !d.join("after").exists());
    let nowhere = build_of(&builds(d), "nowhere").clone();
    assert_eq!(nowhere["status"], "failed");
    assert_eq!(nowhere["error"], reason);
}

/// More steps than are recorded before the first starts: the others are recorded while
/// jobs run, and those that will not run are removed whether or not they were recorded
/// yet when their dependency failed.
fn long_plan(storage: &str) -> tempfile::TempDir {
    let mut config = format!("{storage}jobs:\n  - {{id: bad, run: 'exit 3'}}\n");
    for i in 0..150 {
        config.push_str(&format!("  - {{id: ok{i}, run: 'echo {i}'}}\n"));
    }
    for i in 0..150 {
        config.push_str(&format!(
            "  - {{id: after{i}, run: 'true', dependencies: [bad]}}\n"
        ));
    }
    for i in 0..50 {
        config.push_str(&format!(
            "  - {{id: late{i}, run: 'true', dependencies: [ok{i}]}}\n"
        ));
    }
    let dir = setup(&config);
    let d = dir.path();
    if !storage.is_empty() {
        let (code, out, err) = run(d, &["install"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let (code, out, err) = run(d, &["build", "--all", "-j", "2"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("200 succeeded, 1 failed, 150 not run\n"),
        "{out}"
    );

    let (code, all, err) = run(d, &["builds", "--json", "--limit", "1000"]);
    assert_eq!(code, 0, "{err}");
    let all: Vec<Value> = serde_json::from_str(&all).unwrap();
    assert_eq!(all.len(), 201, "one build per job that ran, nothing else");
    let mut jobs: Vec<&str> = all.iter().map(|b| b["job_id"].as_str().unwrap()).collect();
    jobs.sort_unstable();
    jobs.dedup();
    assert_eq!(jobs.len(), 201);
    assert!(!jobs.iter().any(|j| j.starts_with("after")));
    for b in &all {
        let expected = if b["job_id"] == "bad" {
            "failed"
        } else {
            "successful"
        };
        assert_eq!(b["status"], expected, "{b}");
        // Started and ended within one batch: both times and the process group kept.
        let time = |key: &str| {
            chrono::DateTime::parse_from_rfc3339(b[key].as_str().unwrap_or_else(|| panic!("{b}")))
                .unwrap()
        };
        assert!(time("started_at") <= time("finished_at"), "{b}");
        assert!(b["pgid"].as_i64().is_some_and(|p| p > 1), "{b}");
    }
    let late = build_of(&all, "late7")["id"].to_string();
    let (_, shown, _) = run(d, &["show", &late, "--json"]);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let ok7 = build_of(&all, "ok7")["id"].as_i64().unwrap();
    assert_eq!(shown["pins"], json!([{"job_id": "ok7", "build_id": ok7}]));
    let ok7 = ok7.to_string();
    let (code, log, err) = run(d, &["logs", &ok7]);
    assert_eq!(code, 0, "{err}");
    assert!(log.trim_end().ends_with(" 7"), "{log}");
    dir
}

#[test]
fn a_long_plan_records_each_build_once_and_removes_what_did_not_run() {
    long_plan("");
}

/// The same run recording into PostgreSQL (batches are written from another thread,
/// whose database I/O goes through the run's own).
#[tokio::test]
async fn a_long_plan_records_into_postgres() {
    let Some(db) = common::PgDatabase::create("long_plan").await else {
        return;
    };
    let storage = format!("storage: {}\n", db.url);
    tokio::task::spawn_blocking(move || long_plan(&storage))
        .await
        .unwrap();
}

/// A job runs in the config's folder (or its `workdir` below it), wherever jobctl was
/// started from.
#[test]
fn jobs_run_in_their_folder_from_anywhere() {
    let dir = setup(
        "jobs:
  - {id: here, run: pwd -P > here.txt}
  - {id: below, run: pwd -P > ../below.txt, workdir: sub}
",
    );
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    let real = d.canonicalize().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = d.join("jobs.yaml.j2");
    for (from, args) in [
        (d, vec!["build", "--all", "--force"]),
        (
            elsewhere.path(),
            vec![
                "--config",
                config.to_str().unwrap(),
                "build",
                "--all",
                "--force",
            ],
        ),
    ] {
        std::fs::remove_file(d.join("here.txt")).ok();
        std::fs::remove_file(d.join("below.txt")).ok();
        let (code, out, err) = run(from, &args);
        assert_eq!(code, 0, "{out}{err}");
        let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        assert_eq!(read("here.txt").trim_end(), real.to_str().unwrap());
        assert_eq!(
            read("below.txt").trim_end(),
            real.join("sub").to_str().unwrap()
        );
    }
    assert!(!elsewhere.path().join("here.txt").exists());
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
fn a_one_megabyte_return_value_reaches_a_shell_job() {
    // Past Linux's 128 KiB per argument or variable: `$1` and `$BIG` still hold it (set
    // by a file the shell reads first), and programs read the JSON from a file.
    let dir = setup(
        r#"jobs:
  - id: big
    run: printf '{"type":"retval","value":"%s"}\n' "$(head -c 1000000 /dev/zero | tr '\0' "'")" >&3
  - id: use
    run: |
      printf '%s' "$1" > arg.txt
      printf '%s' "$BIG" > kwarg.txt
      printf '%s' "$SMALL" > small.txt
      cp "$JOBCTL_KWARGS_FILE" kwargs.json
      sh -c 'printf "%s" "$SMALL"' > child.txt
    args: [!retval big]
    kwargs:
      BIG: !retval big
      SMALL: "fits"
"#,
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "use", "--progress", "plain"]);
    assert_eq!(code, 0, "{out}{err}");
    let quotes = "'".repeat(1_000_000);
    assert_eq!(std::fs::read_to_string(d.join("arg.txt")).unwrap(), quotes);
    assert_eq!(
        std::fs::read_to_string(d.join("kwarg.txt")).unwrap(),
        quotes
    );
    assert_eq!(
        std::fs::read_to_string(d.join("small.txt")).unwrap(),
        "fits"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("child.txt")).unwrap(),
        "fits",
        "what fits is still exported to the job's programs"
    );
    let kwargs: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("kwargs.json")).unwrap()).unwrap();
    assert_eq!(kwargs["BIG"].as_str().unwrap(), quotes);
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("jobctl-values-")
        })
        .count();
    assert_eq!(leftovers, 0, "the values' folder is removed after the job");
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
    assert!(
        matches!(
            &slow.reason,
            Some(jobctl::vocab::Reason::RunnerLost { worker: false, gone: true, who })
                if who.starts_with("jobctl (pid ")
        ),
        "{slow:?}"
    );
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
    let (code, peak_mb) = peak_rss(d, &["build", "loud", "--progress", "plain"]);
    assert_eq!(code, 0);
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
    common::wait_until(
        "the job's process",
        std::time::Duration::from_secs(20),
        || alive("sleep 23.2323"),
    );
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
    use std::io::Read;

    // The job goes on once the test has seen its progress on the screen (`drawn`), or
    // after a minute, when the test has already failed.
    let config = r#"jobs:
  - id: crawl
    run: |
      "$JOBCTL" report progress --group pages 1 4 --status "page 1"
      i=0
      while [ ! -f drawn ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i + 1)); done
      "$JOBCTL" report progress --group pages 4 4
"#;
    let dir = setup(config);
    let d = dir.path();
    // `script` gives jobctl a pseudo-terminal (util-linux, on every Debian).
    let bin = assert_cmd::cargo::cargo_bin("jobctl");
    let mut child = std::process::Command::new("script")
        .current_dir(d)
        .env("TERM", "xterm")
        .args([
            "-qec",
            &format!("stty rows 30 cols 100; '{}' build crawl", bin.display()),
            "/dev/null",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut screen = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut seen = false;
    loop {
        let n = stdout.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        screen.extend_from_slice(&chunk[..n]);
        if !seen && String::from_utf8_lossy(&screen).contains("page 1") {
            seen = true;
            std::fs::write(d.join("drawn"), "").unwrap();
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let screen = String::from_utf8_lossy(&screen);
    assert!(
        seen,
        "the live tree never showed the job's status: {screen:?}"
    );
    assert!(
        screen.contains("\x1b[J"),
        "the live area is redrawn: {screen:?}"
    );
    assert!(screen.contains("▸ crawl #1"), "{screen:?}");
    assert!(screen.contains("└─ pages"), "{screen:?}");
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
    common::wait_until(
        "the job's process",
        std::time::Duration::from_secs(20),
        || alive("sleep 27.2727"),
    );
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

#[tokio::test]
async fn a_cancel_request_through_the_database_cancels_that_build_alone() {
    use std::io::BufRead;

    use jobctl::store::{BuildFilter, BuildStatus, OpenMode, Store};

    // `after` needs `slow`; `queued` waits behind `gate`, which waits for the test to
    // write to its fifo; `other` is independent.
    let dir = setup(
        "jobs:
  - {id: slow, run: 'sleep 43.4343'}
  - {id: after, run: 'true', dependencies: [slow]}
  - {id: gate, run: 'read line < gate.fifo'}
  - {id: queued, run: 'true', dependencies: [gate]}
  - {id: queued_after, run: 'true', dependencies: [queued]}
  - {id: other, run: 'echo other > other.txt'}
",
    );
    let d = dir.path();
    let fifo = d.join("gate.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .args([
            "build",
            "after",
            "queued_after",
            "other",
            "-j",
            "2",
            "--progress",
            "plain",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let store = jobctl::store::open("sqlite://.jobctl/state.db", d, OpenMode::Use)
        .await
        .unwrap();
    let build_of = |builds: &[jobctl::store::Build], job: &str| {
        builds.iter().find(|b| b.job_id == job).map(|b| b.id)
    };
    // Wait until slow and gate run (their start lines), then ask to cancel slow and the
    // not yet started `queued`, as `jobctl tui` does.
    let mut started = 0;
    while started < 2 {
        let line = lines.next().unwrap().unwrap();
        if line.contains("start ") {
            started += 1;
        }
    }
    let all = store.builds(&BuildFilter::default()).await.unwrap();
    let slow = build_of(&all, "slow").unwrap();
    let queued = build_of(&all, "queued").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The batch that records slow's start may not be written yet: a request takes an
    // open build, created or running.
    assert!(
        store
            .request_cancel(slow, chrono::Utc::now())
            .await
            .unwrap()
    );
    assert!(
        store
            .request_cancel(queued, chrono::Utc::now())
            .await
            .unwrap()
    );
    while store.build(slow).await.unwrap().unwrap().status != BuildStatus::Cancelled {
        assert!(
            std::time::Instant::now() < deadline,
            "slow was never cancelled"
        );
        tokio::task::yield_now().await;
    }
    // Let gate end: the rest of the run goes on.
    std::fs::write(&fifo, "go\n").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{rest:?}");

    let all = store.builds(&BuildFilter::default()).await.unwrap();
    let slow = store.build(slow).await.unwrap().unwrap();
    assert_eq!(slow.error.as_deref(), Some("cancelled on request"));
    let queued = store.build(queued).await.unwrap().unwrap();
    assert_eq!(queued.status, BuildStatus::Cancelled);
    assert_eq!(
        queued.error.as_deref(),
        Some("cancelled on request before it started")
    );
    assert_eq!(build_of(&all, "after"), None, "what needs slow did not run");
    assert_eq!(build_of(&all, "queued_after"), None);
    for job in ["gate", "other"] {
        let id = build_of(&all, job).unwrap();
        let b = store.build(id).await.unwrap().unwrap();
        assert_eq!(b.status, BuildStatus::Successful, "{job}");
    }
    assert!(
        !alive("sleep 43.4343"),
        "the cancelled job's process is gone"
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("not run") && l.contains("after")),
        "{rest:?}"
    );
}

/// Waits (up to a minute) until `file` in `dir` holds `n` lines starting with `prefix`.
fn wait_for_lines(dir: &Path, file: &str, prefix: &str, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if text.lines().filter(|l| l.starts_with(prefix)).count() >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{file}: {text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn concurrency_holds_across_processes() {
    use std::io::BufRead;

    // Each build logs its start, waits for the test's `release-JOB` file, logs its end.
    let dir = setup(
        "jobs:
  - id: single
    run: 'echo start >> single.log; until [ -f release-single ]; do sleep 0.02; done; echo end >> single.log'
  - id: double
    concurrency: 2
    run: 'echo start >> double.log; until [ -f release-double ]; do sleep 0.02; done; echo end >> double.log'
",
    );
    let d = dir.path();
    // However the test ends, the jobs it started end too.
    struct Release<'a>(&'a Path);
    impl Drop for Release<'_> {
        fn drop(&mut self) {
            for job in ["single", "double"] {
                let _ = std::fs::write(self.0.join(format!("release-{job}")), "");
            }
        }
    }
    let _release = Release(d);
    let start = |job: &str| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("jobctl"))
            .current_dir(d)
            .args(["build", job, "--force", "--progress", "plain"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let running = |job: &str| {
        let (_, out, _) = run(d, &["builds", job, "--status", "running", "--json"]);
        serde_json::from_str::<Vec<Value>>(&out).map_or(0, |b| b.len())
    };
    let wait_running = |job: &str, n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while running(job) < n {
            assert!(std::time::Instant::now() < deadline, "{job} never ran");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    // concurrency 1: a second jobctl waits, says so, and starts when the first ends.
    let mut first = start("single");
    wait_running("single", 1);
    let mut second = start("single");
    let mut lines = std::io::BufReader::new(second.stdout.take().unwrap()).lines();
    let said = lines.next().unwrap().unwrap();
    assert!(
        said.ends_with("wait    single: 1 build of it running elsewhere (concurrency 1)"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("single.log")).unwrap(),
        "start\n"
    );
    std::fs::write(d.join("release-single"), "").unwrap();
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(d.join("single.log")).unwrap(),
        "start\nend\nstart\nend\n",
        "the second build started after the first ended"
    );

    // concurrency 2: both run at once.
    let mut a = start("double");
    wait_running("double", 1);
    let mut b = start("double");
    wait_for_lines(d, "double.log", "start", 2);
    wait_running("double", 2);
    std::fs::write(d.join("release-double"), "").unwrap();
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
}

/// `build --all` with a protected job builds everything else, reports the protected job
/// as waiting for confirmation with what it holds back, and exits non-zero; `--plan` says
/// which need `--yes`.
#[test]
fn build_all_builds_around_a_protected_job() {
    let dir = setup(
        "jobs:
  - {id: fetch, run: touch fetched}
  - {id: publish, run: touch published, protect: true, dependencies: [fetch]}
  - {id: announce, run: touch announced, dependencies: [publish]}
  - {id: other, run: touch other}
",
    );
    let d = dir.path();
    let (code, plan, _) = run(d, &["build", "--all", "--plan"]);
    assert_eq!(code, 0);
    insta::assert_snapshot!(plan, @r"
    build fetch     (not built)
    build publish   (not built)  needs --yes: it is protected
    build announce  (not built)  waits for publish, which needs --yes
    build other     (not built)
    ");
    let (code, out, err) = run(d, &["build", "--all"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(d.join("fetched").exists() && d.join("other").exists());
    assert!(!d.join("published").exists() && !d.join("announced").exists());
    assert!(
        out.ends_with(
            "2 succeeded\nwaiting for confirmation: publish (protected: run again with --yes)\nheld back with it: announce\n"
        ),
        "{out}"
    );
    assert_eq!(
        err,
        "error: job `publish` is protected: run again with --yes to build it\n"
    );
}
