//! What `on_event` costs requests, side by side in one run: 20,000 calls to a loopback
//! server with no subscriber, and with one that sleeps a second per event (so the buffer
//! fills and the rest is dropped), in alternating order.
//!
//!     cargo bench --bench events                 # 5 pairs
//!     cargo bench --bench events -- --reps 9

#[path = "../tests/support/server.rs"]
mod server;
mod support;

use std::time::{Duration, Instant};

use server::TestServer;
use support::arg;
use switchyard::{Balancer, Request};

/// Calls per run: enough to take a few hundred ms, so the ratio is not noise.
const CALLS: usize = 20_000;

fn run(server: &TestServer, slow_subscriber: bool) -> Duration {
    let text = format!(
        "[[services.s.providers]]\nname = \"p\"\nbase_url = \"{}\"\n",
        server.url()
    );
    let lb = Balancer::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}"));
    if slow_subscriber {
        lb.on_event(|_| std::thread::sleep(Duration::from_secs(1)));
    }
    // Warm the connection first.
    lb.call(Request::get("s", "/warm")).unwrap();
    let started = Instant::now();
    for i in 0..CALLS {
        lb.call(Request::get("s", "/q").param("i", i.to_string()))
            .unwrap();
    }
    started.elapsed()
}

fn main() {
    let reps = arg("--reps", 5);
    let server = TestServer::start();
    server.keep_log(false);
    let mut ratios = Vec::new();
    println!("{CALLS} calls, one thread");
    println!("| rep | without, ms | with a subscriber sleeping 1 s per event, ms | ratio |");
    println!("|---|---|---|---|");
    for rep in 0..reps {
        let (without, with) = if rep % 2 == 0 {
            let w = run(&server, false);
            (w, run(&server, true))
        } else {
            let s = run(&server, true);
            (run(&server, false), s)
        };
        let ratio = with.as_secs_f64() / without.as_secs_f64();
        ratios.push(ratio);
        println!(
            "| {} | {:.1} | {:.1} | {:.3} |",
            rep + 1,
            without.as_secs_f64() * 1e3,
            with.as_secs_f64() * 1e3,
            ratio
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ratio over {reps} pairs: {:.3}",
        ratios[ratios.len() / 2]
    );
}
