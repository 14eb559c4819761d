//! Load-balancing strategies against real servers: fair shares, weights, moving away
//! from slow and failing providers, and metrics that agree with what servers counted.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use support::{distinct, provider, TestServer};
use switchyard::{Balancer, StrategyKind};

/// These tests judge shares that timing noise can skew: run them one at a time, so they
/// do not load the machine for each other.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn servers(n: usize) -> Vec<TestServer> {
    (0..n)
        .map(|_| {
            let s = TestServer::start();
            s.keep_log(false);
            s
        })
        .collect()
}

fn balancer(settings: &str, servers: &[TestServer], extra: &[&str]) -> Balancer {
    let mut config = format!("{settings}\n");
    for (i, s) in servers.iter().enumerate() {
        config.push_str(&provider(
            "s",
            &format!("p{i}"),
            &s.url(),
            extra.get(i).copied().unwrap_or(""),
        ));
    }
    Balancer::from_toml_str(&config).unwrap()
}

/// `n` requests from `threads` threads; every one must succeed.
/// `n` distinct GETs from `threads` threads (identical ones in flight at once would share
/// calls, and the shares measured here are of calls).
fn drive(lb: &Balancer, n: usize, threads: usize) {
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..n / threads {
                    lb.call(distinct("s", "/q")).unwrap();
                }
            });
        }
    });
}

fn shares(servers: &[TestServer]) -> Vec<f64> {
    let total: usize = servers.iter().map(|s| s.requests()).sum();
    servers
        .iter()
        .map(|s| s.requests() as f64 / total as f64)
        .collect()
}

#[test]
fn equal_providers_get_equal_shares() {
    let _one_at_a_time = exclusive();
    // Round robin's shares are exact however many callers; least connections' are equal
    // only while the servers are equally fast, which a loaded machine does not promise
    // to six concurrent callers, so it is measured where its tie-breaking decides alone.
    for (strategy, threads) in [("round_robin", 6), ("least_connections", 1)] {
        let servers = servers(3);
        let lb = balancer(
            &format!("[defaults]\nstrategy = \"{strategy}\""),
            &servers,
            &[],
        );
        drive(&lb, 30_000, threads);
        for share in shares(&servers) {
            assert!(
                (share - 1.0 / 3.0).abs() <= 0.02,
                "{strategy}: {:?}",
                shares(&servers)
            );
        }
        // Requests per provider in the metrics are exactly what the servers counted.
        let m = lb.metrics();
        for (i, s) in servers.iter().enumerate() {
            assert_eq!(
                m.services["s"].providers[&format!("p{i}")].requests,
                s.requests() as u64
            );
        }
    }
}

#[test]
fn round_robin_follows_weights() {
    let servers = servers(3);
    let lb = balancer(
        "[defaults]\nstrategy = \"round_robin\"",
        &servers,
        &["weight = 100", "weight = 75", "weight = 50"],
    );
    drive(&lb, 18_000, 6);
    let got = shares(&servers);
    for (share, weight) in got.iter().zip([100.0, 75.0, 50.0]) {
        assert!((share - weight / 225.0).abs() <= 0.03, "{got:?}");
    }
}

/// Share of `target`'s requests among all servers' requests between two snapshots.
fn share_between(before: &[usize], servers: &[TestServer], target: usize) -> f64 {
    let now: Vec<usize> = servers.iter().map(|s| s.requests()).collect();
    let total: usize = now.iter().zip(before).map(|(a, b)| a - b).sum();
    (now[target] - before[target]) as f64 / total.max(1) as f64
}

fn traffic_moves_off_a_slow_provider_and_back(strategy: StrategyKind) {
    let _one_at_a_time = exclusive();
    let servers = servers(3);
    for s in &servers {
        s.set_latency(Duration::from_millis(2));
    }
    let lb = balancer(
        &format!("[defaults]\nstrategy = \"{}\"", strategy.name()),
        &servers,
        &[],
    );
    let stop = AtomicBool::new(false);
    let counts = |s: &[TestServer]| s.iter().map(|s| s.requests()).collect::<Vec<_>>();
    thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let until = Instant::now() + Duration::from_secs(30);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    lb.call(distinct("s", "/q")).unwrap();
                }
            });
        }
        thread::sleep(Duration::from_secs(1));
        servers[0].set_latency(Duration::from_millis(10)); // five times slower
        thread::sleep(Duration::from_secs(4));
        let before = counts(&servers);
        thread::sleep(Duration::from_secs(1));
        let slow_share = share_between(&before, &servers, 0);
        servers[0].set_latency(Duration::from_millis(2));
        thread::sleep(Duration::from_secs(4));
        let before = counts(&servers);
        thread::sleep(Duration::from_secs(1));
        let recovered_share = share_between(&before, &servers, 0);
        stop.store(true, Ordering::Relaxed);
        eprintln!(
            "{}: slow share {slow_share:.3}, recovered share {recovered_share:.3}",
            strategy.name()
        );
        assert!(
            slow_share <= 0.2,
            "{}: {slow_share:.3} of traffic still on the slow provider",
            strategy.name()
        );
        assert!(
            recovered_share >= 0.2,
            "{}: only {recovered_share:.3} came back",
            strategy.name()
        );
    });
}

#[test]
fn weighted_response_moves_off_a_slow_provider() {
    traffic_moves_off_a_slow_provider_and_back(StrategyKind::WeightedResponse);
}

#[test]
fn health_based_moves_off_a_slow_provider() {
    traffic_moves_off_a_slow_provider_and_back(StrategyKind::HealthBased);
}

#[test]
fn peak_ewma_moves_off_a_slow_provider() {
    traffic_moves_off_a_slow_provider_and_back(StrategyKind::PeakEwma);
}

#[test]
fn health_based_starves_a_provider_with_thirty_percent_errors() {
    let _one_at_a_time = exclusive();
    let servers = servers(3);
    for s in &servers {
        // A real delay, so that loopback jitter does not dominate the speed term.
        s.set_latency(Duration::from_millis(2));
    }
    servers[0].set_error_rate(0.3);
    // Breakers out of the way: the strategy alone must move the traffic.
    let lb = balancer(
        "[defaults.circuit_breaker]\nfailure_threshold = 1000000\nminimum_calls = 1000000",
        &servers,
        &[],
    );
    drive(&lb, 6_000, 4);
    let share = shares(&servers)[0];
    eprintln!("health_based: provider with 30% errors got {share:.3} of attempts");
    assert!(share < 0.10, "{share}");
}

#[test]
fn the_strategy_switches_at_run_time() {
    let servers = servers(2);
    let lb = balancer(
        "[defaults]\nstrategy = \"least_connections\"",
        &servers,
        &["weight = 300", "weight = 100"],
    );
    assert_eq!(lb.strategy("s").unwrap(), StrategyKind::LeastConnections);
    lb.set_strategy("s", StrategyKind::RoundRobin).unwrap();
    drive(&lb, 400, 1);
    assert_eq!((servers[0].requests(), servers[1].requests()), (300, 100));
    assert_eq!(lb.metrics().services["s"].strategy, "round_robin");
    assert!(lb.set_strategy("nope", StrategyKind::RoundRobin).is_err());
    let e = lb.set_strategy("s", StrategyKind::CostAware).unwrap_err();
    assert!(e.to_string().contains("cost_per_request"), "{e}");
    assert_eq!(
        lb.strategy("s").unwrap(),
        StrategyKind::RoundRobin,
        "unchanged"
    );
}

#[test]
fn latency_metrics_match_the_servers_delay() {
    let servers = servers(1);
    servers[0].set_latency(Duration::from_millis(20));
    let lb = balancer("", &servers, &[]);
    drive(&lb, 50, 1);
    let m = lb.metrics();
    let p = &m.services["s"].providers["p0"];
    assert_eq!((p.requests, p.successes), (50, 50));
    // At least the server's delay; loopback adds well under a few ms.
    let l = p.latency_ms;
    for v in [l.p50, l.min] {
        assert!((20.0..30.0).contains(&v), "{l:?}");
    }
    // With 50 samples p99 is the largest, within the histogram's 1/32.
    assert!(
        l.p99 >= l.p50 && (l.p99 - l.max).abs() <= l.max / 32.0,
        "{l:?}"
    );
    let recent = lb.recent_provider("p0", Duration::from_secs(60)).unwrap();
    assert_eq!((recent.calls, recent.success_rate), (50, 1.0));
    assert!(recent.avg_latency_ms >= 20.0);
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(
        json["services"]["s"]["providers"]["p0"]["circuit"]["state"],
        "closed"
    );
    assert!(
        json["services"]["s"]["providers"]["p0"]["latency_ms"]["p99"]
            .as_f64()
            .unwrap()
            >= 20.0
    );
}

#[test]
fn large_provider_sets_are_sampled_and_still_skip_unavailable_providers() {
    let _one_at_a_time = exclusive();
    let servers = servers(2);
    let mut config = String::new();
    for i in 0..80 {
        config.push_str(&provider("s", &format!("p{i}"), &servers[i % 2].url(), ""));
    }
    let lb = Balancer::from_toml_str(&config).unwrap();
    for i in 0..10 {
        lb.force_open(&format!("p{i}")).unwrap();
    }
    drive(&lb, 4_000, 4);
    let m = lb.metrics();
    let used = |i: usize| m.services["s"].providers[&format!("p{i}")].requests;
    assert!(
        (0..10).all(|i| used(i) == 0),
        "a forced-open provider got traffic"
    );
    let reached = (10..80).filter(|&i| used(i) > 0).count();
    assert!(reached >= 60, "only {reached} of 70 providers were picked");
    assert_eq!(m.services["s"].successes, 4_000);
}
