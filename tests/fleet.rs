//! Fleet mode against a real redis-server and several real processes (this test binary
//! run again as children). Needs the cargo feature `fleet`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::redis::{free_port, RedisServer};
use support::{Fault, TestServer};
use switchyard::{Balancer, Error, Request};

/// A service whose free provider has a daily quota shared by the fleet, and a paid
/// alternative without one.
fn config(redis_url: &str, namespace: &str, free: &str, paid: &str, per_day: u64) -> String {
    format!(
        "[fleet]\nredis_url = \"{redis_url}\"\nnamespace = \"{namespace}\"\nsync_ms = 100\n\
         lease = 10\nexpected_size = 4\n\
         [[services.s.providers]]\nname = \"free\"\nbase_url = \"{free}\"\ntier = 1\n\
         quota = {{ per_day = {per_day} }}\n\
         [[services.s.providers]]\nname = \"paid\"\nbase_url = \"{paid}\"\ntier = 2\n"
    )
}

/// `n` calls, each its own (identical calls in flight at once would share one).
fn send(lb: &Balancer, n: usize) -> Result<(), Error> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..n {
        let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{i}", std::process::id());
        lb.call(Request::get("s", "/q").param("i", id))?;
    }
    Ok(())
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A service whose first provider's circuit the fleet shares: it opens after 2 failures
/// in a row for 1 s (no growth), one probe at a time, one success closes it.
fn circuit_config(redis_url: &str, namespace: &str, bad: &str, good: &str) -> String {
    format!(
        "[fleet]\nredis_url = \"{redis_url}\"\nnamespace = \"{namespace}\"\nsync_ms = 50\n\
         [defaults.circuit_breaker]\nfailure_threshold = 2\nopen_ms = 1000\n\
         open_backoff_multiplier = 1.0\nhalf_open_max_calls = 1\nsuccess_threshold = 1\n\
         [[services.s.providers]]\nname = \"bad\"\nbase_url = \"{bad}\"\ntier = 1\n\
         [[services.s.providers]]\nname = \"good\"\nbase_url = \"{good}\"\ntier = 2\n"
    )
}

/// A provider limited to 50 calls a second across the fleet, and one without a limit.
fn rate_config(redis_url: &str, namespace: &str, limited: &str, other: &str) -> String {
    format!(
        "[fleet]\nredis_url = \"{redis_url}\"\nnamespace = \"{namespace}\"\nsync_ms = 100\n\
         expected_size = 4\n\
         [[services.s.providers]]\nname = \"limited\"\nbase_url = \"{limited}\"\ntier = 1\n\
         rate = {{ per_second = 50 }}\n\
         [[services.s.providers]]\nname = \"other\"\nbase_url = \"{other}\"\ntier = 2\n"
    )
}

fn circuit_of(lb: &Balancer, provider: &str) -> &'static str {
    lb.metrics().services["s"].providers[provider].circuit.state
}

/// Calls for `length` (at most 2,000 of them), none failing.
fn send_for(lb: &Balancer, length: Duration) {
    let until = Instant::now() + length;
    for _ in 0..2000 {
        if Instant::now() >= until {
            break;
        }
        send(lb, 1).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `n` processes of this test binary running `fleet_child` with `spec`.
fn spawn_children(n: usize, spec: &str) -> Vec<std::process::Child> {
    (0..n)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["fleet_child", "--exact", "--ignored", "--nocapture"])
                .arg("--test-threads=1")
                .env("SWITCHYARD_FLEET_CHILD", spec)
                .spawn()
                .unwrap()
        })
        .collect()
}

fn wait_for(children: Vec<std::process::Child>) {
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child process failed");
    }
}

/// Run only as a child of the multi-process tests (`--ignored`, with its spec).
#[test]
#[ignore = "run as a child process by the multi-process tests"]
fn fleet_child() {
    let spec = std::env::var("SWITCHYARD_FLEET_CHILD").expect("run by a multi-process test");
    let parts: Vec<&str> = spec.split('|').collect();
    if parts[0] == "rate" {
        let [_, redis_url, namespace, limited, other, millis] = parts[..] else {
            panic!("bad child spec");
        };
        let lb =
            Balancer::from_toml_str(&rate_config(redis_url, namespace, limited, other)).unwrap();
        send_for(&lb, Duration::from_millis(millis.parse().unwrap()));
        return;
    }
    if parts[0] == "circuit" {
        let [_, redis_url, namespace, bad, good, millis] = parts[..] else {
            panic!("bad child spec");
        };
        let lb = Balancer::from_toml_str(&circuit_config(redis_url, namespace, bad, good)).unwrap();
        // It never called the failing provider, and avoids it from the start.
        assert_eq!(circuit_of(&lb, "bad"), "open");
        send_for(&lb, Duration::from_millis(millis.parse().unwrap()));
        return;
    }
    let [redis_url, namespace, free, paid, n] = parts[..] else {
        panic!("bad child spec");
    };
    let lb = Balancer::from_toml_str(&config(redis_url, namespace, free, paid, 1000)).unwrap();
    assert!(lb.metrics().fleet.unwrap().connected);
    // Four callers in this process too.
    let n: usize = n.parse().unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| send(&lb, n / 4).unwrap());
        }
    });
}

#[test]
fn four_processes_share_one_quota_exactly() {
    let redis = RedisServer::start();
    let (free, paid) = (TestServer::start(), TestServer::start());
    let namespace = format!("share-{}", std::process::id());
    let spec = format!(
        "{}|{namespace}|{}|{}|600",
        redis.url(),
        free.url(),
        paid.url()
    );
    let children = spawn_children(4, &spec);
    wait_for(children);
    assert_eq!(free.requests(), 1000, "the quota is the fleet's");
    assert_eq!(paid.requests(), 4 * 600 - 1000);
    let key = format!("{{{namespace}:s:free}}:quota:per_day");
    assert_eq!(
        redis.command(&format!("HGET {key} used")).as_deref(),
        Some("1000")
    );
    // The key ends with the provider's day.
    let ttl: i64 = redis
        .command(&format!("TTL {key}"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 0 && ttl <= 86_400, "{ttl}");
}

#[test]
fn without_redis_each_process_keeps_its_share_and_rejoins() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let (free, paid) = (TestServer::start(), TestServer::start());
    let namespace = format!("alone-{}", std::process::id());
    // Redis unreachable at start is not an error: the balancer starts degraded.
    let lb =
        Balancer::from_toml_str(&config(&url, &namespace, &free.url(), &paid.url(), 100)).unwrap();
    let fleet = lb.metrics().fleet.unwrap();
    assert!(!fleet.connected);
    assert!(fleet.degraded_since_ms.is_some());
    send(&lb, 100).unwrap();
    // Its share: 100 a day over an expected 4 processes.
    assert_eq!(free.requests(), 25);
    assert_eq!(paid.requests(), 75);

    // Redis comes up: the process joins within sync_ms x 5 and adds what it spent.
    let redis = RedisServer::start_on(port);
    let joined = wait_until(Duration::from_secs(5), || {
        lb.metrics().fleet.unwrap().connected
    });
    let joined = joined.expect("joined the fleet");
    assert!(joined <= Duration::from_millis(500), "{joined:?}");
    assert!(lb.metrics().fleet.unwrap().degraded_since_ms.is_none());
    let key = format!("{{{namespace}:s:free}}:quota:per_day");
    assert_eq!(
        redis.command(&format!("HGET {key} used")).as_deref(),
        Some("25")
    );
    // Now the fleet's count binds: 75 are left of 100.
    send(&lb, 100).unwrap();
    assert_eq!(free.requests(), 100);
    assert_eq!(
        redis.command(&format!("HGET {key} used")).as_deref(),
        Some("100")
    );

    assert_eq!(paid.requests(), 75 + 25);
}

#[test]
fn redis_stopped_mid_run_fails_no_request() {
    let mut redis = RedisServer::start();
    let (free, paid) = (TestServer::start(), TestServer::start());
    let namespace = format!("stop-{}", std::process::id());
    let text = config(&redis.url(), &namespace, &free.url(), &paid.url(), 100);
    let lb = Balancer::from_toml_str(&text).unwrap();
    assert!(lb.metrics().fleet.unwrap().connected);
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = heard.clone();
    lb.on_event(move |e| {
        if let switchyard::EventKind::Fleet { connected } = e.what {
            log.lock().unwrap().push(connected);
        }
    });
    send(&lb, 20).unwrap();
    assert_eq!(free.requests(), 20);
    redis.stop();
    // Every call answered; the process counts alone against its share (25 of 100),
    // having spent 20 already, plus at most one lease taken before Redis went.
    send(&lb, 100).unwrap();
    let fleet = lb.metrics().fleet.unwrap();
    assert!(!fleet.connected && fleet.degraded_since_ms.is_some());
    assert!(lb.prometheus().contains("switchyard_fleet_connected 0"));
    let told = wait_until(Duration::from_secs(5), || *heard.lock().unwrap() == [false]);
    assert!(told.is_some(), "on_event hears that Redis went away");
    let dashboard = lb.serve_dashboard("127.0.0.1:0").unwrap();
    let status = ureq::get(format!("{}status.json", dashboard.url()))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["fleet"]["connected"], false);
    assert!(status["fleet"]["degraded_since_ms"].as_u64().is_some());
    assert!(free.requests() <= 25 + 10, "{}", free.requests());
    assert_eq!(free.requests() + paid.requests(), 120);
}

#[test]
fn a_malformed_redis_url_is_refused_with_its_path() {
    let text = config(
        "http://127.0.0.1:6379",
        "x",
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        1,
    );
    let e = Balancer::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("fleet.redis_url"), "{e}");
    let text = config(
        "redis://:hunter2@127.0.0.1:notaport",
        "x",
        "http://a",
        "http://b",
        1,
    );
    let e = Balancer::from_toml_str(&text).unwrap_err().to_string();
    assert!(
        e.contains("fleet.redis_url") && !e.contains("hunter2"),
        "{e}"
    );
}

#[test]
fn a_circuit_opened_by_one_process_is_open_for_new_ones_and_probed_by_one() {
    let redis = RedisServer::start();
    let (bad, good) = (TestServer::start(), TestServer::start());
    bad.set_fault(Fault::Status(503));
    let namespace = format!("circuit-{}", std::process::id());
    let text = circuit_config(&redis.url(), &namespace, &bad.url(), &good.url());
    let lb = Balancer::from_toml_str(&text).unwrap();
    send(&lb, 5).unwrap();
    assert_eq!(circuit_of(&lb, "bad"), "open");
    let before = bad.requests();
    assert_eq!(before, 2);
    let key = format!("{{{namespace}:s:bad}}:circuit");
    let seen = wait_until(Duration::from_secs(2), || {
        redis
            .command(&format!("GET {key}"))
            .is_some_and(|v| v.starts_with("open:"))
    });
    assert!(seen.is_some(), "the opening is published");

    // Three new processes and this one call for 2.5 s: half-open periods begin about
    // 1, 2 and 3 s after the opening; each is probed by the one process holding the token.
    let millis = 2500;
    let spec = format!(
        "circuit|{}|{namespace}|{}|{}|{millis}",
        redis.url(),
        bad.url(),
        good.url()
    );
    let children = spawn_children(3, &spec);
    send_for(&lb, Duration::from_millis(millis));
    wait_for(children);
    let probes = bad.requests() - before;
    eprintln!("fleet probes in 2.5 s: {probes}");
    // Alone, four processes would send at least one probe each per period.
    assert!(
        probes <= 2 * 3,
        "{probes} probes in at most 3 half-open periods"
    );
}

#[test]
fn four_processes_keep_one_rate_limit_between_them() {
    let redis = RedisServer::start();
    let (limited, other) = (TestServer::start(), TestServer::start());
    let namespace = format!("rate-{}", std::process::id());
    let millis = 2000;
    let spec = format!(
        "rate|{}|{namespace}|{}|{}|{millis}",
        redis.url(),
        limited.url(),
        other.url()
    );
    let started = Instant::now();
    let children = spawn_children(4, &spec);
    wait_for(children);
    let seconds = started.elapsed().as_secs_f64();
    let sent = limited.requests();
    eprintln!(
        "rate-limited provider: {sent} calls in {seconds:.2} s, {} elsewhere",
        other.requests()
    );
    // 50 a second over the whole run (which includes the processes' start), plus at
    // most one token of slack per process; alone, each process would send 50 a second.
    assert!(
        sent as f64 <= 50.0 * seconds + 4.0,
        "{sent} in {seconds:.2} s"
    );
    assert!(sent >= 50, "the limit is used, not starved: {sent}");
    assert!(other.requests() > 0);
}
