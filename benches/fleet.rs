//! Fleet mode's cost, side by side in one run: `call()` throughput with a provider's
//! daily quota kept in a real redis-server on loopback against the same quota kept in
//! the process alone; 8 threads, alternating pairs, medians.
//!
//!     cargo bench --features fleet --bench fleet
//!     cargo bench --features fleet --bench fleet -- --reps 5 --seconds 3 --lease 100

#[allow(dead_code)]
#[path = "../tests/support/redis.rs"]
mod redis;
#[path = "../tests/support/server.rs"]
mod server;
mod support;

use support::{arg, median, run_for};
use switchyard::{Balancer, Request};

/// Calls per second over `seconds` on `threads` threads.
fn rate(lb: &Balancer, threads: usize, seconds: f64) -> f64 {
    let (done, took) = run_for(threads, seconds, &|n| {
        lb.call(Request::get("s", "/q").param("n", n.to_string()))
            .unwrap();
    });
    done as f64 / took.as_secs_f64()
}

fn main() {
    let reps = arg("--reps", 3);
    let seconds = arg("--seconds", 2) as f64;
    let lease = arg("--lease", 10);
    let threads = arg("--threads", 8);
    let redis = redis::RedisServer::start();
    let upstream = server::TestServer::start();
    upstream.keep_log(false);
    let provider = format!(
        "[[services.s.providers]]\nname = \"p\"\nbase_url = \"{}\"\n\
         quota = {{ per_day = 1000000000 }}\npool = {{ max_connections = 16 }}\n",
        upstream.url()
    );
    let local = Balancer::from_toml_str(&provider).unwrap();
    let fleet = Balancer::from_toml_str(&format!(
        "[fleet]\nredis_url = \"{}\"\nnamespace = \"bench-{}\"\nlease = {lease}\n{provider}",
        redis.url(),
        std::process::id()
    ))
    .unwrap();
    assert!(fleet.metrics().fleet.unwrap().connected);
    println!("fleet mode, {threads} threads, lease {lease}, {seconds} s per run, {reps} alternating pairs");
    println!("| local req/s | fleet req/s | fleet / local |");
    println!("|---|---|---|");
    let (mut locals, mut fleets, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let (l, f) = if rep % 2 == 0 {
            let l = rate(&local, threads, seconds);
            (l, rate(&fleet, threads, seconds))
        } else {
            let f = rate(&fleet, threads, seconds);
            (rate(&local, threads, seconds), f)
        };
        locals.push(l);
        fleets.push(f);
        ratios.push(f / l);
    }
    println!(
        "| {:.0} | {:.0} | {:.3} |",
        median(locals),
        median(fleets),
        median(ratios)
    );
    let key = format!("{{bench-{}:s:p}}:quota:per_day", std::process::id());
    println!(
        "counted in Redis: {}",
        redis
            .command(&format!("HGET {key} used"))
            .unwrap_or_default()
    );
}
