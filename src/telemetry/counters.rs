//! Counters recorded on the hot path and the [`Snapshot`] built from them. Totals and
//! histograms are atomics; the recent windows take one short lock per call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::balancer::Core;
use crate::foundation::error::AttemptKind;
use crate::telemetry::histogram::{Histogram, LatencySummary};
use crate::foundation::request::Priority;
use crate::policy::window::{RecentWindow, Throughput};

use parking_lot::Mutex;

const KINDS: [AttemptKind; 6] = [
    AttemptKind::Connect,
    AttemptKind::Timeout,
    AttemptKind::Status,
    AttemptKind::Reset,
    AttemptKind::Protocol,
    AttemptKind::TooLarge,
];

/// Attempts sent to one provider.
#[derive(Default)]
pub(crate) struct ProviderStats {
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    failures_by_kind: [AtomicU64; 6],
    latency: Histogram,
    pub recent: RecentWindow,
}

impl ProviderStats {
    /// An attempt that got an answer, ending at clock time `now`.
    pub fn record_success(&self, elapsed: Duration, now: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
        self.recent.record(now, elapsed, true);
    }

    pub fn attempts(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    pub fn failures_by_kind(&self) -> impl Iterator<Item = (AttemptKind, u64)> + '_ {
        KINDS
            .iter()
            .zip(&self.failures_by_kind)
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
    }

    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// A failed attempt, ending at clock time `now`.
    pub fn record_failure(&self, kind: AttemptKind, elapsed: Duration, now: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let i = KINDS.iter().position(|k| *k == kind).unwrap_or(0);
        self.failures_by_kind[i].fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
        self.recent.record(now, elapsed, false);
    }
}

/// Callers' requests to one service.
#[derive(Default)]
pub(crate) struct ServiceStats {
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
    failovers: AtomicU64,
    latency: Histogram,
    queue_wait: Histogram,
    queue_wait_by_priority: [Histogram; 4],
    /// Failovers by (from, to) provider index; written only when a request fails over.
    routes: Mutex<BTreeMap<(usize, usize), u64>>,
    pub recent: RecentWindow,
}

impl ServiceStats {
    pub fn record_admitted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub fn latency(&self) -> &Histogram {
        &self.latency
    }

    /// Failovers by (from, to) provider index.
    pub fn routes(&self) -> Vec<((usize, usize), u64)> {
        self.routes.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// An attempt sent to provider `to` after one to `from` failed.
    pub fn record_failover(&self, from: usize, to: usize) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
        *self.routes.lock().entry((from, to)).or_default() += 1;
    }

    /// A caller's request ended at clock time `now`.
    pub fn record_outcome(
        &self,
        ok: bool,
        latency: Duration,
        queue_wait: Duration,
        priority: Priority,
        now: Duration,
    ) {
        if ok {
            self.successes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(latency);
        self.queue_wait.record(queue_wait);
        self.queue_wait_by_priority[priority.index()].record(queue_wait);
        self.recent.record(now, latency, ok);
    }
}

/// Every counter at one moment; serialises to the documented JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Seconds since the balancer started.
    pub uptime_secs: f64,
    /// Per service, by name.
    pub services: BTreeMap<String, ServiceSnapshot>,
}

/// One service's counters. Counts are of callers' requests.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSnapshot {
    /// Requests admitted.
    pub requests: u64,
    /// Requests answered with a response.
    pub successes: u64,
    /// Requests that ended with an error after admission.
    pub failures: u64,
    /// Requests refused at admission because the queue was full.
    pub rejected: u64,
    /// Requests waiting for a worker or a connection slot now.
    pub queue_depth: usize,
    /// The same, per priority.
    pub queue_depth_by_priority: BTreeMap<&'static str, usize>,
    /// Attempts that went to another provider after a failure.
    pub failovers: u64,
    /// The same by route: `"from->to"` -> count.
    pub failovers_by_route: BTreeMap<String, u64>,
    /// Attempts beyond each request's first (failovers and same-provider retries).
    pub retries: u64,
    /// `cost_per_request` x attempts, summed over the providers.
    pub cost_total: f64,
    /// The strategy in use.
    pub strategy: &'static str,
    /// Callers' requests ended per second.
    pub throughput: Throughput,
    /// Whole-request latency (queue wait, attempts, backoff), in ms.
    pub latency_ms: LatencySummary,
    /// Time spent waiting for a worker or a slot, in ms.
    pub queue_wait_ms: LatencySummary,
    /// The same per priority.
    pub queue_wait_ms_by_priority: BTreeMap<&'static str, LatencySummary>,
    /// Per provider, by name.
    pub providers: BTreeMap<String, ProviderSnapshot>,
}

/// One provider's counters. Counts are of attempts sent to it.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderSnapshot {
    /// Attempts sent (a refused connection counts).
    pub requests: u64,
    /// Attempts that got an answer.
    pub successes: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Failed attempts by kind: connect, timeout, status, reset, protocol, too_large.
    pub failures_by_kind: BTreeMap<&'static str, u64>,
    /// Attempts on the wire now.
    pub in_flight: usize,
    /// The provider's connection cap.
    pub max_connections: usize,
    /// 1, 2 or 3.
    pub tier: u8,
    /// Share of traffic.
    pub weight: u32,
    /// Attempt latency, in ms.
    pub latency_ms: LatencySummary,
    /// Attempts ended per second.
    pub throughput: Throughput,
    /// Mean share of the connection slots in use over the last 10 s.
    pub utilisation: f64,
    /// `cost_per_request` x attempts.
    pub cost_total: f64,
    /// The circuit breaker.
    pub circuit: CircuitSnapshot,
    /// Active health checks.
    pub health: HealthSnapshot,
    /// ms left of a `Retry-After` rest; 0 when not resting.
    pub resting_ms: u64,
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Serialize)]
pub struct CircuitSnapshot {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Whether an operator forced the state.
    pub forced: bool,
    /// While open: ms until probes are let through.
    pub next_attempt_in_ms: Option<u64>,
    /// Times the circuit opened.
    pub opened: u64,
    /// Times it went half-open.
    pub half_opened: u64,
    /// Times it closed again.
    pub closed: u64,
}

/// Active health checks of a provider.
#[derive(Debug, Clone, Serialize)]
pub struct HealthSnapshot {
    /// Marked down by its checks now.
    pub down: bool,
    /// Share of checks passed; `null` before the first check or without a health path.
    pub uptime: Option<f64>,
    /// Checks made.
    pub checks: u64,
}

pub(crate) fn snapshot(core: &Core) -> Snapshot {
    let services = core
        .services
        .iter()
        .map(|s| {
            let st = &s.stats;
            let providers = s
                .providers
                .iter()
                .map(|p| {
                    let ps = &p.stats;
                    let now = s.clock.now();
                    let snap = ProviderSnapshot {
                        requests: ps.requests.load(Ordering::Relaxed),
                        successes: ps.successes.load(Ordering::Relaxed),
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
                        throughput: ps.recent.throughput(now),
                        utilisation: ps.recent.utilisation(now, p.pool.max_connections),
                        cost_total: p.cost_per_request * ps.requests.load(Ordering::Relaxed) as f64,
                        circuit: circuit(p),
                        health: HealthSnapshot {
                            down: p.health.is_down(),
                            uptime: p.health.uptime(),
                            checks: p.health.checks(),
                        },
                        resting_ms: p
                            .rest_until
                            .get()
                            .map(|until| until.saturating_sub(s.clock.now()).as_millis() as u64)
                            .unwrap_or(0),
                    };
                    (p.name.to_string(), snap)
                })
                .collect();
            let depth = s.queue.depth_by_priority();
            let now = s.clock.now();
            let routes = st
                .routes
                .lock()
                .iter()
                .map(|(&(from, to), &n)| {
                    (
                        format!("{}->{}", s.providers[from].name, s.providers[to].name),
                        n,
                    )
                })
                .collect();
            let attempts: u64 = s
                .providers
                .iter()
                .map(|p| p.stats.requests.load(Ordering::Relaxed))
                .sum();
            let first_attempts = st.requests.load(Ordering::Relaxed);
            let snap = ServiceSnapshot {
                requests: st.requests.load(Ordering::Relaxed),
                successes: st.successes.load(Ordering::Relaxed),
                failures: st.failures.load(Ordering::Relaxed),
                rejected: st.rejected.load(Ordering::Relaxed),
                queue_depth: s.queue.depth(),
                queue_depth_by_priority: crate::foundation::request::Priority::ALL
                    .iter()
                    .map(|p| (p.name(), depth[p.index()]))
                    .collect(),
                failovers: st.failovers.load(Ordering::Relaxed),
                failovers_by_route: routes,
                retries: attempts.saturating_sub(first_attempts.min(attempts)),
                cost_total: s
                    .providers
                    .iter()
                    .map(|p| p.cost_per_request * p.stats.requests.load(Ordering::Relaxed) as f64)
                    .sum(),
                strategy: s.picker.kind().name(),
                throughput: st.recent.throughput(now),
                latency_ms: st.latency.summary(),
                queue_wait_ms: st.queue_wait.summary(),
                queue_wait_ms_by_priority: crate::foundation::request::Priority::ALL
                    .iter()
                    .map(|p| (p.name(), st.queue_wait_by_priority[p.index()].summary()))
                    .collect(),
                providers,
            };
            (s.name.clone(), snap)
        })
        .collect();
    Snapshot {
        uptime_secs: core.started.elapsed().as_secs_f64(),
        services,
    }
}

fn circuit(p: &crate::upstream::provider::Provider) -> CircuitSnapshot {
    let info = p.breaker.info();
    CircuitSnapshot {
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
    }
}
