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

/// A service whose `quote` endpoint is served by `servers`, in tier order, each with
/// its own shape, and cached for `ttl_ms` (0: no cache).
fn quotes(servers: &[(&TestServer, &str)], ttl_ms: u64) -> Balancer {
    let mut text = format!("[services.s.endpoints.quote]\ncache_ttl_ms = {ttl_ms}\n");
    for (i, (server, shape)) in servers.iter().enumerate() {
        text += &provider(
            "s",
            &format!("p{i}"),
            &server.url(),
            &format!(
                "tier = {}\nendpoints = {{ quote = \"/quote/{{symbol}}\" }}\n{shape}",
                i + 1
            ),
        );
    }
    Balancer::from_toml_str(&text).unwrap()
}

#[test]
fn a_cached_endpoint_asks_the_provider_once_per_ttl_and_says_so() {
    let server = TestServer::start();
    server.set_body(br#"{"p":1}"#.to_vec());
    let lb = quotes(&[(&server, "")], 60_000);
    let quote = |s: &str| Request::get("s", "quote").param("symbol", s);
    let first = lb.call(quote("AAPL")).unwrap();
    assert!(!first.from_cache());
    let hits = from_threads(4, 25, || lb.call(quote("AAPL")));
    for r in &hits {
        let r = r.as_ref().unwrap();
        assert!(r.from_cache() && r.attempts() == 0 && r.provider() == "p0");
        assert_eq!(r.body(), br#"{"p":1}"#);
    }
    assert!(!lb.call(quote("MSFT")).unwrap().from_cache());
    assert_eq!(server.requests(), 2, "one call per symbol");
    let s = &lb.metrics().services["s"];
    assert_eq!((s.cache_hits, s.cache_misses, s.successes), (100, 2, 102));
    let text = lb.prometheus();
    assert!(
        text.contains("switchyard_cache_requests_total{service=\"s\",result=\"hit\"} 100"),
        "{text}"
    );
}

#[test]
fn every_provider_answers_in_one_shape_and_the_raw_body_stays() {
    let (first, second) = (TestServer::start(), TestServer::start());
    first.set_body(br#"{"results":[{"p":12.5,"t":1700000000}]}"#.to_vec());
    second.set_body(br#"{"c":12.5,"time":{"unix":1700000000}}"#.to_vec());
    let lb = quotes(
        &[
            (
                &first,
                "shape = { quote = { price = \"/results/0/p\", time = \"/results/0/t\" } }",
            ),
            (
                &second,
                "shape = { quote = { price = \"/c\", time = \"/time/unix\" } }",
            ),
        ],
        0,
    );
    let quote = || Request::get("s", "quote").param("symbol", "AAPL");
    let from_first = lb.call(quote()).unwrap();
    first.set_fault(support::server::Fault::Status(503));
    let from_second = lb.call(quote()).unwrap();
    assert_eq!(
        (from_first.provider(), from_second.provider()),
        ("p0", "p1")
    );
    assert_eq!(from_first.body(), from_second.body(), "one shape");
    assert_eq!(from_first.body(), br#"{"price":12.5,"time":1700000000}"#);
    assert_eq!(
        from_second.raw_body(),
        br#"{"c":12.5,"time":{"unix":1700000000}}"#
    );
}

#[test]
fn an_answer_that_is_not_json_where_a_shape_needs_it_is_a_protocol_failure() {
    let (html, json) = (TestServer::start(), TestServer::start());
    html.set_body(b"<html>maintenance</html>".to_vec());
    json.set_body(br#"{"c":3}"#.to_vec());
    let lb = quotes(
        &[
            (&html, "shape = { quote = { price = \"/c\" } }"),
            (&json, "shape = { quote = { price = \"/c\" } }"),
        ],
        0,
    );
    let r = lb
        .call(Request::get("s", "quote").param("symbol", "X"))
        .unwrap();
    assert_eq!((r.provider(), r.body()), ("p1", &br#"{"price":3}"#[..]));
    let m = lb.metrics();
    assert_eq!(
        m.services["s"].providers["p0"].failures_by_kind["protocol"],
        1
    );
}

#[test]
fn a_slow_answer_is_hedged_to_the_other_provider_and_the_caller_gets_the_first() {
    let (slow, fast) = (TestServer::start(), TestServer::start());
    slow.set_fault(support::server::Fault::SlowEvery(5, Duration::from_secs(2)));
    let text = "[services.s.endpoints.quote]\nhedge_after_ms = 100\n".to_string()
        + &provider("s", "slow", &slow.url(), "endpoints = { quote = \"/q\" }")
        + &provider(
            "s",
            "fast",
            &fast.url(),
            "tier = 2\nendpoints = { quote = \"/q\" }",
        );
    let lb = Balancer::from_toml_str(&text).unwrap();
    let mut by = std::collections::BTreeMap::new();
    for i in 0..20 {
        let r = lb
            .call(Request::get("s", "quote").param("i", i.to_string()))
            .expect("every caller is answered");
        assert!(
            r.latency() < Duration::from_millis(1_500),
            "call {i} waited {:?} for {}",
            r.latency(),
            r.provider()
        );
        *by.entry(r.provider().to_string()).or_insert(0) += 1;
    }
    let s = &lb.metrics().services["s"];
    assert!(by.get("fast").copied().unwrap_or(0) >= 4, "{by:?}");
    assert!(
        s.hedges >= 4 && s.hedge_wins >= 4,
        "{} {}",
        s.hedges,
        s.hedge_wins
    );
    assert_eq!((s.successes, s.failures), (20, 0));
    assert_eq!(
        slow.requests(),
        20,
        "every request went to the first provider once"
    );
    assert_eq!(fast.requests() as u64, s.hedges);
    let text = lb.prometheus();
    let line = format!(
        "switchyard_hedge_wins_total{{service=\"s\"}} {}",
        s.hedge_wins
    );
    assert!(text.contains(&line), "{text}");
}

/// `bulk` answers many quotes in one call; `single` (tier 2) one at a time.
fn batching(bulk: &TestServer, single: &TestServer) -> Balancer {
    bulk.set_fault(support::server::Fault::Items("symbols"));
    single.set_fault(support::server::Fault::Items("symbols"));
    let text = "[services.s.endpoints.quote]\nbatch_window_ms = 20\n".to_string()
        + &provider(
            "s",
            "bulk",
            &bulk.url(),
            "endpoints = { quote = \"/q/{symbol}\" }\n\
             batch = { quote = { path = \"/quotes\", param = \"symbol\", query = \"symbols\", item = \"/{symbol}\" } }",
        )
        + &provider("s", "single", &single.url(), "tier = 2\nendpoints = { quote = \"/q/{symbol}\" }");
    Balancer::from_toml_str(&text).unwrap()
}

fn items(lb: &Balancer, from: usize, to: usize) -> Vec<(String, String)> {
    let tickets: Vec<_> = (from..to)
        .map(|i| {
            let symbol = format!("S{i}");
            let ticket = lb
                .submit(Request::get("s", "quote").param("symbol", &symbol))
                .unwrap();
            (symbol, ticket)
        })
        .collect();
    tickets
        .into_iter()
        .map(|(symbol, t)| {
            let r = t.wait().expect("every caller is answered");
            assert_eq!(r.status(), 200);
            let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
            assert_eq!(body, serde_json::json!({ "item": symbol }), "its own item");
            (symbol, r.provider().to_string())
        })
        .collect()
}

#[test]
fn requests_arriving_together_go_in_batches_and_split_when_the_batch_provider_fails() {
    let (bulk, single) = (TestServer::start(), TestServer::start());
    let lb = batching(&bulk, &single);
    let first = items(&lb, 0, 40);
    assert!(first.iter().all(|(_, p)| p == "bulk"), "{first:?}");
    let s = &lb.metrics().services["s"];
    assert!(
        bulk.requests() <= 4 && s.batched >= 30,
        "{} calls for 40, {} batched",
        bulk.requests(),
        s.batched
    );
    assert_eq!(s.providers["bulk"].requests as usize, bulk.requests());
    assert!(bulk.seen()[0].target.starts_with("/quotes?symbols=S"));

    bulk.set_fault(support::server::Fault::Status(503));
    let then = items(&lb, 40, 80);
    assert!(then.iter().all(|(_, p)| p == "single"), "{then:?}");
    let s = &lb.metrics().services["s"];
    assert_eq!((s.successes, s.failures), (80, 0));
    assert!(single.requests() >= 40);
    let text = lb.prometheus();
    let line = format!("switchyard_batched_total{{service=\"s\"}} {}", s.batched);
    assert!(text.contains(&line), "{text}");
}
