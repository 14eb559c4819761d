//! TLS keep-alive, side by side in one run: `call()` against raw ureq with the same TLS
//! settings (trusting only the test CA), against a local TLS server, 1 and 8 threads,
//! alternating pairs; throughput ratio and handshakes per request.
//!
//! Two servers: nginx with TLS in a process of its own (`--nginx`, what a provider's
//! front looks like), or the tests' rustls server in this process, which answers in a few
//! microseconds and shares the two cores with the clients, so it weighs every
//! microsecond a client spends.
//!
//!     bash benches/tls.sh                        # nginx (installed when missing)
//!     cargo bench --bench tls                    # in-process server, 3 pairs of 2 s
//!     cargo bench --bench tls -- --reps 5 --seconds 3
//!     bash benches/tls.sh --reps 21 --ms 500     # many short pairs on a noisy machine
//!     RAW_TIMEOUTS=1 cargo bench --bench tls     # raw ureq with timeouts like call()'s
//!     PROFILE=call cargo bench --bench tls -- --threads 8   # one client alone, for a profiler
//!     (PROFILE=raw, agent: the provider's agent bare, transport: its transport bare)

mod support;
// Shared with the tests, which use more of it.
#[allow(dead_code)]
#[path = "../tests/support/tls.rs"]
mod tls;

use std::sync::Arc;
use std::time::Duration;

use support::{
    arg, cpu_time, free_port, median, run_for, start_nginx, wait_listening, workdir, Daemon,
};
use switchyard::{Balancer, Request};
use tls::{Pki, TlsServer};

/// Requests per second over `seconds` on `threads` threads, each doing `one`, and this
/// process's CPU time per request in microseconds.
fn rate(threads: usize, seconds: f64, one: &(dyn Fn(u64) + Sync)) -> (f64, f64) {
    let cpu_before = cpu_time();
    let (done, took) = run_for(threads, seconds, one);
    let cpu = cpu_time().saturating_sub(cpu_before).as_secs_f64();
    (done as f64 / took.as_secs_f64(), cpu * 1e6 / done as f64)
}

/// A TLS server the clients call, and what it counts.
enum Server {
    InProcess(TlsServer),
    Nginx {
        port: u16,
        status: u16,
        _daemon: Daemon,
    },
}

impl Server {
    fn url(&self) -> String {
        match self {
            Server::InProcess(server) => server.url(),
            Server::Nginx { port, .. } => format!("https://127.0.0.1:{port}"),
        }
    }

    /// Requests and TLS handshakes (accepted connections: nginx resumes no sessions here).
    fn counts(&self) -> (u64, u64) {
        match self {
            Server::InProcess(server) => (server.requests() as u64, server.handshakes() as u64),
            Server::Nginx { status, .. } => {
                let text = ureq::get(format!("http://127.0.0.1:{status}/"))
                    .call()
                    .and_then(|mut r| r.body_mut().read_to_string())
                    .unwrap_or_default();
                // "server accepts handled requests\n N N N"
                let n: Vec<u64> = text
                    .lines()
                    .nth(2)
                    .unwrap_or("")
                    .split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect();
                (
                    n.get(2).copied().unwrap_or(0),
                    n.first().copied().unwrap_or(0),
                )
            }
        }
    }
}

/// nginx serving `{"ok":true}` over TLS with the PKI's server certificate, keep-alive.
fn nginx(pki: &Pki) -> Server {
    let dir = workdir();
    let (port, status) = (free_port(), free_port());
    let servers = format!(
        "  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};\n\
         ssl_protocols TLSv1.2 TLSv1.3; location / {{ return 200 '{{\"ok\":true}}'; }} }}\n\
         server {{ listen 127.0.0.1:{status}; location / {{ stub_status; }} }}\n",
        cert = pki.server_cert_file.display(),
        key = pki.server_key_file.display(),
    );
    let daemon = start_nginx(&dir, &servers);
    wait_listening(port);
    wait_listening(status);
    Server::Nginx {
        port,
        status,
        _daemon: daemon,
    }
}

fn main() {
    let reps = arg("--reps", 3);
    // --ms for shorter runs: more pairs in the same time see more alike conditions.
    let seconds = arg("--ms", arg("--seconds", 2) * 1000) as f64 / 1000.0;
    let pki = Pki::new("bench");
    let server = if std::env::args().any(|a| a == "--nginx") {
        nginx(&pki)
    } else {
        Server::InProcess(TlsServer::start(&pki, false))
    };
    let ca_pem = std::fs::read(&pki.ca_file).unwrap();
    let ca = ureq::tls::Certificate::from_pem(&ca_pem).unwrap();
    let raw = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
                .build(),
        )
        .max_idle_connections(64)
        .max_idle_connections_per_host(64);
    let raw = match std::env::var("RAW_TIMEOUTS") {
        Ok(_) => raw
            .timeout_per_read(Some(Duration::from_secs(30)))
            .timeout_per_write(Some(Duration::from_secs(30)))
            .timeout_global(Some(Duration::from_secs(60))),
        Err(_) => raw,
    };
    let raw = raw.build().new_agent();
    let text = format!(
        "[defaults.tls]\nca_file = {:?}\nonly_ca_file = true\n\
         [[services.s.providers]]\nname = \"secure\"\nbase_url = \"{}\"\npool = {{ max_connections = 16 }}\n",
        pki.ca_file.display().to_string(),
        server.url()
    );
    let lb = Balancer::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let url = server.url();
    let by_raw = |n: u64| {
        let mut r = raw.get(format!("{url}/q?n={n}")).call().unwrap();
        let _ = r.body_mut().read_to_vec().unwrap();
    };
    let by_call = |n: u64| {
        lb.call(Request::get("s", "/q").param("n", n.to_string()))
            .unwrap();
    };
    // The provider's own agent, driven bare: what its settings cost without the balancer.
    let bare = switchyard::bench_support::provider_agent(&text);
    let by_agent = |n: u64| {
        let mut r = bare.get(format!("{url}/q?n={n}")).call().unwrap();
        let _ = r.body_mut().read_to_vec().unwrap();
    };
    // Its transport without the balancer: splits call()'s cost into exchange and balancer.
    let transport = switchyard::bench_support::ProviderTransport::new(&text);
    let by_transport = |n: u64| {
        transport.get(&format!("{url}/q?n={n}")).unwrap();
    };
    if let Ok(client) = std::env::var("PROFILE") {
        let one: &(dyn Fn(u64) + Sync) = match client.as_str() {
            "transport" => &by_transport,
            "raw" => &by_raw,
            "agent" => &by_agent,
            _ => &by_call,
        };
        let threads = arg("--threads", 8);
        let (rate, cpu) = rate(threads, seconds, one);
        println!("{client}: {rate:.0} req/s, {cpu:.1} us CPU per request");
        return;
    }
    println!("TLS keep-alive, {seconds} s per run, {reps} alternating pairs");
    // CPU is this process's: the clients' alone against nginx, with the server's in process.
    println!(
        "| threads | raw req/s | call req/s | call / raw | pairs' range | raw CPU us/req | call CPU us/req |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (before_requests, before_handshakes) = server.counts();
    for threads in [1, 8] {
        let mut ratios = Vec::new();
        let (mut raws, mut calls) = (Vec::new(), Vec::new());
        let (mut raw_cpu, mut call_cpu) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            let (r, c) = if rep % 2 == 0 {
                let r = rate(threads, seconds, &by_raw);
                (r, rate(threads, seconds, &by_call))
            } else {
                let c = rate(threads, seconds, &by_call);
                (rate(threads, seconds, &by_raw), c)
            };
            raws.push(r.0);
            calls.push(c.0);
            raw_cpu.push(r.1);
            call_cpu.push(c.1);
            ratios.push(c.0 / r.0);
        }
        // The spread says how far one pair is to be trusted on this machine.
        let lowest = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = ratios.iter().copied().fold(0.0, f64::max);
        println!(
            "| {threads} | {:.0} | {:.0} | {:.3} | {lowest:.3}-{highest:.3} | {:.1} | {:.1} |",
            median(raws),
            median(calls),
            median(ratios),
            median(raw_cpu),
            median(call_cpu)
        );
    }
    let (requests, handshakes) = server.counts();
    let (requests, handshakes) = (requests - before_requests, handshakes - before_handshakes);
    println!(
        "handshakes: {handshakes} for {requests} requests ({:.4}%)",
        100.0 * handshakes as f64 / requests.max(1) as f64
    );
}
