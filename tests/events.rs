//! `on_event`: attempts, failovers, rests and circuit changes reach subscribers on the
//! events thread; a subscriber sleeping a second per event slows no request.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{distinct, provider, Fault, TestServer};
use switchyard::{Balancer, EventKind};

#[test]
fn attempts_failovers_rests_and_circuits_are_heard() {
    let (failing, good) = (TestServer::start(), TestServer::start());
    failing.set_fault(Fault::RetryAfter(503, 30));
    let text = "[defaults]\nstrategy = \"round_robin\"\n".to_string()
        + &provider("s", "failing", &failing.url(), "")
        + &provider("s", "good", &good.url(), "tier = 2");
    let lb = Balancer::from_toml_str(&text).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let seen = seen.clone();
        lb.on_event(move |e| seen.lock().unwrap().push(e.clone()));
    }
    assert_eq!(lb.call(distinct("s", "/q")).unwrap().provider(), "good");
    lb.force_open("good").unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until
        && !seen
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e.what, EventKind::Circuit { .. }))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = seen.lock().unwrap();
    let json: Vec<serde_json::Value> = seen
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    let of = |t: &str| json.iter().filter(|e| e["type"] == t).collect::<Vec<_>>();
    let attempts = of("attempt");
    assert_eq!(attempts.len(), 2, "{json:#?}");
    assert_eq!(
        (
            &attempts[0]["provider"],
            &attempts[0]["ok"],
            &attempts[0]["kind"],
            &attempts[0]["status"]
        ),
        (
            &"failing".into(),
            &false.into(),
            &"status".into(),
            &503.into()
        )
    );
    assert_eq!(
        (&attempts[1]["provider"], &attempts[1]["attempt"]),
        (&"good".into(), &2.into())
    );
    assert_eq!(of("failover")[0]["to"], "good");
    let rest = of("rest");
    assert_eq!(
        (&rest[0]["provider"], &rest[0]["reason"]),
        (&"failing".into(), &"retry_after".into())
    );
    assert!(rest[0]["ms"].as_u64().unwrap() > 25_000);
    assert_eq!(of("circuit")[0]["to"], "open");
    assert!(json
        .iter()
        .all(|e| e["at_unix_ms"].as_u64().unwrap() > 1_700_000_000_000));
}

#[test]
fn a_subscriber_sleeping_a_second_per_event_slows_no_request() {
    let server = TestServer::start();
    let lb = Balancer::from_toml_str(&provider("s", "p", &server.url(), "")).unwrap();
    lb.on_event(|_| std::thread::sleep(Duration::from_secs(1)));
    let started = Instant::now();
    for _ in 0..1_000 {
        lb.call(distinct("s", "/q")).unwrap();
    }
    // Delivered in line, 1,000 events would take 1,000 s; here the requests never wait.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(lb.metrics().events.delivered <= 2);
    let started = Instant::now();
    drop(lb);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited on the backlog"
    );
}
