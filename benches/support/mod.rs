//! Shared by the benchmarks.

pub mod closed_loop;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// This process's resident memory, in KiB, from /proc.
#[allow(dead_code)] // not every benchmark measures memory
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The number after `--name` on the command line, else `default`.
#[allow(dead_code)] // not every benchmark takes arguments
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[allow(dead_code)] // used by the benchmarks with servers of their own
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process stopped on drop.
#[allow(dead_code)]
pub struct Daemon(pub Child);

impl Drop for Daemon {
    /// SIGTERM first: a master killed outright (nginx) leaves its workers behind, and they
    /// would weigh on the next run. SIGKILL when it has not gone within 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of this run's own for a server's files.
#[allow(dead_code)]
pub fn workdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[allow(dead_code)]
pub fn wait_listening(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on {port}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[allow(unused_imports)] // not every benchmark reads CPU time
pub use closed_loop::cpu_time;

/// The middle value (the upper one of an even count).
#[allow(dead_code)]
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// nginx in the foreground with `servers` (its `server { }` blocks), keep-alive without
/// limit, every file under `dir`; stopped when the daemon drops.
#[allow(dead_code)]
pub fn start_nginx(dir: &Path, servers: &str) -> Daemon {
    let conf = format!(
        "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/nginx-error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 120s;\n\
         client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  fastcgi_temp_path {dir}/fastcgi;\n\
         uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n{servers}}}\n",
        dir = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .args([
            "-p",
            &dir.display().to_string(),
            "-c",
            &path.display().to_string(),
        ])
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed (benches/e2e.sh and benches/tls.sh install it)");
    Daemon(child)
}

/// Runs `one` (given a running count) on `threads` threads for `seconds`: calls made and
/// the time it took.
#[allow(dead_code)]
pub fn run_for(threads: usize, seconds: f64, one: &(dyn Fn(u64) + Sync)) -> (u64, Duration) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while Instant::now() < until {
                    one(done.fetch_add(1, Ordering::Relaxed));
                }
            });
        }
    });
    (done.load(Ordering::Relaxed), started.elapsed())
}

/// HAProxy in front of `ports` (roundrobin, http-reuse always, checks on), on a port of
/// its own; None when it is not installed.
#[allow(dead_code)]
pub fn haproxy(dir: &Path, ports: &[u16]) -> Option<(Daemon, u16)> {
    let front = free_port();
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server s{i} 127.0.0.1:{p} check inter 2s\n"))
        .collect();
    let conf = format!(
        "global\n    maxconn 4000\n\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n\
         timeout server 60s\n    option http-keep-alive\n    http-reuse always\n\n\
         frontend fe\n    bind 127.0.0.1:{front}\n    default_backend be\n\n\
         backend be\n    balance roundrobin\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("haproxy")
        .args(["-f", &path.display().to_string(), "-db"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let daemon = Daemon(child);
    wait_listening(front);
    Some((daemon, front))
}

/// The configuration the end-to-end and per-language benchmarks give switchyard: service
/// "bench" with `providers` providers over `ports` in turn (more providers than ports
/// share them, each with its own pool), workers and connections enough for `threads`.
#[allow(dead_code)]
pub fn bench_config(ports: &[u16], providers: usize, threads: usize) -> String {
    let mut config = format!(
        "[defaults]\nworkers = {}\n[defaults.pool]\nmax_connections = {}\n",
        threads.max(4),
        threads.max(10)
    );
    for i in 0..providers {
        let p = ports[i % ports.len()];
        config.push_str(&format!(
            "[[services.bench.providers]]\nname = \"u{i}\"\nbase_url = \"http://127.0.0.1:{p}\"\n"
        ));
    }
    config
}

/// Writes a benchmark's report to target/bench-NAME.md and its rows to .json.
#[allow(dead_code)]
pub fn write_results(name: &str, report: &str, rows: &[String]) {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join(format!("bench-{name}.md")), report);
    let _ = std::fs::write(
        target.join(format!("bench-{name}.json")),
        format!("[{}]\n", rows.join(",\n")),
    );
}
