//! What a strategy may know of a provider, as a trait, so strategies do not depend on
//! the provider type (which lives a layer up).

use std::time::Duration;

use crate::policy::latency::LatencyEwma;

/// What a strategy may know of a provider: its load and its record, not its internals.
pub(crate) trait Candidate {
    /// Configured share of traffic.
    fn weight(&self) -> u32;
    /// Attempts on the wire now.
    fn in_flight(&self) -> usize;
    /// Latency of recent successful attempts.
    fn latency(&self) -> &LatencyEwma;
    /// Calls and failures in the breaker's window.
    fn window_totals(&self) -> (u64, u64);
    /// Share of active health checks passed; `None` before the first.
    fn uptime(&self) -> Option<f64>;
    /// `cost_per_request`.
    fn cost(&self) -> f64;
    /// The 99th percentile latency over the breaker's window and the attempts it saw.
    fn tail(&self, now: Duration) -> Option<(Duration, u64)>;
}
