//! reqwest's blocking client (one shared Client, which pools connections) under closed-loop
//! load; the arguments and the output of benches/clients/c_clients.c:
//!
//!     switchyard-bench-reqwest reqwest THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]
//!
//! The URLs are taken in turn; CONFIG is unused (it is switchyard's).

use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "../../../support/closed_loop.rs"]
mod closed_loop;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(
        args.len(),
        7,
        "usage: reqwest THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]"
    );
    let threads: usize = args[2].parse().unwrap();
    let seconds: f64 = args[3].parse().unwrap();
    let max_requests: usize = args[4].parse().unwrap();
    let urls: Vec<&str> = args[6].split(',').collect();
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(threads)
        .build()
        .unwrap();
    let turn = AtomicUsize::new(0);
    let one = || {
        let url = urls[turn.fetch_add(1, Ordering::Relaxed) % urls.len()];
        client
            .get(url)
            .send()
            .and_then(|r| {
                let status = r.status();
                r.bytes().map(|_| status.as_u16() == 200)
            })
            .unwrap_or(false)
    };
    println!(
        "{}",
        closed_loop::run_and_report(threads, seconds, max_requests, &one)
    );
}
