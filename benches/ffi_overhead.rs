//! Per-call cost from Rust: N `call()`s to one upstream, median and mean in us; the
//! baseline of benches/ffi_overhead.sh.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let (config, n) = (&args[1], args[2].parse::<usize>().unwrap_or(5000));
    let lb = switchyard::Balancer::from_file(config).unwrap();
    let mut us: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = lb.call(switchyard::Request::get("bench", "/")).unwrap();
            assert_eq!(r.status(), 200);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let mean = us.iter().sum::<f64>() / n as f64;
    us.sort_by(f64::total_cmp);
    println!("rust median {:.1} us, mean {mean:.1} us", us[n / 2]);
}
