//! The shell job runner against real processes: values arrive byte for byte and are never
//! code, the channel works, timeouts and cancels leave nothing running, output is bounded,
//! secrets are masked.

mod common;

use std::time::Duration;

use common::alive;
use jobctl::exec::channel::Message;
use jobctl::exec::process::{Cancel, Exit, Output, OutputLimits, QUIET, ShellJob, run};
use jobctl::store::{LogLevel, Stream};
use serde_json::json;
use tokio::sync::{mpsc, watch};

fn job(command: &str, dir: &std::path::Path) -> ShellJob {
    ShellJob {
        name: "test_job".into(),
        build: 0,
        command: command.into(),
        args: Vec::new(),
        env: Vec::new(),
        workdir: dir.to_path_buf(),
        timeout: None,
        grace: Duration::from_millis(300),
        masker: Default::default(),
        limits: OutputLimits::default(),
        quiet: QUIET,
    }
}

async fn run_job(job: &ShellJob) -> (Exit, Vec<Output>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_cancel_tx, cancel) = watch::channel(Cancel::No);
    let exit = run(job, &tx, cancel).await.unwrap();
    drop(tx);
    let mut outputs = Vec::new();
    while let Some(o) = rx.recv().await {
        outputs.push(o);
    }
    (exit, outputs)
}

fn lines(outputs: &[Output], stream: Stream) -> Vec<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Line { stream: s, text } if *s == stream => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

const PAYLOADS: [&str; 12] = [
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
    "back\\slash \\n",
];

#[tokio::test]
async fn values_arrive_byte_for_byte_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job(
        r#"for a in "$@"; do printf '%s' "$a" | od -An -tx1 | tr -d ' \n'; echo; done
           printf '%s' "$VALUE" | od -An -tx1 | tr -d ' \n'; echo"#,
        dir.path(),
    );
    for payload in PAYLOADS {
        j.args = vec![payload.to_owned()];
        j.env = vec![("VALUE".into(), payload.to_owned())];
        let (exit, outputs) = run_job(&j).await;
        assert!(exit.success(), "{exit:?}");
        let out = lines(&outputs, Stream::Stdout);
        assert_eq!(out, [hex(payload), hex(payload)], "{payload:?}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "something ran: {left:?}");
}

#[tokio::test]
async fn the_channel_carries_messages_and_bad_lines_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        r#"echo '{"type":"progress","group":["pages"],"current":1,"total":2}' >&"$JOBCTL_CHANNEL"
           echo 'hello out'
           echo 'hello err' >&2
           echo 'not json' >&3
           echo '{"type":"retval","value":{"n":1}}' >&3
           printf '%s\n' '{"type":"log","level":"error","message":"last"}' >&3"#,
        dir.path(),
    );
    let (exit, outputs) = run_job(&j).await;
    assert!(exit.success());
    let messages: Vec<&Message> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        messages,
        [
            &Message::Progress {
                group: vec!["pages".into()],
                current: 1,
                total: Some(2),
                status: None
            },
            &Message::Retval {
                value: json!({"n": 1})
            },
            &Message::Log {
                level: LogLevel::Error,
                message: "last".into()
            },
        ]
    );
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::BadLine(b) if b.line == "not json"))
    );
    assert_eq!(lines(&outputs, Stream::Stdout), ["hello out"]);
    assert_eq!(exit.stderr_tail, ["hello err"]);
}

#[tokio::test]
async fn failures_keep_the_status_and_the_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        "for i in $(seq 1 30); do echo \"err $i\" >&2; done; exit 3",
        dir.path(),
    );
    let (exit, _) = run_job(&j).await;
    assert_eq!(exit.code, Some(3));
    assert_eq!(exit.reason(), jobctl::vocab::Reason::Exit { code: 3 });
    assert_eq!(exit.stderr_tail.len(), 20);
    assert_eq!(exit.stderr_tail.last().unwrap(), "err 30");
}

/// The `SigBlk:` / `SigIgn:` mask of a `/proc/…/status` text.
fn signal_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[tokio::test]
async fn a_job_starts_in_its_own_group_with_no_signal_blocked_and_sigpipe_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let before = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let j = job(
        // Read by the shell itself: a command it forks could catch it with every signal
        // blocked, as dash blocks them around each fork.
        "while IFS= read -r l; do echo \"$l\"; done < /proc/$$/status
         echo \"pid $$ pgid $(ps -o pgid= $$)\"; yes | head -n 1",
        dir.path(),
    );
    let (exit, outputs) = run_job(&j).await;
    assert!(exit.success(), "{exit:?} {outputs:?}");
    let out = lines(&outputs, Stream::Stdout).join("\n");
    assert_eq!(signal_mask(&out, "SigBlk:"), 0, "{out}");
    // jobctl (Rust) ignores SIGPIPE; an ignored signal stays ignored across exec.
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(signal_mask(&out, "SigIgn:") & sigpipe, 0, "{out}");
    let ids = out.lines().find_map(|l| l.strip_prefix("pid ")).unwrap();
    let (pid, pgid) = ids.split_once(" pgid ").unwrap();
    assert_eq!(pid.trim(), pgid.trim(), "the job leads a group of its own");
    assert!(out.ends_with("\ny"), "`yes | head` ends as usual: {out}");
    // The thread that started the job blocks every signal while it does; it gets its
    // own mask back.
    let after = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert_eq!(
        signal_mask(&after, "SigBlk:"),
        signal_mask(&before, "SigBlk:")
    );
}

#[tokio::test]
async fn a_job_that_cannot_start_is_an_error_not_a_build_of_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let j = job("echo never", &dir.path().join("no such folder"));
    let (tx, _rx) = mpsc::unbounded_channel();
    let (_cancel_tx, cancel) = watch::channel(Cancel::No);
    let err = run(&j, &tx, cancel).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn a_job_that_ends_at_once_is_read_whole_and_one_that_fills_a_pipe_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let numbers = |n: usize| -> Vec<String> { (1..=n).map(|i| i.to_string()).collect() };
    let short = r#"seq 1 2000; echo oops >&2; echo '{"type": "retval", "value": [1, 2]}' >&3"#;
    // Ends long before its pipes would be watched: all it wrote is read at its end, in
    // order, without the runtime.
    let mut j = job(short, dir.path());
    j.quiet = Duration::from_secs(600);
    let (exit, outputs) = run_job(&j).await;
    assert!(exit.success(), "{exit:?}");
    assert!(
        !exit.watched,
        "a job that ended at once was read at its end"
    );
    assert_eq!(lines(&outputs, Stream::Stdout), numbers(2000));
    assert_eq!(lines(&outputs, Stream::Stderr), ["oops"]);
    assert!(outputs.contains(&Output::Message(Message::Retval {
        value: json!([1, 2])
    })));
    // The same job with its pipes watched from the start reads the same.
    j.quiet = Duration::ZERO;
    let (exit, watched) = run_job(&j).await;
    assert!(exit.watched, "{exit:?}");
    assert_eq!(lines(&watched, Stream::Stdout), numbers(2000));
    assert_eq!(lines(&watched, Stream::Stderr), ["oops"]);
    assert!(watched.contains(&Output::Message(Message::Retval {
        value: json!([1, 2])
    })));
    // Writes more than a pipe holds (576 KiB) at once: it waits for its pipes to be
    // watched, then goes on to its end.
    let j = job("seq 1 100000; echo end >&2", dir.path());
    let (exit, outputs) = run_job(&j).await;
    assert!(exit.success(), "{exit:?}");
    assert!(exit.watched, "a job that filled its pipe was watched");
    assert_eq!(lines(&outputs, Stream::Stdout), numbers(100000));
    assert_eq!(lines(&outputs, Stream::Stderr), ["end"]);
}

#[tokio::test]
async fn a_timeout_ends_the_whole_group_even_when_it_ignores_term() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job(
        "trap '' TERM; (trap '' TERM; sleep 31.4159) & sleep 31.4159; wait",
        dir.path(),
    );
    j.timeout = Some(Duration::from_millis(300));
    let start = std::time::Instant::now();
    let (exit, _) = run_job(&j).await;
    assert!(exit.timed_out);
    assert_eq!(exit.signal, Some(9), "TERM was ignored, KILL ended it");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!alive("sleep 31.4159"), "a child outlived the timeout");
}

#[tokio::test]
async fn cancel_ends_the_group_and_background_children_end_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let j = job(
        "sleep 27.1828 & echo started; sleep 27.1828; wait",
        dir.path(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel) = watch::channel(Cancel::No);
    let task = tokio::spawn(async move { run(&j, &tx, cancel).await });
    // Wait until the job runs, by what it says once its background child is started.
    let started = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(output) = rx.recv().await {
            if matches!(&output, Output::Line { text, .. } if text == "started") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "the job never said it started");
    cancel_tx.send(Cancel::Term).unwrap();
    let exit = task.await.unwrap().unwrap();
    assert!(exit.cancelled);
    assert!(!alive("sleep 27.1828"));

    // A job that leaves a child behind when it exits normally: the child ends too.
    let j = job("(trap '' TERM; sleep 16.1803) & echo started", dir.path());
    let (exit, outputs) = run_job(&j).await;
    assert!(exit.success());
    assert_eq!(lines(&outputs, Stream::Stdout), ["started"]);
    assert!(!alive("sleep 16.1803"));
}

#[tokio::test]
async fn output_past_the_cap_keeps_its_head_its_tail_and_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job("seq 1 100000; echo 'the last line' >&2", dir.path());
    j.limits = OutputLimits {
        head: 1000,
        tail: 1000,
    };
    let (exit, outputs) = run_job(&j).await;
    assert!(exit.success());
    let out = lines(&outputs, Stream::Stdout);
    assert_eq!(out.first().unwrap(), "1");
    let dropped = outputs.iter().find_map(|o| match o {
        Output::Dropped { lines, .. } => Some(*lines),
        _ => None,
    });
    assert!(dropped.unwrap() > 99_000, "{dropped:?}");
    assert_eq!(lines(&outputs, Stream::Stderr), ["the last line"]);
    assert!(out.contains(&"100000".to_owned()), "the tail is kept");
}

#[tokio::test]
async fn a_secret_never_comes_out_even_split_across_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job(
        r#"printf 'token=%s\n' "$TOKEN"
           printf 'tok-'; sleep 0.05; printf 'se'; sleep 0.05; printf 'cret-123 end\n'
           printf 'tok-secret-123\n' >&2
           echo '{"type":"retval","value":"tok-secret-123"}' >&3
           exit 1"#,
        dir.path(),
    );
    j.env = vec![("TOKEN".into(), "tok-secret-123".into())];
    j.masker = jobctl::config::model::Masker::new(["tok-secret-123".to_owned()].iter());
    // Watched from the start, so the pieces the job writes 50 ms apart arrive as reads
    // of their own (that a secret split across reads is masked whole is checked
    // byte by byte by process.rs's unit tests, which choose the reads).
    j.quiet = Duration::ZERO;
    let (exit, outputs) = run_job(&j).await;
    // Channel messages are masked once decoded, by the guard every build's output
    // passes (lines already are, here).
    let mut guard = jobctl::exec::guard::Guard::new(&j.masker);
    let outputs: Vec<Output> = outputs.into_iter().filter_map(|o| guard.admit(o)).collect();
    let all = format!("{outputs:?} {exit:?}");
    assert!(!all.contains("tok-secret-123"), "{all}");
    assert_eq!(
        lines(&outputs, Stream::Stdout),
        ["token=********", "******** end"]
    );
    assert_eq!(exit.stderr_tail, ["********"]);
    assert!(outputs.contains(&Output::Message(Message::Retval {
        value: json!("********")
    })));
}
