//! Connection pools: keep-alive reuse and the per-provider cap on requests in flight.

mod support;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use support::{provider, until, Fault, TestServer};
use switchyard::{Balancer, Request};

#[test]
fn sequential_requests_reuse_one_connection() {
    let server = TestServer::start();
    server.keep_log(false);
    let lb = Balancer::from_toml_str(&provider("s", "a", &server.url(), "")).unwrap();
    for _ in 0..1000 {
        let r = lb.call(Request::get("s", "/ping")).unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(server.requests(), 1000);
    // At least 99% of requests reused an open connection.
    assert!(
        server.connections() <= 10,
        "{} connections for 1000 requests",
        server.connections()
    );
}

/// A pooled connection is checked before each use: one the server closed while it sat in
/// the pool, or one with bytes nobody asked for, is never sent a request. No attempt
/// fails, and each such connection carries one request only.
#[test]
fn a_connection_the_server_closed_or_spoiled_is_not_used_again() {
    let server = TestServer::start();
    server.keep_log(false);
    let lb = Balancer::from_toml_str(&provider("s", "a", &server.url(), "")).unwrap();
    server.set_fault(Fault::CloseAfter);
    for n in 1..=20 {
        let r = lb.call(Request::get("s", "/closing")).unwrap();
        assert_eq!(r.status(), 200);
        // The close reached the client's socket before the next call looks at it.
        until(|| server.closed(), n);
    }
    server.set_fault(Fault::Trailing);
    for n in 1..=20 {
        let r = lb.call(Request::get("s", "/trailing")).unwrap();
        assert_eq!(r.status(), 200);
        // Likewise the bytes after the answer (on loopback, written is delivered).
        until(|| server.answered(), 20 + n);
    }
    server.set_fault(Fault::None);
    lb.call(Request::get("s", "/quiet")).unwrap();
    let m = lb.metrics();
    let a = &m.services["s"].providers["a"];
    assert_eq!((a.requests, a.failures), (41, 0), "{a:?}");
    // One connection per closing and per spoiled answer, then one more.
    assert_eq!(server.connections(), 41);
}

#[test]
fn in_flight_never_exceeds_max_connections() {
    let server = TestServer::start();
    server.keep_log(false);
    server.set_latency(Duration::from_millis(5));
    let lb = Arc::new(
        Balancer::from_toml_str(&format!(
            "[defaults.pool]\nmax_connections = 4\n{}",
            provider("s", "a", &server.url(), "")
        ))
        .unwrap(),
    );
    let callers: Vec<_> = (0..64)
        .map(|i| {
            let lb = lb.clone();
            thread::spawn(move || {
                (0..5)
                    .map(|j| {
                        lb.call(Request::get("s", "/x").param("i", format!("{i}-{j}")))
                            .map(|r| r.status())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut answers = 0;
    for c in callers {
        for outcome in c.join().unwrap() {
            assert_eq!(outcome.unwrap(), 200);
            answers += 1;
        }
    }
    assert_eq!(answers, 64 * 5);
    assert_eq!(server.requests(), 64 * 5);
    assert!(
        server.max_in_flight() <= 4,
        "server saw {} at once",
        server.max_in_flight()
    );
    assert_eq!(
        server.max_in_flight(),
        4,
        "the cap should be reached under this load"
    );
    assert!(
        server.connections() <= 4,
        "{} connections",
        server.connections()
    );
}

#[test]
fn a_busy_provider_does_not_block_another_service() {
    let slow = TestServer::start();
    slow.close_gate();
    let fast = TestServer::start();
    let lb = Balancer::from_toml_str(&format!(
        "[defaults]\nworkers = 2\n[defaults.pool]\nmax_connections = 1\n{}{}",
        provider("slow", "s", &slow.url(), ""),
        provider("fast", "f", &fast.url(), ""),
    ))
    .unwrap();
    // Enough queued slow work to occupy every worker if workers waited for slots.
    let tickets: Vec<_> = (0..5)
        .map(|_| lb.submit(Request::get("slow", "/x")).unwrap())
        .collect();
    assert!(slow.wait_for_requests(1, Duration::from_secs(5)));
    let fast_tickets: Vec<_> = (0..5)
        .map(|_| lb.submit(Request::get("fast", "/x")).unwrap())
        .collect();
    for t in fast_tickets {
        assert_eq!(t.wait().unwrap().status(), 200);
    }
    assert_eq!(slow.requests(), 1, "the slow provider's cap held");
    slow.open_gate();
    for t in tickets {
        assert_eq!(t.wait().unwrap().status(), 200);
    }
}
