//! `pip install bindings/python` into a new virtual environment builds the native library
//! with cargo and bundles it: `import switchyard` and the Python example then work with
//! no environment variable, from a directory outside the repository.

use std::path::Path;
use std::process::Command;

#[test]
fn pip_install_bundles_the_native_library() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("switchyard-pip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let venv = dir.join("venv");
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 is installed");
    assert!(status.success(), "python3 -m venv (Debian: python3-venv)");
    let python = venv.join("bin/python");
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--timeout", "60"])
        .arg(root.join("bindings/python"))
        .env_remove("SWITCHYARD_LIB")
        .status()
        .unwrap();
    assert!(status.success(), "pip install bindings/python");
    let run = |args: &[&str]| {
        Command::new(&python)
            .args(args)
            .current_dir(&dir)
            .env_remove("SWITCHYARD_LIB")
            .env_remove("PYTHONPATH")
            .output()
            .unwrap()
    };
    let out = run(&[
        "-c",
        "import os, switchyard; here = os.path.dirname(switchyard.__file__); \
         print(switchyard.version(), sorted(os.listdir(here)))",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("libswitchyard.so") && stdout.contains("py.typed"),
        "{stdout}"
    );
    let demo = root.join("examples/python/demo.py");
    let out = run(&[demo.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
