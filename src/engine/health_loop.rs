//! Active health checks, and probes of open circuits: a thread per balancer GETs each
//! provider's `health_path` every `interval_ms`, on its own connection so checks never
//! take a slot from real traffic; and once a circuit's open time is over it probes the
//! provider itself (its health path, else the last GET that failed there), so recovery
//! needs no caller to risk a request. A probe slower than `slow_call_ms` counts as failed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use crate::engine::runtime::Core;
use crate::foundation::request::Method;
use crate::policy::breaker::CircuitState;
use crate::upstream::provider::Provider;

/// How often open circuits are looked at, at the most.
const PROBE_TICK: Duration = Duration::from_millis(100);

/// The checker thread: checks whatever is due, then sleeps until the next one is due or
/// `stop` disconnects.
pub(crate) fn probe_providers(core: Arc<Core>, stop: Receiver<()>) {
    let mut rounds = Rounds::starting_now(&core);
    while let Some(next) = rounds.check_due(&core) {
        select! {
            recv(stop) -> _ => return,
            default(next.saturating_sub(core.clock.now())) => {}
        }
    }
}

/// When each checked provider is next due: (service, provider, clock time).
struct Rounds(Vec<(usize, usize, Duration)>);

impl Rounds {
    /// Every provider with a health path is due at once, then every interval.
    fn starting_now(core: &Core) -> Rounds {
        let now = core.clock.now();
        Rounds(
            core.services()
                .iter()
                .enumerate()
                .flat_map(|(s, svc)| {
                    svc.providers
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| p.health_url.is_some())
                        .map(move |(p, _)| (s, p, now))
                })
                .collect(),
        )
    }

    /// Checks every provider that is due and probes every circuit whose open time is
    /// over; returns when to look again, or `None` when the balancer is stopping.
    fn check_due(&mut self, core: &Core) -> Option<Duration> {
        probe_open_circuits(core);
        core.save_state_if_due();
        let now = core.clock.now();
        for (s, p, at) in self.0.iter_mut() {
            if core.stopping.load(Ordering::Acquire) {
                return None;
            }
            if *at > now {
                continue;
            }
            let service = &core.services()[*s];
            let provider = &service.providers[*p];
            // A check is a call like any other: it spends rate and quota and costs. Out
            // of either, it waits for the next round.
            if let Some(ok) = charged(provider, now, || {
                probe(
                    provider,
                    Duration::from_millis(service.health_check.timeout_ms),
                )
            }) {
                provider.health.record(ok, service.health_check.retries);
            }
            *at = core.clock.now() + Duration::from_millis(service.health_check.interval_ms);
        }
        let next_check = self.0.iter().map(|(_, _, at)| *at).min();
        let next_probe = core.clock.now() + PROBE_TICK;
        Some(next_check.map_or(next_probe, |at| at.min(next_probe)))
    }
}

/// One probe of each provider whose circuit would let one through now and no caller is
/// trying: a health check when it has a health path, else the last GET that failed there.
/// Probes count in the breaker only, not in the provider's traffic.
fn probe_open_circuits(core: &Core) {
    for service in core.services() {
        let timeout = Duration::from_millis(service.health_check.timeout_ms);
        for (i, p) in service.providers.iter().enumerate() {
            if p.breaker.state() == CircuitState::Closed || !p.breaker.is_available() {
                continue;
            }
            let replay = p.last_failed_get.lock().clone();
            if p.health_url.is_none() && replay.is_none() {
                continue;
            }
            let started = core.clock.now();
            if p.allowance.check(started, false).is_err() {
                continue;
            }
            let (permit, transition) = p.breaker.try_acquire();
            service.notify(i, transition);
            let Some(permit) = permit else { continue };
            let sent = charged(p, started, || match (&p.health_url, replay) {
                (Some(url), _) => p.transport.check_health(url, &p.headers, timeout),
                (None, Some((url, headers))) => p
                    .transport
                    .send(&p.outgoing(Method::Get, &url, &headers, None, timeout))
                    .is_ok(),
                (None, None) => false,
            });
            let Some(ok) = sent else { continue };
            let elapsed = core.clock.now().saturating_sub(started);
            service.notify(i, p.breaker.record(permit, !ok, elapsed));
        }
    }
}

/// Runs `call` if the provider's rate and quota allow one more now, and charges it;
/// `None` when they do not (nothing is sent).
fn charged<T>(p: &Provider, now: Duration, call: impl FnOnce() -> T) -> Option<T> {
    let grant = p.allowance.take(now, false).ok()?;
    let result = call();
    grant.commit();
    p.charge(now);
    Some(result)
}

fn probe(provider: &Provider, timeout: Duration) -> bool {
    let Some(url) = &provider.health_url else {
        return true;
    };
    provider
        .transport
        .check_health(url, &provider.headers, timeout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_rig::Rig;
    use crate::foundation::error::AttemptKind;
    use crate::foundation::request::Request;
    use crate::upstream::fake_transport::Reply;

    #[test]
    fn failed_checks_mark_a_provider_down_and_one_pass_brings_it_back() {
        let mut config = Rig::config(
            &["a", "b"],
            "health_check = { interval_ms = 1000, retries = 2 }",
        );
        config.push_str("health_path = \"/health\"\n");
        let rig = Rig::new(&config);
        let mut rounds = Rounds::starting_now(&rig.core);
        assert_eq!(rounds.0.len(), 1, "only `b` has a health path");
        rig.fake("b").set_healthy(false);
        let health = &rig.core.services()[0].providers[1].health;
        assert_eq!(
            rounds.check_due(&rig.core),
            Some(PROBE_TICK),
            "open circuits are looked at soon"
        );
        assert!(!health.is_down(), "one failure of two allowed");
        rounds.check_due(&rig.core);
        assert_eq!(health.checks(), 1, "not due again yet");
        rig.clock.advance(Duration::from_secs(1));
        rounds.check_due(&rig.core);
        assert!(health.is_down());
        rig.fake("b").set_healthy(true);
        rig.clock.advance(Duration::from_secs(1));
        rounds.check_due(&rig.core);
        assert!(!health.is_down());
        assert_eq!(health.uptime(), Some(1.0 / 3.0));
    }

    fn open_then_due(rig: &Rig) {
        rig.fake("a").push(Reply::Fail(AttemptKind::Connect));
        assert!(rig.core.drive_call(Request::get("s", "/quote")).is_err());
        assert_eq!(rig.core.circuit("a").unwrap().state, CircuitState::Open);
        rig.clock.advance(Duration::from_millis(1_000));
    }

    #[test]
    fn an_open_circuit_is_probed_with_the_last_failed_get_and_closes_without_callers() {
        let rig = Rig::new(&Rig::config(
            &["a"],
            "retry = { max_attempts = 1 }\ncircuit_breaker = { failure_threshold = 1, \
             success_threshold = 1, open_ms = 1000 }",
        ));
        let mut rounds = Rounds::starting_now(&rig.core);
        rounds.check_due(&rig.core);
        assert!(
            rig.fake("a").sent().is_empty(),
            "nothing to probe while closed"
        );
        open_then_due(&rig);
        rounds.check_due(&rig.core);
        assert_eq!(
            rig.fake("a").sent(),
            ["http://10.0.0.1:80/quote", "http://10.0.0.1:80/quote"]
        );
        assert_eq!(rig.core.circuit("a").unwrap().state, CircuitState::Closed);
        let s = &rig.core.snapshot().services["s"];
        assert_eq!(
            s.providers["a"].requests, 1,
            "a probe is not a caller's attempt"
        );
    }

    #[test]
    fn a_probe_slower_than_slow_call_ms_reopens_the_circuit() {
        let rig = Rig::new(&Rig::config(
            &["a"],
            "retry = { max_attempts = 1 }\ncircuit_breaker = { failure_threshold = 1, \
             success_threshold = 1, open_ms = 1000, slow_call_ms = 500 }",
        ));
        let mut rounds = Rounds::starting_now(&rig.core);
        open_then_due(&rig);
        rig.fake("a").push(Reply::Slow(Duration::from_millis(800)));
        rounds.check_due(&rig.core);
        assert_eq!(rig.core.circuit("a").unwrap().state, CircuitState::Open);
        // Not due again until the (longer) open time is over.
        rounds.check_due(&rig.core);
        assert_eq!(rig.fake("a").sent().len(), 2);
    }
}
