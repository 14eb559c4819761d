//! Each language's binding against what that language's users would pick instead, on one
//! workload: three nginx upstreams on 127.0.0.1, closed-loop threads, paired repetitions
//! alternated client by client, medians.
//!
//!     bash benches/languages.sh python     # or c, rust, all; then any option below
//!     bash benches/languages.sh c --threads 32 --reps 5 --seconds 3
//!
//! Every client runs in a process of its own (its CPU is its own), prints one JSON line and
//! is one of:
//!   rust    call, submit (in-process: this program run with --child), raw (ureq, its own
//!           round robin), haproxy (ureq through a local HAProxy), reqwest (blocking Client)
//!   python  switchyard, switchyard-submit, requests, urllib3, httpx, http.client
//!           (benches/clients/python_clients.py, in the bench's own virtual environment)
//!   c       sy_call, sy_submit, curl_easy, curl_multi (benches/clients/c_clients.c),
//!           cpp_call, cpp_submit (the C++ wrapper, benches/clients/cpp_clients.cpp)
//! Each language's table is relative to its reference: Rust `call` for Python (the
//! binding's own cost), libcurl's easy interface for C, raw ureq for Rust.
//! Writes target/bench-languages.md and target/bench-languages.json.

mod support;

use support::{
    bench_config, free_port, haproxy, median, start_nginx, wait_listening, workdir, write_results,
    Daemon,
};

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use switchyard::{Balancer, Request};

const PYTHON: &[&str] = &[
    "switchyard",
    "switchyard-submit",
    "requests",
    "urllib3",
    "httpx",
    "http.client",
];
const C: &[&str] = &[
    "sy_call",
    "sy_submit",
    "cpp_call",
    "cpp_submit",
    "curl_easy",
    "curl_multi",
];
const RUST: &[&str] = &["raw", "call", "submit", "haproxy", "reqwest"];

/// A language's table: its clients and the one the others are measured against.
struct Table {
    lang: &'static str,
    clients: Vec<&'static str>,
    reference: &'static str,
}

fn tables(args: &[String]) -> Vec<Table> {
    let which = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with("--") && ["python", "c", "rust", "all"].contains(&a.as_str()))
        .map(String::as_str)
        .unwrap_or("all");
    let only: Option<Vec<String>> =
        value(args, "--clients").map(|v| v.split(',').map(String::from).collect());
    let keep = |names: &[&'static str], extra: &[&'static str]| -> Vec<&'static str> {
        extra
            .iter()
            .chain(names)
            .copied()
            .filter(|n| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n)))
            .collect()
    };
    let mut out = Vec::new();
    if matches!(which, "python" | "all") {
        // Rust `call` in the same run: the target is a ratio to it.
        out.push(Table {
            lang: "python",
            clients: keep(PYTHON, &["call"]),
            reference: "call",
        });
    }
    if matches!(which, "c" | "all") {
        out.push(Table {
            lang: "c",
            clients: keep(C, &[]),
            reference: "curl_easy",
        });
    }
    if matches!(which, "rust" | "all") {
        out.push(Table {
            lang: "rust",
            clients: keep(RUST, &[]),
            reference: "raw",
        });
    }
    out
}

fn value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[derive(Clone, Default)]
struct Run {
    rps: f64,
    errors: f64,
    cpu_us: f64,
    p50: f64,
    p99: f64,
    p999: f64,
}

/// A number from the child's one JSON line.
fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn parse(line: &str) -> Option<Run> {
    let requests = field(line, "requests")?;
    let elapsed = field(line, "elapsed_s")?;
    Some(Run {
        rps: requests / elapsed,
        errors: field(line, "errors")?,
        cpu_us: field(line, "cpu_s")? * 1e6 / requests.max(1.0),
        p50: field(line, "p50_us")?,
        p99: field(line, "p99_us")?,
        p999: field(line, "p999_us")?,
    })
}

/// Where the programs of the clients are, built once.
struct Programs {
    root: PathBuf,
    venv_python: Option<PathBuf>,
    c: Option<PathBuf>,
    cpp: Option<PathBuf>,
    reqwest: Option<PathBuf>,
}

fn run_quietly(cmd: &mut Command) -> bool {
    match cmd.output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            eprintln!(
                "  {:?} failed: {}",
                cmd.get_program(),
                String::from_utf8_lossy(&o.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("  {:?} could not start: {e}", cmd.get_program());
            false
        }
    }
}

fn prepare(tables: &[Table], dir: &Path) -> Programs {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let wants = |lang: &str| tables.iter().any(|t| t.lang == lang);
    let release = root.join("target/release");
    let mut programs = Programs {
        root: root.clone(),
        venv_python: None,
        c: None,
        cpp: None,
        reqwest: None,
    };
    if (wants("python") || wants("c")) && !release.join("libswitchyard.so").exists() {
        eprintln!("  building the native library");
        run_quietly(
            Command::new("cargo")
                .args(["build", "--release", "--lib"])
                .current_dir(&root),
        );
    }
    if wants("python") {
        // The peers come from PyPI, into a virtual environment of the bench's own.
        let venv = root.join("target/bench-venv");
        let python = venv.join("bin/python");
        if !python.exists() {
            eprintln!(
                "  creating {} with requests, urllib3, httpx",
                venv.display()
            );
            run_quietly(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        }
        let ready = python.exists()
            && (Command::new(&python)
                .args(["-c", "import requests, urllib3, httpx"])
                .output()
                .is_ok_and(|o| o.status.success())
                || run_quietly(
                    Command::new(&python)
                        .args(["-m", "pip", "install", "-q", "requests", "urllib3", "httpx"]),
                ));
        programs.venv_python = ready.then_some(python);
    }
    if wants("c") {
        let lib = format!("-L{}", release.display());
        let rpath = format!("-Wl,-rpath,{}", release.display());
        let include = format!("-I{}", root.join("include").display());
        let c = dir.join("c_clients");
        programs.c = run_quietly(
            Command::new("cc")
                .args(["-O2", "-std=c11", "-pthread", &include])
                .arg(root.join("benches/clients/c_clients.c"))
                .args([&lib, "-lswitchyard", "-lcurl", &rpath, "-o"])
                .arg(&c),
        )
        .then_some(c);
        let cpp = dir.join("cpp_clients");
        let wrapper = format!("-I{}", root.join("bindings/cpp").display());
        programs.cpp = run_quietly(
            Command::new("c++")
                .args(["-O2", "-std=c++17", "-pthread", &include, &wrapper])
                .arg(root.join("benches/clients/cpp_clients.cpp"))
                .args([&lib, "-lswitchyard", &rpath, "-o"])
                .arg(&cpp),
        )
        .then_some(cpp);
    }
    if wants("rust") && tables.iter().any(|t| t.clients.contains(&"reqwest")) {
        eprintln!("  building the reqwest client");
        let target = root.join("target/bench-peers");
        programs.reqwest = run_quietly(
            Command::new("cargo")
                .args(["build", "--release", "--quiet", "--manifest-path"])
                .arg(root.join("benches/clients/reqwest/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target),
        )
        .then(|| target.join("release/switchyard-bench-reqwest"));
    }
    programs
}

impl Programs {
    /// The command that runs `client`, or None when its program could not be built.
    fn command(&self, client: &str) -> Option<Command> {
        if RUST.contains(&client) && client != "reqwest" {
            let mut cmd = Command::new(std::env::current_exe().ok()?);
            cmd.args(["--child", client]);
            return Some(cmd);
        }
        if client == "reqwest" {
            let mut cmd = Command::new(self.reqwest.as_ref()?);
            cmd.arg(client);
            return Some(cmd);
        }
        if PYTHON.contains(&client) {
            let mut cmd = Command::new(self.venv_python.as_ref()?);
            cmd.arg(self.root.join("benches/clients/python_clients.py"))
                .arg(client)
                .env("PYTHONPATH", self.root.join("bindings/python"))
                .env(
                    "SWITCHYARD_LIB",
                    self.root.join("target/release/libswitchyard.so"),
                );
            return Some(cmd);
        }
        let program = if client.starts_with("cpp_") {
            self.cpp.as_ref()?
        } else {
            self.c.as_ref()?
        };
        let mut cmd = Command::new(program);
        cmd.arg(client);
        Some(cmd)
    }
}

/// The configuration every switchyard client uses: one provider per upstream, workers and
/// connections enough for the threads.
fn config(dir: &Path, ports: &[u16], threads: usize) -> PathBuf {
    let path = dir.join(format!("switchyard-{threads}.toml"));
    std::fs::write(&path, bench_config(ports, ports.len(), threads)).unwrap();
    path
}

/// `--child CLIENT THREADS SECONDS MAX_REQUESTS CONFIG URLS`: one Rust client, in this
/// process, printing the line the other languages' clients print.
fn child(args: &[String]) {
    let [client, threads, seconds, max, config, urls] = args else {
        panic!("--child CLIENT THREADS SECONDS MAX_REQUESTS CONFIG URLS");
    };
    let threads: usize = threads.parse().unwrap();
    let urls: Vec<&str> = urls.split(',').collect();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_idle_connections(threads * 4)
        .max_idle_connections_per_host(threads)
        .build()
        .into();
    let lb = matches!(client.as_str(), "call" | "submit")
        .then(|| Balancer::from_file(config).expect("the bench's configuration loads"));
    let turn = AtomicUsize::new(0);
    let one = || -> bool {
        let n = turn.fetch_add(1, Ordering::Relaxed);
        // A request of its own each time: identical ones in flight at once would share calls.
        let req = || Request::get("bench", "/").param("n", n.to_string());
        match (client.as_str(), &lb) {
            ("call", Some(lb)) => lb.call(req()).is_ok(),
            ("submit", Some(lb)) => lb.submit(req()).and_then(|t| t.wait()).is_ok(),
            _ => match agent.get(urls[n % urls.len()]).call() {
                Ok(mut r) => r.body_mut().read_to_vec().is_ok() && r.status() == 200,
                Err(_) => false,
            },
        }
    };
    let seconds: f64 = seconds.parse().unwrap();
    let line = support::closed_loop::run_and_report(threads, seconds, max.parse().unwrap(), &one);
    drop(lb);
    println!("{line}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1..]);
    }
    let tables = tables(&args);
    let threads: Vec<usize> = value(&args, "--threads")
        .map(|v| v.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 8, 32]);
    let reps: usize = value(&args, "--reps")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seconds = value(&args, "--seconds").unwrap_or_else(|| "2".into());
    let max = value(&args, "--max-requests").unwrap_or_else(|| "2000000".into());
    let dir = workdir();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let servers: String = ports
        .iter()
        .map(|p| format!("  server {{ listen 127.0.0.1:{p}; location / {{ return 200 '{{\"ok\":true}}'; }} }}\n"))
        .collect();
    let nginx: Daemon = start_nginx(&dir, &servers);
    for p in &ports {
        wait_listening(*p);
    }
    let proxy = tables
        .iter()
        .any(|t| t.clients.contains(&"haproxy"))
        .then(|| haproxy(&dir, &ports))
        .flatten();
    let urls: String = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}/"))
        .collect::<Vec<_>>()
        .join(",");
    let programs = prepare(&tables, &dir);
    println!(
        "nginx upstreams on {ports:?}; {reps} paired reps of {seconds} s; cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut report = String::new();
    let mut json = Vec::new();
    for table in &tables {
        let heading = format!("\n## {} (vs {})\n", table.lang, table.reference);
        print!("{heading}");
        report.push_str(&heading);
        for &t in &threads {
            let config = config(&dir, &ports, t);
            let mut runs: Vec<Vec<Run>> = vec![Vec::new(); table.clients.len()];
            for _ in 0..reps {
                for (i, client) in table.clients.iter().enumerate() {
                    let Some(mut cmd) = programs.command(client) else {
                        continue;
                    };
                    let target = match (*client, &proxy) {
                        ("haproxy", Some((_, front))) => format!("http://127.0.0.1:{front}/"),
                        ("haproxy", None) => continue,
                        _ => urls.clone(),
                    };
                    cmd.args([&t.to_string(), &seconds, &max])
                        .arg(&config)
                        .arg(&target);
                    let out = match cmd.output() {
                        Ok(out) => out,
                        Err(e) => {
                            eprintln!("  {client}: {e}");
                            continue;
                        }
                    };
                    let line = String::from_utf8_lossy(&out.stdout);
                    match parse(line.lines().last().unwrap_or("")) {
                        Some(run) => runs[i].push(run),
                        None => eprintln!(
                            "  {client} x{t}: no result ({})",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    }
                }
            }
            report.push_str(&section(table, t, &runs, &mut json));
            print!(
                "{}",
                report
                    .rsplit("\n### ")
                    .next()
                    .map(|s| format!("\n### {s}"))
                    .unwrap_or_default()
            );
            let _ = std::io::stdout().flush();
        }
    }
    write_results("languages", &report, &json);
    drop(proxy);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One thread count's table: medians of each client, and ratios to the reference.
fn section(table: &Table, threads: usize, runs: &[Vec<Run>], json: &mut Vec<String>) -> String {
    let med = |i: usize, f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
    let reference = table
        .clients
        .iter()
        .position(|c| *c == table.reference)
        .filter(|&i| !runs[i].is_empty());
    let (ref_rps, ref_cpu) = reference.map_or((f64::NAN, f64::NAN), |i| {
        (med(i, |r| r.rps), med(i, |r| r.cpu_us))
    });
    let mut out = format!(
        "\n### {} thread(s)\n\n| client | req/s | vs {r} | p50 us | p99 us | p999 us | CPU us/req | CPU vs {r} | errors |\n|---|---|---|---|---|---|---|---|---|\n",
        threads,
        r = table.reference
    );
    for (i, client) in table.clients.iter().enumerate() {
        if runs[i].is_empty() {
            continue;
        }
        let (rps, cpu) = (med(i, |r| r.rps), med(i, |r| r.cpu_us));
        let (p50, p99, p999) = (med(i, |r| r.p50), med(i, |r| r.p99), med(i, |r| r.p999));
        let errors = med(i, |r| r.errors);
        // "-" when the reference did not run (left out with --clients).
        let ratio = |x: f64, digits: usize| {
            if x.is_finite() {
                format!("{x:.digits$}")
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            "| {client} | {rps:.0} | {} | {p50:.1} | {p99:.1} | {p999:.1} | {cpu:.1} | {} | {errors:.0} |\n",
            ratio(rps / ref_rps, 3),
            ratio(cpu / ref_cpu, 2)
        ));
        json.push(format!(
            "{{\"lang\":\"{}\",\"threads\":{threads},\"client\":\"{client}\",\"rps\":{rps:.1},\"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\"p999_us\":{p999:.1},\"cpu_us_per_req\":{cpu:.2},\"errors\":{errors:.0}}}",
            table.lang
        ));
    }
    out
}
