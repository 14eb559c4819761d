//! Micro-benchmarks: the balancer's per-request work without the network, and the
//! hand-off from `submit` to a worker.
//!
//!     cargo bench --bench micro                 # criterion, plus the tables below
//!     NO_TABLES=1 cargo bench --bench micro -- scrape   # one group, no tables
//!
//! select_record/N/T: pick among N providers (default strategy), take the breaker's
//! permit and a connection slot, give them back, record the outcome in the breaker,
//! metrics, windows and latency averages; T threads on one service, time per request.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};

#[path = "../tests/support/server.rs"]
mod server;
mod support;

use support::rss_kib;
use switchyard::bench_support::Harness;
use switchyard::StrategyKind;

/// Runs `iters` requests spread over `threads` threads; returns core-time for `iters`:
/// wall time x the cores the threads could use, so 8 threads on 2 cores are not charged
/// for waiting their turn, only for contention.
fn per_request_on_threads(h: &Arc<Harness>, threads: usize, iters: u64) -> Duration {
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per = (iters / threads as u64).max(1);
    let started = Instant::now();
    thread::scope(|s| {
        for _ in 0..threads {
            let h = h.clone();
            s.spawn(move || {
                for _ in 0..per {
                    h.select_and_record();
                }
            });
        }
    });
    let done = per * threads as u64;
    started
        .elapsed()
        .mul_f64(threads.min(cores) as f64 * iters as f64 / done as f64)
}

fn select_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_record");
    for providers in [3, 8, 1000] {
        for strategy in [
            StrategyKind::HealthBased,
            StrategyKind::RoundRobin,
            StrategyKind::PeakEwma,
        ] {
            let h = Arc::new(Harness::new(providers, strategy));
            for threads in [1, 8] {
                let name = format!("{}/{providers}/{threads}t", strategy.name());
                group.bench_function(&name, |b| {
                    b.iter_custom(|iters| {
                        if threads == 1 {
                            let started = Instant::now();
                            for _ in 0..iters {
                                black_box(&h).select_and_record();
                            }
                            started.elapsed()
                        } else {
                            per_request_on_threads(&h, threads, iters)
                        }
                    })
                });
            }
        }
    }
    group.finish();
}

/// What one scrape costs to render, for a service of 3 providers with some history.
fn scrape(c: &mut Criterion) {
    let server = server::TestServer::start();
    server.keep_log(false);
    let mut config = String::new();
    for i in 0..3 {
        config.push_str(&format!(
            "[[services.s.providers]]\nname = \"p{i}\"\nbase_url = \"{}\"\n",
            server.url()
        ));
    }
    let lb = switchyard::Balancer::from_toml_str(&config).unwrap();
    for _ in 0..2_000 {
        let _ = lb.call(switchyard::Request::get("s", "/x"));
    }
    let mut group = c.benchmark_group("scrape");
    group.bench_function("prometheus", |b| b.iter(|| black_box(lb.prometheus())));
    group.bench_function("metrics_json", |b| {
        b.iter(|| black_box(serde_json::to_vec(&lb.metrics()).unwrap()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1)).sample_size(20);
    targets = select_record, scrape
}

/// Memory after many requests, and throughput of the select + record path as providers
/// and threads grow.
fn scale_tables() {
    println!(
        "\nmetrics state per provider: {} bytes",
        Harness::bytes_per_provider()
    );
    let h = Harness::new(8, StrategyKind::HealthBased);
    for _ in 0..100_000 {
        h.select_and_record();
    }
    let at_100k = rss_kib();
    for _ in 0..900_000 {
        h.select_and_record();
    }
    let at_1m = rss_kib();
    println!(
        "RSS after 100,000 requests: {at_100k} KiB; after 1,000,000: {at_1m} KiB; growth {} KiB",
        at_1m as i64 - at_100k as i64
    );
    println!("\n| providers | threads | core-ns per request (select + record) |\n|---|---|---|");
    for providers in [1, 10, 100, 1000] {
        let h = Arc::new(Harness::new(providers, StrategyKind::HealthBased));
        for threads in [1, 2, 8, 32, 64] {
            let n = 200_000u64;
            let d = per_request_on_threads(&h, threads, n);
            println!(
                "| {providers} | {threads} | {:.0} |",
                d.as_nanos() as f64 / n as f64
            );
        }
    }
}

/// Hand-off from `submit` to the worker that starts the request, workers idle: the
/// queue wait every response reports.
fn hand_off_table() {
    let server = server::TestServer::start();
    server.keep_log(false);
    let config = format!(
        "[[services.s.providers]]\nname = \"p\"\nbase_url = \"{}\"\n",
        server.url()
    );
    let lb = switchyard::Balancer::from_toml_str(&config).unwrap();
    let mut waits: Vec<u128> = (0..5_000)
        .map(|_| {
            let r = lb
                .submit(switchyard::Request::get("s", "/x"))
                .unwrap()
                .wait()
                .unwrap();
            r.queue_wait().as_nanos()
        })
        .collect();
    waits.sort_unstable();
    let at =
        |q: f64| waits[((q * waits.len() as f64) as usize).min(waits.len() - 1)] as f64 / 1000.0;
    println!(
        "\nhand-off, submit to worker start, idle workers (5,000 requests): p50 {:.1} us, p99 {:.1} us, p999 {:.1} us",
        at(0.5),
        at(0.99),
        at(0.999)
    );
}

/// The select path with a rate limit and a calendar quota on every provider, beside the
/// same path without, in the same run (limits high enough never to hold a call back, so
/// both do the same work besides the checks and the takes).
fn allowance_table() {
    const LIMITS: &str = "rate = { per_second = 1000000000, per_minute = 1000000000 }\n\
                          quota = { per_day = 1000000000000000, per_month = 1000000000000000 }";
    println!(
        "\n| providers | threads | without limits, ns | with rate + quota, ns | median difference, ns | ratio |\n|---|---|---|---|---|---|"
    );
    for providers in [3, 8, 100] {
        for threads in [1, 8] {
            let plain = Arc::new(Harness::new(providers, StrategyKind::HealthBased));
            let limited = Arc::new(Harness::with_defaults(
                providers,
                StrategyKind::HealthBased,
                LIMITS,
            ));
            let n = 100_000u64;
            // Turn by turn, nine pairs; the medians: the machine's noise hits both alike.
            let mut pairs: Vec<(f64, f64)> = (0..9)
                .map(|_| {
                    let ns = |h: &Arc<Harness>| {
                        per_request_on_threads(h, threads, n).as_nanos() as f64 / n as f64
                    };
                    (ns(&plain), ns(&limited))
                })
                .collect();
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let a = median(&mut pairs.iter().map(|p| p.0).collect());
            let b = median(&mut pairs.iter().map(|p| p.1).collect());
            let diff = median(&mut pairs.iter_mut().map(|p| p.1 - p.0).collect());
            println!(
                "| {providers} | {threads} | {a:.0} | {b:.0} | {diff:+.0} | {:.3} |",
                b / a
            );
        }
    }
}

/// What coalescing adds to a request with no identical call in flight.
fn coalescing_table() {
    let h = Harness::new(3, StrategyKind::HealthBased);
    let n = 1_000_000u32;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..n {
            black_box(&h).coalescing_miss();
        }
        best = best.min(started.elapsed().as_nanos() as f64 / f64::from(n));
    }
    println!("\ncoalescing on a miss (key, registration, end), one thread: {best:.0} ns");
}

/// The memory a bounded cache holds after 1,000,000 distinct answers, beside a map that
/// keeps them all; first in the run, on a heap no other table has warmed.
fn cache_memory_table() {
    let before = rss_kib();
    let held = switchyard::bench_support::fill_cache(10_000, 1_000_000, 64);
    let bounded = rss_kib().saturating_sub(before);
    let before = rss_kib();
    let all: std::collections::HashMap<u64, Vec<u8>> =
        (0..1_000_000u64).map(|k| (k, vec![b'x'; 64])).collect();
    let unbounded = rss_kib().saturating_sub(before);
    drop(black_box(all));
    println!(
        "\ncache of 10000 entries after 1000000 distinct 64-byte answers: {held} held, \
         RSS +{bounded} KiB; a map keeping all: +{unbounded} KiB"
    );
}

/// A cache hit through the whole public `call()` against a loopback call without the
/// cache, in one run.
fn cache_table() {
    use switchyard::{Balancer, Request};
    let upstream = server::TestServer::start();
    upstream.set_body(br#"{"p":1}"#.to_vec());
    let provider = |service: &str| {
        format!(
            "[[services.{service}.providers]]\nname = \"{service}p\"\nbase_url = \"{}\"\n\
             endpoints = {{ quote = \"/q\" }}\n",
            upstream.url()
        )
    };
    let text = format!(
        "[services.kept.endpoints.quote]\ncache_ttl_ms = 3600000\n{}{}",
        provider("kept"),
        provider("plain")
    );
    let lb = Balancer::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let quote = |service: &str| Request::get(service, "quote").param("symbol", "AAPL");
    assert!(!lb.call(quote("kept")).unwrap().from_cache());
    let time = |service: &str, n: u32| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            for _ in 0..n {
                black_box(lb.call(quote(service)).unwrap());
            }
            best = best.min(started.elapsed().as_nanos() as f64 / f64::from(n));
        }
        best
    };
    let (hit, call) = (time("kept", 200_000), time("plain", 2_000));
    println!(
        "cache, one thread, whole call(): hit {hit:.0} ns; loopback call without it {call:.0} ns; \
         hit/call {:.3}",
        hit / call
    );
}

fn main() {
    cache_memory_table();
    benches();
    hand_off_table();
    allowance_table();
    coalescing_table();
    cache_table();
    if std::env::var_os("NO_TABLES").is_none() {
        scale_tables();
    }
    Criterion::default().configure_from_args().final_summary();
}
