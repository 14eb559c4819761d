//! Active health checks: a thread per balancer GETs each provider's `health_path` every
//! `interval_ms`, on its own connection so checks never take a slot from real traffic.
//! `retries` failed checks in a row mark a provider down; one success marks it up.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::balancer::Core;
use crate::upstream::provider::Provider;

#[derive(Debug, Default)]
pub(crate) struct HealthState {
    down: AtomicBool,
    failures_in_a_row: AtomicU32,
    checks: AtomicU64,
    passed: AtomicU64,
}

impl HealthState {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Records a check; returns the new state when it changed (true = down).
    pub fn record(&self, ok: bool, retries: u32) -> Option<bool> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.passed.fetch_add(1, Ordering::Relaxed);
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            return self.down.swap(false, Ordering::AcqRel).then_some(false);
        }
        let run = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if run >= retries.max(1) && !self.down.swap(true, Ordering::AcqRel) {
            return Some(true);
        }
        None
    }

    /// Share of checks passed; `None` before the first check.
    pub fn uptime(&self) -> Option<f64> {
        let checks = self.checks.load(Ordering::Relaxed);
        (checks > 0).then(|| self.passed.load(Ordering::Relaxed) as f64 / checks as f64)
    }

    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }
}

/// Whether any provider has a health path (else no checker thread is started).
pub(crate) fn wanted(core: &Core) -> bool {
    core.services
        .iter()
        .flat_map(|s| &s.providers)
        .any(|p| p.health_url.is_some())
}

/// The checker thread: checks whatever is due, then sleeps until the next one is due or
/// `stop` disconnects.
pub(crate) fn run(core: Arc<Core>, stop: Receiver<()>) {
    let now = Instant::now();
    // Every provider is checked once right away, then every interval.
    let mut due: Vec<(usize, usize, Instant)> = core
        .services
        .iter()
        .enumerate()
        .flat_map(|(s, svc)| {
            svc.providers
                .iter()
                .enumerate()
                .filter(|(_, p)| p.health_url.is_some())
                .map(move |(p, _)| (s, p, now))
        })
        .collect();
    loop {
        let now = Instant::now();
        for (s, p, at) in due.iter_mut() {
            if *at <= now {
                let service = &core.services[*s];
                let provider = &service.providers[*p];
                let ok = check(
                    provider,
                    Duration::from_millis(service.health_check.timeout_ms),
                );
                provider.health.record(ok, service.health_check.retries);
                *at = Instant::now() + Duration::from_millis(service.health_check.interval_ms);
            }
            if core.stopping.load(Ordering::Acquire) {
                return;
            }
        }
        let Some(next) = due.iter().map(|(_, _, at)| *at).min() else {
            return;
        };
        select! {
            recv(stop) -> _ => return,
            default(next.saturating_duration_since(Instant::now())) => {}
        }
    }
}

fn check(provider: &Provider, timeout: Duration) -> bool {
    let Some(url) = &provider.health_url else {
        return true;
    };
    let mut req = provider.health_agent.get(url.as_str());
    for (name, value) in &provider.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    match req.config().timeout_global(Some(timeout)).build().call() {
        Ok(mut resp) => {
            let ok = resp.status().is_success();
            let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
            ok
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_retries_failures_in_a_row_up_after_one_success() {
        let h = HealthState::default();
        assert_eq!(h.record(false, 2), None);
        assert_eq!(h.record(false, 2), Some(true));
        assert!(h.is_down());
        assert_eq!(h.record(false, 2), None);
        assert_eq!(h.record(true, 2), Some(false));
        assert!(!h.is_down());
        assert_eq!(h.uptime(), Some(0.25));
    }
}
