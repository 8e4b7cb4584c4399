//! What jobctl survives: jobs (and configs) that misbehave on purpose, each driven through
//! the real binary. Read this file as the list; each test says what a job tried and what
//! jobctl must still do.

mod common;

use std::path::Path;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use common::{alive, build_of, builds, jobctl, peak_rss, run, setup, wait_until};

/// `jobctl ARGS` in `dir`, in the background, its output to a pipe.
fn start(dir: &Path, args: &[&str]) -> Child {
    StdCommand::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(dir)
        .env_remove("JOBCTL_CONFIG")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit within `limit`; its code. Kills it and fails past that.
fn exit_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jobctl did not end within {limit:?}");
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
}

// --- A run must always end, and end when told -------------------------------------------

/// A job whose process ends while something it started in another session still holds
/// its output: the build ends with its process, successful, and what held the pipe is
/// killed (it used to hang the build for the full 300 s).
#[test]
fn a_leftover_holding_the_pipes_does_not_hold_the_build() {
    let dir = setup("jobs:\n  - {id: j, run: 'setsid sleep 3001.5 & sleep 0.2'}\n");
    let d = dir.path();
    let mut child = start(d, &["build", "j"]);
    let code = exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(0));
    assert_eq!(build_of(&builds(d), "j")["status"], "successful");
    assert!(
        !alive("sleep 3001.5"),
        "the escaped process outlived its build"
    );
}

/// A job that double-forks a daemon (which keeps the pipes) and then hangs: its timeout
/// still applies, the build fails as timed out, and the daemon goes too (it used to end
/// "ok" after the daemon's 40 s, through two Ctrl-C).
#[test]
fn a_timeout_applies_to_a_job_whose_daemon_holds_the_pipes() {
    let dir = setup(
        "jobs:\n  - {id: j, timeout: 1s, run: \"(setsid sh -c 'sleep 3002.5' &); sleep 3002.6\"}\n",
    );
    let d = dir.path();
    let mut child = start(d, &["build", "j", "--grace", "1"]);
    let code = exit_within(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(4));
    let all = builds(d);
    let j = build_of(&all, "j");
    assert_eq!(j["status"], "failed");
    assert_eq!(j["timed_out"], true, "{j}");
    assert!(!alive("sleep 3002.5"), "the daemon outlived its build");
    assert!(!alive("sleep 3002.6"));
}

/// A real daemon: a new session, its output to /dev/null, the channel closed. Nothing
/// holds the build, and nothing outlives it either.
#[test]
fn a_daemon_that_let_go_of_everything_is_killed_when_its_build_ends() {
    let dir = setup(
        "jobs:\n  - {id: j, run: \"setsid sh -c 'exec sleep 3003.5' </dev/null >/dev/null 2>&1 3>&- &\"}\n",
    );
    let d = dir.path();
    let mut child = start(d, &["build", "j"]);
    assert_eq!(exit_within(&mut child, Duration::from_secs(20)), Some(0));
    assert!(!alive("sleep 3003.5"), "the daemon outlived the run");
}

/// The same, with the portable waiter (SIGCHLD and waitpid, as where there is no pidfd).
#[test]
fn the_portable_waiter_ends_builds_the_same_way() {
    let dir = setup(
        "jobs:
  - {id: a, run: 'setsid sleep 3004.5 & echo out; exit 3'}
  - {id: b, run: 'echo fine'}
",
    );
    let d = dir.path();
    let out = jobctl(d)
        .env("JOBCTL_WAIT", "sigchld")
        .args(["build", "--all", "-j", "2"])
        .timeout(Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let all = builds(d);
    assert_eq!(build_of(&all, "a")["exit_code"], 3);
    assert_eq!(build_of(&all, "b")["status"], "successful");
    assert!(!alive("sleep 3004.5"));
}

/// SIGHUP (a closed terminal, a dropped SSH session) and SIGTERM cancel the run like the
/// first Ctrl-C: every job and what it started is ended, the builds are recorded
/// cancelled with the signal named, and jobctl exits as after Ctrl-C (SIGHUP used to
/// kill jobctl at once and leave its jobs running).
#[test]
fn sighup_and_sigterm_cancel_like_ctrl_c_and_are_named() {
    for (sig, name, marker) in [
        (libc::SIGHUP, "SIGHUP", "3005.5"),
        (libc::SIGTERM, "SIGTERM", "3006.5"),
    ] {
        let config = format!(
            "jobs:\n  - {{id: j, run: 'setsid sleep {marker}1 & sleep {marker}2; wait'}}\n"
        );
        let dir = setup(&config);
        let d = dir.path();
        let mut child = start(d, &["build", "j", "--grace", "1"]);
        wait_until("the job's processes", Duration::from_secs(20), || {
            alive(&format!("sleep {marker}1")) && alive(&format!("sleep {marker}2"))
        });
        signal(&child, sig);
        assert_eq!(exit_within(&mut child, Duration::from_secs(20)), Some(4));
        assert!(
            !alive(&format!("sleep {marker}")),
            "{name} left a job running"
        );
        let all = builds(d);
        let j = build_of(&all, "j");
        assert_eq!(j["status"], "cancelled", "{j}");
        assert_eq!(j["error"], format!("cancelled ({name})"), "{j}");
    }
}

/// A jobctl killed with SIGKILL cannot clean up; the next start does, including a job's
/// process that had left the job's group.
#[test]
fn after_kill_9_the_next_start_kills_what_left_the_group_too() {
    let dir = setup(
        "jobs:
  - {id: slow, run: 'setsid sleep 3007.5 & sleep 3007.6; wait'}
  - {id: quick, run: 'true'}
",
    );
    let d = dir.path();
    let mut child = start(d, &["build", "slow"]);
    wait_until("the job's processes", Duration::from_secs(20), || {
        alive("sleep 3007.5") && alive("sleep 3007.6")
    });
    // The build's row knows its process group once the first batch is written.
    wait_until("the build's process group", Duration::from_secs(20), || {
        builds(d).first().is_some_and(|b| b["status"] == "running")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive("sleep 3007.5"), "the job outlives a killed jobctl");
    let (code, out, err) = run(d, &["build", "quick"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("closed build 1 of slow: runner died"), "{out}");
    assert!(
        !alive("sleep 3007.5"),
        "the escaped process survived recovery"
    );
    assert!(!alive("sleep 3007.6"));
}

// --- Secrets stay secret ------------------------------------------------------------------

/// Values too long for the environment reach the job through a folder of files, which
/// hold the secrets too: private (0700, files 0600), removed when the build ends, and
/// removed by the next start after a kill -9 (it used to stay in /tmp for good).
#[test]
fn the_values_folder_is_private_and_removed_even_after_kill_9() {
    use std::os::unix::fs::PermissionsExt;

    let big = "x".repeat(140_000);
    let config = format!(
        "secrets: {{token: tok-3009-secret}}
jobs:
  - {{id: slow, run: 'sleep 3009.5', kwargs: {{BIG: {big}, TOKEN: !secret token}}}}
  - {{id: quick, run: 'true', kwargs: {{BIG: {big}}}}}
"
    );
    let dir = setup(&config);
    let d = dir.path();
    let tmp = tempfile::tempdir().unwrap();
    let values = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("jobctl-values-")
            })
            .collect()
    };
    // A build that ends removes its folder.
    let out = jobctl(d)
        .env("TMPDIR", tmp.path())
        .args(["build", "quick"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(values().is_empty(), "{:?}", values());

    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("jobctl"))
        .current_dir(d)
        .env("TMPDIR", tmp.path())
        .args(["build", "slow"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the job", Duration::from_secs(20), || alive("sleep 3009.5"));
    let folders = values();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folders[0]), 0o700);
    let files: Vec<_> = std::fs::read_dir(&folders[0]).unwrap().flatten().collect();
    assert!(!files.is_empty());
    for file in &files {
        assert_eq!(mode(&file.path()), 0o600, "{file:?}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(values().len(), 1, "a killed runner cannot remove it");
    let out = jobctl(d)
        .env("TMPDIR", tmp.path())
        .args(["build", "quick", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        values().is_empty(),
        "the next start removes it: {:?}",
        values()
    );
    assert!(!alive("sleep 3009.5"));
}

// --- A job's output cannot crash, hang, or bloat jobctl ------------------------------------

/// The storage URLs to run a story against: SQLite in the folder, and a fresh PostgreSQL
/// database (skipped with a line outside CI when no server is reachable).
fn backends(test: &str, rt: &tokio::runtime::Runtime) -> Vec<(String, Option<common::PgDatabase>)> {
    let mut all = vec![("sqlite://.jobctl/state.db".to_owned(), None)];
    if let Some(pg) = rt.block_on(common::PgDatabase::create(test)) {
        all.push((pg.url.clone(), Some(pg)));
    }
    all
}

/// `jobctl install` where the database is PostgreSQL (SQLite makes its own schema).
fn install(dir: &Path, storage: &str) {
    if storage.starts_with("postgres") {
        let (code, out, err) = run(dir, &["install"]);
        assert_eq!(code, 0, "{out}{err}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Everything stored, as text: the database file's bytes (SQLite, WAL included) or every
/// row of every table (PostgreSQL).
fn stored(dir: &Path, storage: &str, rt: &tokio::runtime::Runtime) -> String {
    if storage.starts_with("sqlite") {
        let mut all = Vec::new();
        for file in ["state.db", "state.db-wal"] {
            all.extend(std::fs::read(dir.join(".jobctl").join(file)).unwrap_or_default());
        }
        return String::from_utf8_lossy(&all).into_owned();
    }
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(storage).await.unwrap();
        let mut text = String::new();
        for table in ["builds", "logs", "progress", "build_pins"] {
            let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT string_agg(t::text, E'\\n') FROM {table} t"
            )))
            .fetch_one(&mut conn)
            .await
            .unwrap();
            text.push_str(&rows.unwrap_or_default());
        }
        text
    })
}

/// Numbers at the edge of i64: two groups whose totals would wrap when summed, in the
/// live tree (it used to panic on the ETA), in `show`, `jobs`, the plain lines.
#[test]
fn progress_at_the_edge_of_i64_neither_panics_nor_wraps() {
    let dir = setup(
        r#"jobs:
  - id: huge
    run: |
      "$JOBCTL" report progress --group a 0 9223372036854775807
      "$JOBCTL" report progress --group b 9223372036854775806 9223372036854775807
      sleep 1.2
      "$JOBCTL" report progress --group a 5 9223372036854775807
      "$JOBCTL" report progress --group b 9223372036854775807 9223372036854775807
"#,
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "huge", "--progress", "tree"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, show, err) = run(d, &["show", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!show.contains("-2"), "a sum wrapped: {show}");
    assert!(
        show.contains("9223372036854775807/9223372036854775807"),
        "the sum saturates: {show}"
    );
}

/// A group path 100,000 names deep (it overflowed the stack), one 20,000 deep, 20,000
/// distinct groups, a name of 12,000 characters: each refused, the first with a warning,
/// all counted; the job goes on and succeeds, and `show` and the live tree stay whole.
#[test]
fn deep_long_and_countless_progress_groups_are_refused_and_counted() {
    let dir = setup(
        r#"jobs:
  - id: groups
    run: |
      python3 - <<'PY'
      import json, os
      ch = os.fdopen(3, "w")
      def send(group): ch.write(json.dumps({"type": "progress", "group": group, "current": 1}) + "\n")
      send(["g"] * 100000)
      send(["g"] * 20000)
      send(["x" * 12000])
      for i in range(20000):
          send(["many", str(i)])
      ch.flush()
      PY
      echo done
"#,
    );
    let d = dir.path();
    let mut cmd = jobctl(d);
    let out = cmd
        .args(["build", "groups", "--progress", "tree"])
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let (code, logs, _) = run(d, &["logs", "1"]);
    assert_eq!(code, 0);
    let refused: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("progress refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{logs}");
    assert!(
        refused[0].contains("a group path 100000 names deep (the limit is 16)"),
        "{logs}"
    );
    assert!(
        logs.contains("10003 progress report(s) refused in all"),
        "{logs}"
    );
    let (code, show, err) = run(d, &["show", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(show.lines().count() < 20_000, "every group shows");
}

/// Channel log messages, return values and progress are bounded like stdout: 200 MB of
/// log messages on fd 3 keep jobctl small and the database small, with the head, the
/// tail and a line for what was left out; a 50 MB return value fails the build saying
/// why (it used to take 481 MB).
#[test]
fn a_flood_on_the_channel_is_capped_like_stdout() {
    let dir = setup(
        r#"jobs:
  - id: flood
    run: |
      echo '{"type":"log","message":"first"}' >&3
      yes '{"type":"log","message":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}' | head -n 2000000 >&3
      echo '{"type":"log","message":"the very last"}' >&3
  - id: bigretval
    run: |
      { printf '{"type": "retval", "value": "'; head -c 50000000 /dev/zero | tr '\0' x; printf '"}\n'; } >&3
"#,
    );
    let d = dir.path();
    let (code, peak_mb) = peak_rss(d, &["build", "flood", "--progress", "plain"]);
    assert_eq!(code, 0);
    assert!(peak_mb < 100, "jobctl peaked at {peak_mb} MB");
    // What is kept is the head and the tail (8 + 2 MiB of messages); the files hold it
    // with their indexes, and the WAL may still hold a copy of those pages.
    let (_, raw, _) = run(d, &["logs", "1", "--raw"]);
    assert!(raw.len() < 11 << 20, "{} bytes of log kept", raw.len());
    let size = std::fs::metadata(d.join(".jobctl/state.db")).unwrap().len()
        + std::fs::metadata(d.join(".jobctl/state.db-wal")).map_or(0, |m| m.len());
    assert!(size < 80_000_000, "the database grew to {size} bytes");
    let (_, logs, _) = run(d, &["logs", "1"]);
    assert!(
        logs.lines().next().unwrap().ends_with("first"),
        "{}",
        &logs[..200]
    );
    assert!(logs.trim_end().ends_with("the very last"));
    assert!(logs.contains("bytes) of output left out]"));

    let (code, peak_mb) = peak_rss(d, &["build", "bigretval", "--progress", "plain"]);
    assert_eq!(code, 4);
    assert!(peak_mb < 100, "jobctl peaked at {peak_mb} MB");
    let all = builds(d);
    let b = build_of(&all, "bigretval");
    assert_eq!(b["status"], "failed");
    assert_eq!(
        b["error"], "its return value is 50000031 bytes, over the limit of 1048576 bytes",
        "{b}"
    );
}

/// Whatever bytes a job writes are stored on both backends: NUL (in a line, a channel
/// log, a return value) becomes `␀`, invalid UTF-8 becomes U+FFFD; on PostgreSQL one
/// such job used to abort the whole run and leave builds `running`.
#[test]
fn nul_and_invalid_utf8_are_stored_on_both_backends() {
    let rt = runtime();
    for (storage, _pg) in backends("hostile_nul", &rt) {
        let dir = setup(&format!(
            r#"storage: {storage}
jobs:
  - id: binary
    run: |
      printf 'a\0b\n'
      printf 'bad \377\376 utf8\n'
      echo '{{"type":"log","message":"nul \u0000 here"}}' >&3
      echo '{{"type":"progress","group":["g\u0000"],"current":1,"status":"s\u0000"}}' >&3
      echo '{{"type":"retval","value":{{"k\u0000":"v\u0000"}}}}' >&3
  - id: other
    run: sleep 0.3; echo fine
"#
        ));
        let d = dir.path();
        install(d, &storage);
        let (code, out, err) = run(d, &["build", "--all", "-j", "2"]);
        assert_eq!(code, 0, "{storage}: {out}{err}");
        let all = builds(d);
        assert_eq!(build_of(&all, "other")["status"], "successful");
        let binary = build_of(&all, "binary");
        assert_eq!(binary["status"], "successful");
        assert_eq!(
            binary["retval"],
            serde_json::json!({"k\u{2400}": "v\u{2400}"})
        );
        let (_, logs, _) = run(d, &["logs", "1"]);
        assert!(logs.contains("a\u{2400}b"), "{storage}: {logs}");
        assert!(
            logs.contains("bad \u{fffd}\u{fffd} utf8"),
            "{storage}: {logs}"
        );
        assert!(logs.contains("nul \u{2400} here"), "{storage}: {logs}");
    }
}

/// A secret never reaches the database, whatever form a job gives it: JSON-escaped
/// (`echo "$JOBCTL_KWARGS"`), shell-quoted (`set -x` in bash), base64 of the whole value,
/// `\u`-escaped in a channel log, a progress status and a return value (decoded, then
/// masked), a `function:` job's return value, and split by the 64 KiB line cut. On both
/// backends; the stored text is searched, not what `logs` shows.
#[test]
fn a_secret_is_masked_in_every_form_before_it_is_stored() {
    use base64::Engine as _;

    let secret = r#"Zq9"x\K'p3010"#;
    let rt = runtime();
    for (storage, _pg) in backends("hostile_secrets", &rt) {
        let dir = setup(&format!(
            r#"storage: {storage}
secrets: {{token: "Zq9\"x\\K'p3010"}}
jobs:
  - id: forms
    kwargs: {{T: !secret token}}
    run: |
      printf '%s\n' "$JOBCTL_KWARGS"
      echo "$JOBCTL_KWARGS"
      printf '%s' "$T" | base64
      bash -c 'set -x; : "$T"'
      python3 - <<'PY'
      import os
      e = "".join("\\u%04x" % ord(c) for c in os.environ["T"])
      ch = os.fdopen(3, "w")
      ch.write('{{"type":"log","message":"log %s"}}\n' % e)
      ch.write('{{"type":"progress","current":1,"status":"status %s"}}\n' % e)
      ch.write('{{"type":"retval","value":{{"k":"%s"}}}}\n' % e)
      PY
  - id: straddle
    kwargs: {{T: !secret token}}
    run: head -c 65530 /dev/zero | tr '\0' a; printf '%s\n' "$T"
  - id: function
    function: testing
    kwargs: {{retval: !secret token}}
"#
        ));
        let d = dir.path();
        install(d, &storage);
        let (code, out, err) = run(d, &["build", "--all"]);
        assert_eq!(code, 0, "{storage}: {out}{err}");
        let text = stored(d, &storage, &rt);
        let json = &serde_json::to_string(secret).unwrap()[1..secret.len() + 3];
        let quoted = secret.replace('\'', r"'\''");
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        for (form, leak) in [
            ("plain", secret),
            ("JSON-escaped", json),
            (
                "JSON-escaped through dash's echo",
                &json.replace(r"\\", r"\"),
            ),
            ("shell-quoted", quoted.as_str()),
            ("base64", b64.trim_end_matches('=')),
            ("split at the line cut", r#"aZq9"x"#),
        ] {
            assert!(
                !text.contains(leak),
                "{storage}: the {form} form was stored: {leak}"
            );
        }
        let (_, logs, _) = run(d, &["logs", "1"]);
        assert!(logs.contains(r#"{"T":"********"}"#), "{storage}: {logs}");
        assert!(logs.contains("log ********"), "{storage}: {logs}");
        let all = builds(d);
        assert_eq!(
            build_of(&all, "forms")["retval"],
            serde_json::json!({"k": "********"})
        );
        assert_eq!(build_of(&all, "function")["retval"], "********");
    }
}

/// A job's stderr and a config's title carrying terminal escapes (OSC 52 writes the
/// reader's clipboard, OSC 0 retitles the window, CSI 2J clears the screen) reach no
/// terminal raw: not the failure summary of `build`, nor `logs`, `show`, `jobs`, `graph`
/// or `builds`; `logs --raw` alone prints them as stored, for piping.
#[test]
fn terminal_escapes_from_jobs_and_configs_are_made_visible() {
    let dir = setup(
        r#"jobs:
  - id: evil
    title: "title \e]0;pwned\a here"
    run: printf 'clip \033]52;c;aGk=\007 clear \033[2J end\n' >&2; exit 1
"#,
    );
    let d = dir.path();
    let (code, out, _) = run(d, &["build", "evil"]);
    assert_eq!(code, 4);
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    assert!(
        out.contains("clip ^[]52;c;aGk=^G clear ^[[2J end"),
        "{out:?}"
    );
    for args in [
        &["logs", "1"][..],
        &["show", "1"],
        &["jobs"],
        &["graph"],
        &["builds"],
    ] {
        let (code, out, err) = run(d, args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            !out.contains('\x1b') && !out.contains('\x07'),
            "{args:?}: {out:?}"
        );
    }
    let (_, jobs, _) = run(d, &["jobs"]);
    assert!(jobs.contains("title ^[]0;pwned^G here"), "{jobs:?}");
    let (_, raw, _) = run(d, &["logs", "1", "--raw"]);
    assert_eq!(raw, "clip \x1b]52;c;aGk=\x07 clear \x1b[2J end\n");
}

/// A job id far longer than any column (stored by an older jobctl, or written into the
/// database by hand) prints without a panic (`{:width$}` past 65,535 used to abort
/// `builds`), and a config cannot make one: ids over 200 bytes and titles over 1,000
/// characters are mistakes at load.
#[test]
fn stored_ids_of_any_length_print_and_configs_bound_them() {
    let dir = setup("jobs:\n  - {id: a, run: 'true'}\n");
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "a"]);
    assert_eq!(code, 0, "{out}{err}");
    let rt = runtime();
    rt.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", d.join(".jobctl/state.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE builds SET job_id = ?")
            .bind("j".repeat(70_000))
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let (code, out, err) = run(d, &["builds"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&"j".repeat(70_000)));
    let (code, _, err) = run(d, &["show", "1"]);
    assert_eq!(code, 0, "{err}");

    let long = setup(&format!(
        "jobs:\n  - {{id: {}, run: 'true'}}\n",
        "x".repeat(70_000)
    ));
    let (code, _, err) = run(long.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("a job id of 70000 bytes is too long (the limit is 200)"),
        "{}",
        &err[..err.len().min(500)]
    );
}

/// A PostgreSQL password in `storage:` (in the user info or as `?password=`) is masked
/// in `jobctl config` and in the errors that name the database.
#[test]
fn a_database_password_is_never_printed() {
    let dir = setup(
        "storage: postgresql://postgres:pw-3011-secret@127.0.0.1:1/nope?password=pw-3011-other
jobs:
  - {id: a, run: 'true'}
",
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["config"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("pw-3011"), "{out}");
    assert!(out.contains("postgres:********@"), "{out}");
    for args in [&["jobs"][..], &["build", "a"], &["install"]] {
        let (code, out, err) = run(d, args);
        assert_ne!(code, 0);
        assert!(
            !out.contains("pw-3011") && !err.contains("pw-3011"),
            "{args:?}: {out}{err}"
        );
        assert!(
            err.contains("postgres:***@127.0.0.1:1/nope?password=***"),
            "{args:?}: {err}"
        );
    }
}

/// The database's password (trust auth here takes any) is masked in what jobs print, as
/// a secret is: a local build's job that prints its config, a worker's job that prints
/// the `JOBCTL_STORAGE` it inherited from the worker, on stdout and stderr. Before, only
/// the channel's messages were masked so; the lines went to the database as printed.
/// (Functions are handed the same masker.)
#[test]
fn the_database_password_is_masked_in_what_jobs_print() {
    let rt = runtime();
    let Some(pg) = rt.block_on(common::PgDatabase::create("password_in_output")) else {
        return;
    };
    let url = pg.url.replacen("postgres@", "postgres:pw-7723-secret@", 1);
    assert_ne!(
        url, pg.url,
        "the test database's URL names the user postgres"
    );
    let dir = setup(&format!(
        "storage: {url}\njobs:\n  - {{id: local, run: 'cat jobs.yaml.j2'}}\n  \
         - {{id: queued, run: 'echo \"$JOBCTL_STORAGE\"; echo \"$JOBCTL_STORAGE\" >&2'}}\n"
    ));
    let d = dir.path();
    install(d, &url);
    let (code, out, err) = run(d, &["build", "local", "--progress", "plain"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(d, &["build", "queued", "--queue"]);
    assert_eq!(code, 0, "{out}{err}");
    let worker = jobctl(d)
        .args(["worker", "--until-idle"])
        .env("JOBCTL_STORAGE", &url)
        .output()
        .unwrap();
    assert!(worker.status.success(), "{worker:?}");
    assert!(!String::from_utf8_lossy(&worker.stdout).contains("pw-7723"));
    for job in ["local", "queued"] {
        let (code, logs, err) = run(d, &["logs", &build_of(&builds(d), job)["id"].to_string()]);
        assert_eq!(code, 0, "{err}");
        assert!(logs.contains("postgres:********@"), "{job}: {logs}");
        assert!(!logs.contains("pw-7723"), "{job}: {logs}");
    }
    let all = stored(d, &url, &rt);
    assert!(all.contains("********"));
    assert!(!all.contains("pw-7723"), "the password is stored");
}

// --- A config cannot exhaust the machine ------------------------------------------------

/// 10^10 loop iterations stop at the template's fuel, with the limit named and how to
/// raise it; `{% include %}` of a device (`/dev/zero` through a link in the folder: it
/// read 2.1 GB) or of a file over the size limit is refused without reading it.
#[test]
fn templates_run_out_of_fuel_and_includes_are_bounded() {
    let dir = setup(
        "jobs:\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}\n",
    );
    let d = dir.path();
    let out = jobctl(d)
        .env("JOBCTL_TEMPLATE_FUEL", "100000")
        .arg("check")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "the template ran too long: it took more than 100000 steps (set JOBCTL_TEMPLATE_FUEL"
        ),
        "{err}"
    );

    std::os::unix::fs::symlink("/dev/zero", d.join("zero")).unwrap();
    std::fs::write(d.join("jobs.yaml.j2"), "{% include 'zero' %}\njobs: []\n").unwrap();
    let (code, _, err) = run(d, &["check"]);
    assert_eq!(code, 1);
    assert!(err.contains("`zero` is not a regular file"), "{err}");

    std::fs::write(d.join("big.txt"), "a".repeat(200_000)).unwrap();
    std::fs::write(
        d.join("jobs.yaml.j2"),
        "{% include 'big.txt' %}\njobs: []\n",
    )
    .unwrap();
    let out = jobctl(d)
        .env("JOBCTL_MAX_CONFIG_BYTES", "100000")
        .arg("check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("`big.txt` is over the limit of 100000 bytes (set JOBCTL_MAX_CONFIG_BYTES"),
        "{err}"
    );
}

/// `"{{ env('X') }}"` breaks on a value holding `"` or `\`; `{{ env('X') | tojson }}`
/// quotes any value for YAML (JSON is YAML), and the job receives it byte for byte.
#[test]
fn tojson_quotes_any_value_for_yaml() {
    let value = r#"say "hi" \ and \n 'bye' {{ }} # not a comment"#;
    let dir = setup(
        "jobs:
  - id: quoted
    kwargs: {V: {{ env('JOBCTL_TEST_VALUE') | tojson }}}
    run: printf '%s' \"$V\" > got.txt
",
    );
    let d = dir.path();
    let out = jobctl(d)
        .env("JOBCTL_TEST_VALUE", value)
        .args(["build", "quoted"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(d.join("got.txt")).unwrap(), value);
}

/// A job's `cleanup` (run by `jobctl delete`) starts the way builds do: what it leaves
/// behind is killed, its timeout holds, its output is masked and made visible.
#[test]
fn a_cleanup_runs_under_the_same_rules_as_a_build() {
    let dir = setup(
        "secrets: {token: tok-3012-secret}
jobs:
  - id: a
    run: 'true'
    kwargs: {T: !secret token}
    cleanup: \"setsid sleep 3012.5 & echo cleaning tok-3012-secret; printf 'x\\\\033[2Jy\\\\n'\"
  - id: slow
    run: 'true'
    timeout: 1s
    cleanup: sleep 3012.6
",
    );
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "--all"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(d, &["delete", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cleaning ********\nx^[[2Jy\n"), "{out:?}");
    assert!(!alive("sleep 3012.5"), "the cleanup left a process behind");
    let started = Instant::now();
    let (code, _, err) = run(d, &["delete", "2"]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("the cleanup of build 2 failed (timed out)"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!alive("sleep 3012.6"));
}

/// When the database refuses one build's data (here a PostgreSQL trigger refuses a log
/// line; before the guard, a NUL or an oversized group did), that build fails, saying
/// why, and the run goes on: other builds end as they would, nothing is left `running`
/// (it used to abort the run, exit 3, cancel the rest).
#[test]
fn a_build_whose_data_the_database_refuses_fails_alone() {
    let rt = runtime();
    let Some(pg) = rt.block_on(common::PgDatabase::create("hostile_refused")) else {
        return;
    };
    let dir = setup(&format!(
        "storage: {}
jobs:
  - {{id: poisoned, run: 'echo poison-3013'}}
  - {{id: fine, run: 'sleep 0.5; echo fine'}}
",
        pg.url
    ));
    let d = dir.path();
    install(d, &pg.url);
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
        for statement in [
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
               IF NEW.message LIKE '%poison%' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse BEFORE INSERT ON logs FOR EACH ROW EXECUTE FUNCTION refuse()",
        ] {
            sqlx::query(statement).execute(&mut conn).await.unwrap();
        }
    });
    let (code, out, err) = run(d, &["build", "--all", "-j", "2"]);
    assert_eq!(code, 4, "{out}{err}");
    let all = builds(d);
    let poisoned = build_of(&all, "poisoned");
    assert_eq!(poisoned["status"], "failed", "{poisoned}");
    assert!(
        poisoned["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot store its output: "),
        "{poisoned}"
    );
    assert_eq!(build_of(&all, "fine")["status"], "successful");
    assert!(out.contains("1 succeeded, 1 failed"), "{out}");
}

/// A build's reason as the database holds it is read back typed; one a newer jobctl
/// wrote, or one that is not JSON at all, leaves the build readable with its words.
#[test]
fn a_reason_this_jobctl_cannot_read_leaves_the_build_its_words() {
    let dir = setup("jobs:\n  - {id: a, run: 'exit 3'}\n");
    let d = dir.path();
    let (code, _, _) = run(d, &["build", "a"]);
    assert_eq!(code, 4);
    let all = builds(d);
    let a = build_of(&all, "a");
    assert_eq!(a["reason"], serde_json::json!({"kind": "exit", "code": 3}));
    assert_eq!(a["error"], "exit status 3");
    let rt = runtime();
    for stored in [
        r#"{"kind": "from_the_future", "code": 3}"#,
        "not json {",
        "[1, 2]",
        "",
    ] {
        rt.block_on(async {
            use sqlx::Connection;
            let url = format!("sqlite://{}", d.join(".jobctl/state.db").display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("UPDATE builds SET reason = ?")
                .bind(stored)
                .execute(&mut conn)
                .await
                .unwrap();
        });
        let all = builds(d);
        let a = build_of(&all, "a");
        assert_eq!(a["reason"], serde_json::Value::Null, "{stored}");
        assert_eq!(a["error"], "exit status 3", "{stored}");
        let (code, out, err) = run(d, &["show", "1"]);
        assert_eq!(code, 0, "{stored}: {err}");
        assert!(out.contains("exit status 3"), "{stored}: {out}");
    }
}

/// A duration past a century in a build's snapshot (an older jobctl, a hand edit) — a
/// retry delay whose time would overflow the clock — crashed every worker that claimed
/// the build and every command that rescued it. Now the worker fails that build, naming
/// the field, and goes on; the rescue of a lost build with one records it failed; every
/// command still works. (A config cannot say it: that is a mistake at load.)
#[test]
fn a_duration_past_a_century_in_a_snapshot_crashes_nothing() {
    let dir = setup(
        "jobs:\n  - {id: queued, run: 'exit 1', retries: 1, retry_delay: 1s}\n  \
         - {id: lost, run: 'exit 1', retries: 1, retry_delay: 1s}\n",
    );
    let d = dir.path();
    for job in ["queued", "lost"] {
        let (code, out, err) = run(d, &["build", job, "--queue"]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let rt = runtime();
    rt.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", d.join(".jobctl/state.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE builds SET config = json_set(config, '$.retry_delay', '99999999d')")
            .execute(&mut conn)
            .await
            .unwrap();
        // `lost` was claimed by a runner whose lease ran out long ago.
        sqlx::query(
            "UPDATE builds SET status = 'running', started_at = ?1, lease_until = ?1, \
             runner_id = 'gone', token = token + 1, host = 'elsewhere', pid = 1 WHERE job_id = 'lost'",
        )
        .bind(chrono::Utc::now() - chrono::Duration::hours(1))
        .execute(&mut conn)
        .await
        .unwrap();
    });
    let (code, out, err) = run(d, &["builds"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(d, &["worker", "--until-idle", "--name", "w"]);
    assert_eq!(code, 0, "{out}{err}");
    let all = builds(d);
    assert_eq!(all.len(), 2, "no retry was queued: {all:?}");
    for build in &all {
        assert_eq!(build["status"], "failed", "{build}");
    }
    let queued = all.iter().find(|b| b["job_id"] == "queued").unwrap();
    let error = queued["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("retry_delay") && error.contains("too long a duration"),
        "{queued}"
    );
    let lost = all.iter().find(|b| b["job_id"] == "lost").unwrap();
    assert_eq!(lost["reason"]["kind"], "runner_lost", "{lost}");
    let (code, out, err) = run(d, &["show", "1"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A build whose snapshot does not read (JSON nested 300 deep, past what the parser
/// takes; no config can say it, something other than jobctl wrote it) made every claim
/// that reached it fail: on both backends the worker sat silent and ran nothing, not even
/// the healthy build queued after it, and `jobctl builds` failed; one whose runner was
/// lost made every rescue, so every command, fail. Now it is claimed and fails saying
/// why, the lost one is rescued, the healthy one runs, the listings read.
#[test]
fn a_snapshot_that_does_not_read_fails_its_build_and_blocks_nothing() {
    let rt = runtime();
    for (storage, _pg) in backends("snapshot_unreadable", &rt) {
        let dir = setup(&format!(
            "storage: {storage}\njobs:\n  - {{id: bad, run: 'true'}}\n  - {{id: good, run: 'echo ran > good.txt'}}\n  \
             - {{id: lost, run: 'true', retries: 1}}\n"
        ));
        let d = dir.path();
        install(d, &storage);
        for job in ["bad", "good", "lost"] {
            let (code, out, err) = run(d, &["build", job, "--queue"]);
            assert_eq!(code, 0, "{out}{err}");
        }
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        // `lost` was claimed by a runner elsewhere whose lease ran out long ago.
        const LOST: &str = "UPDATE builds SET status = 'running', started_at = $1, lease_until = $1, \
             runner_id = 'gone', token = token + 1, host = 'elsewhere', pid = 1 WHERE job_id = 'lost'";
        let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        rt.block_on(async {
            use sqlx::Connection;
            if storage.starts_with("sqlite") {
                let url = format!("sqlite://{}", d.join(".jobctl/state.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("UPDATE builds SET config = json_set(config, '$.args', json(?)) WHERE job_id <> 'good'")
                    .bind(&deep)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query(LOST).bind(an_hour_ago).execute(&mut conn).await.unwrap();
            } else {
                let mut conn = sqlx::PgConnection::connect(&storage).await.unwrap();
                sqlx::query("UPDATE builds SET config = jsonb_set(config, '{args}', $1::jsonb) WHERE job_id <> 'good'")
                    .bind(&deep)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query(LOST).bind(an_hour_ago).execute(&mut conn).await.unwrap();
            }
        });
        let (code, out, err) = run(d, &["builds"]);
        assert_eq!(code, 0, "{storage}: {out}{err}");
        let (code, out, err) = run(d, &["worker", "--until-idle"]);
        assert_eq!(code, 0, "{storage}: {out}{err}");
        assert!(out.contains("1 succeeded, 1 failed"), "{storage}: {out}");
        assert_eq!(
            std::fs::read_to_string(d.join("good.txt")).unwrap(),
            "ran\n"
        );
        let all = builds(d);
        let bad = all.iter().find(|b| b["job_id"] == "bad").unwrap();
        assert_eq!(bad["status"], "failed", "{storage}: {bad}");
        assert!(
            bad["error"].as_str().is_some_and(
                |e| e.starts_with("cannot read the build's snapshot: recursion limit exceeded")
            ),
            "{storage}: {bad}"
        );
        let (code, out, err) = run(d, &["show", &bad["id"].to_string()]);
        assert_eq!(code, 0, "{storage}: {out}{err}");
        // Its retries could not be read: failed, not retried.
        let lost: Vec<_> = all.iter().filter(|b| b["job_id"] == "lost").collect();
        assert_eq!(lost.len(), 1, "{storage}: {lost:?}");
        assert_eq!(
            (
                lost[0]["status"].as_str(),
                lost[0]["reason"]["kind"].as_str()
            ),
            (Some("failed"), Some("runner_lost")),
            "{storage}: {}",
            lost[0]
        );
    }
}

/// A return value nested deeper than 100 fails its build, on the channel and from a
/// function: the database reads JSON back only to 128 deep, so a deeper one stored
/// (a function of a program that embeds jobctl can return any depth) would make every
/// read of its build, and every claim of what depends on it, fail.
#[test]
fn a_return_value_nested_too_deep_fails_its_build() {
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let dir = setup(&format!(
        "jobs:\n  - id: shell\n    run: |\n      echo '{{\"type\": \"retval\", \"value\": {}}}' >&3\n  \
         - {{id: function, function: testing, kwargs: {{retval: {}}}}}\n  \
         - id: fine\n    run: |\n      echo '{{\"type\": \"retval\", \"value\": {}}}' >&3\n",
        deep(101),
        deep(110),
        deep(100)
    ));
    let d = dir.path();
    let (code, out, err) = run(d, &["build", "--all", "--progress", "plain"]);
    assert_eq!(code, 4, "{out}{err}");
    let all = builds(d);
    for (job, depth) in [("shell", 101), ("function", 110)] {
        let build = build_of(&all, job);
        assert_eq!(build["status"], "failed", "{build}");
        assert_eq!(
            build["error"],
            format!("its return value is nested {depth} deep, over the limit of 100"),
            "{build}"
        );
        assert_eq!(build["retval"], serde_json::Value::Null);
    }
    let fine = build_of(&all, "fine");
    assert_eq!(fine["status"], "successful", "{fine}");
    assert_eq!(fine["retval"].to_string(), deep(100));
    let (code, out, err) = run(d, &["builds"]);
    assert_eq!(code, 0, "{out}{err}");
}
