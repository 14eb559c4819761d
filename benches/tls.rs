//! TLS keep-alive, side by side in one run: `call()` against raw ureq with the same TLS
//! settings (trusting only the test CA), against a local TLS server, 1 and 8 threads,
//! alternating pairs; throughput ratio and handshakes per request.
//!
//!     cargo bench --bench tls                    # 3 pairs of 2 s
//!     cargo bench --bench tls -- --reps 5 --seconds 3
//!     RAW_TIMEOUTS=1 cargo bench --bench tls     # raw ureq with timeouts like call()'s

mod support;
// Shared with the tests, which use more of it.
#[allow(dead_code)]
#[path = "../tests/support/tls.rs"]
mod tls;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::arg;
use switchyard::{Balancer, Request};
use tls::{Pki, TlsServer};

/// Requests per second over `seconds` on `threads` threads, each doing `one`.
fn rate(threads: usize, seconds: f64, one: &(dyn Fn(u64) + Sync)) -> f64 {
    let done = AtomicU64::new(0);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while Instant::now() < until {
                    let n = done.fetch_add(1, Ordering::Relaxed);
                    one(n);
                }
            });
        }
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let reps = arg("--reps", 3);
    let seconds = arg("--seconds", 2) as f64;
    let pki = Pki::new("bench");
    let server = TlsServer::start(&pki, false);
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
    println!("TLS keep-alive, {seconds} s per run, {reps} alternating pairs");
    println!("| threads | raw req/s | call req/s | call / raw |");
    println!("|---|---|---|---|");
    let (before_requests, before_handshakes) = (server.requests(), server.handshakes());
    for threads in [1, 8] {
        let mut ratios = Vec::new();
        let (mut raws, mut calls) = (Vec::new(), Vec::new());
        for rep in 0..reps {
            let (r, c) = if rep % 2 == 0 {
                let r = rate(threads, seconds, &by_raw);
                (r, rate(threads, seconds, &by_call))
            } else {
                let c = rate(threads, seconds, &by_call);
                (rate(threads, seconds, &by_raw), c)
            };
            raws.push(r);
            calls.push(c);
            ratios.push(c / r);
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "| {threads} | {:.0} | {:.0} | {:.3} |",
            median(raws),
            median(calls),
            median(ratios)
        );
    }
    let requests = server.requests() - before_requests;
    let handshakes = server.handshakes() - before_handshakes;
    println!(
        "handshakes: {handshakes} for {requests} requests ({:.4}%)",
        100.0 * handshakes as f64 / requests.max(1) as f64
    );
}
