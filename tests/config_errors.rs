//! Every broken config in `tests/fixtures/config/` through the real binary: one clear
//! report on stderr, exit code 1, nothing on stdout. The reports are snapshots.

use assert_cmd::Command;

#[test]
fn each_broken_config_is_reported_at_its_source() {
    insta::glob!("fixtures/config/*.yaml.j2", |path| {
        let output = Command::cargo_bin("jobctl")
            .unwrap()
            .current_dir(path.parent().unwrap())
            .arg("-c")
            .arg(path.file_name().unwrap())
            .arg("check")
            .env_remove("JOBCTL_CONFIG")
            .env_remove("JOBCTL_TEST_SURELY_UNSET")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(output.stdout.is_empty());
        assert!(
            stderr.ends_with("; nothing was run\n"),
            "every report ends with the count: {stderr}"
        );
        insta::assert_snapshot!(stderr);
    });
}
