//! User code (circuit listeners, fallbacks, completion callbacks) runs with no lock of the
//! balancer held: it may block or call the balancer without holding up other requests.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use support::{from_threads, provider, Fault, TestServer};
use switchyard::{Balancer, Error, Priority, Request, Response};

/// A service `s` of two providers, `a` failing with 503 and `b` healthy but slow, one
/// connection each (so requests park), circuits that open on one failure and may probe
/// again after 1 ms: circuits change state all the time, also while jobs park.
fn flapping(a: &TestServer, b: &TestServer) -> Balancer {
    a.set_fault(Fault::Status(503));
    b.set_latency(Duration::from_millis(20));
    let config = format!(
        "[defaults.pool]\nmax_connections = 1\n[defaults.circuit_breaker]\nfailure_threshold = 1\n\
         open_ms = 1\nsuccess_threshold = 1\nhalf_open_max_calls = 1\n{}{}",
        provider("s", "a", &a.url(), ""),
        provider("s", "b", &b.url(), "")
    );
    Balancer::from_toml_str(&config).unwrap()
}

#[test]
fn a_listener_that_calls_the_balancer_holds_nobody_up() {
    let (a, b) = (TestServer::start(), TestServer::start());
    let lb = flapping(&a, &b);
    let heard = Arc::new(AtomicUsize::new(0));
    {
        let (inner, heard) = (lb.clone(), heard.clone());
        lb.on_circuit_change(move |_| {
            heard.fetch_add(1, Ordering::SeqCst);
            // Urgent, as an alerting listener's would be: it does not queue behind others.
            let urgent = Request::get("s", "/from-listener")
                .priority(Priority::Critical)
                .timeout(Duration::from_secs(1));
            let _ = inner.call(urgent);
        });
    }
    let started = Instant::now();
    let outcomes: Vec<(Result<Response, Error>, Duration)> = from_threads(8, 5, || {
        let t = Instant::now();
        let r = lb.call(Request::get("s", "/q").timeout(Duration::from_secs(2)));
        (r, t.elapsed())
    });
    let total = started.elapsed();
    assert_eq!(outcomes.len(), 40);
    assert!(
        total < Duration::from_millis(3_500),
        "40 calls took {total:?}"
    );
    for (outcome, took) in &outcomes {
        assert!(
            *took < Duration::from_millis(2_500),
            "a call took {took:?}: {outcome:?}"
        );
    }
    assert!(
        heard.load(Ordering::SeqCst) > 0,
        "the circuit of `a` changed"
    );
    lb.shutdown(Duration::ZERO);
}

#[test]
fn a_listener_that_sleeps_delays_no_request() {
    let (flaky, steady) = (TestServer::start(), TestServer::start());
    flaky.set_fault(Fault::Status(503));
    let config = format!(
        "[defaults.retry]\nmax_attempts = 1\n[defaults.circuit_breaker]\nfailure_threshold = 1\n{}{}",
        provider("flaky", "f", &flaky.url(), ""),
        provider("steady", "g", &steady.url(), "")
    );
    let lb = Balancer::from_toml_str(&config).unwrap();
    let (tx, rx) = mpsc::channel();
    lb.on_circuit_change(move |e| {
        thread::sleep(Duration::from_secs(1));
        let _ = tx.send(e.to);
    });
    // The call that opens the circuit is not held up by the listener either.
    let t = Instant::now();
    assert!(lb.call(Request::get("flaky", "/q")).is_err());
    let opening = t.elapsed();
    let t = Instant::now();
    lb.force_close("f").unwrap();
    let operator = t.elapsed();
    let slowest = (0..20)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(lb.call(Request::get("steady", "/q")).unwrap().status(), 200);
            t.elapsed()
        })
        .max()
        .unwrap();
    let limit = Duration::from_millis(500);
    assert!(opening < limit, "the opening call took {opening:?}");
    assert!(operator < limit, "force_close took {operator:?}");
    assert!(slowest < limit, "an unrelated call took {slowest:?}");
    // Both changes are heard, in order, a second apart.
    let heard: Vec<_> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
        .collect();
    use switchyard::CircuitState::*;
    assert_eq!(heard, [Open, Closed]);
}

#[test]
fn fallbacks_and_callbacks_may_call_the_balancer() {
    let (bad, good) = (TestServer::start(), TestServer::start());
    bad.set_fault(Fault::Status(503));
    let config = format!(
        "[defaults.retry]\nmax_attempts = 1\n{}{}",
        provider("down", "d", &bad.url(), ""),
        provider("up", "u", &good.url(), "")
    );
    let lb = Balancer::from_toml_str(&config).unwrap();
    {
        let inner = lb.clone();
        lb.set_fallback(
            "down",
            Some(move |_: &Request, _: &Error| inner.call(Request::get("up", "/instead")).ok()),
        )
        .unwrap();
    }
    let r = lb.call(Request::get("down", "/q")).unwrap();
    assert!(r.is_fallback());
    assert_eq!(good.requests(), 1, "the fallback's own call went to `up`");

    let (tx, rx) = mpsc::channel();
    let inner = lb.clone();
    lb.submit_with(Request::get("up", "/first"), move |first| {
        let second = inner.call(Request::get("up", "/second"));
        let _ = tx.send((first.map(|r| r.status()), second.map(|r| r.status())));
    })
    .unwrap();
    let (first, second) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((first.unwrap(), second.unwrap()), (200, 200));
    lb.shutdown(Duration::ZERO);
}

#[test]
fn any_timeout_is_accepted_or_refused_never_a_panic() {
    let server = TestServer::start();
    let lb = Balancer::from_toml_str(&provider("s", "a", &server.url(), "")).unwrap();
    for t in [Duration::MAX, Duration::from_secs(86_401), Duration::ZERO] {
        for outcome in [
            lb.call(Request::get("s", "/q").timeout(t)).map(|_| ()),
            lb.submit(Request::get("s", "/q").timeout(t)).map(|_| ()),
            lb.submit_with(Request::get("s", "/q").timeout(t), |_| {}),
        ] {
            assert!(
                matches!(&outcome, Err(Error::InvalidArgument(m)) if m.contains("timeout")),
                "{t:?}: {outcome:?}"
            );
        }
    }
    assert_eq!(server.requests(), 0, "refused input reaches no provider");
    assert!(lb
        .call(Request::get("s", "/q").timeout(Duration::from_secs(86_400)))
        .is_ok());
}
