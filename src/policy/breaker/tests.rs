//! The breaker's state machine on a manual clock: every rule, exactly.

use super::*;
use crate::foundation::clock::{Clock, ManualClock};

fn breaker(edit: impl FnOnce(&mut BreakerConfig)) -> (Breaker, Arc<ManualClock>) {
    let clock = ManualClock::shared();
    let mut config = BreakerConfig::default();
    edit(&mut config);
    (Breaker::new(config, clock.clone()), clock)
}

fn call(b: &Breaker, failed: bool) -> Option<Transition> {
    let (permit, _) = b.try_acquire();
    b.record(permit.expect("permitted"), failed, Duration::from_millis(1))
}

#[test]
fn opens_after_exactly_failure_threshold_in_a_row() {
    let (b, _) = breaker(|_| {});
    for _ in 0..4 {
        assert_eq!(call(&b, true), None);
    }
    assert_eq!(
        call(&b, true),
        Some(Transition {
            from: CircuitState::Closed,
            to: CircuitState::Open
        })
    );
    assert!(b.try_acquire().0.is_none());
    assert!(!b.is_available());
}

#[test]
fn a_success_resets_the_run() {
    let (b, _) = breaker(|c| c.failure_rate_threshold = 0.9);
    for i in 0..50 {
        call(&b, i % 5 != 4);
    }
    assert_eq!(
        b.state(),
        CircuitState::Closed,
        "never 5 in a row, 80% < 90%"
    );
    // With the default rate threshold the same pattern opens once minimum_calls ended.
    let (b, _) = breaker(|_| {});
    let mut calls = 0;
    while b.state() == CircuitState::Closed && calls < 50 {
        call(&b, calls % 5 != 4);
        calls += 1;
    }
    assert_eq!(calls, 20);
}

#[test]
fn half_open_after_open_ms_then_closes_on_successes() {
    let (b, clock) = breaker(|c| c.failure_threshold = 2);
    call(&b, true);
    call(&b, true);
    clock.advance(Duration::from_millis(59_999));
    assert!(b.try_acquire().0.is_none());
    clock.advance(Duration::from_millis(1));
    assert!(b.is_available());
    let (p1, t) = b.try_acquire();
    assert_eq!(t.map(|t| t.to), Some(CircuitState::HalfOpen));
    let (p2, _) = b.try_acquire();
    let (p3, _) = b.try_acquire();
    // Only three probes at a time.
    assert!(b.try_acquire().0.is_none());
    assert_eq!(b.record(p1.unwrap(), false, Duration::ZERO), None);
    assert_eq!(b.record(p2.unwrap(), false, Duration::ZERO), None);
    let t = b.record(p3.unwrap(), false, Duration::ZERO);
    assert_eq!(t.map(|t| t.to), Some(CircuitState::Closed));
    assert_eq!(b.info().closed, 1);
}

#[test]
fn an_unused_probe_gives_its_place_back_once_and_only_in_its_own_period() {
    let (b, clock) = breaker(|c| {
        c.failure_threshold = 1;
        c.half_open_max_calls = 1;
        c.open_ms = 1_000;
    });
    call(&b, true);
    clock.advance(Duration::from_millis(1_000));
    let probe = b.try_acquire().0.unwrap();
    assert!(probe.is_probe());
    assert!(b.try_acquire().0.is_none(), "the one probe is out");
    drop(probe);
    let stale = b.try_acquire().0.unwrap();
    // This probe fails: open again, then half-open again with a fresh period.
    let other = b.try_acquire().0;
    assert!(other.is_none());
    assert!(b.record(stale, true, Duration::ZERO).is_some());
    clock.advance(Duration::from_millis(10_000));
    let current = b.try_acquire().0.unwrap();
    let (old_period_probe, _) = {
        // A permit of the earlier period, dropped now, must not free this one's place.
        let inner = b.inner.clone();
        let period = inner.lock().half_open_period - 1;
        (
            Permit {
                probe: Some((inner, period)),
            },
            (),
        )
    };
    drop(old_period_probe);
    assert!(b.try_acquire().0.is_none(), "still one probe out");
    drop(current);
    assert!(b.try_acquire().0.is_some());
}

#[test]
fn a_half_open_failure_reopens_for_longer_capped() {
    let (b, clock) = breaker(|c| {
        c.failure_threshold = 1;
        c.open_ms = 1_000;
        c.open_backoff_multiplier = 2.0;
        c.max_open_ms = 3_000;
    });
    call(&b, true);
    let mut open_for = 1_000;
    for next in [2_000, 3_000, 3_000] {
        clock.advance(Duration::from_millis(open_for - 1));
        assert!(
            b.try_acquire().0.is_none(),
            "still open 1 ms before {open_for} ms"
        );
        clock.advance(Duration::from_millis(1));
        let (p, _) = b.try_acquire();
        let t = b.record(p.expect("a probe"), true, Duration::ZERO);
        assert_eq!(t.map(|t| t.to), Some(CircuitState::Open));
        open_for = next;
    }
}

#[test]
fn rate_rule_needs_minimum_calls_and_forgets_old_buckets() {
    let (b, clock) = breaker(|c| {
        c.failure_threshold = 1000;
        c.minimum_calls = 10;
        c.window_ms = 10_000;
    });
    for _ in 0..9 {
        call(&b, true);
    }
    assert_eq!(
        b.state(),
        CircuitState::Closed,
        "9 calls are below minimum_calls"
    );
    // The window rolls past those failures.
    clock.advance(Duration::from_millis(10_000));
    for _ in 0..6 {
        call(&b, false);
    }
    for _ in 0..4 {
        call(&b, true);
    }
    assert_eq!(b.state(), CircuitState::Closed, "4 of 10 is below 0.5");
    call(&b, true);
    call(&b, true);
    assert_eq!(b.state(), CircuitState::Open, "6 of 12 reaches 0.5");
}

#[test]
fn count_window_and_slow_calls() {
    let (b, _) = breaker(|c| {
        c.window_calls = 10;
        c.minimum_calls = 10;
        c.slow_call_ms = 100;
        c.slow_call_rate_threshold = 0.5;
    });
    for i in 0..9 {
        let (p, _) = b.try_acquire();
        let elapsed = Duration::from_millis(if i % 2 == 0 { 150 } else { 10 });
        b.record(p.unwrap(), false, elapsed);
    }
    assert_eq!(b.state(), CircuitState::Closed);
    let (p, _) = b.try_acquire();
    let t = b.record(p.unwrap(), false, Duration::from_millis(100));
    assert_eq!(t.map(|t| t.to), Some(CircuitState::Open), "6 slow of 10");
}

#[test]
fn a_steady_one_percent_error_rate_never_opens() {
    let (b, clock) = breaker(|_| {});
    for i in 0..10_000 {
        clock.advance(Duration::from_millis(3));
        call(&b, i % 100 == 7);
    }
    assert_eq!(b.info().opened, 0);
}

#[test]
fn operators_force_and_reset() {
    let (b, clock) = breaker(|_| {});
    assert_eq!(b.force_open().map(|t| t.to), Some(CircuitState::Open));
    clock.advance(Duration::from_secs(3600));
    assert!(b.try_acquire().0.is_none(), "forced open stays open");
    assert!(b.info().forced && b.info().next_attempt.is_none());
    assert_eq!(b.force_close().map(|t| t.to), Some(CircuitState::Closed));
    for _ in 0..5 {
        call(&b, true);
    }
    assert_eq!(
        b.state(),
        CircuitState::Open,
        "closed by force, opens by the rules"
    );
    b.reset();
    let info = b.info();
    assert_eq!(
        (info.state, info.failures, info.consecutive_failures),
        (CircuitState::Closed, 0, 0)
    );
    assert!(info.last_failure.is_none());
}

#[test]
fn a_slow_probe_reopens_instead_of_closing() {
    let (b, clock) = breaker(|c| {
        c.failure_threshold = 1;
        c.success_threshold = 1;
        c.half_open_max_calls = 1;
        c.open_ms = 1_000;
        c.slow_call_ms = 500;
    });
    call(&b, true);
    clock.advance(Duration::from_millis(1_000));
    let probe = b.try_acquire().0.unwrap();
    let t = b.record(probe, false, Duration::from_millis(800));
    assert_eq!(
        t.map(|t| t.to),
        Some(CircuitState::Open),
        "slow is not recovered"
    );
    clock.advance(Duration::from_millis(10_000));
    let probe = b.try_acquire().0.unwrap();
    let t = b.record(probe, false, Duration::from_millis(100));
    assert_eq!(t.map(|t| t.to), Some(CircuitState::Closed));
}

/// A fleet stand-in: records what the circuit tells it, grants probes as told.
#[derive(Default)]
struct Share {
    told: Mutex<Vec<Option<SystemTime>>>,
    probes_allowed: std::sync::atomic::AtomicBool,
}

impl CircuitShare for Share {
    fn changed(&self, open_until: Option<SystemTime>) {
        self.told.lock().push(open_until);
    }
    fn may_probe(&self) -> bool {
        self.probes_allowed.load(Ordering::Acquire)
    }
}

#[test]
fn a_shared_circuit_tells_its_changes_and_probes_only_when_let() {
    let (b, clock) = breaker(|c| {
        c.failure_threshold = 1;
        c.open_ms = 1000;
        c.success_threshold = 1;
    });
    let share = Arc::new(Share::default());
    b.share_with(share.clone());
    call(&b, true);
    let opened_until = clock.to_system(clock.now() + Duration::from_millis(1000));
    assert_eq!(*share.told.lock(), vec![Some(opened_until)]);
    clock.advance(Duration::from_millis(1000));
    // Another process owns the probes: this one sends none and stays open.
    assert!(b.try_acquire().0.is_none());
    assert_eq!(b.state(), CircuitState::Open);
    share.probes_allowed.store(true, Ordering::Release);
    call(&b, false);
    assert_eq!(b.state(), CircuitState::Closed);
    assert_eq!(share.told.lock().last(), Some(&None));
    // An operator's forced opening stays this process's own.
    b.force_open();
    assert_eq!(share.told.lock().len(), 2);
}

#[test]
fn another_processes_changes_reach_the_circuit() {
    let (b, clock) = breaker(|_| {});
    let remote = b.remote();
    let until = clock.to_system(clock.now() + Duration::from_millis(500));
    assert!(remote.opened(until).is_some());
    assert_eq!(b.state(), CircuitState::Open);
    assert!(b.try_acquire().0.is_none());
    clock.advance(Duration::from_millis(500));
    assert!(
        b.try_acquire().0.is_some(),
        "half-open once the fleet's time is over"
    );
    assert!(remote.closed().is_some());
    assert_eq!(b.state(), CircuitState::Closed);
    // An opening already over changes nothing.
    assert!(remote.opened(clock.to_system(clock.now())).is_none());
}

#[test]
fn a_window_without_a_bad_call_is_never_summed_wrongly() {
    let ms = Duration::from_millis;
    let mut time = Window::new(&BreakerConfig {
        window_ms: 1000,
        ..BreakerConfig::default()
    });
    time.record(ms(0), true, false);
    assert!(time.may_hold_bad(ms(999)));
    assert!(!time.may_hold_bad(ms(1000)), "a window's length on");
    time.record(ms(1000), false, true);
    assert!(time.may_hold_bad(ms(1500)), "a slow call counts");
    time.clear();
    assert!(!time.may_hold_bad(ms(1500)));

    let mut count = Window::new(&BreakerConfig {
        window_calls: 3,
        ..BreakerConfig::default()
    });
    count.record(ms(0), true, false);
    count.record(ms(0), false, false);
    count.record(ms(0), false, false);
    assert!(count.may_hold_bad(ms(0)));
    count.record(ms(0), false, false);
    assert!(!count.may_hold_bad(ms(0)), "the failure left the ring");

    // Whenever a window says it holds none, its totals agree, in either kind; the count
    // window's running counts are those of its live entries.
    for mut w in [time, count] {
        for i in 0..400u64 {
            let now = ms(i * 37);
            w.record(now, i % 7 == 0, i % 11 == 0);
            for later in [now, now + ms(600), now + ms(1200)] {
                let (_, failures, slow) = w.totals(later);
                if !w.may_hold_bad(later) {
                    assert_eq!((failures, slow), (0, 0), "call {i}");
                }
                if let Window::Count { ring, filled, .. } = &w {
                    let live = &ring[..*filled];
                    let recount = |flag| live.iter().filter(|e| **e & flag != 0).count() as u64;
                    assert_eq!(
                        (failures, slow),
                        (recount(FAILED), recount(SLOW)),
                        "call {i}"
                    );
                }
            }
            if i % 50 == 0 {
                w.clear();
            }
        }
    }
}
