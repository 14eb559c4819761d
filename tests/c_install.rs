//! The C install step: `bindings/c/install.sh PREFIX` puts the libraries, the headers and
//! switchyard.pc under a prefix, and the C and C++ examples build from it with
//! pkg-config alone.

mod support;

use std::path::Path;
use std::process::Command;

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("switchyard")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_examples_build_from_an_installed_prefix_with_pkg_config() {
    let lib_dir = support::native::lib_dir();
    let prefix = std::env::temp_dir().join(format!("switchyard-prefix-{}", std::process::id()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let status = Command::new("bash")
        .arg(root.join("bindings/c/install.sh"))
        .arg(&prefix)
        .env("SWITCHYARD_LIB_DIR", &lib_dir)
        .status()
        .unwrap();
    assert!(status.success());
    for file in [
        "lib/libswitchyard.so",
        "lib/libswitchyard.a",
        "include/switchyard.h",
        "include/switchyard.hpp",
        "lib/pkgconfig/switchyard.pc",
    ] {
        assert!(prefix.join(file).exists(), "{file} installed");
    }
    let flags = pkg_config(&prefix, &["--cflags", "--libs"]);
    let built = |compiler: &str, std: &str, source: &str, out: &str| {
        let status = Command::new(compiler)
            .arg(std)
            .arg(root.join(source))
            .args(&flags)
            .arg("-o")
            .arg(prefix.join(out))
            .status()
            .unwrap();
        assert!(status.success(), "{source} builds from the prefix");
        prefix.join(out)
    };
    let demo = built("cc", "-std=c11", "examples/c/demo.c", "demo");
    built("c++", "-std=c++17", "examples/cpp/demo.cpp", "demo_cpp");
    // It loads the installed library and runs (without arguments it prints its usage).
    let out = Command::new(&demo)
        .env("LD_LIBRARY_PATH", prefix.join("lib"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    // Static linking through pkg-config's private libraries.
    let static_flags = pkg_config(&prefix, &["--cflags", "--static", "--libs"]);
    let status = Command::new("cc")
        .arg("-std=c11")
        .arg(root.join("examples/c/demo.c"))
        .arg(prefix.join("lib/libswitchyard.a"))
        .args(
            static_flags
                .iter()
                .filter(|f| !f.starts_with("-lswitchyard")),
        )
        .arg("-o")
        .arg(prefix.join("demo_static"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the static library links with pkg-config's flags"
    );
    let _ = std::fs::remove_dir_all(&prefix);
}
