//! The endpoint cache and response shapes on the real dispatch path, with the fake
//! transport and a manual clock.

use std::time::Duration;

use crate::engine::test_rig::Rig;
use crate::foundation::request::Request;
use crate::upstream::fake_transport::Reply;

fn cached(ttl_ms: u64) -> Rig {
    Rig::new(
        &(Rig::config(&["a"], "")
            + "endpoints = { quote = \"/quote\" }\n\
               [services.s.endpoints.quote]\n"
            + &format!("cache_ttl_ms = {ttl_ms}\n")),
    )
}

fn quote(symbol: &str) -> Request {
    Request::get("s", "quote").param("symbol", symbol)
}

#[test]
fn a_kept_answer_serves_identical_requests_until_its_ttl() {
    let rig = cached(1_000);
    let first = rig.core.drive_call(quote("A")).unwrap();
    assert!(!first.from_cache());
    rig.clock.advance(Duration::from_millis(999));
    let again = rig.core.drive_call(quote("A")).unwrap();
    assert!(again.from_cache());
    assert_eq!(
        (
            again.status(),
            again.body(),
            again.provider(),
            again.attempts()
        ),
        (200, first.body(), "a", 0)
    );
    assert!(!rig.core.drive_call(quote("B")).unwrap().from_cache());
    rig.clock.advance(Duration::from_millis(1));
    assert!(
        !rig.core.drive_call(quote("A")).unwrap().from_cache(),
        "expired"
    );
    assert_eq!(rig.fake("a").sent().len(), 3);
    let s = &rig.core.snapshot().services["s"];
    assert_eq!((s.cache_hits, s.cache_misses, s.successes), (1, 3, 4));
    assert_eq!(s.providers["a"].requests, 3, "a hit charges no provider");
}

#[test]
fn only_2xx_answers_to_requests_that_may_share_are_kept() {
    let rig = cached(60_000);
    for status in [404, 200] {
        rig.fake("a").push(Reply::Answer {
            status,
            headers: vec![("cache-control", "no-store".into())],
            body: vec![],
        });
    }
    rig.fake("a").push(Reply::Status(404));
    for _ in 0..3 {
        assert!(!rig.core.drive_call(quote("A")).unwrap().from_cache());
    }
    let post = || Request::post("s", "quote").body(b"x".to_vec());
    assert!(!rig.core.drive_call(post()).unwrap().from_cache());
    assert!(!rig.core.drive_call(post()).unwrap().from_cache());
    assert_eq!(rig.fake("a").sent().len(), 5);
    // The next 200 has no Cache-Control: it is kept.
    rig.core.drive_call(quote("A")).unwrap();
    assert!(rig.core.drive_call(quote("A")).unwrap().from_cache());
}

#[test]
fn a_submitted_request_and_a_callback_are_answered_from_the_cache_too() {
    let rig = cached(60_000);
    rig.core.drive_call(quote("A")).unwrap();
    let ticket = rig.core.queue_request(quote("A")).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    rig.core
        .queue_with_callback(quote("A"), move |r| {
            let _ = tx.send(r.map(|r| r.from_cache()));
        })
        .unwrap();
    assert_eq!(rig.work_all(5), 2);
    assert!(ticket.wait().unwrap().from_cache());
    assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap());
    assert_eq!(rig.fake("a").sent().len(), 1);
}

#[test]
fn services_never_share_kept_answers() {
    let mut text = String::new();
    for (service, host) in [("s", 1), ("t", 2)] {
        text.push_str(&format!(
            "[services.{service}.endpoints.quote]\ncache_ttl_ms = 60000\n\
             [[services.{service}.providers]]\nname = \"{service}p\"\n\
             base_url = \"http://10.0.0.{host}:80\"\nendpoints = {{ quote = \"/quote\" }}\n"
        ));
    }
    let rig = Rig::new(&text);
    rig.core.drive_call(quote("A")).unwrap();
    let mut other = quote("A");
    other.service = "t".into();
    let r = rig.core.drive_call(other).unwrap();
    assert!(!r.from_cache());
    assert_eq!(r.provider(), "tp");
}

/// Two providers answering one quote in their own JSON, shaped alike.
fn shaped() -> Rig {
    Rig::new(
        "[services.s]\nstrategy = \"round_robin\"\n\
         [[services.s.providers]]\nname = \"a\"\nbase_url = \"http://10.0.0.1:80\"\n\
         endpoints = { quote = \"/v2/{symbol}\" }\n\
         shape = { quote = { price = \"/results/0/p\", time = \"/results/0/t\" } }\n\
         [[services.s.providers]]\nname = \"b\"\nbase_url = \"http://10.0.0.2:80\"\n\
         endpoints = { quote = \"/query\" }\n\
         shape = { quote = { price = \"/Global Quote/05. price\", time = \"/Global Quote/ts\" } }\n",
    )
}

fn answer(body: &str) -> Reply {
    Reply::Answer {
        status: 200,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn a_shape_gives_one_body_whichever_provider_answers() {
    let rig = shaped();
    let a_body = r#"{"results":[{"p":12.5,"t":7,"x":"more"}]}"#;
    let b_body = r#"{"Global Quote":{"05. price":12.5,"ts":7}}"#;
    rig.fake("a").push(answer(a_body));
    rig.fake("b").push(answer(b_body));
    let mut raws = Vec::new();
    for _ in 0..2 {
        let r = rig.core.drive_call(quote("A")).unwrap();
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body, serde_json::json!({"price": 12.5, "time": 7}));
        raws.push((r.provider().to_string(), r.raw_body().to_vec()));
    }
    raws.sort();
    assert_eq!(
        raws,
        [
            ("a".to_string(), a_body.as_bytes().to_vec()),
            ("b".to_string(), b_body.as_bytes().to_vec())
        ]
    );
}

#[test]
fn an_answer_a_shape_cannot_read_fails_that_attempt_over() {
    let rig = shaped();
    rig.fake("a").push(answer("<html>busy</html>"));
    rig.fake("b").push(answer("<html>busy</html>"));
    rig.fake("a").push(answer(r#"{"results":[{"p":1}]}"#));
    rig.fake("b")
        .push(answer(r#"{"Global Quote":{"05. price":1}}"#));
    let r = rig.core.drive_call(quote("A")).unwrap();
    assert_eq!(r.attempts(), 3, "each HTML answer was a failed attempt");
    let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(body, serde_json::json!({"price": 1, "time": null}));
    let s = &rig.core.snapshot().services["s"];
    let failed: u64 = s.providers.values().map(|p| p.failures).sum();
    assert_eq!(failed, 2);
    assert_eq!(
        s.providers
            .values()
            .map(|p| p.failures_by_kind.get("protocol").copied().unwrap_or(0))
            .sum::<u64>(),
        2
    );
}

#[test]
fn a_non_2xx_answer_keeps_its_own_body() {
    let rig = shaped();
    for name in ["a", "b"] {
        rig.fake(name).push(Reply::Answer {
            status: 404,
            headers: vec![],
            body: b"not found".to_vec(),
        });
    }
    let r = rig.core.drive_call(quote("ZZZ")).unwrap();
    assert_eq!(
        (r.status(), r.body(), r.raw_body()),
        (404, &b"not found"[..], &b"not found"[..])
    );
}

/// `a` first (tier 1), `b` behind it; `q` hedged after 50 ms.
fn hedged(extra: &str) -> Rig {
    Rig::new(&format!(
        "[defaults]\n{extra}\n[services.s.endpoints.q]\nhedge_after_ms = 50\n\
         [[services.s.providers]]\nname = \"a\"\nbase_url = \"http://10.0.0.1:80\"\n\
         endpoints = {{ q = \"/q\" }}\n\
         [[services.s.providers]]\nname = \"b\"\ntier = 2\nbase_url = \"http://10.0.0.2:80\"\n\
         endpoints = {{ q = \"/q\" }}\n"
    ))
}

type Held = (
    crossbeam_channel::Receiver<()>,
    crossbeam_channel::Sender<()>,
);

fn hold(rig: &Rig, provider: &str) -> Held {
    let (arrived_tx, arrived) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded(1);
    rig.fake(provider).push(Reply::HeldThen {
        arrived: arrived_tx,
        release: release_rx,
        status: 200,
    });
    (arrived, release)
}

const SOON: Duration = Duration::from_secs(5);

#[test]
fn a_slow_first_attempt_is_hedged_and_the_first_answer_wins() {
    let rig = hedged("");
    let (arrived, release) = hold(&rig, "a");
    let ticket = rig.core.queue_request(Request::get("s", "q")).unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| rig.work_once().is_some());
        arrived.recv_timeout(SOON).unwrap();
        rig.clock.advance(Duration::from_millis(49));
        assert_eq!(rig.fire_timers(), 0, "not yet");
        rig.clock.advance(Duration::from_millis(1));
        assert_eq!(rig.fire_timers(), 1);
        assert_eq!(rig.work_all(5), 1, "the hedge goes to b");
        let r = ticket.wait().unwrap();
        assert_eq!((r.provider(), r.status()), ("b", 200));
        release.send(()).unwrap();
        assert!(first.join().unwrap());
    });
    let s = &rig.core.snapshot().services["s"];
    assert_eq!((s.hedges, s.hedge_wins), (1, 1));
    assert_eq!(
        (s.successes, s.failures),
        (1, 0),
        "one request, one outcome"
    );
    assert_eq!(
        (s.providers["a"].requests, s.providers["b"].requests),
        (1, 1)
    );
    assert_eq!(rig.core.requests_under_way(), 0);
}

#[test]
fn when_the_first_attempt_answers_first_the_hedge_ends_quietly() {
    let rig = hedged("");
    let (arrived_a, release_a) = hold(&rig, "a");
    let (arrived_b, release_b) = hold(&rig, "b");
    let ticket = rig.core.queue_request(Request::get("s", "q")).unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| rig.work_once().is_some());
        arrived_a.recv_timeout(SOON).unwrap();
        rig.clock.advance(Duration::from_millis(50));
        assert_eq!(rig.fire_timers(), 1);
        let hedge = s.spawn(|| rig.work_once().is_some());
        arrived_b.recv_timeout(SOON).unwrap();
        release_a.send(()).unwrap();
        assert!(first.join().unwrap());
        assert_eq!(ticket.wait().unwrap().provider(), "a");
        release_b.send(()).unwrap();
        assert!(hedge.join().unwrap());
    });
    let s = &rig.core.snapshot().services["s"];
    assert_eq!(
        (s.hedges, s.hedge_wins, s.successes, s.failures),
        (1, 0, 1, 0)
    );
    assert_eq!(s.providers["b"].requests, 1, "the hedge was charged");
    assert_eq!(rig.core.requests_under_way(), 0);
}

#[test]
fn no_hedge_for_an_early_answer_a_post_or_a_spent_budget() {
    // An answer before 50 ms: the hedge is moot.
    let rig = hedged("");
    rig.fake("a").push(Reply::Slow(Duration::from_millis(20)));
    let ticket = rig.core.queue_request(Request::get("s", "q")).unwrap();
    assert_eq!(rig.work_all(5), 1);
    assert_eq!(ticket.wait().unwrap().provider(), "a");
    rig.clock.advance(Duration::from_millis(50));
    rig.fire_timers();
    assert_eq!(rig.work_all(5), 0);

    // A POST may not be sent twice.
    let (arrived, release) = hold(&rig, "a");
    let post = rig
        .core
        .queue_request(Request::post("s", "q").body(b"x".to_vec()))
        .unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| rig.work_once().is_some());
        arrived.recv_timeout(SOON).unwrap();
        rig.clock.advance(Duration::from_millis(100));
        assert_eq!(rig.fire_timers(), 0);
        release.send(()).unwrap();
        assert!(first.join().unwrap());
    });
    assert_eq!(post.wait().unwrap().provider(), "a");
    assert!(rig.fake("b").sent().is_empty());

    // No retry budget left: no hedge either.
    let rig = hedged("retry = { budget_ratio = 0.0, budget_min_per_sec = 0 }");
    let (arrived, release) = hold(&rig, "a");
    let ticket = rig.core.queue_request(Request::get("s", "q")).unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| rig.work_once().is_some());
        arrived.recv_timeout(SOON).unwrap();
        rig.clock.advance(Duration::from_millis(50));
        rig.fire_timers();
        assert_eq!(rig.work_all(5), 0, "nothing launched");
        release.send(()).unwrap();
        assert!(first.join().unwrap());
    });
    assert_eq!(ticket.wait().unwrap().provider(), "a");
    assert!(rig.fake("b").sent().is_empty());
    assert_eq!(rig.core.snapshot().services["s"].hedges, 0);
}

#[test]
fn a_failing_hedge_leaves_the_outcome_to_the_first_attempt() {
    let rig = hedged("");
    let (arrived, release) = hold(&rig, "a");
    rig.fake("b").push(Reply::Status(503));
    let (tx, rx) = crossbeam_channel::bounded(2);
    rig.core
        .queue_with_callback(Request::get("s", "q"), move |r| {
            let _ = tx.send(r.map(|r| r.provider().to_string()));
        })
        .unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| rig.work_once().is_some());
        arrived.recv_timeout(SOON).unwrap();
        rig.clock.advance(Duration::from_millis(50));
        assert_eq!(rig.fire_timers(), 1);
        assert_eq!(rig.work_all(5), 1);
        assert!(
            rx.try_recv().is_err(),
            "the hedge's failure is not the outcome"
        );
        release.send(()).unwrap();
        assert!(first.join().unwrap());
    });
    assert_eq!(rx.recv_timeout(SOON).unwrap().unwrap(), "a");
    assert!(rx.try_recv().is_err(), "exactly one outcome");
    let s = &rig.core.snapshot().services["s"];
    assert_eq!(
        (s.hedges, s.hedge_wins, s.successes, s.failures),
        (1, 0, 1, 0)
    );
    assert_eq!(s.providers["b"].failures, 1);
}

/// `a` answers many quotes in one call, `b` (tier 2) one at a time; windows of 5 ms,
/// batches of at most 3.
fn batching() -> Rig {
    Rig::new(
        "[services.s.endpoints.quote]\nbatch_window_ms = 5\nbatch_max = 3\n\
         [[services.s.providers]]\nname = \"a\"\nbase_url = \"http://10.0.0.1:80\"\n\
         endpoints = { quote = \"/q/{symbol}\" }\n\
         batch = { quote = { path = \"/batch\", param = \"symbol\", query = \"symbols\", item = \"/{symbol}\" } }\n\
         [[services.s.providers]]\nname = \"b\"\ntier = 2\nbase_url = \"http://10.0.0.2:80\"\n\
         endpoints = { quote = \"/q/{symbol}\" }\n",
    )
}

fn body_of(r: &crate::foundation::response::Response) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

#[test]
fn requests_filling_a_batch_go_as_one_call_and_each_gets_its_item() {
    let rig = batching();
    rig.fake("a").push(answer(r#"{"A":{"p":1},"B":{"p":2}}"#));
    let tickets: Vec<_> = ["A", "B", "C"]
        .map(|s| rig.core.queue_request(quote(s)).unwrap())
        .into();
    // Two wait in the batch, the third fills it; the carrier then makes the call.
    assert_eq!(rig.work_all(10), 4);
    let got: Vec<_> = tickets
        .into_iter()
        .map(|t| {
            let r = t.wait().unwrap();
            (r.status(), body_of(&r), r.provider().to_string())
        })
        .collect();
    assert_eq!(
        got,
        [
            (200, r#"{"p":1}"#.to_string(), "a".to_string()),
            (200, r#"{"p":2}"#.to_string(), "a".to_string()),
            (
                404,
                r#"{"error":"not in the batch answer"}"#.to_string(),
                "a".to_string()
            ),
        ]
    );
    assert_eq!(
        rig.fake("a").sent(),
        ["http://10.0.0.1:80/batch?symbols=A%2CB%2CC"]
    );
    let s = &rig.core.snapshot().services["s"];
    assert_eq!((s.batched, s.batch_calls, s.successes), (3, 1, 3));
    assert_eq!(s.providers["a"].requests, 1, "one call charged");
    assert_eq!(rig.core.requests_under_way(), 0);
}

#[test]
fn a_window_closes_on_time_and_a_lone_request_goes_alone() {
    let rig = batching();
    rig.fake("a").push(answer(r#"{"A":1,"B":2}"#));
    let two: Vec<_> = ["A", "B"]
        .map(|s| rig.core.queue_request(quote(s)).unwrap())
        .into();
    assert_eq!(rig.work_all(10), 2, "both wait in the batch");
    rig.clock.advance(Duration::from_millis(4));
    assert_eq!(rig.fire_timers(), 0);
    rig.clock.advance(Duration::from_millis(1));
    assert_eq!(rig.fire_timers(), 1);
    assert_eq!(rig.work_all(10), 1);
    for (t, want) in two.into_iter().zip(["1", "2"]) {
        assert_eq!(body_of(&t.wait().unwrap()), want);
    }
    let alone = rig.core.queue_request(quote("C")).unwrap();
    rig.work_all(10);
    rig.clock.advance(Duration::from_millis(5));
    rig.fire_timers();
    rig.work_all(10);
    assert_eq!(alone.wait().unwrap().status(), 200);
    assert_eq!(
        rig.fake("a").sent()[1],
        "http://10.0.0.1:80/q/C",
        "a single call"
    );
    let s = &rig.core.snapshot().services["s"];
    assert_eq!((s.batched, s.batch_calls), (2, 1));
}

#[test]
fn a_failing_batch_call_splits_into_single_calls_with_no_caller_error() {
    for reply in [Reply::Status(503), answer("<html>maintenance</html>")] {
        let rig = batching();
        rig.fake("a").push(reply);
        let tickets: Vec<_> = ["A", "B", "C"]
            .map(|s| rig.core.queue_request(quote(s)).unwrap())
            .into();
        rig.work_all(20);
        for t in tickets {
            let r = t.wait().expect("no caller error");
            assert_eq!((r.status(), r.provider()), (200, "b"));
        }
        let mut sent = rig.fake("b").sent();
        sent.sort();
        assert_eq!(
            sent,
            [
                "http://10.0.0.2:80/q/A",
                "http://10.0.0.2:80/q/B",
                "http://10.0.0.2:80/q/C"
            ]
        );
        let s = &rig.core.snapshot().services["s"];
        assert_eq!((s.batch_calls, s.successes, s.failures), (0, 3, 0));
        assert_eq!(
            s.providers["a"].failures, 1,
            "the batch call counts against a"
        );
    }
}

#[test]
fn without_an_available_batch_provider_the_members_go_alone() {
    let rig = batching();
    rig.core.services[0].providers[0].breaker.force_open();
    let tickets: Vec<_> = ["A", "B", "C"]
        .map(|s| rig.core.queue_request(quote(s)).unwrap())
        .into();
    rig.work_all(20);
    for t in tickets {
        assert_eq!(t.wait().unwrap().provider(), "b");
    }
    assert!(rig.fake("a").sent().is_empty());
}
