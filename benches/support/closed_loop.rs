//! One client under closed-loop load, and the JSON line it prints for benches/languages.rs
//! (the C, C++ and Python clients print the same). std only: benches/clients/reqwest
//! includes this file too.

use std::time::{Duration, Instant};

/// This process's CPU time so far (user + system), from /proc.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let ticks = field(11) + field(12);
    Duration::from_secs_f64(ticks as f64 / 100.0)
}

/// Each thread's good answers, failures and (when kept) latencies in ns.
pub type Tallies = Vec<(usize, usize, Vec<u64>)>;

/// Runs `one` (true for a good answer) on `threads` threads until `seconds` pass or
/// `max_requests` are made; `keep_latencies` false keeps none (for memory measurements).
pub fn run(
    threads: usize,
    seconds: f64,
    max_requests: usize,
    keep_latencies: bool,
    one: &(dyn Fn() -> bool + Sync),
) -> (Tallies, Duration) {
    let budget = max_requests / threads.max(1);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tallies = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::with_capacity(if keep_latencies { 1 << 16 } else { 0 });
                    let (mut ok, mut errors) = (0, 0);
                    while ok + errors < budget && Instant::now() < deadline {
                        let t = Instant::now();
                        let good = one();
                        if keep_latencies {
                            lat.push(t.elapsed().as_nanos() as u64);
                        }
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
    (tallies, started.elapsed())
}

/// [`run`], then the line to print: requests, errors, elapsed_s, cpu_s, p50/p99/p999 us.
#[allow(dead_code)] // not every benchmark prints the line
pub fn run_and_report(
    threads: usize,
    seconds: f64,
    max_requests: usize,
    one: &(dyn Fn() -> bool + Sync),
) -> String {
    let cpu0 = cpu_time();
    let (tallies, elapsed) = run(threads, seconds, max_requests, true, one);
    let elapsed = elapsed.as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu0).as_secs_f64();
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
    format!(
        "{{\"requests\": {ok}, \"errors\": {errors}, \"elapsed_s\": {elapsed:.6}, \"cpu_s\": {cpu:.6}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"p999_us\": {:.1}}}",
        q(0.5),
        q(0.99),
        q(0.999)
    )
}
