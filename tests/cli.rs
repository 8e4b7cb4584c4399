//! The commands that read a config, through the real binary.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn jobctl(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("jobctl").unwrap();
    cmd.current_dir(dir)
        .env_remove("JOBCTL_CONFIG")
        .env("NO_COLOR", "1");
    cmd
}

/// A temp folder holding a copy of these fixture files: commands that keep history make
/// their database beside the config, and the source tree stays clean.
fn copy_of(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        let from = root().join("tests/fixtures/valid").join(file);
        std::fs::copy(from, dir.path().join(file)).unwrap();
    }
    dir
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn jobcontrol_example_loads_into_six_jobs_with_retval_edges() {
    let copy = copy_of(&["jobcontrol_example.yaml.j2"]);
    let dir = copy.path().to_path_buf();
    let text = stdout(jobctl(&dir).args(["-c", "jobcontrol_example.yaml.j2", "jobs", "--json"]));
    let jobs: Vec<Value> = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "crawl_example_com",
            "process_example_com",
            "crawl_example_org",
            "process_example_org",
            "crawl_example_net",
            "process_example_net"
        ]
    );
    for site in ["example_com", "example_org", "example_net"] {
        let crawl = jobs
            .iter()
            .find(|j| j["id"] == format!("crawl_{site}"))
            .unwrap();
        let process = jobs
            .iter()
            .find(|j| j["id"] == format!("process_{site}"))
            .unwrap();
        assert_eq!(crawl["dependencies"], json!([]));
        // No `dependencies` list in the config: the `!retval` alone makes the edge.
        assert_eq!(process["dependencies"], json!([format!("crawl_{site}")]));
        assert_eq!(
            process["kwargs"]["input_storage"],
            json!({"!retval": format!("crawl_{site}")})
        );
        let url = format!("http://www.{}", site.replace('_', "."));
        assert_eq!(crawl["args"], json!([url]));
        assert_eq!(crawl["title"], json!(format!("Crawl {url}")));
    }
    insta::assert_snapshot!(
        "jobcontrol_example_graph",
        stdout(jobctl(&dir).args(["-c", "jobcontrol_example.yaml.j2", "graph"]))
    );
}

#[test]
fn demo_pipeline_is_valid_and_its_views_are_stable() {
    let dir = root();
    assert_eq!(
        stdout(jobctl(&dir).arg("check")),
        "jobs.yaml.j2: ok, 8 jobs\nnote: `schedule:` is set on report, but nothing runs jobs \
         on a schedule yet: `jobctl build` ignores it (`jobctl serve` will act on it)\n"
    );
    // `jobs` reads the statuses from the database beside the config: use a copy.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("jobs.yaml.j2"), copy.path().join("jobs.yaml.j2")).unwrap();
    insta::assert_snapshot!("demo_jobs", stdout(jobctl(copy.path()).arg("jobs")));
    assert!(
        copy.path().join(".jobctl/state.db").exists(),
        "made on first use"
    );
    insta::assert_snapshot!("demo_graph_layers", stdout(jobctl(&dir).arg("graph")));
    insta::assert_snapshot!(
        "demo_graph_tree",
        stdout(jobctl(&dir).args(["graph", "report"]))
    );
    insta::assert_snapshot!(
        "demo_graph_dot",
        stdout(jobctl(&dir).args(["graph", "--dot"]))
    );
    insta::assert_snapshot!(
        "demo_graph_dot_subgraph",
        stdout(jobctl(&dir).args(["graph", "--dot", "process_example_org"]))
    );
}

#[test]
fn secrets_are_masked_and_never_resolved_into_output() {
    let copy = copy_of(&["secrets.yaml.j2"]);
    let dir = copy.path().to_path_buf();
    let token = "tok-5f1e-very-secret";
    let config = stdout(jobctl(&dir).env("JOBCTL_TEST_TOKEN", token).args([
        "-c",
        "secrets.yaml.j2",
        "config",
    ]));
    assert!(!config.contains(token), "{config}");
    assert!(config.contains("api_token: \"********\""), "{config}");
    assert!(config.contains("Upload (token ********)"), "{config}");
    assert!(config.contains("short: \"********\""), "{config}");
    let jobs = stdout(jobctl(&dir).env("JOBCTL_TEST_TOKEN", token).args([
        "-c",
        "secrets.yaml.j2",
        "jobs",
        "--json",
    ]));
    let jobs: Value = serde_json::from_str(&jobs).unwrap();
    assert_eq!(jobs[0]["env"]["TOKEN"], json!({"!secret": "api_token"}));
    assert!(!jobs.to_string().contains(token), "{jobs}");
    assert_eq!(jobs[0]["title"], json!("Upload (token ********)"));
    for view in [vec!["jobs"], vec!["graph"], vec!["graph", "--dot"]] {
        let text = stdout(
            jobctl(&dir)
                .env("JOBCTL_TEST_TOKEN", token)
                .args(["-c", "secrets.yaml.j2"])
                .args(view),
        );
        assert!(!text.contains(token), "{text}");
    }
}

#[test]
fn vars_fill_the_template() {
    let copy = copy_of(&["secrets.yaml.j2"]);
    let dir = copy.path().to_path_buf();
    let jobs = stdout(jobctl(&dir).env("JOBCTL_TEST_TOKEN", "x").args([
        "-c",
        "secrets.yaml.j2",
        "--var",
        "copies=3",
        "jobs",
        "--json",
    ]));
    let jobs: Value = serde_json::from_str(&jobs).unwrap();
    assert_eq!(jobs[0]["kwargs"]["copies"], json!(3));
}

#[test]
fn config_file_comes_from_the_environment() {
    let dir = root().join("tests/fixtures/valid");
    let out = stdout(
        jobctl(Path::new("/"))
            .env("JOBCTL_CONFIG", dir.join("jobcontrol_example.yaml.j2"))
            .arg("check"),
    );
    assert!(
        out.ends_with("jobcontrol_example.yaml.j2: ok, 6 jobs\n"),
        "{out}"
    );
}

fn failure(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    assert!(out.stdout.is_empty());
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = root();
    let (code, err) = failure(jobctl(&dir).args(["graph", "reprot"]));
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: no job `reprot` in jobs.yaml.j2 (did you mean `report`?)\n"
    );

    let (code, err) = failure(jobctl(&dir).args(["--var", "novalue", "check"]));
    assert_eq!(code, 2);
    assert_eq!(err, "error: `--var novalue` must look like NAME=VALUE\n");

    let (code, err) = failure(jobctl(&dir).args(["-c", "nope.yaml.j2", "check"]));
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: cannot read config file `nope.yaml.j2`: No such file or directory (os error 2)\n"
    );

    let (code, _) = failure(jobctl(&dir).arg("no-such-command"));
    assert_eq!(code, 2);
}

/// `build -j` out of bounds is refused before anything is planned or recorded.
#[test]
fn build_jobs_at_once_out_of_bounds_are_refused() {
    let dir = copy_of(&["jobcontrol_example.yaml.j2"]);
    for n in ["0", "10001", "-1", "many"] {
        let (code, err) = failure(jobctl(dir.path()).args([
            "-c",
            "jobcontrol_example.yaml.j2",
            "build",
            "--all",
            "-j",
            n,
        ]));
        assert_eq!(code, 2, "{n}: {err}");
        assert!(
            err.contains(&format!("jobs at once are from 1 to 10000, not `{n}`"))
                || (n == "-1" && err.contains("unexpected argument '-1'")),
            "{n}: {err}"
        );
    }
    let recorded: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "jobcontrol_example.yaml.j2")
        .collect();
    assert_eq!(recorded, Vec::<String>::new());
}

/// A worker's settings out of bounds are refused before it claims anything: a folder
/// that is not there, jobs at once out of 1 to 10,000, a lease it could not renew in
/// time or that would keep a dead machine's builds for days, a grace or a drain past a
/// century (the clock would overflow), a name that is empty, too long or holds control
/// characters.
#[test]
fn a_workers_settings_out_of_bounds_are_refused() {
    let dir = root();
    let long = "w".repeat(101);
    let cases: [(&[&str], &str); 11] = [
        // It would fail every build it claimed.
        (
            &["--dir", "/no/such/folder"],
            "cannot use `/no/such/folder` as the jobs' folder: No such file or directory",
        ),
        (&["--dir", "Cargo.toml"], "`Cargo.toml` is not a folder"),
        (&["-j", "0"], "jobs at once are from 1 to 10000, not `0`"),
        // Once taken as 1,215,752,191 slots in `jobctl workers` (cut to 32 bits).
        (
            &["-j", "99999999999"],
            "jobs at once are from 1 to 10000, not `99999999999`",
        ),
        (&["--lease", "0s"], "a lease is from 1s to 1d, not `0s`"),
        (
            &["--lease", "500ms"],
            "a lease is from 1s to 1d, not `500ms`",
        ),
        (&["--lease", "2d"], "a lease is from 1s to 1d, not `2d`"),
        (
            &["--drain-timeout", "99999999d"],
            "`99999999d` is too long a duration (at most 36500d, about a century)",
        ),
        (
            &["--grace", "18446744073709551615"],
            "18446744073709551615 is not in 0..=3153600000",
        ),
        (&["--name", " "], "a worker's name cannot be empty"),
        (
            &["--name", "a\x1b[2Jb"],
            "a worker's name cannot hold control characters (tabs, newlines, escapes)",
        ),
    ];
    for (args, says) in cases {
        let (code, err) = failure(jobctl(&dir).arg("worker").args(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(
            err.lines()
                .next()
                .map(|l| l.starts_with("error: invalid value")),
            Some(true),
            "{err}"
        );
    }
    let (code, err) = failure(jobctl(&dir).args(["worker", "--name", &long]));
    assert_eq!(code, 2);
    assert!(err.contains("at most 100 characters, not 101"), "{err}");
}

#[test]
fn a_directory_as_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs.yaml.j2")).unwrap();
    let (code, err) = failure(jobctl(dir.path()).arg("check"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("error: cannot read config file `jobs.yaml.j2`"),
        "{err}"
    );
}
