//! Request adaptation: each provider gets its own path, query and headers.

mod support;

use support::{provider, Fault, TestServer};
use switchyard::{Balancer, Error, Method, Request};

fn two_providers(a: &TestServer, b: &TestServer) -> Balancer {
    std::env::set_var("ADAPT_TEST_KEY_A", "key-a-123");
    let config = format!(
        "[defaults]\nstrategy = \"round_robin\"\n{}{}",
        provider(
            "stocks",
            "alpha",
            &format!("{}/v1", a.url()),
            r#"headers = { Authorization = "Bearer ${ADAPT_TEST_KEY_A}" }
               endpoints = { quote = "/quote/{symbol}", news = "/news" }"#,
        ),
        provider(
            "stocks",
            "beta",
            &b.url(),
            r#"query = { apikey = "kb", format = "json" }
               endpoints = { quote = "/stock/{symbol}/latest" }"#,
        ),
    );
    Balancer::from_toml_str(&config).unwrap()
}

#[test]
fn each_provider_sees_its_own_path_query_and_headers() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let lb = two_providers(&a, &b);
    for _ in 0..4 {
        let r = lb
            .call(
                Request::get("stocks", "quote")
                    .param("symbol", "BRK/A")
                    .param("range", "1 d")
                    .header("X-Trace", "t1"),
            )
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let (sa, sb) = (a.seen(), b.seen());
    assert_eq!(sa.len() + sb.len(), 4);
    assert!(!sa.is_empty() && !sb.is_empty(), "both providers are used");
    for s in &sa {
        assert_eq!(s.target, "/v1/quote/BRK%2FA?range=1%20d");
        assert_eq!(s.header("authorization"), Some("Bearer key-a-123"));
        assert_eq!(s.header("x-trace"), Some("t1"));
    }
    for s in &sb {
        assert_eq!(
            s.target,
            "/stock/BRK%2FA/latest?apikey=kb&format=json&range=1%20d"
        );
        assert_eq!(s.header("authorization"), None);
        assert_eq!(s.header("x-trace"), Some("t1"));
    }
}

#[test]
fn only_providers_that_list_an_endpoint_serve_it() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let lb = two_providers(&a, &b);
    for _ in 0..5 {
        let r = lb.call(Request::get("stocks", "news")).unwrap();
        assert_eq!(r.provider(), "alpha");
    }
    assert_eq!(b.requests(), 0);
    assert!(a.seen().iter().all(|s| s.target == "/v1/news"));
}

#[test]
fn raw_paths_go_to_any_provider_with_its_query_and_headers() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let lb = two_providers(&a, &b);
    for _ in 0..4 {
        lb.call(Request::get("stocks", "/status").param("v", "2"))
            .unwrap();
    }
    assert!(a.seen().iter().all(|s| s.target == "/v1/status?v=2"));
    assert!(b
        .seen()
        .iter()
        .all(|s| s.target == "/status?apikey=kb&format=json&v=2"));
    assert_eq!(a.requests() + b.requests(), 4);
}

#[test]
fn post_bodies_and_methods_are_sent_as_given() {
    let a = TestServer::start();
    let lb = Balancer::from_toml_str(&provider("s", "a", &a.url(), "")).unwrap();
    lb.call(
        Request::post("s", "/orders")
            .body(&b"{\"qty\":3}"[..])
            .header("Content-Type", "application/json"),
    )
    .unwrap();
    lb.call(Request::new(Method::Delete, "s", "/orders/7"))
        .unwrap();
    let seen = a.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, b"{\"qty\":3}");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        (seen[1].method.as_str(), seen[1].target.as_str()),
        ("DELETE", "/orders/7")
    );
}

#[test]
fn a_404_is_an_answer_not_a_failure() {
    let a = TestServer::start();
    a.set_fault(Fault::Status(404));
    let lb = Balancer::from_toml_str(&provider("s", "a", &a.url(), "")).unwrap();
    let r = lb.call(Request::get("s", "/missing")).unwrap();
    assert_eq!(
        (r.status(), r.attempts(), r.body()),
        (404, 1, &b"failure"[..])
    );
    let m = lb.metrics();
    assert_eq!(m.services["s"].providers["a"].successes, 1);
}

#[test]
fn bad_requests_are_refused_before_any_network() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let lb = two_providers(&a, &b);
    assert!(
        matches!(lb.call(Request::get("bonds", "quote")), Err(Error::UnknownService(s)) if s == "bonds")
    );
    match lb.call(Request::get("stocks", "dividends")) {
        Err(Error::UnknownEndpoint { service, endpoint }) => {
            assert_eq!(
                (service.as_str(), endpoint.as_str()),
                ("stocks", "dividends")
            )
        }
        other => panic!("{other:?}"),
    }
    let e = lb.call(Request::get("stocks", "quote")).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert!(e.to_string().contains("symbol"), "{e}");
    let e = lb.submit(Request::get("stocks", "/a b")).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    assert_eq!(a.requests() + b.requests(), 0);
}

#[test]
fn large_bodies_stream_through_small_connection_buffers() {
    let a = TestServer::start();
    a.set_fault(Fault::Big(3 * 1024 * 1024));
    let lb = Balancer::from_toml_str(&provider(
        "s",
        "a",
        &a.url(),
        "pool = { max_response_bytes = 4194304 }",
    ))
    .unwrap();
    let r = lb.call(Request::get("s", "/big")).unwrap();
    assert_eq!(r.body().len(), 3 * 1024 * 1024);
    assert!(r.body().iter().all(|b| *b == b'x'));
}
