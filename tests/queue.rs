//! The waiting line: priorities, admission limits, deadlines, shutdown, one outcome each.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::{provider, Fault, TestServer};
use switchyard::{Balancer, Error, Priority, Request, Ticket};

fn balancer(settings: &str, server: &TestServer) -> Balancer {
    Balancer::from_toml_str(&format!(
        "{settings}\n{}",
        provider("s", "a", &server.url(), "")
    ))
    .unwrap()
}

/// One worker and one slot, held by a request the server does not answer until its gate
/// opens; `extra` adds settings.
fn held(extra: &str) -> (TestServer, Balancer, Ticket) {
    let server = TestServer::start();
    server.close_gate();
    let settings = format!("[defaults]\nworkers = 1\n[defaults.pool]\nmax_connections = 1{extra}");
    let lb = balancer(&settings, &server);
    let holder = lb.submit(Request::get("s", "/x")).unwrap();
    assert!(server.wait_for_requests(1, Duration::from_secs(5)));
    (server, lb, holder)
}

#[test]
fn critical_starts_before_queued_low_work() {
    let server = TestServer::start();
    server.close_gate();
    // One worker and one slot, so the server's order is the order work started in.
    let lb = balancer(
        "[defaults]\nworkers = 1\n[defaults.pool]\nmax_connections = 1",
        &server,
    );
    let mut tickets = Vec::new();
    for i in 0..501 {
        let req = Request::get("s", "/job")
            .param("id", format!("low{i}"))
            .priority(Priority::Low);
        tickets.push(lb.submit(req).unwrap());
        if i == 0 {
            // The worker is now held by the server.
            assert!(server.wait_for_requests(1, Duration::from_secs(5)));
        }
    }
    let critical = Request::get("s", "/job")
        .param("id", "critical")
        .priority(Priority::Critical);
    tickets.push(lb.submit(critical).unwrap());
    server.open_gate();
    for t in tickets {
        let r = t.wait().unwrap();
        assert_eq!((r.status(), r.attempts()), (200, 1));
    }
    let order: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.query().to_string())
        .collect();
    let at = order.iter().position(|q| q == "id=critical").unwrap();
    // One low job was on the wire; the critical one took the worker next.
    assert_eq!(
        at,
        1,
        "critical started at position {at}: {:?}",
        &order[..6]
    );
}

#[test]
fn queue_full_at_exactly_max_size() {
    let (server, lb, first) = held("\n[defaults.queue]\nmax_size = 5");
    let queued: Vec<_> = (0..5)
        .map(|_| lb.submit(Request::get("s", "/x")).unwrap())
        .collect();
    let metrics = lb.metrics();
    assert_eq!(metrics.services["s"].queue_depth, 5);
    match lb.submit(Request::get("s", "/x")) {
        Err(Error::QueueFull { service, max_size }) => {
            assert_eq!((service.as_str(), max_size), ("s", 5))
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // A blocking call joins the same line and is refused the same way.
    assert!(matches!(
        lb.call(Request::get("s", "/x")),
        Err(Error::QueueFull { .. })
    ));
    server.open_gate();
    assert_eq!(first.wait().unwrap().status(), 200);
    for t in queued {
        assert_eq!(t.wait().unwrap().status(), 200);
    }
    assert_eq!(lb.metrics().services["s"].rejected, 2);
}

#[test]
fn timeout_while_queued() {
    let (server, lb, blocker) = held("");
    let started = Instant::now();
    let queued = lb
        .submit(Request::get("s", "/x").timeout(Duration::from_millis(200)))
        .unwrap();
    match queued.wait() {
        Err(Error::Timeout { elapsed, attempts }) => {
            assert!(attempts.is_empty());
            assert!(elapsed >= Duration::from_millis(200));
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(2), "took {waited:?}");
    // The same for a blocking call that had to queue.
    let err = lb
        .call(Request::get("s", "/x").timeout(Duration::from_millis(150)))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    server.open_gate();
    assert_eq!(blocker.wait().unwrap().status(), 200);
    assert_eq!(server.requests(), 1, "timed-out requests were never sent");
}

#[test]
fn a_callback_request_times_out_while_queued() {
    let (server, lb, blocker) = held("");
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    lb.submit_with(
        Request::get("s", "/x").timeout(Duration::from_millis(150)),
        move |outcome| {
            tx.send((outcome, started.elapsed())).unwrap();
        },
    )
    .unwrap();
    let (outcome, after) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
    assert!(
        after >= Duration::from_millis(150) && after < Duration::from_secs(2),
        "{after:?}"
    );
    server.open_gate();
    assert_eq!(blocker.wait().unwrap().status(), 200);
    // The timed-out job is dropped by the worker, never sent, never called back twice.
    lb.shutdown(Duration::from_secs(2));
    assert!(rx.try_recv().is_err());
    assert_eq!(server.requests(), 1);
}

#[test]
fn timeout_while_in_flight() {
    let server = TestServer::start();
    server.set_fault(Fault::Hang);
    let lb = balancer("", &server);
    let started = Instant::now();
    let err = lb
        .call(Request::get("s", "/x").timeout(Duration::from_millis(300)))
        .unwrap_err();
    let took = started.elapsed();
    match &err {
        Error::Timeout { attempts, .. } => {
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].kind, switchyard::AttemptKind::Timeout);
            assert_eq!(attempts[0].provider, "a");
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Also through a ticket.
    let t = lb
        .submit(Request::get("s", "/x").timeout(Duration::from_millis(200)))
        .unwrap();
    assert!(matches!(t.wait(), Err(Error::Timeout { .. })));
}

#[test]
fn shutdown_ends_queued_work_after_the_grace() {
    let (server, lb, running) = held("");
    let queued: Vec<_> = (0..10)
        .map(|_| lb.submit(Request::get("s", "/x")).unwrap())
        .collect();
    let opener = {
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(400));
            server.open_gate();
            server
        })
    };
    let started = Instant::now();
    lb.shutdown(Duration::from_millis(100));
    assert!(started.elapsed() < Duration::from_secs(2));
    for t in queued {
        assert!(matches!(t.wait(), Err(Error::ShuttingDown)));
    }
    assert!(matches!(
        lb.submit(Request::get("s", "/x")),
        Err(Error::ShuttingDown)
    ));
    assert!(matches!(
        lb.call(Request::get("s", "/x")),
        Err(Error::ShuttingDown)
    ));
    // The request on the wire still gets its answer.
    assert_eq!(running.wait().unwrap().status(), 200);
    let server = opener.join().unwrap();
    assert_eq!(server.requests(), 1);
}

#[test]
fn shutdown_lets_queued_work_finish_within_the_grace() {
    let server = TestServer::start();
    server.set_latency(Duration::from_millis(10));
    let lb = balancer(
        "[defaults]\nworkers = 2\n[defaults.pool]\nmax_connections = 2",
        &server,
    );
    let tickets: Vec<_> = (0..20)
        .map(|_| lb.submit(Request::get("s", "/x")).unwrap())
        .collect();
    lb.shutdown(Duration::from_secs(10));
    for t in tickets {
        assert_eq!(t.wait().unwrap().status(), 200);
    }
    assert_eq!(lb.requests_under_way(), 0);
}

#[test]
fn every_submitted_request_gets_exactly_one_outcome() {
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    for s in &servers {
        s.keep_log(false);
        s.set_latency(Duration::from_millis(1));
    }
    servers[1].set_error_rate(0.2);
    servers[2].set_fault(Fault::Slow(Duration::from_millis(30)));
    let config = format!(
        "[defaults]\nworkers = 4\n[defaults.pool]\nmax_connections = 3\n[defaults.queue]\nmax_size = 200\n{}{}{}",
        provider("s", "a", &servers[0].url(), ""),
        provider("s", "b", &servers[1].url(), ""),
        provider("s", "c", &servers[2].url(), ""),
    );
    let lb = Arc::new(Balancer::from_toml_str(&config).unwrap());
    let submitted = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (lb, submitted, outcomes) = (lb.clone(), submitted.clone(), outcomes.clone());
            thread::spawn(move || {
                let mut tickets = Vec::new();
                for i in 0..150 {
                    let priority = Priority::ALL[(t + i) % 4];
                    let req = Request::get("s", "/x")
                        .priority(priority)
                        .timeout(Duration::from_millis(50 + (i as u64 * 7) % 400));
                    submitted.fetch_add(1, Ordering::Relaxed);
                    if i % 3 == 0 {
                        let _ = lb.call(req);
                        outcomes.fetch_add(1, Ordering::Relaxed);
                    } else {
                        match lb.submit(req) {
                            Ok(t) => tickets.push(t),
                            Err(_) => {
                                outcomes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                for t in tickets {
                    let _ = t.wait();
                    outcomes.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Shut down in the middle of the load.
    thread::sleep(Duration::from_millis(300));
    lb.shutdown(Duration::from_millis(50));
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(submitted.load(Ordering::Relaxed), 16 * 150);
    assert_eq!(outcomes.load(Ordering::Relaxed), 16 * 150);
    assert_eq!(lb.requests_under_way(), 0);
    let m = lb.metrics();
    let s = &m.services["s"];
    assert_eq!(s.requests, s.successes + s.failures, "{s:?}");
}

#[test]
fn a_waiter_runs_its_own_queued_request_when_every_worker_is_busy() {
    let (held_server, open_server) = (TestServer::start(), TestServer::start());
    held_server.close_gate();
    let lb = Balancer::from_toml_str(&format!(
        "[defaults]\nworkers = 1\n{}\n{}",
        provider("held", "a", &held_server.url(), ""),
        provider("open", "b", &open_server.url(), "")
    ))
    .unwrap();
    // The only worker is held by the server.
    let holder = lb.submit(Request::get("held", "/x")).unwrap();
    assert!(held_server.wait_for_requests(1, Duration::from_secs(5)));
    let queued = lb.submit(Request::get("open", "/y")).unwrap();
    // No worker is free: only the waiting thread itself can have sent it.
    let r = queued.wait().unwrap();
    assert_eq!((r.status(), r.provider()), (200, "b"));
    assert_eq!(held_server.in_flight(), 1, "the worker is still held");
    assert_eq!(lb.metrics().services["open"].requests, 1);
    held_server.open_gate();
    assert_eq!(holder.wait().unwrap().status(), 200);
}
