//! The `switchyard` command: `switchyard check FILE...` validates configuration files the
//! way `nginx -t` does, for use in CI: each file is loaded as a balancer would load it
//! (`${VAR}` expanded, every file it names read), nothing is started or contacted, and
//! each error is printed with its key path. Exits 0 when every file is valid, 1 when one
//! is not, 2 when the command is used wrongly.
//!
//!     cargo run --example switchyard -- check examples/switchyard.toml

use std::process::ExitCode;

use switchyard::Config;

const USAGE: &str = "usage: switchyard check FILE...";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, files)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if command != "check" || files.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let mut all_valid = true;
    for file in files {
        match Config::from_file(file).and_then(|config| config.validate()) {
            Ok(()) => println!("{file}: ok"),
            Err(e) => {
                all_valid = false;
                eprintln!("{file}: {e}");
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
