//! Fewer upstream calls: identical requests in flight at once share one call, against a
//! real slow server on 127.0.0.1.

mod support;

use std::time::Duration;

use support::{from_threads, provider, TestServer};
use switchyard::{Balancer, Request};

#[test]
fn a_thousand_concurrent_identical_gets_make_one_upstream_call() {
    let server = TestServer::start();
    server.set_latency(Duration::from_millis(1000));
    let lb = Balancer::from_toml_str(&provider("s", "slow", &server.url(), "")).unwrap();
    let quote = || Request::get("s", "/quote").param("symbol", "AAPL");
    // 950 submitted and 50 blocking callers, all while the first call is on the wire.
    let tickets: Vec<_> = (0..950).map(|_| lb.submit(quote()).unwrap()).collect();
    let called = from_threads(50, 1, || lb.call(quote()));
    for r in called
        .into_iter()
        .chain(tickets.into_iter().map(|t| t.wait()))
    {
        let r = r.expect("every caller is answered");
        assert_eq!((r.status(), r.body()), (200, &b"{\"ok\":true}"[..]));
    }
    assert_eq!(server.requests(), 1, "one upstream call for 1,000 callers");
    let s = &lb.metrics().services["s"];
    assert_eq!((s.successes, s.coalesced), (1000, 999));
    assert_eq!(s.providers["slow"].requests, 1);
}

#[test]
fn different_requests_and_posts_are_not_shared() {
    let server = TestServer::start();
    server.set_latency(Duration::from_millis(100));
    let lb = Balancer::from_toml_str(&provider("s", "p", &server.url(), "")).unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = from_threads(8, 2, || {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i % 2 == 0 {
            lb.call(Request::get("s", "/q").param("i", i.to_string()))
        } else {
            lb.call(Request::post("s", "/q").body(b"same".to_vec()))
        }
    });
    assert!(outcomes.iter().all(|o| o.is_ok()));
    assert_eq!(server.requests(), 16, "each its own call");
    assert_eq!(lb.metrics().services["s"].coalesced, 0);
}
