//! Active health checks: a thread per balancer GETs each provider's `health_path` every
//! `interval_ms`, on its own connection so checks never take a slot from real traffic.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let now = Instant::now();
    // Every provider is checked once right away, then every interval.
    let mut due: Vec<(usize, usize, Instant)> = core
        .services()
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
                let service = &core.services()[*s];
                let provider = &service.providers[*p];
                let ok = probe(
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

fn probe(provider: &Provider, timeout: Duration) -> bool {
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
