//! `jobctl report` and the channel protocol as docs/channel.md shows it, through the real
//! binary and real file descriptors.

use std::path::PathBuf;
use std::process::Command;

use jobctl::exec::channel::Message;
use jobctl::store::LogLevel;
use serde_json::json;

fn jobctl() -> PathBuf {
    assert_cmd::cargo::cargo_bin("jobctl")
}

/// Runs `script` with `sh -c`, the channel on fd 3 pointing at the captured stdout, and
/// returns the messages that came through.
fn through_channel(script: &str) -> Vec<Message> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3>&1 1>/dev/null; {script}"))
        .env("JOBCTL_CHANNEL", "3")
        .env("JOBCTL", jobctl())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| Message::parse(line).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

#[test]
fn report_sends_each_kind_of_message() {
    let messages = through_channel(
        r#""$JOBCTL" report progress --group pages --group html 3 10 --status 'page 3'
           "$JOBCTL" report progress 1
           "$JOBCTL" report log --level warning slow "response" from 'a "quoted" host'
           "$JOBCTL" report retval '{"rows": [1, 2.5, null, "ß"]}'
           "$JOBCTL" report retval --string '$(touch /tmp/never)'
           "$JOBCTL" report skip nothing new upstream"#,
    );
    assert_eq!(
        messages,
        vec![
            Message::Progress {
                group: vec!["pages".into(), "html".into()],
                current: 3,
                total: Some(10),
                status: Some("page 3".into()),
            },
            Message::Progress {
                group: vec![],
                current: 1,
                total: None,
                status: None,
            },
            Message::Log {
                level: LogLevel::Warning,
                message: "slow response from a \"quoted\" host".into(),
            },
            Message::Retval {
                value: json!({"rows": [1, 2.5, null, "ß"]}),
            },
            Message::Retval {
                value: json!("$(touch /tmp/never)"),
            },
            Message::Skip {
                reason: "nothing new upstream".into(),
            },
        ]
    );
}

#[test]
fn the_documented_examples_work() {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/channel.md"))
            .unwrap();
    let python = doc
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a Python example in docs/channel.md");
    assert!(
        python.lines().count() <= 12,
        "the Python example stays short"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("example.py"), python).unwrap();
    let messages = through_channel(&format!(
        "python3 {}",
        dir.path().join("example.py").display()
    ));
    assert_eq!(messages.len(), 5);
    assert_eq!(
        messages[4],
        Message::Retval {
            value: json!({"pages": 3})
        }
    );

    let messages =
        through_channel(r#"echo '{"type":"progress","current":3,"total":10}' >&"$JOBCTL_CHANNEL""#);
    assert_eq!(
        messages,
        vec![Message::Progress {
            group: vec![],
            current: 3,
            total: Some(10),
            status: None
        }]
    );
}

#[test]
fn report_outside_a_build_or_with_bad_input_says_why() {
    let run = |args: &[&str], channel: Option<&str>| {
        let mut cmd = Command::new(jobctl());
        cmd.args(args).env_remove("JOBCTL_CHANNEL");
        if let Some(c) = channel {
            cmd.env("JOBCTL_CHANNEL", c);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    assert_eq!(
        run(&["report", "progress", "1"], None),
        (
            2,
            "error: not inside a jobctl build: $JOBCTL_CHANNEL is not set\n".into()
        )
    );
    assert_eq!(
        run(&["report", "progress", "1"], Some("three")),
        (
            2,
            "error: $JOBCTL_CHANNEL is `three`, not a file descriptor number\n".into()
        )
    );
    let (code, err) = run(&["report", "retval", "{not json"], Some("3"));
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: `{not json` is not JSON (")
            && err.ends_with("; use --string for plain text\n"),
        "{err}"
    );
    let (code, err) = run(&["report", "log", "--level", "loud", "x"], Some("3"));
    assert_eq!(code, 2);
    assert!(err.contains("unknown log level"), "{err}");
    // A descriptor that is not open.
    let (code, err) = run(&["report", "progress", "1"], Some("97"));
    assert_eq!(code, 3);
    assert!(
        err.starts_with("error: cannot write to the job channel (fd 97): "),
        "{err}"
    );
}
