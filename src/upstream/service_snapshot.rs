//! A service's and its providers' counters at one moment, as [`ServiceSnapshot`].

use std::sync::atomic::Ordering;

use crate::foundation::request::Priority;
use crate::policy::strategy::Candidate;
use crate::telemetry::counters::KINDS;
use crate::telemetry::snapshot::{
    Buckets, CircuitSnapshot, HealthSnapshot, ProviderSnapshot, ServiceSnapshot,
};
use crate::upstream::provider::Provider;
use crate::upstream::service::Service;

impl Service {
    /// Every counter of the service and its providers.
    pub fn snapshot(&self) -> ServiceSnapshot {
        let st = &self.stats;
        let now = self.clock.now();
        let providers = self
            .providers
            .iter()
            .map(|p| (p.name.to_string(), provider_snapshot(p, now)))
            .collect();
        let depth = self.admission.depth_by_priority();
        let routes: Vec<(String, String, u64)> = st
            .routes()
            .into_iter()
            .map(|((from, to), n)| {
                let name = |i: usize| self.providers[i].name.to_string();
                (name(from), name(to), n)
            })
            .collect();
        let attempts: u64 = self.providers.iter().map(|p| p.stats.attempts()).sum();
        let first_attempts = st.requests.load(Ordering::Relaxed);
        ServiceSnapshot {
            requests: first_attempts,
            successes: st.successes(),
            failures: st.failures(),
            rejected: st.rejected(),
            queue_depth: self.admission.depth(),
            queue_depth_by_priority: Priority::ALL
                .iter()
                .map(|p| (p.name(), depth[p.index()]))
                .collect(),
            failovers: st.failovers.load(Ordering::Relaxed),
            failovers_by_route: routes
                .iter()
                .map(|(from, to, n)| (format!("{from}->{to}"), *n))
                .collect(),
            routes,
            retries: attempts.saturating_sub(first_attempts.min(attempts)),
            cost_total: self
                .providers
                .iter()
                .map(|p| p.cost_per_request * p.stats.attempts() as f64)
                .sum(),
            strategy: self.picker.kind().name(),
            throughput: st.recent.throughput(now),
            latency_ms: st.latency.summary(),
            latency_buckets: Buckets::of(&st.latency),
            queue_wait_ms: st.queue_wait.summary(),
            queue_wait_ms_by_priority: Priority::ALL
                .iter()
                .map(|p| (p.name(), st.queue_wait_by_priority[p.index()].summary()))
                .collect(),
            providers,
        }
    }
}

fn provider_snapshot(p: &Provider, now: std::time::Duration) -> ProviderSnapshot {
    let ps = &p.stats;
    let info = p.breaker.info();
    ProviderSnapshot {
        requests: ps.attempts(),
        successes: ps.successes(),
        failures: ps.failures.load(Ordering::Relaxed),
        failures_by_kind: KINDS
            .iter()
            .zip(&ps.failures_by_kind)
            .map(|(k, n)| (k.name(), n.load(Ordering::Relaxed)))
            .collect(),
        in_flight: p.in_flight(),
        max_connections: p.pool.max_connections,
        tier: p.tier,
        weight: p.weight,
        latency_ms: ps.latency.summary(),
        latency_buckets: Buckets::of(&ps.latency),
        throughput: ps.recent.throughput(now),
        utilisation: ps.recent.utilisation(now, p.pool.max_connections),
        cost_total: p.cost_per_request * ps.attempts() as f64,
        circuit: CircuitSnapshot {
            state: info.state.name(),
            forced: info.forced,
            next_attempt_in_ms: info.next_attempt.map(|at| {
                at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .as_millis() as u64
            }),
            opened: info.opened,
            half_opened: info.half_opened,
            closed: info.closed,
        },
        health: HealthSnapshot {
            down: p.health.is_down(),
            uptime: p.uptime(),
            checks: p.health.checks(),
        },
        resting_ms: p
            .rest_until
            .get()
            .map(|until| until.saturating_sub(now).as_millis() as u64)
            .unwrap_or(0),
    }
}
