//! Counters recorded on the hot path and the [`Snapshot`] built from them. Totals and
//! histograms are atomics; the recent windows take one short lock per call.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::foundation::error::AttemptKind;
use crate::foundation::request::Priority;
use crate::policy::window::RecentWindow;
use crate::telemetry::histogram::Histogram;

use parking_lot::Mutex;

pub(crate) const KINDS: [AttemptKind; 8] = [
    AttemptKind::Connect,
    AttemptKind::Timeout,
    AttemptKind::Status,
    AttemptKind::Reset,
    AttemptKind::Protocol,
    AttemptKind::TooLarge,
    AttemptKind::Quota,
    AttemptKind::Tls,
];

/// Attempts sent to one provider.
#[derive(Default)]
pub(crate) struct ProviderStats {
    pub(crate) requests: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) failures_by_kind: [AtomicU64; KINDS.len()],
    pub(crate) latency: Histogram,
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
    pub(crate) requests: AtomicU64,
    pub(crate) successes: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) failovers: AtomicU64,
    /// Requests answered by sharing an identical call in flight.
    pub(crate) coalesced: AtomicU64,
    /// Requests answered from an endpoint's cache, and those that looked and missed.
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    /// Hedges sent, and those whose answer was the one delivered.
    pub(crate) hedges: AtomicU64,
    pub(crate) hedge_wins: AtomicU64,
    /// Requests that went out inside a batch call of two or more, and those calls.
    pub(crate) batched: AtomicU64,
    pub(crate) batch_calls: AtomicU64,
    pub(crate) latency: Histogram,
    pub(crate) queue_wait: Histogram,
    pub(crate) queue_wait_by_priority: [Histogram; 4],
    /// Failovers by (from, to) provider index; written only when a request fails over.
    pub(crate) routes: Mutex<BTreeMap<(usize, usize), u64>>,
    pub recent: RecentWindow,
}

impl ServiceStats {
    pub fn record_admitted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_batch(&self, members: usize) {
        self.batch_calls.fetch_add(1, Ordering::Relaxed);
        self.batched.fetch_add(members as u64, Ordering::Relaxed);
    }

    pub fn record_hedge(&self) {
        self.hedges.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_hedge_win(&self) {
        self.hedge_wins.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_cache(&self, hit: bool) {
        let counter = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_by_outcome_and_kind() {
        let p = ProviderStats::default();
        let ms = Duration::from_millis(2);
        p.record_success(ms, Duration::from_secs(1));
        p.record_failure(AttemptKind::Reset, ms, Duration::from_secs(1));
        p.record_failure(AttemptKind::Reset, ms, Duration::from_secs(1));
        assert_eq!((p.attempts(), p.successes()), (3, 1));
        let reset = KINDS.iter().position(|k| *k == AttemptKind::Reset).unwrap();
        assert_eq!(p.failures_by_kind[reset].load(Ordering::Relaxed), 2);
        assert_eq!(p.latency.count(), 3);
        let s = ServiceStats::default();
        s.record_admitted();
        s.record_rejected();
        s.record_failover(0, 1);
        s.record_failover(0, 1);
        s.record_outcome(false, ms, ms, Priority::High, Duration::from_secs(1));
        assert_eq!(
            (s.failures(), s.rejected(), s.routes()),
            (1, 1, vec![((0, 1), 2)])
        );
        assert_eq!(s.queue_wait_by_priority[Priority::High.index()].count(), 1);
    }
}
