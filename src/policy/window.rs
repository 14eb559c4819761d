//! Recent traffic in fixed memory: per-second counters over the last minute, and the
//! last 1,000 calls one by one, for rates and "the last N seconds" queries.

use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::policy::buckets::Buckets;

/// Seconds kept (a minute, plus the one being filled and slack for readers).
const SECONDS: usize = 64;
/// Calls kept one by one.
pub(crate) const LAST_CALLS: usize = 1000;

#[derive(Clone, Copy, Default)]
struct Call {
    at_ms: u64,
    latency_us: u32,
    ok: bool,
}

struct Inner {
    /// Calls, failures and busy microseconds per second.
    seconds: Buckets<3, SECONDS>,
    calls: Box<[Call]>,
    next: usize,
    filled: usize,
}

/// Rates and latency over a recent stretch of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Recent {
    /// Calls that ended in the stretch.
    pub calls: u64,
    /// Share of them that succeeded; 1 when there were none.
    pub success_rate: f64,
    /// Their mean latency in ms; 0 when there were none.
    pub avg_latency_ms: f64,
}

/// Calls per second over the last 1, 10 and 60 seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Throughput {
    /// Over the last full second.
    pub last_1s: f64,
    /// Over the last 10 full seconds.
    pub last_10s: f64,
    /// Over the last 60 full seconds.
    pub last_60s: f64,
}

pub(crate) struct RecentWindow(Mutex<Inner>);

/// Heap bytes of one window.
#[allow(dead_code)] // read by the benchmarks
pub(crate) fn heap_bytes() -> usize {
    LAST_CALLS * std::mem::size_of::<Call>()
}

impl Default for RecentWindow {
    fn default() -> Self {
        RecentWindow(Mutex::new(Inner {
            seconds: Buckets::new(Duration::from_secs(1)),
            calls: vec![Call::default(); LAST_CALLS].into_boxed_slice(),
            next: 0,
            filled: 0,
        }))
    }
}

impl RecentWindow {
    /// Records a call that ended at clock time `now` after `latency`.
    pub fn record(&self, now: Duration, latency: Duration, ok: bool) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut w = self.0.lock();
        w.seconds.add(now, [1, u64::from(!ok), latency_us]);
        let next = w.next;
        w.calls[next] = Call {
            at_ms: now.as_millis() as u64,
            latency_us: latency_us.min(u64::from(u32::MAX)) as u32,
            ok,
        };
        w.next = (next + 1) % LAST_CALLS;
        w.filled = (w.filled + 1).min(LAST_CALLS);
    }

    /// Sums the last `n` full seconds before `now`: (calls, failures, busy us).
    fn seconds(&self, now: Duration, n: u64) -> (u64, u64, u64) {
        let [calls, failures, busy_us] = self.0.lock().seconds.sum(now, n, false);
        (calls, failures, busy_us)
    }

    pub fn throughput(&self, now: Duration) -> Throughput {
        let rate = |n: u64| self.seconds(now, n).0 as f64 / n as f64;
        Throughput {
            last_1s: rate(1),
            last_10s: rate(10),
            last_60s: rate(60),
        }
    }

    /// Mean share of `slots` busy over the last 10 full seconds: time spent in calls
    /// divided by the time the slots were there.
    pub fn utilisation(&self, now: Duration, slots: usize) -> f64 {
        let (_, _, busy_us) = self.seconds(now, 10);
        (busy_us as f64 / (10e6 * slots.max(1) as f64)).min(1.0)
    }

    /// Among the last 1,000 calls, those that ended within `span` before `now`.
    pub fn recent(&self, now: Duration, span: Duration) -> Recent {
        let since = now.saturating_sub(span).as_millis() as u64;
        let w = self.0.lock();
        let (mut calls, mut ok, mut latency_us) = (0u64, 0u64, 0u64);
        for c in w.calls[..w.filled].iter().filter(|c| c.at_ms >= since) {
            calls += 1;
            ok += u64::from(c.ok);
            latency_us += u64::from(c.latency_us);
        }
        Recent {
            calls,
            success_rate: if calls == 0 {
                1.0
            } else {
                ok as f64 / calls as f64
            },
            avg_latency_ms: if calls == 0 {
                0.0
            } else {
                latency_us as f64 / calls as f64 / 1000.0
            },
        }
    }

    /// Calls and failures in the last full second.
    #[cfg_attr(not(feature = "dashboard"), allow(dead_code))]
    pub fn last_second(&self, now: Duration) -> (u64, u64) {
        let (calls, failures, _) = self.seconds(now, 1);
        (calls, failures)
    }

    /// Median and 99th percentile latency in ms of the calls among the last 1,000 that
    /// ended within `span`; `None` when there were none.
    #[cfg_attr(not(feature = "dashboard"), allow(dead_code))]
    pub fn latency_quantiles(&self, now: Duration, span: Duration) -> Option<(f64, f64)> {
        let since = now.saturating_sub(span).as_millis() as u64;
        let mut latencies: Vec<u32> = {
            let w = self.0.lock();
            w.calls[..w.filled]
                .iter()
                .filter(|c| c.at_ms >= since)
                .map(|c| c.latency_us)
                .collect()
        };
        if latencies.is_empty() {
            return None;
        }
        latencies.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
            f64::from(latencies[rank - 1]) / 1000.0
        };
        Some((at(0.5), at(0.99)))
    }

    /// Calls kept one by one (at most [`LAST_CALLS`]).
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.0.lock().filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn throughput_counts_full_seconds() {
        let w = RecentWindow::default();
        for i in 0..100 {
            w.record(ms(10_000 + i * 10), ms(5), true); // 100 calls in second 10
        }
        for i in 0..50 {
            w.record(ms(11_000 + i * 20), ms(5), i % 2 == 0); // 50 in second 11
        }
        let t = w.throughput(ms(12_000));
        assert_eq!((t.last_1s, t.last_10s), (50.0, 15.0));
        assert!((t.last_60s - 150.0 / 60.0).abs() < 1e-12);
        // Busy 150 x 5 ms over 10 s of one slot.
        assert!((w.utilisation(ms(12_000), 1) - 0.075).abs() < 1e-12);
        // A minute later it is all forgotten.
        assert_eq!(w.throughput(ms(80_000)), Throughput::default());
    }

    #[test]
    fn recent_queries_the_last_calls_by_time() {
        let w = RecentWindow::default();
        for i in 0..10 {
            w.record(ms(1_000 * i), ms(10 * (i + 1)), i != 9);
        }
        let r = w.recent(ms(9_000), ms(2_000));
        assert_eq!(r.calls, 3); // ended at 7, 8 and 9 s
        assert!((r.success_rate - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.avg_latency_ms - 90.0).abs() < 1e-12);
    }

    #[test]
    fn quantiles_of_the_last_second() {
        let w = RecentWindow::default();
        for i in 1..=100 {
            w.record(ms(5_000 + i), ms(i), true);
        }
        w.record(ms(3_000), ms(999), true); // too old for a 1 s span
        assert_eq!(
            w.latency_quantiles(ms(5_200), ms(1_000)),
            Some((50.0, 99.0))
        );
        assert_eq!(w.latency_quantiles(ms(60_000), ms(1_000)), None);
        assert_eq!(w.last_second(ms(6_000)), (100, 0));
    }

    #[test]
    fn memory_stays_fixed_after_a_million_calls() {
        let w = RecentWindow::default();
        for i in 0..1_000_000u64 {
            w.record(
                Duration::from_micros(i * 50),
                Duration::from_micros(300),
                i % 7 != 0,
            );
        }
        assert_eq!(w.kept(), LAST_CALLS);
        let r = w.recent(Duration::from_secs(50), Duration::from_secs(3600));
        assert_eq!(r.calls, LAST_CALLS as u64);
    }
}
