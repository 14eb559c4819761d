//! Fewer, faster upstream calls, measured side by side in one run.
//!
//!     cargo bench --bench fewer_calls                      # 3 paired repetitions
//!     cargo bench --bench fewer_calls -- --reps 5 --requests 800
//!     cargo bench --bench fewer_calls -- --smoke           # a short run, for CI
//!
//! Batching: 200 requests a second (arrivals at random, as from independent users) for
//! quotes of 500 symbols, `batch_window_ms = 5`; `bulk` answers many symbols in one call,
//! `single` one at a time. The table gives the share of requests that went out in batches
//! of two or more, upstream calls, and how many callers got anything but their own
//! symbol (must be 0); a second run stops `bulk` halfway (503), so batches split into
//! single calls to `single` (errors must be 0).
//!
//! Hedging: `first` answers every tenth call after 1 s and the rest at once; `second`
//! (tier 2) answers at once. 8 callers send GETs; with hedging off every request goes to
//! `first`, with `hedge_after_ms = 50` a request with no answer by then also goes to
//! `second`. Each repetition runs both, in alternating order; the table gives callers'
//! p50 and p99 and the upstream calls made, and the ratios of hedged to unhedged.

#[path = "../tests/support/server.rs"]
mod server;
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use server::{Fault, TestServer};
use support::arg;
use switchyard::{Balancer, Request};

const CALLERS: usize = 8;

struct Run {
    p50: Duration,
    p99: Duration,
    upstream: usize,
    errors: usize,
}

/// `requests` GETs from 8 callers to a fresh pair of servers; hedged after `hedge_ms`
/// (0: off).
fn hedging_run(requests: usize, hedge_ms: u64) -> Run {
    let (first, second) = (TestServer::start(), TestServer::start());
    first.keep_log(false);
    second.keep_log(false);
    first.set_fault(Fault::SlowEvery(10, Duration::from_secs(1)));
    let text = format!(
        "[services.s.endpoints.quote]\nhedge_after_ms = {hedge_ms}\n\
         [services.s.pool]\nmax_connections = 64\n\
         [[services.s.providers]]\nname = \"first\"\nbase_url = \"{}\"\n\
         endpoints = {{ quote = \"/q\" }}\n\
         [[services.s.providers]]\nname = \"second\"\ntier = 2\nbase_url = \"{}\"\n\
         endpoints = {{ quote = \"/q\" }}\n",
        first.url(),
        second.url()
    );
    let lb = Balancer::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let next = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let mut latencies: Vec<Duration> = thread::scope(|s| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests {
                            break mine;
                        }
                        let started = Instant::now();
                        let request = Request::get("s", "quote").param("i", i.to_string());
                        if lb.call(request).is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        mine.push(started.elapsed());
                    }
                })
            })
            .collect();
        callers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run {
        p50: at(0.50),
        p99: at(0.99),
        upstream: first.requests() + second.requests(),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn hedging_table(requests: usize, reps: usize) {
    println!(
        "hedging: {requests} GETs from {CALLERS} callers; `first` answers every tenth after 1 s, \
         `second` at once; hedge_after_ms = 50"
    );
    println!("| rep | hedging | p50 ms | p99 ms | upstream calls | errors |");
    println!("|---|---|---|---|---|---|");
    let (mut p99_ratio, mut calls_ratio) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        // Alternate which goes first, so drift on the machine favours neither.
        let order: [u64; 2] = if rep % 2 == 0 { [0, 50] } else { [50, 0] };
        let mut runs = order.map(|ms| (ms, hedging_run(requests, ms)));
        runs.sort_by_key(|(ms, _)| *ms);
        for (hedge, run) in &runs {
            println!(
                "| {} | {} | {:.3} | {:.1} | {} | {} |",
                rep + 1,
                if *hedge > 0 { "on" } else { "off" },
                ms(run.p50),
                ms(run.p99),
                run.upstream,
                run.errors
            );
        }
        let (off, on) = (&runs[0].1, &runs[1].1);
        p99_ratio.push(ms(off.p99) / ms(on.p99));
        calls_ratio.push(on.upstream as f64 / off.upstream as f64);
    }
    println!(
        "median over {reps} pairs: p99 without / with hedging {:.1}x; upstream calls with / \
         without {:.3}",
        median(p99_ratio),
        median(calls_ratio)
    );
}

struct Batched {
    requests: usize,
    batched: u64,
    batch_calls: u64,
    upstream: usize,
    wrong: usize,
    errors: usize,
}

/// `seconds` of 200 requests a second over 500 symbols; `bulk` fails from halfway when
/// `fail_halfway`.
fn batching_run(seconds: f64, random_arrivals: bool, fail_halfway: bool) -> Batched {
    let (bulk, single) = (TestServer::start(), TestServer::start());
    for s in [&bulk, &single] {
        s.keep_log(false);
        s.set_fault(Fault::Items("symbols"));
    }
    let text = format!(
        "[services.s.endpoints.quote]\nbatch_window_ms = 5\n\
         [[services.s.providers]]\nname = \"bulk\"\nbase_url = \"{}\"\n\
         endpoints = {{ quote = \"/q/{{symbol}}\" }}\n\
         batch = {{ quote = {{ path = \"/quotes\", param = \"symbol\", query = \"symbols\", item = \"/{{symbol}}\" }} }}\n\
         [[services.s.providers]]\nname = \"single\"\ntier = 2\nbase_url = \"{}\"\n\
         endpoints = {{ quote = \"/q/{{symbol}}\" }}\n",
        bulk.url(),
        single.url()
    );
    let lb = Balancer::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let requests = (200.0 * seconds) as usize;
    let (tx, rx) =
        crossbeam_channel::unbounded::<(String, Result<switchyard::Ticket, switchyard::Error>)>();
    let (wrong, errors) = thread::scope(|s| {
        let checker = s.spawn(move || {
            let (mut wrong, mut errors) = (0, 0);
            for (symbol, submitted) in rx {
                match submitted.and_then(switchyard::Ticket::wait) {
                    Ok(r) => {
                        let want = format!("{{\"item\":\"{symbol}\"}}");
                        if r.body() != want.as_bytes() {
                            wrong += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (wrong, errors)
        });
        let started = Instant::now();
        let mut due = Duration::ZERO;
        for i in 0..requests {
            // Exponential gaps of mean 5 ms (arrivals at random), or 5 ms each.
            let gap = match random_arrivals {
                true => -(1.0 - rand::random::<f64>()).ln() / 200.0,
                false => 1.0 / 200.0,
            };
            due += Duration::from_secs_f64(gap);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
            if fail_halfway && i == requests / 2 {
                bulk.set_fault(Fault::Status(503));
            }
            let symbol = format!("SYM{}", rand::random::<u32>() % 500);
            let request = Request::get("s", "quote").param("symbol", &symbol);
            let _ = tx.send((symbol, lb.submit(request)));
        }
        drop(tx);
        checker.join().unwrap()
    });
    let s = &lb.metrics().services["s"];
    Batched {
        requests,
        batched: s.batched,
        batch_calls: s.batch_calls,
        upstream: bulk.requests() + single.requests(),
        wrong,
        errors,
    }
}

fn batching_table(seconds: f64) {
    println!(
        "batching: {seconds} s of 200 requests/s over 500 symbols, batch_window_ms = 5 \
         (random arrivals: 1 - e^-1/2 = 0.816 of requests expected in batches of 2+)"
    );
    println!("| run | requests | in batches of 2+ | share | batch calls | upstream calls | wrong item | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    let runs = [
        ("random arrivals", true, false),
        ("evenly spaced", false, false),
        ("random, bulk fails halfway", true, true),
    ];
    for (name, random, fail) in runs {
        let b = batching_run(seconds, random, fail);
        println!(
            "| {name} | {} | {} | {:.3} | {} | {} | {} | {} |",
            b.requests,
            b.batched,
            b.batched as f64 / b.requests as f64,
            b.batch_calls,
            b.upstream,
            b.wrong,
            b.errors
        );
    }
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let requests = arg("--requests", if smoke { 80 } else { 400 });
    let reps = arg("--reps", if smoke { 1 } else { 3 });
    let seconds = arg("--seconds", if smoke { 1 } else { 10 }) as f64;
    batching_table(seconds);
    hedging_table(requests, reps);
}
