use super::*;
use crate::engine::test_rig::Rig;
use crate::foundation::request::{Priority, Request};
use crate::policy::breaker::CircuitState;
use crate::upstream::fake_transport::Reply;

#[test]
fn a_deadline_passed_in_the_queue_ends_the_job_unsent() {
    let rig = Rig::new(&Rig::config(&["a"], ""));
    let mut ticket = rig
        .core
        .queue_request(Request::get("s", "/x").timeout(Duration::from_millis(100)))
        .unwrap();
    assert!(ticket.try_wait().is_none());
    rig.clock.advance(Duration::from_millis(100));
    assert!(matches!(
        ticket.try_wait(),
        Some(Err(Error::Timeout { .. }))
    ));
    assert_eq!(rig.work_all(10), 1);
    assert!(rig.fake("a").sent().is_empty(), "a settled job is not sent");
    assert_eq!(rig.core.requests_under_way(), 0);
    assert_eq!(rig.core.snapshot().services["s"].failures, 1);
}

#[test]
fn a_parked_job_gets_the_released_slot() {
    let rig = Rig::new(&Rig::config(&["a"], "pool = { max_connections = 1 }"));
    let seat = rig.core.services[0].providers[0].take_seat(true).unwrap();
    let low = rig
        .core
        .queue_request(Request::get("s", "/low").priority(Priority::Low))
        .unwrap();
    let high = rig
        .core
        .queue_request(Request::get("s", "/high").priority(Priority::High))
        .unwrap();
    assert_eq!(rig.work_all(10), 2);
    assert_eq!(
        rig.core.lines[0].len(),
        2,
        "both parked: the only seat is taken"
    );
    assert_eq!(rig.core.snapshot().services["s"].queue_depth, 2);
    let next = hand_over(&rig.core, 0, 0, seat, None).expect("a parked job takes the seat");
    assert_eq!(next.request.priority, Priority::High);
    assert!(next.reserved.is_some());
    let driven = drive(&rig.core, *next);
    let after = driven.next.expect("its release hands the seat on");
    assert_eq!(drive(&rig.core, *after).next.map(|j| j.service), None);
    assert_eq!(high.wait().unwrap().status(), 200);
    assert_eq!(low.wait().unwrap().status(), 200);
    assert_eq!(rig.fake("a").sent().len(), 2);
    assert_eq!(rig.core.snapshot().services["s"].queue_depth, 0);
    assert_eq!(rig.core.services[0].providers[0].in_flight(), 0);
}

#[test]
fn an_attempt_past_its_deadline_gives_one_timeout() {
    let rig = Rig::new(&Rig::config(&["a"], ""));
    let (arrived_tx, arrived) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded(1);
    rig.fake("a").push(Reply::Held {
        arrived: arrived_tx,
        release: release_rx,
    });
    let ticket = rig
        .core
        .queue_request(Request::get("s", "/x").timeout(Duration::from_millis(50)))
        .unwrap();
    std::thread::scope(|s| {
        let worker = s.spawn(|| rig.work_once().map(|d| d.outcome.is_none()));
        arrived.recv_timeout(Duration::from_secs(5)).unwrap();
        // The attempt is on the wire; its deadline and the overtime pass.
        rig.clock
            .advance(Duration::from_millis(50) + crate::flow::ticket::OVERTIME);
        assert!(matches!(ticket.wait(), Err(Error::Timeout { .. })));
        let _ = release.send(());
        assert_eq!(worker.join().unwrap(), Some(true));
    });
    assert_eq!(rig.core.requests_under_way(), 0);
    assert_eq!(rig.core.services[0].providers[0].in_flight(), 0);
}

#[test]
fn failover_goes_to_the_next_provider_and_counts_it() {
    let rig = Rig::new(&Rig::config(&["a", "b"], "strategy = \"round_robin\""));
    // Smooth round robin starts with `a`.
    rig.fake("a").push(Reply::Status(503));
    let r = rig.core.drive_call(Request::get("s", "/x")).unwrap();
    assert_eq!((r.status(), r.provider(), r.attempts()), (200, "b", 2));
    let s = &rig.core.snapshot().services["s"];
    assert_eq!(s.failovers, 1);
    assert_eq!(s.providers["a"].requests + s.providers["b"].requests, 2);
}

#[test]
fn circuit_changes_are_posted_and_run_nothing_in_place() {
    let rig = Rig::new(&Rig::config(
        &["a"],
        "retry = { max_attempts = 1 }\ncircuit_breaker = { failure_threshold = 1 }",
    ));
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let called = called.clone();
        rig.core.listeners().add(std::sync::Arc::new(move |_| {
            called.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    rig.fake("a").push(Reply::Fail(AttemptKind::Connect));
    assert!(rig.core.drive_call(Request::get("s", "/x")).is_err());
    let event = rig.wiring.events.try_recv().expect("the change is posted");
    assert_eq!(
        (event.from, event.to),
        (CircuitState::Closed, CircuitState::Open)
    );
    assert!(
        !called.load(std::sync::atomic::Ordering::SeqCst),
        "delivery is the events thread's"
    );
}

#[test]
fn draining_ends_queued_and_parked_jobs_with_shutting_down() {
    let rig = Rig::new(&Rig::config(&["a"], "pool = { max_connections = 1 }"));
    let seat = rig.core.services[0].providers[0].take_seat(true).unwrap();
    let parked = rig
        .core
        .queue_request(Request::get("s", "/parked"))
        .unwrap();
    assert_eq!(rig.work_all(1), 1);
    let queued = rig
        .core
        .queue_request(Request::get("s", "/queued"))
        .unwrap();
    rig.core
        .stopping
        .store(true, std::sync::atomic::Ordering::SeqCst);
    rig.core.drain();
    for t in [parked, queued] {
        assert!(matches!(t.wait(), Err(Error::ShuttingDown)));
    }
    drop(seat);
    assert_eq!(rig.core.requests_under_way(), 0);
    assert!(rig.fake("a").sent().is_empty());
    assert_eq!(rig.core.snapshot().services["s"].queue_depth, 0);
}

#[test]
fn input_the_wire_refuses_is_the_callers_error_and_charges_nobody() {
    let rig = Rig::new(&Rig::config(
        &["a"],
        "circuit_breaker = { failure_threshold = 1 }",
    ));
    for _ in 0..5 {
        rig.fake("a").push(Reply::Refused);
        let e = rig.core.drive_call(Request::get("s", "/x")).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("wire")),
            "{e}"
        );
    }
    let s = &rig.core.snapshot().services["s"];
    assert_eq!(s.providers["a"].requests, 0, "no attempt is counted");
    assert_eq!(s.providers["a"].circuit.state, "closed");
    assert_eq!(rig.core.services[0].providers[0].in_flight(), 0);
    assert_eq!(
        rig.core
            .drive_call(Request::get("s", "/x"))
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn an_attempt_cut_short_by_the_requests_deadline_is_a_timeout() {
    let rig = Rig::new(&Rig::config(&["a", "b"], "retry = { max_attempts = 1 }"));
    rig.fake("a")
        .push(Reply::TimesOut(Duration::from_millis(100)));
    rig.fake("b")
        .push(Reply::TimesOut(Duration::from_millis(100)));
    let r = Request::get("s", "/x").timeout(Duration::from_millis(100));
    match rig.core.drive_call(r) {
        Err(Error::Timeout { attempts, elapsed }) => {
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].kind, AttemptKind::Timeout);
            assert_eq!(elapsed, Duration::from_millis(100));
        }
        other => panic!("{other:?}"),
    }
    // A provider's own timeout, well inside the deadline, stays a provider failure.
    rig.fake("a")
        .push(Reply::TimesOut(Duration::from_millis(10)));
    rig.fake("b")
        .push(Reply::TimesOut(Duration::from_millis(10)));
    let config_cut = Request::get("s", "/y").timeout(Duration::from_secs(3600));
    let e = rig.core.drive_call(config_cut);
    assert!(matches!(e, Err(Error::AllProvidersFailed { .. })), "{e:?}");
}
