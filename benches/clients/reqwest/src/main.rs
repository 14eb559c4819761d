//! reqwest's blocking client (one shared Client, which pools connections) under closed-loop
//! load; the arguments and the output of benches/clients/c_clients.c:
//!
//!     switchyard-bench-reqwest reqwest THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]
//!
//! The URLs are taken in turn; CONFIG is unused (it is switchyard's).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn cpu_seconds() -> f64 {
    // utime and stime, in clock ticks, are the 14th and 15th fields of /proc/self/stat.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    (fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0)) as f64 / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert_eq!(
        args.len(),
        7,
        "usage: reqwest THREADS SECONDS MAX_REQUESTS CONFIG URL[,URL...]"
    );
    let threads: usize = args[2].parse().unwrap();
    let seconds: f64 = args[3].parse().unwrap();
    let budget = args[4].parse::<usize>().unwrap() / threads.max(1);
    let urls: Vec<&str> = args[6].split(',').collect();
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(threads)
        .build()
        .unwrap();
    let turn = AtomicUsize::new(0);
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tallies: Vec<(usize, usize, Vec<u64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut ok, mut errors, mut lat) = (0, 0, Vec::with_capacity(1 << 16));
                    while ok + errors < budget && Instant::now() < deadline {
                        let t = Instant::now();
                        let url = urls[turn.fetch_add(1, Ordering::Relaxed) % urls.len()];
                        let good = client
                            .get(url)
                            .send()
                            .and_then(|r| {
                                let status = r.status();
                                r.bytes().map(|_| status.as_u16() == 200)
                            })
                            .unwrap_or(false);
                        lat.push(t.elapsed().as_nanos() as u64);
                        if good {
                            ok += 1;
                        } else {
                            errors += 1;
                        }
                    }
                    (ok, errors, lat)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let (mut ok, mut errors, mut all) = (0, 0, Vec::new());
    for (o, e, l) in tallies {
        ok += o;
        errors += e;
        all.extend(l);
    }
    all.sort_unstable();
    let q = |p: f64| {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((p * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    println!(
        "{{\"requests\": {ok}, \"errors\": {errors}, \"elapsed_s\": {elapsed:.6}, \"cpu_s\": {cpu:.6}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"p999_us\": {:.1}}}",
        q(0.5),
        q(0.99),
        q(0.999)
    );
}
