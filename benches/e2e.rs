//! End-to-end load: switchyard against the fastest possible in-process client and
//! against routing through a local HAProxy, on the same upstreams, in one run.
//!
//!     bash benches/e2e.sh                      # nginx + HAProxy, 1/8/32 threads, 5 paired reps
//!     cargo bench --bench e2e -- --smoke       # 2 s with the project's test server, no HAProxy
//!
//! Clients, alternated within each repetition so machine drift hits all alike:
//!   raw      ureq Agent doing its own round robin over the three upstreams
//!   call     switchyard `call()`, default strategy, breakers and metrics on
//!   submit   switchyard `submit()` + `wait()`
//!   haproxy  ureq through a local HAProxy (roundrobin, http-reuse always, checks on)
//! Reported per client: requests/s, p50/p99/p999 latency, connections the upstreams
//! accepted, and client CPU per request; medians over the repetitions, and ratios.

#[path = "../tests/support/server.rs"]
mod server;
mod support;

use support::{
    bench_config, closed_loop, cpu_time, free_port, haproxy, rss_kib, start_nginx, wait_listening,
    workdir, write_results, Daemon,
};

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use switchyard::{Balancer, Request};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    Raw,
    Call,
    Submit,
    Haproxy,
    /// `call()` while a scraper reads /metrics and /status.json 100 times a second each.
    Scraped,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Raw => "raw",
            Client::Call => "call",
            Client::Submit => "submit",
            Client::Haproxy => "haproxy",
            Client::Scraped => "scraped",
        }
    }
}

struct Options {
    clients: Vec<Client>,
    threads: Vec<usize>,
    reps: usize,
    seconds: f64,
    max_requests: usize,
    nginx: bool,
    /// Upstreams already running (for profiling without them in the picture).
    ports: Option<Vec<u16>>,
    /// Providers of the switchyard clients (default: one per upstream).
    providers: Option<usize>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let smoke = args.iter().any(|a| a == "--smoke");
    let all = [
        Client::Raw,
        Client::Call,
        Client::Submit,
        Client::Haproxy,
        Client::Scraped,
    ];
    Options {
        clients: value("--clients")
            .map(|v| {
                all.into_iter()
                    .filter(|c| v.split(',').any(|n| n == c.name()))
                    .collect()
            })
            .unwrap_or_else(|| all[..4].to_vec()),
        threads: value("--threads")
            .map(|v| v.split(',').filter_map(|t| t.parse().ok()).collect())
            .unwrap_or_else(|| if smoke { vec![2] } else { vec![1, 8, 32] }),
        reps: value("--reps")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 1 } else { 5 }),
        seconds: value("--seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(if smoke { 0.25 } else { 2.0 }),
        providers: value("--providers").and_then(|v| v.parse().ok()),
        max_requests: value("--max-requests")
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000_000),
        nginx: !smoke && !args.iter().any(|a| a == "--test-server") && value("--ports").is_none(),
        ports: value("--ports").map(|v| v.split(',').filter_map(|p| p.parse().ok()).collect()),
    }
}

/// Upstreams: three nginx servers (plus stub_status), or the project's test servers.
struct Upstreams {
    ports: Vec<u16>,
    status_port: Option<u16>,
    _nginx: Option<Daemon>,
    _test: Vec<server::TestServer>,
}

fn nginx(dir: &Path) -> Upstreams {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let status = free_port();
    let servers: String = ports
        .iter()
        .map(|p| format!("  server {{ listen 127.0.0.1:{p}; location / {{ return 200 '{{\"ok\":true}}'; }} }}\n"))
        .collect();
    let servers = format!(
        "{servers}  server {{ listen 127.0.0.1:{status}; location / {{ stub_status; }} }}\n"
    );
    let daemon = start_nginx(dir, &servers);
    for p in ports.iter().chain([&status]) {
        wait_listening(*p);
    }
    Upstreams {
        ports,
        status_port: Some(status),
        _nginx: Some(daemon),
        _test: Vec::new(),
    }
}

fn test_servers() -> Upstreams {
    let servers: Vec<server::TestServer> = (0..3).map(|_| server::TestServer::start()).collect();
    for s in &servers {
        s.keep_log(false);
    }
    Upstreams {
        ports: servers.iter().map(|s| s.port()).collect(),
        status_port: None,
        _nginx: None,
        _test: servers,
    }
}

impl Upstreams {
    /// Connections the upstreams accepted so far (nginx's stub_status), or the test servers'.
    fn accepted(&self) -> u64 {
        if let Some(port) = self.status_port {
            let text = ureq::get(format!("http://127.0.0.1:{port}/"))
                .call()
                .and_then(|mut r| r.body_mut().read_to_string())
                .unwrap_or_default();
            // "server accepts handled requests\n N N N": the first number, less ours.
            let numbers: Vec<u64> = text
                .lines()
                .nth(2)
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            return numbers.first().copied().unwrap_or(0);
        }
        self._test.iter().map(|s| s.connections() as u64).sum()
    }
}

/// Requests the balancer has seen (for the RSS report).
fn per_thread_total(lb: &Option<Balancer>) -> u64 {
    lb.as_ref()
        .map(|lb| lb.metrics().services.values().map(|s| s.requests).sum())
        .unwrap_or(0)
}

#[derive(Default, Clone)]
struct RunResult {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    cpu: Duration,
    connections: u64,
    latencies_ns: Vec<u64>,
}

impl RunResult {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile_us(&self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return 0.0;
        }
        let i = ((q * self.latencies_ns.len() as f64).ceil() as usize)
            .clamp(1, self.latencies_ns.len())
            - 1;
        self.latencies_ns[i] as f64 / 1000.0
    }

    fn cpu_per_request_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

fn run_client(
    client: Client,
    threads: usize,
    up: &Upstreams,
    haproxy_port: Option<u16>,
    opts: &Options,
) -> Option<RunResult> {
    let urls: Arc<Vec<String>> = Arc::new(
        up.ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}/"))
            .collect(),
    );
    let proxy_url = haproxy_port.map(|p| format!("http://127.0.0.1:{p}/"));
    if client == Client::Haproxy && proxy_url.is_none() {
        return None;
    }
    // The raw client: no timeouts (so ureq spawns no resolver thread), an idle pool as
    // large as the threads. The fastest a client of this library can be.
    let mut builder = ureq::Agent::config_builder()
        .max_idle_connections(threads * 4)
        .max_idle_connections_per_host(threads);
    if std::env::var("RAW_TIMEOUTS").is_ok() {
        builder = builder.timeout_per_read(Some(Duration::from_secs(15)));
    }
    let agent: ureq::Agent = builder.build().into();
    let lb = match client {
        Client::Call | Client::Submit | Client::Scraped => {
            let providers = opts.providers.unwrap_or(up.ports.len());
            let config = bench_config(&up.ports, providers, threads);
            Some(Balancer::from_toml_str(&config).unwrap())
        }
        _ => None,
    };
    let counter = Arc::new(AtomicUsize::new(0));
    let scraping = Arc::new(std::sync::atomic::AtomicBool::new(
        client == Client::Scraped,
    ));
    let scraper = (client == Client::Scraped).then(|| {
        let url = lb
            .as_ref()
            .unwrap()
            .serve_dashboard("127.0.0.1:0")
            .unwrap()
            .url();
        let scraping = scraping.clone();
        thread::spawn(move || {
            // Like a Prometheus server: one kept-alive connection.
            let agent = ureq::Agent::new_with_defaults();
            let tick = crossbeam_channel::tick(Duration::from_millis(10));
            let mut scrapes = 0u64;
            while scraping.load(Ordering::Relaxed) {
                let _ = tick.recv();
                for path in ["metrics", "status.json"] {
                    if let Ok(mut r) = agent.get(format!("{url}{path}")).call() {
                        scrapes += u64::from(r.body_mut().read_to_vec().is_ok());
                    }
                }
            }
            scrapes
        })
    });
    let accepted_before = up.accepted();
    let cpu_before = cpu_time();
    let one = || match client {
        Client::Raw => {
            let i = counter.fetch_add(1, Ordering::Relaxed) % urls.len();
            fetch(&agent, &urls[i])
        }
        Client::Haproxy => fetch(&agent, proxy_url.as_deref().unwrap_or("")),
        // Each request its own (a query as raw's URLs have none is the least it takes):
        // identical ones in flight at once would share calls, and this compares
        // per-call overhead.
        Client::Call | Client::Scraped => lb.as_ref().is_some_and(|lb| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            lb.call(Request::get("bench", "/").param("n", n.to_string()))
                .is_ok()
        }),
        Client::Submit => lb.as_ref().is_some_and(|lb| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            lb.submit(Request::get("bench", "/").param("n", n.to_string()))
                .and_then(|t| t.wait())
                .is_ok()
        }),
    };
    // Measuring memory: keep none of our own per request.
    let keep_latencies = std::env::var_os("REPORT_RSS").is_none();
    let (per_thread, elapsed) = closed_loop::run(
        threads,
        opts.seconds,
        opts.max_requests,
        keep_latencies,
        &one,
    );
    let cpu = cpu_time().saturating_sub(cpu_before);
    scraping.store(false, Ordering::Relaxed);
    if std::env::var_os("REPORT_RSS").is_some() {
        eprintln!(
            "  {} x{threads}: RSS {} KiB after {} requests",
            client.name(),
            rss_kib(),
            per_thread_total(&lb)
        );
    }
    if let Some(scraper) = scraper {
        let scrapes = scraper.join().unwrap_or(0);
        eprintln!(
            "  scraper: {:.0} scrapes/s",
            scrapes as f64 / elapsed.as_secs_f64()
        );
    }
    drop(lb);
    let mut result = RunResult {
        elapsed,
        cpu,
        connections: up.accepted().saturating_sub(accepted_before),
        ..RunResult::default()
    };
    for (ok, errors, lat) in per_thread {
        result.requests += ok;
        result.errors += errors;
        result.latencies_ns.extend(lat);
    }
    result.latencies_ns.sort_unstable();
    // Our own stub_status reads count as connections too.
    if up.status_port.is_some() {
        result.connections = result.connections.saturating_sub(1);
    }
    Some(result)
}

fn fetch(agent: &ureq::Agent, url: &str) -> bool {
    match agent.get(url).call() {
        Ok(mut r) => r.body_mut().read_to_vec().is_ok() && r.status() == 200,
        Err(_) => false,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else of libtest applies here.
    let opts = options();
    let dir = workdir();
    let up = match (&opts.ports, opts.nginx) {
        (Some(ports), _) => Upstreams {
            ports: ports.clone(),
            status_port: None,
            _nginx: None,
            _test: Vec::new(),
        },
        (None, true) => nginx(&dir),
        (None, false) => test_servers(),
    };
    let proxy = if opts.nginx {
        haproxy(&dir, &up.ports)
    } else {
        None
    };
    let haproxy_port = proxy.as_ref().map(|(_, p)| *p);
    let clients = [
        Client::Raw,
        Client::Call,
        Client::Submit,
        Client::Haproxy,
        Client::Scraped,
    ];
    let wanted = |c: &Client| opts.clients.contains(c);
    println!(
        "upstreams: {} on ports {:?}; haproxy: {}; {} reps of {} s; cores: {}",
        if opts.nginx { "nginx" } else { "test server" },
        up.ports,
        haproxy_port.map_or("off".to_string(), |p| p.to_string()),
        opts.reps,
        opts.seconds,
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let mut report = String::new();
    let mut json = Vec::new();
    for &threads in &opts.threads {
        let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); clients.len()];
        for _ in 0..opts.reps {
            for (i, &c) in clients.iter().enumerate().filter(|(_, c)| wanted(c)) {
                if let Some(r) = run_client(c, threads, &up, haproxy_port, &opts) {
                    runs[i].push(r);
                }
            }
        }
        let med = |i: usize, f: &dyn Fn(&RunResult) -> f64| median(runs[i].iter().map(f).collect());
        if runs[0].is_empty() || runs[1].is_empty() {
            for (i, c) in clients
                .iter()
                .enumerate()
                .filter(|(i, _)| !runs[*i].is_empty())
            {
                println!(
                    "{} x{threads}: {:.0} req/s, CPU {:.1} us/req",
                    c.name(),
                    med(i, &|r| r.throughput()),
                    med(i, &|r| r.cpu_per_request_us())
                );
            }
            continue;
        }
        let rps: Vec<f64> = (0..clients.len())
            .map(|i| med(i, &|r| r.throughput()))
            .collect();
        report.push_str(&format!(
            "\n### {threads} thread(s)\n\n| client | req/s | vs raw | p50 us | p99 us | p999 us | conns | CPU us/req | errors |\n|---|---|---|---|---|---|---|---|---|\n"
        ));
        for (i, c) in clients.iter().enumerate() {
            if runs[i].is_empty() {
                continue;
            }
            let (p50, p99, p999) = (
                med(i, &|r| r.quantile_us(0.5)),
                med(i, &|r| r.quantile_us(0.99)),
                med(i, &|r| r.quantile_us(0.999)),
            );
            let conns = med(i, &|r| r.connections as f64);
            let cpu = med(i, &|r| r.cpu_per_request_us());
            let errors = med(i, &|r| r.errors as f64);
            report.push_str(&format!(
                "| {} | {:.0} | {:.3} | {p50:.1} | {p99:.1} | {p999:.1} | {conns:.0} | {cpu:.1} | {errors:.0} |\n",
                c.name(),
                rps[i],
                rps[i] / rps[0],
            ));
            json.push(format!(
                "{{\"threads\":{threads},\"client\":\"{}\",\"rps\":{:.1},\"p50_us\":{p50:.1},\"p99_us\":{p99:.1},\"p999_us\":{p999:.1},\"connections\":{conns:.0},\"cpu_us_per_req\":{cpu:.2},\"errors\":{errors:.0}}}",
                c.name(),
                rps[i],
            ));
        }
        if !runs[3].is_empty() {
            report.push_str(&format!("\ncall vs haproxy: {:.2}x\n", rps[1] / rps[3]));
        }
        if !runs[4].is_empty() {
            report.push_str(&format!(
                "\ncall while scraped vs call: {:.3}x\n",
                rps[4] / rps[1]
            ));
        }
        let added_p50 = med(1, &|r| r.quantile_us(0.5)) - med(0, &|r| r.quantile_us(0.5));
        report.push_str(&format!("call adds {added_p50:.1} us at p50 over raw\n"));
        print!(
            "{}",
            report
                .split("\n### ")
                .last()
                .map(|s| format!("\n### {s}"))
                .unwrap_or_default()
        );
        let _ = std::io::stdout().flush();
    }
    write_results("e2e", &report, &json);
    drop(proxy);
    drop(up);
    let _ = std::fs::remove_dir_all(&dir);
}
