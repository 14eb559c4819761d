//! Every counter at one moment: the [`Snapshot`] that `metrics()`, `/status.json` and the
//! Prometheus exposition all read.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::policy::window::Throughput;
use crate::telemetry::histogram::{Histogram, LatencySummary};

/// Bucket bounds of exported latency histograms, in seconds.
pub(crate) const EXPORT_BOUNDS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram as exporters see it: cumulative counts at [`EXPORT_BOUNDS`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Buckets {
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
}

impl Buckets {
    pub fn of(h: &Histogram) -> Buckets {
        let bounds_us: Vec<u64> = EXPORT_BOUNDS.iter().map(|s| (s * 1e6) as u64).collect();
        Buckets {
            cumulative: h.cumulative(&bounds_us),
            count: h.count(),
            sum_us: h.sum_us(),
        }
    }
}

/// Every counter at one moment; serialises to the documented JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Seconds since the balancer started.
    pub uptime_secs: f64,
    /// Per service, by name.
    pub services: BTreeMap<String, ServiceSnapshot>,
    /// `on_event` delivery.
    pub events: EventsSnapshot,
    /// Fleet mode's link to Redis; `None` without `[fleet]`.
    pub fleet: Option<FleetSnapshot>,
}

/// Whether quotas are shared with the fleet now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FleetSnapshot {
    /// Redis answers: quotas are the fleet's.
    pub connected: bool,
    /// Unix milliseconds since which Redis has been away (each process counting alone,
    /// within its share); `None` while connected.
    pub degraded_since_ms: Option<u64>,
}

/// What `on_event` subscribers got and lost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsSnapshot {
    /// Events delivered to the subscribers.
    pub delivered: u64,
    /// Events dropped because the subscribers were behind (the buffer was full), or
    /// still waiting at shutdown.
    pub dropped: u64,
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
    /// The same as (from, to, count), for exporters that label each end.
    #[serde(skip)]
    pub(crate) routes: Vec<(String, String, u64)>,
    /// Attempts beyond each request's first (failovers and same-provider retries).
    pub retries: u64,
    /// Requests answered by sharing an identical call in flight (no upstream call of
    /// their own).
    pub coalesced: u64,
    /// Requests answered from an endpoint's cache (`cache_ttl_ms`).
    pub cache_hits: u64,
    /// Requests to a caching endpoint that found nothing kept and went upstream.
    pub cache_misses: u64,
    /// Requests that went out inside a batch call of two or more (`batch_window_ms`).
    pub batched: u64,
    /// Batch calls made (each one upstream call for its requests).
    pub batch_calls: u64,
    /// Hedges sent (`hedge_after_ms`): second attempts of requests slow to answer.
    pub hedges: u64,
    /// Hedges whose answer was the one the caller got.
    pub hedge_wins: u64,
    /// `cost_per_request` x calls charged (attempts, probes, health checks), summed over
    /// the providers.
    pub cost_total: f64,
    /// The same over the last 24 hours.
    pub cost_last_24h: f64,
    /// The same since 00:00 UTC.
    pub cost_today: f64,
    /// The same since the 1st of the month, 00:00 UTC.
    pub cost_this_month: f64,
    /// The strategy in use.
    pub strategy: &'static str,
    /// Callers' requests ended per second.
    pub throughput: Throughput,
    /// Whole-request latency (queue wait, attempts, backoff), in ms.
    pub latency_ms: LatencySummary,
    /// The same as export buckets.
    #[serde(skip)]
    pub(crate) latency_buckets: Buckets,
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
    /// The same as export buckets.
    #[serde(skip)]
    pub(crate) latency_buckets: Buckets,
    /// Attempts ended per second.
    pub throughput: Throughput,
    /// Mean share of the connection slots in use over the last 10 s.
    pub utilisation: f64,
    /// `cost_per_request` x calls charged (attempts, probes, health checks).
    pub cost_total: f64,
    /// The same over the last 24 hours.
    pub cost_last_24h: f64,
    /// The same since 00:00 UTC.
    pub cost_today: f64,
    /// The same since the 1st of the month, 00:00 UTC.
    pub cost_this_month: f64,
    /// The circuit breaker.
    pub circuit: CircuitSnapshot,
    /// Active health checks.
    pub health: HealthSnapshot,
    /// ms left of a rest; 0 when not resting.
    pub resting_ms: u64,
    /// Why it rests: `retry_after`, `rate_headers`, `quota`; `null` when it does not.
    pub resting_reason: Option<&'static str>,
    /// Its configured rate limits by window (`per_second`, ...): limit and calls left in
    /// the window that ends now.
    pub rate: BTreeMap<&'static str, RateWindow>,
    /// Its calendar quotas by window (`per_day`, `per_month`).
    pub quota: BTreeMap<&'static str, QuotaWindow>,
    /// What its rate-limit headers last said is left (less calls sent since); `null`
    /// when they say nothing.
    pub announced_remaining: Option<u64>,
    /// Times a request was turned away from it for its quota (configured or answered).
    pub quota_rejections: u64,
    /// Times a request was held back or sent elsewhere for its rate (configured or
    /// announced).
    pub rate_limited: u64,
}

/// One rate-limit window.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RateWindow {
    /// Calls allowed per window.
    pub limit: u64,
    /// Calls left in the window that ends now.
    pub remaining: u64,
}

/// One calendar quota.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct QuotaWindow {
    /// Calls allowed per day or month.
    pub limit: u64,
    /// Calls counted so far in this day or month.
    pub used: u64,
    /// ms until the count starts again.
    pub resets_in_ms: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn export_buckets_are_cumulative_at_the_bounds() {
        let h = Histogram::default();
        for ms in [0.2, 0.7, 3.0, 3.0, 2_000.0] {
            h.record(Duration::from_secs_f64(ms / 1000.0));
        }
        let b = Buckets::of(&h);
        assert_eq!(b.count, 5);
        assert_eq!(b.cumulative.len(), EXPORT_BOUNDS.len());
        // 0.5 ms, 1 ms, 2.5 ms, 5 ms ... 2.5 s.
        assert_eq!(&b.cumulative[..4], &[1, 2, 2, 4]);
        assert_eq!(
            b.cumulative[EXPORT_BOUNDS.len() - 3],
            5,
            "2.5 s holds all five"
        );
        assert!(b.cumulative.windows(2).all(|w| w[0] <= w[1]));
    }
}
