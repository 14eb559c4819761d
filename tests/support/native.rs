//! The shared and static libraries for the C, C++ and Python tests.
//!
//! `cargo test` links its tests against the rlib only, so the first test that needs the
//! cdylib or staticlib builds them here, once per test binary, with the same cargo,
//! target directory and profile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding libswitchyard.so and libswitchyard.a, built and fresh.
pub fn lib_dir() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // The test binary is in <target>/<profile>/deps/.
            let exe = std::env::current_exe().unwrap();
            let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
            let target = profile_dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--lib", "--quiet", "--target-dir"])
                .arg(target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cargo runs");
            assert!(status.success(), "cargo build --lib failed");
            profile_dir
        })
        .clone()
}
