//! The switchyard demo: three APIs (stocks, crypto, news) served by eight simulated
//! providers on 127.0.0.1, some slow, one that starts failing part-way, and for news a
//! free tier with a small daily quota beside a priced provider (picked by `cost_aware`),
//! so traffic moves when the free quota runs out and the cost shows. Callers send a mix
//! of priorities for a while; progress prints every second and a summary at the end.
//!
//!     cargo run --release --example demo                 # about 20 seconds
//!     cargo run --release --example demo -- --seconds 50
//!     cargo run --release --example demo -- --serve      # until interrupted
//!     cargo run --release --example demo -- --serve --write-config target/demo.toml
//!         # also writes the providers' configuration, for the C, C++ and Python examples

#[path = "../tests/support/server.rs"]
mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use server::{Fault, TestServer};
use switchyard::{Balancer, Priority, Request};

struct Simulated {
    service: &'static str,
    name: &'static str,
    tier: u8,
    latency_ms: u64,
    endpoint: &'static str,
    /// More provider keys: price, quota, rate.
    extra: &'static str,
}

const PROVIDERS: [Simulated; 8] = [
    Simulated {
        service: "stocks",
        name: "polygon",
        tier: 1,
        latency_ms: 4,
        endpoint: "/v2/last/trade/{symbol}",
        extra: "",
    },
    Simulated {
        service: "stocks",
        name: "finnhub",
        tier: 1,
        latency_ms: 12,
        endpoint: "/api/v1/quote",
        extra: "",
    },
    Simulated {
        service: "stocks",
        name: "marketstack",
        tier: 2,
        latency_ms: 35,
        endpoint: "/v1/eod/latest",
        extra: "",
    },
    Simulated {
        service: "crypto",
        name: "coingecko",
        tier: 1,
        latency_ms: 6,
        endpoint: "/api/v3/simple/price",
        extra: "",
    },
    Simulated {
        service: "crypto",
        name: "coincap",
        tier: 1,
        latency_ms: 9,
        endpoint: "/v2/assets/{symbol}",
        extra: "",
    },
    Simulated {
        service: "crypto",
        name: "kraken",
        tier: 2,
        latency_ms: 20,
        endpoint: "/0/public/Ticker",
        extra: "",
    },
    Simulated {
        service: "news",
        name: "newsapi",
        tier: 1,
        latency_ms: 30,
        endpoint: "/v2/everything",
        extra: "cost_per_request = 0.0\nquota = { per_day = 1500 }\nrate = { per_second = 150, burst = 20 }",
    },
    Simulated {
        service: "news",
        name: "gnews",
        tier: 1,
        latency_ms: 70,
        endpoint: "/api/v4/search",
        extra: "cost_per_request = 0.002",
    },
];

/// The free tier with a daily quota, and the priced provider beside it.
const FREE: &str = "newsapi";
const PRICED: &str = "gnews";

/// The provider that starts failing, and when (as a share of the run).
const FAILING: &str = "coingecko";
const FAILS_FROM: f64 = 0.4;
const CALLERS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let serve = args.iter().any(|a| a == "--serve");
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);

    let servers: Vec<TestServer> = PROVIDERS
        .iter()
        .map(|p| {
            let s = TestServer::start();
            s.keep_log(false);
            s.set_latency(Duration::from_millis(p.latency_ms));
            s.set_body(format!("{{\"provider\":\"{}\",\"price\":101.25}}", p.name));
            s
        })
        .collect();
    let mut config = String::from(
        "[defaults]\ndeadline_ms = 5000\n\
         [defaults.pool]\nmax_connections = 6\nrequest_timeout_ms = 2000\n\
         [defaults.retry]\nmax_attempts = 3\n\
         # The free tier first, the priced one once its quota is used up.\n\
         [services.news]\nstrategy = \"cost_aware\"\n",
    );
    for (p, s) in PROVIDERS.iter().zip(&servers) {
        config.push_str(&format!(
            "[[services.{}.providers]]\nname = \"{}\"\nbase_url = \"{}\"\ntier = {}\n\
             endpoints = {{ quote = \"{}\" }}\n{}\n",
            p.service,
            p.name,
            s.url(),
            p.tier,
            p.endpoint,
            p.extra
        ));
    }
    let lb = Balancer::from_toml_str(&config).expect("demo configuration");
    if let Some(path) = args
        .iter()
        .position(|a| a == "--write-config")
        .and_then(|i| args.get(i + 1))
    {
        // Written whole, then renamed: a reader never sees half a file.
        let partial = format!("{path}.partial");
        std::fs::write(&partial, &config)
            .and_then(|()| std::fs::rename(&partial, path))
            .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        println!("configuration for these providers: {path}");
    }
    let dashboard = lb.serve_dashboard("127.0.0.1:0").expect("dashboard");

    println!(
        "switchyard demo: {} providers on 127.0.0.1 for 3 services",
        PROVIDERS.len()
    );
    for (p, s) in PROVIDERS.iter().zip(&servers) {
        println!(
            "  {:<7} {:<12} tier {}  ~{:>2} ms  {}",
            p.service,
            p.name,
            p.tier,
            p.latency_ms,
            s.url()
        );
    }
    println!("dashboard: {}", dashboard.url());
    println!(
        "news: {FREE} is a free tier (1500 calls a day), {PRICED} costs 0.002 a call; \
         cost_aware sends news to {FREE} while its rate and quota allow"
    );
    println!(
        "{CALLERS} callers, mixed priorities; {FAILING} starts failing {}",
        if serve {
            "after 20 s (--serve runs until interrupted)".to_string()
        } else {
            format!("at {:.0} s of {seconds}", seconds as f64 * FAILS_FROM)
        }
    );

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let (lb, stop, done, failed) = (lb.clone(), stop.clone(), done.clone(), failed.clone());
            thread::spawn(move || caller(i, &lb, &stop, &done, &failed))
        })
        .collect();

    let started = Instant::now();
    let fail_at = Duration::from_secs_f64(if serve {
        20.0
    } else {
        seconds as f64 * FAILS_FROM
    });
    let mut failing = false;
    let mut quota_gone = false;
    let mut last = 0;
    loop {
        thread::sleep(Duration::from_secs(1));
        let elapsed = started.elapsed();
        if !failing && elapsed >= fail_at {
            failing = true;
            let i = PROVIDERS
                .iter()
                .position(|p| p.name == FAILING)
                .unwrap_or(0);
            servers[i].set_fault(Fault::Status(503));
            println!("  -- {FAILING} now answers 503 to everything --");
        }
        let now = done.load(Ordering::Relaxed);
        let m = lb.metrics();
        let news = &m.services["news"];
        let free = &news.providers[FREE];
        let used_up = free.resting_reason == Some("quota")
            || free.quota.get("per_day").is_some_and(|q| q.used >= q.limit);
        if !quota_gone && used_up {
            quota_gone = true;
            println!(
                "  -- {FREE}'s free quota for today is used up: news moves to {PRICED} (cost so far {:.3}) --",
                news.cost_today
            );
        }
        let depth: usize = m.services.values().map(|s| s.queue_depth).sum();
        let failovers: u64 = m.services.values().map(|s| s.failovers).sum();
        let open: Vec<String> = m
            .services
            .values()
            .flat_map(|s| s.providers.iter())
            .filter(|(_, p)| p.circuit.state != "closed")
            .map(|(n, p)| format!("{n} {}", p.circuit.state))
            .collect();
        println!(
            "  {:>3} s  {:>6} req/s  total {:>7}  caller errors {:>4}  failovers {:>5}  queued {:>3}  news cost {:>6.3}  {}",
            elapsed.as_secs(),
            now - last,
            now,
            failed.load(Ordering::Relaxed),
            failovers,
            depth,
            news.cost_today,
            open.join(", ")
        );
        last = now;
        if !serve && elapsed >= Duration::from_secs(seconds) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        let _ = c.join();
    }
    summary(&lb);
    println!("dashboard was at {}", dashboard.url());
    lb.shutdown(Duration::from_secs(2));
}

fn caller(i: usize, lb: &Balancer, stop: &AtomicBool, done: &AtomicU64, failed: &AtomicU64) {
    let mut rng = rand::rng();
    let symbols = ["AAPL", "MSFT", "BTC", "ETH", "NVDA", "SOL"];
    while !stop.load(Ordering::Relaxed) {
        let service = ["stocks", "stocks", "crypto", "crypto", "news"][rng.random_range(0..5)];
        let priority = match rng.random_range(0..100) {
            0..5 => Priority::Critical,
            5..25 => Priority::High,
            25..75 => Priority::Normal,
            _ => Priority::Low,
        };
        let req = Request::get(service, "quote")
            .param("symbol", symbols[rng.random_range(0..symbols.len())])
            .priority(priority);
        // Some callers block, some submit and collect later.
        let outcome = if i % 2 == 0 {
            lb.call(req)
        } else {
            lb.submit(req).and_then(|t| t.wait())
        };
        done.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn summary(lb: &Balancer) {
    let m = lb.metrics();
    println!();
    println!(
        "{:<8} {:<12} {:>4} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "service", "provider", "tier", "requests", "errors", "p50 ms", "p99 ms", "share", "cost"
    );
    for (name, s) in &m.services {
        let total: u64 = s.providers.values().map(|p| p.requests).sum();
        for (pname, p) in &s.providers {
            println!(
                "{:<8} {:<12} {:>4} {:>9} {:>8} {:>9.1} {:>9.1} {:>8.1}% {:>9.3}",
                name,
                pname,
                p.tier,
                p.requests,
                p.failures,
                p.latency_ms.p50,
                p.latency_ms.p99,
                100.0 * p.requests as f64 / total.max(1) as f64,
                p.cost_total
            );
        }
        println!(
            "{:<8} {:<12} {:>4} {:>9} {:>8} {:>9.1} {:>9.1}   failovers {}, cost {:.3}",
            name,
            "(callers)",
            "",
            s.requests,
            s.failures,
            s.latency_ms.p50,
            s.latency_ms.p99,
            s.failovers,
            s.cost_total
        );
    }
}
