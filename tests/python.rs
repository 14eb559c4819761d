//! The Python binding: its unittest suite run with the library this build produced.

use std::path::Path;
use std::process::Command;

mod support;

use support::native::lib_dir;

fn python(args: &[&str], dir: &Path) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .args(args)
        .current_dir(dir)
        .env("SWITCHYARD_LIB", lib_dir().join("libswitchyard.so"))
        .env("PYTHONPATH", root.join("bindings/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_python_suite_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = python(
        &[
            "-m",
            "unittest",
            "discover",
            "-s",
            "bindings/python/tests",
            "-v",
        ],
        root,
    );
    assert!(ok, "{out}");
    assert!(out.contains("\nOK"), "{out}");
}

#[test]
fn the_python_example_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (ok, out) = python(&["examples/python/demo.py"], root);
    assert!(ok, "{out}");
    assert!(out.contains("answered 10 of 10"), "{out}");
}

#[test]
fn a_missing_library_is_reported_with_the_paths_tried() {
    // A copy of the package away from the source tree, so only SWITCHYARD_LIB can help.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = lib_dir().join("python-missing-lib");
    std::fs::create_dir_all(dir.join("switchyard")).unwrap();
    std::fs::copy(
        root.join("bindings/python/switchyard/__init__.py"),
        dir.join("switchyard/__init__.py"),
    )
    .unwrap();
    let output = Command::new("python3")
        .args(["-c", "import switchyard"])
        .current_dir(&dir)
        .env("SWITCHYARD_LIB", "/nonexistent/libswitchyard.so")
        .env("PYTHONPATH", &dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        err.contains("ImportError") && err.contains("SWITCHYARD_LIB"),
        "{err}"
    );
    assert!(err.contains("/nonexistent/libswitchyard.so"), "{err}");
    assert!(err.contains("target/release/libswitchyard.so"), "{err}");
}

#[test]
fn a_certificate_failure_is_an_attempt_of_kind_tls_in_python() {
    let pki = support::tls::Pki::new("python");
    let server = support::tls::TlsServer::start(&pki, false);
    let script = format!(
        r#"
import switchyard
def lb(tls):
    return switchyard.Balancer({{"defaults": {{"tls": tls, "retry": {{"max_attempts": 1}}}},
        "services": {{"s": {{"providers": [{{"name": "secure", "base_url": "{url}"}}]}}}}}})
untrusted = lb({{}})
try:
    untrusted.get("s", "/q")
    raise SystemExit("answered through an untrusted certificate")
except switchyard.Error as e:
    kinds = [a["kind"] for a in e.attempts]
    assert kinds == ["tls"], kinds
trusted = lb({{"ca_file": {ca:?}}})
assert trusted.get("s", "/q").status == 200
print("tls ok")
"#,
        url = server.url(),
        ca = pki.ca_file.display().to_string(),
    );
    let (ok, out) = python(&["-c", &script], Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(ok && out.contains("tls ok"), "{out}");
    assert_eq!(server.requests(), 1, "only the trusted call reached it");
}
