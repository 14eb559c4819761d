//! `switchyard check FILE`, the example command, run as a process on the example
//! configuration and on broken ones.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The example binary beside this test: `cargo test` builds it; when only this test
/// was built, it is built here with the same profile.
fn switchyard() -> Command {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("examples").join("switchyard");
    if !binary.exists() {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--example", "switchyard"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "cannot build the example"
        );
    }
    Command::new(binary)
}

fn check(files: &[&str]) -> Output {
    let mut command = switchyard();
    command.arg("check").args(files);
    // The example configuration takes its API keys from the environment.
    for key in [
        "POLYGON_KEY",
        "FINNHUB_KEY",
        "MARKETSTACK_KEY",
        "NEWSAPI_KEY",
        "GNEWS_KEY",
    ] {
        command.env(key, "not-a-real-key");
    }
    command.output().unwrap()
}

fn write(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("switchyard-check-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_example_configuration_is_valid() {
    let out = check(&["examples/switchyard.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("examples/switchyard.toml: ok"));
}

#[test]
fn a_broken_configuration_is_named_by_its_key_path() {
    let broken = write(
        "broken.toml",
        "[[services.s.providers]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1\"\ntier = \"first\"\n",
    );
    let missing_ca = write(
        "tls.toml",
        "[defaults.tls]\nca_file = \"/nonexistent/ca.pem\"\n\
         [[services.s.providers]]\nname = \"a\"\nbase_url = \"https://127.0.0.1:1\"\n",
    );
    let (broken, missing_ca) = (
        broken.display().to_string(),
        missing_ca.display().to_string(),
    );
    let out = check(&["examples/switchyard.toml", &broken, &missing_ca]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("services.s.providers[0].tier"), "{stderr}");
    assert!(stderr.contains("ca_file"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("examples/switchyard.toml: ok"));
}

#[test]
fn a_secret_in_a_broken_file_is_not_printed() {
    let file = write(
        "secret.toml",
        "[[services.s.providers]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1\"\n\
         headers = { X-Key = \"hunter2-secret\" }\ntier = -1\n",
    );
    let out = check(&[&file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
}

#[test]
fn used_wrongly_it_says_how_and_exits_2() {
    let out = switchyard().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: switchyard check FILE"));
}
