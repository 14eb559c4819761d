//! Hostile input and surprising upstreams, against real servers: redirects that would
//! carry secrets elsewhere, input the wire cannot carry, dot segments, deadlines that end
//! attempts, reserved names, and secrets in configuration errors.

mod support;

use std::time::Duration;

use support::{provider, Fault, TestServer};
use switchyard::{AttemptKind, Balancer, Error, Request};

const KEY: &str = "k-live-0a1b2c3d4e";

fn with_key(server: &TestServer, name: &str, extra: &str) -> String {
    provider(
        "s",
        name,
        &server.url(),
        &format!("headers = {{ X-Api-Key = \"{KEY}\" }}\n{extra}"),
    )
}

#[test]
fn a_redirect_elsewhere_is_an_answer_and_the_key_stays_home() {
    let (home, elsewhere) = (TestServer::start(), TestServer::start());
    home.set_fault(Fault::Redirect(302, format!("{}/stolen", elsewhere.url())));
    for follow in ["", "pool = { follow_redirects = true }"] {
        let lb = Balancer::from_toml_str(&with_key(&home, "a", follow)).unwrap();
        let r = lb.call(Request::get("s", "/quote")).unwrap();
        assert_eq!((r.status(), r.provider()), (302, "a"), "[{follow}]");
        assert_eq!(
            elsewhere.requests(),
            0,
            "nothing went to the other host [{follow}]"
        );
        let post = lb.call(Request::post("s", "/order").body("{}")).unwrap();
        assert_eq!(post.status(), 302);
        assert_eq!(elsewhere.requests(), 0);
        assert_eq!(
            lb.circuit("a").unwrap().failures,
            0,
            "a 3xx is not a failure"
        );
    }
}

#[test]
fn same_origin_redirects_are_followed_when_asked_keeping_method_and_body() {
    let server = TestServer::start();
    let lb = Balancer::from_toml_str(&with_key(
        &server,
        "a",
        "pool = { follow_redirects = true }",
    ))
    .unwrap();
    server.set_fault(Fault::RedirectOnce(307, format!("{}/moved", server.url())));
    let r = lb
        .call(Request::post("s", "/order").body("{\"n\":1}"))
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = server.seen();
    let last = seen.last().unwrap();
    assert_eq!((last.method.as_str(), last.path()), ("POST", "/moved"));
    assert_eq!(last.body, b"{\"n\":1}");
    assert_eq!(
        last.header("x-api-key"),
        Some(KEY),
        "same origin: the key goes along"
    );
    // A 302 on a POST is not turned into a bodiless GET: it is the answer.
    server.set_fault(Fault::RedirectOnce(302, "/elsewhere".into()));
    let r = lb.call(Request::post("s", "/order").body("x")).unwrap();
    assert_eq!(r.status(), 302);
    // A relative Location on a GET is followed.
    server.set_fault(Fault::RedirectOnce(301, "next".into()));
    assert_eq!(lb.call(Request::get("s", "/a/b")).unwrap().status(), 200);
    assert_eq!(server.seen().last().unwrap().path(), "/a/next");
}

#[test]
fn input_the_wire_cannot_carry_is_refused_and_charges_nobody() {
    let server = TestServer::start();
    let config = format!(
        "[defaults.circuit_breaker]\nfailure_threshold = 2\n{}",
        provider("s", "a", &server.url(), "")
    );
    let lb = Balancer::from_toml_str(&config).unwrap();
    let bad = [
        Request::get("s", "/q").header("X-A", "a\u{1}b"),
        Request::get("s", "/q").header("X-A", "del\u{7f}"),
        Request::get("s", "/q").header("Content-Length", "0"),
        Request::get("s", "/q").header("Transfer-Encoding", "chunked"),
        Request::get("s", "/q").header("Host", "other.example"),
        Request::get("s", "/caf\u{e9}"),
        Request::get("s", "/a%"),
    ];
    for _ in 0..3 {
        for r in &bad {
            let shown = format!("{r:?}");
            match lb.call(r.clone()) {
                Err(Error::InvalidArgument(_)) => {}
                other => panic!("{shown}: {other:?}"),
            }
        }
    }
    assert_eq!(server.requests(), 0);
    let m = lb.metrics();
    assert_eq!(
        m.services["s"].providers["a"].requests, 0,
        "no attempt counted"
    );
    assert_eq!(
        lb.circuit("a").unwrap().state,
        switchyard::CircuitState::Closed
    );
    assert_eq!(lb.call(Request::get("s", "/q")).unwrap().status(), 200);
}

#[test]
fn dot_parameters_never_become_dot_segments() {
    let server = TestServer::start();
    let lb = Balancer::from_toml_str(&provider(
        "s",
        "a",
        &server.url(),
        "endpoints = { item = \"/v1/items/{id}/detail\" }",
    ))
    .unwrap();
    for id in [".", ".."] {
        lb.call(Request::get("s", "item").param("id", id)).unwrap();
    }
    let paths: Vec<String> = server.seen().iter().map(|s| s.path().to_string()).collect();
    assert_eq!(paths, ["/v1/items/%2E/detail", "/v1/items/%2E%2E/detail"]);
}

#[test]
fn the_requests_own_deadline_ending_an_attempt_is_a_timeout() {
    let server = TestServer::start();
    server.set_fault(Fault::Hang);
    let config = format!(
        "[defaults.retry]\nmax_attempts = 1\n{}",
        provider("s", "a", &server.url(), "")
    );
    let lb = Balancer::from_toml_str(&config).unwrap();
    let started = std::time::Instant::now();
    for outcome in [
        lb.call(Request::get("s", "/q").timeout(Duration::from_millis(300))),
        lb.submit(Request::post("s", "/q").timeout(Duration::from_millis(300)))
            .unwrap()
            .wait(),
    ] {
        match outcome {
            Err(Error::Timeout { attempts, .. }) => {
                assert!(attempts.iter().all(|a| a.kind == AttemptKind::Timeout));
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_provider_named_fallback_is_refused_at_load() {
    for name in ["fallback", "FALLBACK"] {
        let text = provider("s", name, "http://127.0.0.1:9", "");
        match Balancer::from_toml_str(&text) {
            Err(Error::Config(e)) => {
                assert_eq!(e.path, "services.s.providers[0].name");
                assert!(e.reason.contains("reserved"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn configuration_errors_never_show_a_secret() {
    std::env::set_var("HARDENING_TEST_KEY", KEY);
    let cases = [
        "[[services.s.providers]]\nname = \"a\"\nbase_url = \"http://h\"\nheaders = \"Bearer ${HARDENING_TEST_KEY}\"\n".to_string(),
        "[[services.s.providers]]\nname = \"a\"\nbase_url = \"gopher://h/${HARDENING_TEST_KEY}\"\n".to_string(),
        format!("[[services.s.providers]]\nname = \"a\"\nheaders = {{ X = \"{KEY}\" \n"),
        format!("[[services.s.providers]]\nname = \"a\"\nbase_url = \"http://h\"\nquery = {{ k = [\"{KEY}\"] }}\n"),
    ];
    for text in &cases {
        let e = Balancer::from_toml_str(text).unwrap_err().to_string();
        assert!(!e.contains(KEY), "{e}");
        assert!(e.len() < 1200, "{} bytes", e.len());
    }
    let huge = format!("[x]\ny = \"{}", "z".repeat(3_000_000));
    let e = Balancer::from_toml_str(&huge).unwrap_err().to_string();
    assert!(e.len() < 1200, "{} bytes", e.len());
}
