//! Soak: a million requests while three upstreams switch fault modes every 100 ms beside
//! a healthy one. Every request must get exactly one outcome, none of them an error, and
//! memory must stay flat.
//!
//!     bash benches/soak.sh                       # 1,000,000 requests, 8 callers
//!     bash benches/soak.sh --requests 200000     # shorter
//!
//! The upstreams run in a child process of their own (this binary with `--upstreams`), so
//! the memory measured is the balancer's and not the test servers' threads and buffers.
//! Callers mix `call()` and `submit_with()`; each request has a slot in a table that its
//! outcome marks, so a lost or doubled outcome is seen. RSS is read after the first
//! quarter of the requests (every pool, buffer and window has reached its size by then)
//! and at the end.

#[path = "../tests/support/server.rs"]
mod server;
mod support;

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use server::{Fault, TestServer};
use support::{arg, rss_kib};
use switchyard::{Balancer, Request};

/// The faults a flapping upstream cycles through.
fn faults() -> Vec<Fault> {
    vec![
        Fault::None,
        Fault::Status(503),
        Fault::RetryAfter(429, 1),
        Fault::Reset,
        Fault::Truncated,
        Fault::Garbage,
        Fault::Slow(Duration::from_millis(30)),
        Fault::Hang,
        Fault::Big(64 * 1024),
        Fault::Status(500),
    ]
}

/// The child: three flapping upstreams and a healthy one; prints their URLs on one line,
/// then flaps until its parent closes stdin.
fn serve_upstreams() {
    let flapping: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    let healthy = TestServer::start();
    for s in flapping.iter().chain([&healthy]) {
        s.keep_log(false);
    }
    let urls: Vec<String> = flapping.iter().chain([&healthy]).map(|s| s.url()).collect();
    println!("{}", urls.join(" "));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            stop.store(true, Ordering::Relaxed);
        });
    }
    let faults = faults();
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        for (i, s) in flapping.iter().enumerate() {
            s.set_fault(faults[(round + i * 3) % faults.len()].clone());
        }
        round += 1;
        thread::sleep(Duration::from_millis(100));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--upstreams") {
        return serve_upstreams();
    }
    let requests = arg("--requests", 1_000_000);
    let callers = arg("--callers", 8);
    let mut child = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .arg("--upstreams")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the upstreams' process");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("its stdout")),
        &mut line,
    )
    .expect("the upstreams' URLs");
    let urls: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(urls.len(), 4, "upstreams said {line:?}");
    let mut config = String::from(
        "[defaults]\ndeadline_ms = 20000\n\
         [defaults.pool]\nmax_connections = 16\nrequest_timeout_ms = 100\nconnect_timeout_ms = 100\n\
         max_response_bytes = 16384\n\
         [defaults.retry]\nmax_attempts = 4\nbase_delay_ms = 1\nmax_backoff_ms = 5\n\
         [defaults.circuit_breaker]\nfailure_threshold = 3\nopen_ms = 200\n\
         [defaults.queue]\nmax_size = 100000\n",
    );
    for (i, url) in urls[..3].iter().enumerate() {
        config.push_str(&format!(
            "[[services.s.providers]]\nname = \"flapping{i}\"\nbase_url = \"{url}\"\ntier = 1\n"
        ));
    }
    config.push_str(&format!(
        "[[services.s.providers]]\nname = \"healthy\"\nbase_url = \"{}\"\ntier = 2\n",
        urls[3]
    ));
    let lb = Balancer::from_toml_str(&config).expect("soak configuration");

    // Each request's outcome count: exactly one, or the soak fails.
    let outcomes: Arc<Vec<AtomicU8>> = Arc::new((0..requests).map(|_| AtomicU8::new(0)).collect());
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let warm_at = requests / 4;
    let warm_rss = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..callers)
        .map(|c| {
            let (lb, outcomes, errors, next, done, warm_rss) = (
                lb.clone(),
                outcomes.clone(),
                errors.clone(),
                next.clone(),
                done.clone(),
                warm_rss.clone(),
            );
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return;
                }
                if i == warm_at {
                    warm_rss.store(rss_kib(), Ordering::Relaxed);
                }
                let request = Request::get("s", "/soak").param("i", i.to_string());
                if (i + c) % 4 == 0 {
                    let (o, e, d) = (outcomes.clone(), errors.clone(), done.clone());
                    let submitted = lb.submit_with(request, move |r| {
                        if r.is_err() {
                            e.fetch_add(1, Ordering::Relaxed);
                        }
                        o[i].fetch_add(1, Ordering::Relaxed);
                        d.fetch_add(1, Ordering::Relaxed);
                    });
                    if submitted.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        outcomes[i].fetch_add(1, Ordering::Relaxed);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    if lb.call(request).is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    outcomes[i].fetch_add(1, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut last_report = Instant::now();
    while done.load(Ordering::Relaxed) < requests && started.elapsed() < Duration::from_secs(1800) {
        thread::sleep(Duration::from_millis(100));
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            println!(
                "  {:>5.0} s  {:>8} done  {} errors  rss {} KiB",
                started.elapsed().as_secs_f64(),
                done.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed),
                rss_kib()
            );
        }
    }
    for w in workers {
        let _ = w.join();
    }
    let elapsed = started.elapsed();
    let end_rss = rss_kib();
    drop(child.stdin.take());
    let _ = child.wait();
    let lost = outcomes
        .iter()
        .filter(|o| o.load(Ordering::Relaxed) == 0)
        .count();
    let doubled = outcomes
        .iter()
        .filter(|o| o.load(Ordering::Relaxed) > 1)
        .count();
    let m = lb.metrics();
    let s = &m.services["s"];
    let attempts: u64 = s.providers.values().map(|p| p.requests).sum();
    let warm = warm_rss.load(Ordering::Relaxed);
    println!(
        "soak: {requests} requests from {callers} callers in {:.1} s ({:.0} req/s)",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  caller errors {}, lost outcomes {lost}, doubled outcomes {doubled}",
        errors.load(Ordering::Relaxed)
    );
    println!(
        "  attempts {attempts} ({:.3} per request), failovers {}, healthy provider served {}",
        attempts as f64 / requests as f64,
        s.failovers,
        s.providers["healthy"].successes
    );
    println!(
        "  RSS after {warm_at} requests {warm} KiB, at the end {end_rss} KiB, growth {} KiB",
        end_rss as i64 - warm as i64
    );
    let ok = errors.load(Ordering::Relaxed) == 0
        && lost == 0
        && doubled == 0
        && end_rss.saturating_sub(warm) < 1024;
    println!("soak {}", if ok { "PASSED" } else { "FAILED" });
    lb.shutdown(Duration::from_secs(1));
    std::process::exit(if ok { 0 } else { 1 });
}
