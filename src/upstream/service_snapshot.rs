//! A service's and its providers' counters at one moment, as [`ServiceSnapshot`].

use std::sync::atomic::Ordering;

use crate::foundation::request::Priority;
use crate::policy::candidate::Candidate;
use crate::telemetry::cost::Charged;
use crate::telemetry::counters::KINDS;
use crate::telemetry::snapshot::{
    Buckets, CircuitSnapshot, HealthSnapshot, ProviderSnapshot, QuotaWindow, RateWindow,
    ServiceSnapshot,
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
        let costs: Vec<(f64, Charged)> = self
            .providers
            .iter()
            .map(|p| (p.cost_per_request, p.charged.charged(p.allowance.unix(now))))
            .collect();
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
            coalesced: st.coalesced.load(Ordering::Relaxed),
            cache_hits: st.cache_hits.load(Ordering::Relaxed),
            cache_misses: st.cache_misses.load(Ordering::Relaxed),
            batched: st.batched.load(Ordering::Relaxed),
            batch_calls: st.batch_calls.load(Ordering::Relaxed),
            hedges: st.hedges.load(Ordering::Relaxed),
            hedge_wins: st.hedge_wins.load(Ordering::Relaxed),
            cost_total: costs.iter().map(|c| c.0 * c.1.total as f64).sum(),
            cost_last_24h: costs.iter().map(|c| c.0 * c.1.last_24h as f64).sum(),
            cost_today: costs.iter().map(|c| c.0 * c.1.today as f64).sum(),
            cost_this_month: costs.iter().map(|c| c.0 * c.1.this_month as f64).sum(),
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
    let charged = p.charged.charged(p.allowance.unix(now));
    let price = p.cost_per_request;
    let allowance = p.allowance.view(now);
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
        cost_total: price * charged.total as f64,
        cost_last_24h: price * charged.last_24h as f64,
        cost_today: price * charged.today as f64,
        cost_this_month: price * charged.this_month as f64,
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
        resting_ms: allowance
            .resting
            .map(|(_, until)| until.saturating_sub(now).as_millis() as u64)
            .unwrap_or(0),
        resting_reason: allowance.resting.map(|(reason, _)| reason.name()),
        rate: allowance
            .rate
            .iter()
            .map(|w| {
                let window = RateWindow {
                    limit: w.limit,
                    remaining: w.remaining,
                };
                (w.name, window)
            })
            .collect(),
        quota: allowance
            .quota
            .iter()
            .map(|q| {
                let window = QuotaWindow {
                    limit: q.limit,
                    used: q.used,
                    resets_in_ms: q.resets_at.saturating_sub(now).as_millis() as u64,
                };
                (q.period.name(), window)
            })
            .collect(),
        announced_remaining: allowance.announced_left,
        quota_rejections: allowance.quota_rejections,
        rate_limited: allowance.rate_limited,
    }
}
