//! Quotas, rate limits and "quota used up" answers against real servers on 127.0.0.1
//! that enforce their own limits and announce them in real headers.

mod support;

use std::time::{Duration, Instant};

use support::server::{Announce, Limit};
use support::{distinct, from_threads, provider, Fault, TestServer};
use switchyard::{Balancer, Error, Request};

/// A limited provider (tier 1) and an unlimited alternative (tier 2).
fn limited_and_alternative(
    limited: &TestServer,
    alternative: &TestServer,
    extra: &str,
) -> Balancer {
    let config = format!(
        "[defaults]\n{extra}\n{}{}",
        provider("s", "limited", &limited.url(), "tier = 1"),
        provider("s", "alternative", &alternative.url(), "tier = 2"),
    );
    Balancer::from_toml_str(&config).unwrap()
}

/// 8 threads, each calling every 20 ms for `span`: every caller is answered, and the
/// limited server never has to refuse one.
fn no_429_while_an_alternative_exists(announce: Announce) {
    let limited = TestServer::start();
    let alternative = TestServer::start();
    limited.set_limit(Limit {
        limit: 20,
        window: Duration::from_secs(2),
        announce,
    });
    let lb = limited_and_alternative(&limited, &alternative, "");
    let span = Duration::from_millis(4500);
    let started = Instant::now();
    let outcomes = from_threads(8, 1, || {
        let mut answered = 0;
        // Bounded in count and in time.
        for _ in 0..400 {
            if started.elapsed() > span {
                break;
            }
            let r = lb
                .call(distinct("s", "/q"))
                .expect("every caller is answered");
            assert_eq!(r.status(), 200);
            answered += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        answered
    });
    let total: usize = outcomes.iter().sum();
    assert_eq!(limited.refused(), 0, "{announce:?}: a 429 was received");
    let used = limited.requests();
    // Three windows at most in 4.5 s; traffic came back after each reset.
    assert!(
        used > 20 && used <= 60,
        "{announce:?}: the limited one served {used}"
    );
    assert_eq!(used + alternative.requests(), total);
    let p = &lb.metrics().services["s"].providers["limited"];
    assert!(p.rate_limited > 0, "{announce:?}");
}

#[test]
fn x_ratelimit_headers_in_seconds_steer_before_any_429() {
    no_429_while_an_alternative_exists(Announce::XRateLimit);
}

#[test]
fn x_ratelimit_headers_with_a_unix_reset_steer_before_any_429() {
    no_429_while_an_alternative_exists(Announce::XRateLimitUnix);
}

#[test]
fn x_ratelimit_requests_headers_steer_before_any_429() {
    no_429_while_an_alternative_exists(Announce::RequestsForm);
}

#[test]
fn ietf_ratelimit_fields_steer_before_any_429() {
    no_429_while_an_alternative_exists(Announce::IetfSeparate);
}

#[test]
fn the_combined_ietf_ratelimit_field_steers_before_any_429() {
    no_429_while_an_alternative_exists(Announce::IetfCombined);
}

#[test]
fn structured_ietf_ratelimit_and_policy_fields_steer_before_any_429() {
    no_429_while_an_alternative_exists(Announce::IetfStructured);
}

#[test]
fn a_429_with_retry_after_in_milliseconds_rests_that_long() {
    let limited = TestServer::start();
    let alternative = TestServer::start();
    limited.set_fault(Fault::Answer(
        429,
        vec![("retry-after-ms", "400".into())],
        vec![],
    ));
    let lb = limited_and_alternative(&limited, &alternative, "retry = { max_attempts = 2 }");
    assert_eq!(
        lb.call(Request::get("s", "/q")).unwrap().provider(),
        "alternative"
    );
    let p = &lb.metrics().services["s"].providers["limited"];
    assert_eq!(p.resting_reason, Some("retry_after"));
    assert!(
        p.resting_ms > 200 && p.resting_ms <= 400,
        "{}",
        p.resting_ms
    );
    assert_eq!(
        lb.call(Request::get("s", "/q")).unwrap().provider(),
        "alternative"
    );
    assert_eq!(limited.requests(), 1);
}

#[test]
fn malformed_rate_limit_headers_never_fail_a_request() {
    let odd = TestServer::start();
    let junk = [
        ("X-RateLimit-Remaining", "-3"),
        ("X-RateLimit-Reset", "soon"),
        ("RateLimit", "limit=;remaining=NaN"),
        ("RateLimit-Policy", "\";;q=\""),
        ("Retry-After", "99999999999999999999"),
        ("retry-after-ms", "1e309"),
        ("x-ratelimit-reset-requests", "7parsecs"),
    ];
    odd.set_fault(Fault::Answer(
        200,
        junk.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        b"{}".to_vec(),
    ));
    let lb = Balancer::from_toml_str(&provider("s", "odd", &odd.url(), "")).unwrap();
    for _ in 0..20 {
        assert_eq!(lb.call(Request::get("s", "/q")).unwrap().status(), 200);
    }
    let p = &lb.metrics().services["s"].providers["odd"];
    assert_eq!((p.resting_reason, p.announced_remaining), (None, None));
    assert_eq!(odd.requests(), 20);
}

fn asked_once_then_rests(quota_answer: Fault, classify: &str) {
    let free = TestServer::start();
    let paid = TestServer::start();
    free.set_fault(quota_answer);
    let lb = limited_and_alternative(
        &free,
        &paid,
        &format!("{classify}\ncircuit_breaker = {{ failure_threshold = 1 }}"),
    );
    // The first caller meets the answer and goes on to the alternative; then 4 threads.
    let first = lb.call(Request::get("s", "/q")).unwrap();
    assert_eq!((first.provider(), first.attempts()), ("alternative", 2));
    let outcomes = from_threads(4, 5, || lb.call(distinct("s", "/q")));
    for o in &outcomes {
        let r = o
            .as_ref()
            .expect("every caller gets the alternative's answer");
        assert_eq!((r.status(), r.provider()), (200, "alternative"));
    }
    assert_eq!(outcomes.len(), 20);
    assert_eq!(free.requests(), 1, "asked once, then it rests");
    let p = &lb.metrics().services["s"].providers["limited"];
    assert_eq!(p.circuit.state, "closed");
    assert_eq!(p.resting_reason, Some("quota"));
    assert!(p.resting_ms > 0);
}

#[test]
fn a_402_is_asked_once_and_callers_get_the_alternative() {
    asked_once_then_rests(Fault::Status(402), "");
}

#[test]
fn a_throttle_notice_sent_with_200_is_asked_once_and_callers_get_the_alternative() {
    let notice =
        br#"{"Information": "You have reached the 25 requests/day rate limit of the free plan."}"#;
    asked_once_then_rests(
        Fault::Answer(200, vec![], notice.to_vec()),
        "classify = { quota_body = [\"requests/day rate limit\"] }",
    );
}

#[test]
fn a_rate_of_20_per_second_holds_on_the_servers_clock_with_8_threads() {
    let server = TestServer::start();
    let lb = Balancer::from_toml_str(&provider(
        "s",
        "p",
        &server.url(),
        "rate = { per_second = 20 }",
    ))
    .unwrap();
    let outcomes = from_threads(8, 15, || lb.call(distinct("s", "/q")));
    if let Some(Err(e)) = outcomes.iter().find(|o| o.is_err()) {
        panic!("every request waits its turn: {e}");
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 120);
    let first = seen.iter().map(|s| s.at).min().unwrap();
    // Every one-second window starting at a request, on the server's own clock.
    let mut times: Vec<Duration> = seen.iter().map(|s| s.at - first).collect();
    times.sort();
    let busiest = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t < times[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    eprintln!(
        "rate 20/s, 8 threads: busiest second on the server held {busiest}; 120 took {:?}",
        times[119]
    );
    assert!(busiest <= 22, "{busiest} requests in one second");
    assert!(
        times[119] >= Duration::from_millis(5_500),
        "paced, not bursted: {:?}",
        times[119]
    );
}

#[test]
fn a_daily_quota_with_reserve_sheds_low_priority_work_first() {
    let server = TestServer::start();
    let config = format!(
        "[defaults]\nreserve = 0.5\n{}",
        provider("s", "p", &server.url(), "quota = { per_day = 10 }")
    );
    let lb = Balancer::from_toml_str(&config).unwrap();
    let low = || lb.call(Request::get("s", "/q").priority(switchyard::Priority::Low));
    for _ in 0..5 {
        assert!(low().is_ok());
    }
    for _ in 0..3 {
        let e = low().unwrap_err();
        assert!(matches!(e, Error::QuotaExhausted { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("reserved for critical and high requests"),
            "{e}"
        );
    }
    for _ in 0..5 {
        assert!(lb
            .call(Request::get("s", "/q").priority(switchyard::Priority::Critical))
            .is_ok());
    }
    assert_eq!(server.requests(), 10);
    let text = lb.prometheus();
    assert!(
        text.contains(
            "switchyard_quota_remaining{service=\"s\",provider=\"p\",window=\"per_day\"} 0"
        ),
        "{text}"
    );
}

#[test]
fn a_restart_with_a_state_file_continues_the_days_count() {
    let server = TestServer::start();
    let dir = std::env::temp_dir().join(format!("switchyard-quotas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let config = format!(
        "[defaults]\nstate_file = {:?}\n{}",
        path.display().to_string(),
        provider("s", "p", &server.url(), "quota = { per_day = 6 }")
    );
    {
        let lb = Balancer::from_toml_str(&config).unwrap();
        for _ in 0..4 {
            lb.call(Request::get("s", "/q")).unwrap();
        }
        // Shutdown writes the state.
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"used\":4"), "{text}");
    let lb = Balancer::from_toml_str(&config).unwrap();
    assert!(lb.call(Request::get("s", "/q")).is_ok());
    assert!(lb.call(Request::get("s", "/q")).is_ok());
    assert!(matches!(
        lb.call(Request::get("s", "/q")),
        Err(Error::QuotaExhausted { .. })
    ));
    assert_eq!(server.requests(), 6, "six a day, across the restart");
    drop(lb);
    let _ = std::fs::remove_dir_all(&dir);
}
