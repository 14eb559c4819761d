use super::*;
use crate::foundation::clock::ManualClock;
use crate::foundation::config::Config;
use crate::upstream::fake_transport::FakeTransport;
use crate::upstream::transport::Transport;

fn service(toml: &str) -> Service {
    let resolved = Config::from_toml_str(toml).unwrap().resolve().unwrap();
    let clock = ManualClock::shared();
    let fake = FakeTransport::new(clock.clone());
    let connect = move |_: &crate::foundation::config::ResolvedProvider, _| {
        fake.clone() as std::sync::Arc<dyn Transport>
    };
    let (outbox, _events) = CircuitOutbox::new();
    Service::new(&resolved.services[0], 1, clock, outbox, &connect)
}

fn providers(list: &[(&str, u8, usize)]) -> String {
    list.iter()
        .enumerate()
        .map(|(i, (name, tier, max))| {
            format!(
                "[[services.s.providers]]\nname = \"{name}\"\nbase_url = \"http://10.0.0.{}\"\n\
                 tier = {tier}\npool = {{ max_connections = {max} }}\n",
                i + 1
            )
        })
        .collect()
}

fn want<'a>(eligible: &'a IndexSet, tried: &'a IndexSet, attempts: u32) -> Want<'a> {
    Want {
        eligible,
        tried,
        attempts,
        urgent: false,
        deadline: Duration::MAX,
    }
}

#[test]
fn the_lowest_tier_with_a_free_seat_is_taken_then_busy_then_exhausted() {
    let s = service(&providers(&[("t2", 2, 1), ("t1", 1, 1)]));
    let all = s.eligible_for(&Request::get("s", "/x")).unwrap();
    let none = IndexSet::default();
    let Pick::Slot(first) = s.acquire(&want(&all, &none, 0)) else {
        panic!("a free seat")
    };
    assert_eq!(s.providers[first.index].name.as_ref(), "t1");
    // Tier 1's only seat is taken: its job waits for it rather than spill to tier 2.
    assert!(matches!(s.acquire(&want(&all, &none, 0)), Pick::Busy));
    let mut tried = IndexSet::default();
    tried.insert(first.index);
    let Pick::Slot(second) = s.acquire(&want(&all, &tried, 1)) else {
        panic!("failover to tier 2")
    };
    assert_eq!(s.providers[second.index].name.as_ref(), "t2");
    tried.insert(second.index);
    assert!(matches!(s.acquire(&want(&all, &tried, 2)), Pick::Exhausted));
    drop((first, second));
    assert_eq!(s.providers.iter().map(|p| p.in_flight()).sum::<usize>(), 0);
}

#[test]
fn an_open_circuit_or_a_rest_sends_traffic_elsewhere() {
    let s = service(&providers(&[("a", 1, 4), ("b", 1, 4)]));
    let all = s.eligible_for(&Request::get("s", "/x")).unwrap();
    let none = IndexSet::default();
    s.providers[0].breaker.force_open();
    for _ in 0..10 {
        let Pick::Slot(slot) = s.acquire(&want(&all, &none, 0)) else {
            panic!()
        };
        assert_eq!(slot.index, 1);
    }
    s.providers[0].breaker.force_close();
    s.providers[1].allowance.rest_until(
        s.clock.now() + Duration::from_secs(30),
        crate::upstream::allowance::RestReason::RetryAfter,
    );
    let Pick::Slot(slot) = s.acquire(&want(&all, &none, 0)) else {
        panic!()
    };
    assert_eq!(slot.index, 0, "b rests after a Retry-After");
}

#[test]
fn a_released_seat_goes_to_a_parked_job_only_in_its_preferred_tier() {
    let s = service(&providers(&[("t1", 1, 1), ("t2", 2, 1)]));
    let all = s.eligible_for(&Request::get("s", "/x")).unwrap();
    let none = IndexSet::default();
    // Tier 1 is a candidate for a fresh job: a tier-2 seat is not for it.
    assert!(s.acquire_on(&want(&all, &none, 0), 1).is_none());
    let slot = s.acquire_on(&want(&all, &none, 0), 0).unwrap().unwrap();
    assert_eq!(slot.index, 0);
    assert!(
        s.acquire_on(&want(&all, &none, 0), 0).is_none(),
        "no seat left"
    );
}

#[test]
fn endpoints_and_parameters_decide_who_can_serve() {
    let mut toml = providers(&[("a", 1, 1), ("b", 1, 1)]);
    toml = toml.replacen(
        "pool = { max_connections = 1 }\n",
        "pool = { max_connections = 1 }\nendpoints = { quote = \"/q/{symbol}\" }\n",
        1,
    );
    let s = service(&toml);
    let set = s
        .eligible_for(&Request::get("s", "quote").param("symbol", "X"))
        .unwrap();
    assert!(set.contains(0) && !set.contains(1));
    let e = s.eligible_for(&Request::get("s", "quote")).unwrap_err();
    assert!(e.to_string().contains("symbol"), "{e}");
    let e = s.eligible_for(&Request::get("s", "nope")).unwrap_err();
    assert!(matches!(e, Error::UnknownEndpoint { .. }), "{e}");
}

#[test]
fn cost_aware_waits_for_the_cheapest_seat_and_a_pricier_release_does_not_take_it() {
    let mut toml = providers(&[("cheap", 1, 1), ("pricey", 1, 1)]);
    toml = toml.replacen("tier = 1\n", "tier = 1\ncost_per_request = 1.0\n", 1);
    toml = toml.replacen(
        "name = \"pricey\"\nbase_url = \"http://10.0.0.2\"\ntier = 1\n",
        "name = \"pricey\"\nbase_url = \"http://10.0.0.2\"\ntier = 1\ncost_per_request = 5.0\n",
        1,
    );
    let s = service(&format!("[defaults]\nstrategy = \"cost_aware\"\n{toml}"));
    let all = s.eligible_for(&Request::get("s", "/x")).unwrap();
    let none = IndexSet::default();
    let Pick::Slot(first) = s.acquire(&want(&all, &none, 0)) else {
        panic!("a free seat")
    };
    assert_eq!(s.providers[first.index].name.as_ref(), "cheap");
    assert!(
        matches!(s.acquire(&want(&all, &none, 0)), Pick::Busy),
        "waits for the cheap seat rather than pay for the pricey one"
    );
    assert!(
        s.acquire_on(&want(&all, &none, 0), 1).is_none(),
        "not the pricey seat"
    );
    drop(first);
    assert!(matches!(
        s.acquire_on(&want(&all, &none, 0), 0),
        Some(Ok(_))
    ));
}

#[test]
fn latency_tails_are_kept_only_where_cost_aware_can_read_them() {
    let ended = |s: &Service| {
        let all = s.eligible_for(&Request::get("s", "/x")).unwrap();
        let none = IndexSet::default();
        let Pick::Slot(slot) = s.acquire(&want(&all, &none, 0)) else {
            panic!("a free seat")
        };
        let end = AttemptEnd {
            failure: None,
            status: Some(200),
            announced: Default::default(),
            elapsed: Duration::from_millis(40),
            now: Duration::from_secs(1),
        };
        s.record_attempt(slot.index, slot.permit, slot.grant, &end);
        s.providers[slot.index].tail.p99(Duration::from_secs(1))
    };
    let unpriced = service(&providers(&[("a", 1, 1)]));
    assert_eq!(ended(&unpriced), None, "no price: cost_aware can never run");
    let priced = service(&format!(
        "{}cost_per_request = 0.01\n",
        providers(&[("a", 1, 1)])
    ));
    assert_eq!(ended(&priced), Some((Duration::from_millis(50), 1)));
}
