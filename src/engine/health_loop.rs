//! Active health checks: a thread per balancer GETs each provider's `health_path` every
//! `interval_ms`, on its own connection so checks never take a slot from real traffic.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use crate::engine::runtime::Core;
use crate::upstream::provider::Provider;

/// Whether any provider has a health path (else no checker thread is started).
pub(crate) fn wanted(core: &Core) -> bool {
    core.services()
        .iter()
        .flat_map(|s| &s.providers)
        .any(|p| p.health_url.is_some())
}

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

    /// Checks every provider that is due; returns when the next one is, or `None` when
    /// there is nothing to check or the balancer is stopping.
    fn check_due(&mut self, core: &Core) -> Option<Duration> {
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
            let ok = probe(
                provider,
                Duration::from_millis(service.health_check.timeout_ms),
            );
            provider.health.record(ok, service.health_check.retries);
            *at = core.clock.now() + Duration::from_millis(service.health_check.interval_ms);
        }
        self.0.iter().map(|(_, _, at)| *at).min()
    }
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

    #[test]
    fn failed_checks_mark_a_provider_down_and_one_pass_brings_it_back() {
        let mut config = Rig::config(
            &["a", "b"],
            "health_check = { interval_ms = 1000, retries = 2 }",
        );
        config.push_str("health_path = \"/health\"\n");
        let rig = Rig::new(&config);
        assert!(wanted(&rig.core));
        let mut rounds = Rounds::starting_now(&rig.core);
        assert_eq!(rounds.0.len(), 1, "only `b` has a health path");
        rig.fake("b").set_healthy(false);
        let health = &rig.core.services()[0].providers[1].health;
        assert_eq!(rounds.check_due(&rig.core), Some(Duration::from_secs(1)));
        assert!(!health.is_down(), "one failure of two allowed");
        assert_eq!(
            rounds.check_due(&rig.core),
            Some(Duration::from_secs(1)),
            "not due yet"
        );
        assert_eq!(health.checks(), 1);
        rig.clock.advance(Duration::from_secs(1));
        rounds.check_due(&rig.core);
        assert!(health.is_down());
        rig.fake("b").set_healthy(true);
        rig.clock.advance(Duration::from_secs(1));
        assert_eq!(rounds.check_due(&rig.core), Some(Duration::from_secs(3)));
        assert!(!health.is_down());
        assert_eq!(health.uptime(), Some(1.0 / 3.0));
    }
}
