//! The C ABI and the C++ wrapper, compiled with the system compiler (warnings as errors)
//! and run against local servers, under valgrind where it is installed.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{provider, Fault, TestServer};

use support::native::lib_dir;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = lib_dir().join("c-tests").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `sources` into `out`; panics with the compiler's output on failure.
fn compile(compiler: &str, std: &str, sources: &[PathBuf], out: &Path, static_link: bool) {
    let lib = lib_dir();
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args([
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Werror",
            "-g",
            "-pthread",
        ])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(format!("-I{}", root().join("bindings/cpp").display()))
        .args(sources)
        .arg("-o")
        .arg(out);
    if static_link {
        cmd.arg(lib.join("libswitchyard.a")).args(["-ldl", "-lm"]);
    } else {
        cmd.arg(format!("-L{}", lib.display()))
            .arg("-lswitchyard")
            .arg(format!("-Wl,-rpath,{}", lib.display()));
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

struct Scenario {
    _servers: Vec<TestServer>,
    config: PathBuf,
}

/// The shared scenario: service `s` with a failing tier-1 provider, `dead`, `slow`.
fn scenario(dir: &Path) -> Scenario {
    let servers: Vec<TestServer> = (0..5).map(|_| TestServer::start()).collect();
    servers[1].set_fault(Fault::Status(503));
    servers[3].set_fault(Fault::Status(503));
    servers[4].set_fault(Fault::Hang);
    let endpoints = "endpoints = { quote = \"/quote\" }";
    let config = format!(
        "[defaults.retry]\nbase_delay_ms = 20\nmax_backoff_ms = 50\n{}{}{}{}{}",
        provider(
            "s",
            "good1",
            &servers[0].url(),
            &format!("tier = 1\n{endpoints}")
        ),
        provider(
            "s",
            "bad",
            &servers[1].url(),
            &format!("tier = 1\n{endpoints}")
        ),
        provider(
            "s",
            "good2",
            &servers[2].url(),
            &format!("tier = 2\n{endpoints}")
        ),
        provider("dead", "gone", &servers[3].url(), endpoints),
        provider("slow", "hang", &servers[4].url(), endpoints),
    ) + &provider(
        "capped",
        "free",
        &servers[0].url(),
        &format!("quota = {{ per_day = 1 }}\n{endpoints}"),
    );
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    Scenario {
        _servers: servers,
        config: path,
    }
}

fn run(exe: &Path, args: &[&Path], valgrind: bool) -> String {
    let mut cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect",
            "-q",
        ])
        .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let output = cmd.args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{} exited with {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        exe.display(),
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn have_valgrind() -> bool {
    let found = Command::new("valgrind").arg("--version").output().is_ok();
    // CI installs it; there it must not be skipped.
    assert!(
        found || std::env::var("CI").is_err(),
        "valgrind is missing on CI"
    );
    found
}

#[test]
fn the_header_is_self_contained_c_and_cpp() {
    let dir = scratch("header");
    let c = dir.join("include_only.c");
    std::fs::write(
        &c,
        "#include \"switchyard.h\"\nint main(void) { return sy_version()[0] == 0; }\n",
    )
    .unwrap();
    compile("cc", "c99", &[c], &dir.join("include_only"), false);
    run(&dir.join("include_only"), &[], false);
}

#[test]
fn the_c_example_runs_against_the_shared_and_the_static_library() {
    let dir = scratch("example");
    let s = scenario(&dir);
    let source = root().join("examples/c/demo.c");
    for (name, static_link) in [("demo_shared", false), ("demo_static", true)] {
        let exe = dir.join(name);
        compile(
            "cc",
            "c11",
            std::slice::from_ref(&source),
            &exe,
            static_link,
        );
        let out = run(
            &exe,
            &[
                &s.config,
                Path::new("s"),
                Path::new("quote"),
                Path::new("10"),
            ],
            false,
        );
        assert!(out.contains("10 of 10 calls answered"), "{out}");
        assert!(out.contains("\"services\""), "{out}");
    }
}

#[test]
fn the_c_api_test_passes_including_under_valgrind() {
    let dir = scratch("api");
    let s = scenario(&dir);
    let exe = dir.join("api_test");
    compile(
        "cc",
        "c11",
        &[root().join("tests/c/api_test.c")],
        &exe,
        false,
    );
    let out = run(&exe, &[&s.config], false);
    assert!(out.contains(" passed, 0 failed"), "{out}");
    if have_valgrind() {
        let out = run(&exe, &[&s.config], true);
        assert!(out.contains(" passed, 0 failed"), "{out}");
        let demo = dir.join("demo");
        compile(
            "cc",
            "c11",
            &[root().join("examples/c/demo.c")],
            &demo,
            false,
        );
        run(
            &demo,
            &[
                &s.config,
                Path::new("s"),
                Path::new("quote"),
                Path::new("5"),
            ],
            true,
        );
    }
}

#[test]
fn the_cpp_example_runs() {
    let dir = scratch("cpp");
    let s = scenario(&dir);
    let exe = dir.join("demo_cpp");
    compile(
        "c++",
        "c++17",
        &[root().join("examples/cpp/demo.cpp")],
        &exe,
        false,
    );
    let out = run(&exe, &[&s.config], false);
    assert!(out.contains("all providers failed: 3 attempts"), "{out}");
    assert!(out.contains("answered 10 of 10"), "{out}");
}

/// The README's C example as written: the demo serves its providers and writes their
/// configuration; the C example reads it.
#[test]
fn the_readme_c_example_runs_against_the_demo() {
    let dir = scratch("readme");
    let demo = lib_dir().join("examples").join("demo");
    // Built here, fresh: a test binary of one profile does not rebuild the examples.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--example", "demo", "--quiet", "--target-dir"])
        .arg(lib_dir().parent().unwrap())
        .current_dir(root());
    if lib_dir().file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    assert!(
        cmd.status().unwrap().success(),
        "cargo build --example demo"
    );
    let config = dir.join("demo.toml");
    let _ = std::fs::remove_file(&config);
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _demo = Killed(
        Command::new(&demo)
            .args(["--serve", "--write-config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !config.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let exe = dir.join("demo_c");
    compile(
        "cc",
        "c11",
        &[root().join("examples/c/demo.c")],
        &exe,
        false,
    );
    let out = run(
        &exe,
        &[
            &config,
            Path::new("stocks"),
            Path::new("quote"),
            Path::new("10"),
        ],
        false,
    );
    assert!(out.contains("10 of 10 calls answered"), "{out}");
}

#[test]
fn the_cpp_wrapper_covers_the_c_api() {
    let dir = scratch("cpp-api");
    let s = scenario(&dir);
    let exe = dir.join("api_test_cpp");
    compile(
        "c++",
        "c++17",
        &[root().join("tests/cpp/api_test.cpp")],
        &exe,
        false,
    );
    let out = run(&exe, &[&s.config], false);
    assert!(out.contains(" passed, 0 failed"), "{out}");
}

/// Every function the header declares is wrapped in C++ and bound in Python.
#[test]
fn every_c_function_is_wrapped_in_cpp_and_python() {
    let header = std::fs::read_to_string(root().join("include/switchyard.h")).unwrap();
    let cpp = std::fs::read_to_string(root().join("bindings/cpp/switchyard.hpp")).unwrap();
    let python =
        std::fs::read_to_string(root().join("bindings/python/switchyard/__init__.py")).unwrap();
    let declared: Vec<&str> = header
        .lines()
        .filter(|l| {
            !l.starts_with(' ') && !l.starts_with('#') && l.contains("sy_") && l.contains('(')
        })
        .filter_map(|l| {
            let name_end = l.find('(')?;
            let name = l[..name_end].rsplit([' ', '*']).next()?;
            name.starts_with("sy_").then_some(name)
        })
        .collect();
    assert!(declared.len() > 40, "found {declared:?}");
    let missing = |text: &str| -> Vec<&str> {
        declared
            .iter()
            .copied()
            .filter(|f| !text.contains(&format!("{f}(")) && !text.contains(&format!("\"{f}\"")))
            .collect()
    };
    assert_eq!(missing(&cpp), Vec::<&str>::new(), "not in the C++ wrapper");
    assert_eq!(
        missing(&python),
        Vec::<&str>::new(),
        "not in the Python binding"
    );
}

/// The scenario the C, C++ and Python tests run, from Rust: the same outcomes and kinds.
#[test]
fn the_same_scenario_from_rust() {
    use switchyard::{Balancer, Error, ErrorKind, Request};
    let dir = scratch("rust");
    let s = scenario(&dir);
    let lb = Balancer::from_file(&s.config).unwrap();
    for _ in 0..20 {
        let r = lb.call(Request::get("s", "quote")).unwrap();
        assert_eq!(r.status(), 200);
        assert_ne!(r.provider(), "bad");
    }
    let kind = |r: Result<switchyard::Response, Error>| r.unwrap_err().kind();
    assert_eq!(
        kind(lb.call(Request::get("bonds", "quote"))),
        ErrorKind::UnknownService
    );
    assert_eq!(
        kind(lb.call(Request::get("s", "dividends"))),
        ErrorKind::UnknownEndpoint
    );
    let dead = lb.call(Request::get("dead", "quote")).unwrap_err();
    assert_eq!(dead.kind(), ErrorKind::AllProvidersFailed);
    assert_eq!(dead.attempts().len(), 3);
    assert_eq!(dead.attempts()[0].status, Some(503));
    let slow = Request::get("slow", "quote").timeout(std::time::Duration::from_millis(300));
    assert_eq!(kind(lb.call(slow)), ErrorKind::Timeout);
    assert_eq!(ErrorKind::AllProvidersFailed.code(), 8);
}
