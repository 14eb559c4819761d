//! A lock-free latency histogram: log-linear buckets of atomic counters.
//!
//! Recording is one index computation and relaxed atomics, so any number of threads
//! record into one histogram without a lock (HdrHistogram's `record` needs `&mut`,
//! which would mean a mutex on the hot path). Values are microseconds; each power of
//! two is split into 32 buckets, so a reported percentile is within 1/32 (about 3%) of
//! the true value. Memory is fixed: about 8 KiB.
//!
//! Every write to a counter another core wrote last moves its cache line between the
//! cores, and threads on two cores recording into one histogram did little else: so a
//! record writes the value's bucket and the sum only (the count is the buckets' total,
//! read when asked; the extremes are written only when they move, and a zero adds
//! nothing to the sum), and the sum and the extremes sit apart from the buckets and from
//! each other, at the end of the buckets' allocation (after the buckets of hours, which
//! are never written), so the histogram grows by no padding where it is embedded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Values below this are counted exactly.
const LINEAR: u64 = 64;
/// Buckets per power of two above `LINEAR`.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Largest power of two tracked: 2^35 us is about 9.5 hours; larger values clamp.
const MAX_EXP: u32 = 35;
const BUCKETS: usize =
    LINEAR as usize + ((MAX_EXP - LINEAR.trailing_zeros() + 1) as usize) * SUB as usize;

/// Where the sum and the extremes are kept after the buckets: 64 bytes and more from the
/// last bucket and from each other, so never on one cache line.
const SUM: usize = BUCKETS + 8;
const MIN: usize = SUM + 8;
const MAX: usize = MIN + 1;
const SLOTS: usize = MAX + 1;

pub(crate) struct Histogram {
    /// The buckets, then the sum and the smallest and largest values (see [`SUM`]).
    slots: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        let slots: Box<[AtomicU64]> = (0..SLOTS).map(|_| AtomicU64::new(0)).collect();
        slots[MIN].store(u64::MAX, Ordering::Relaxed);
        Histogram { slots }
    }
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = (63 - us.leading_zeros()).min(MAX_EXP);
    let sub = if exp == MAX_EXP && us >> exp > 1 {
        SUB - 1
    } else {
        (us >> (exp - SUB_BITS)) & (SUB - 1)
    };
    LINEAR as usize + (exp - LINEAR.trailing_zeros()) as usize * SUB as usize + sub as usize
}

/// The middle of a bucket's range, in microseconds.
fn value_at(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let i = index - LINEAR as usize;
    let exp = LINEAR.trailing_zeros() + (i / SUB as usize) as u32;
    let sub = (i % SUB as usize) as u64;
    let width = 1u64 << (exp - SUB_BITS);
    (1u64 << exp) + sub * width + width / 2
}

/// Heap bytes of one histogram.
#[allow(dead_code)] // read by the benchmarks
pub(crate) fn heap_bytes() -> usize {
    SLOTS * std::mem::size_of::<AtomicU64>()
}

/// The smallest value above every value of a bucket, in microseconds.
fn upper_bound(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64 + 1;
    }
    let i = index - LINEAR as usize;
    let exp = LINEAR.trailing_zeros() + (i / SUB as usize) as u32;
    let sub = (i % SUB as usize) as u64;
    (1u64 << exp) + (sub + 1) * (1u64 << (exp - SUB_BITS))
}

/// A summary, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    /// Mean.
    pub avg: f64,
    /// Smallest value recorded.
    pub min: f64,
    /// Largest value recorded.
    pub max: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.slots[index(us)].fetch_add(1, Ordering::Relaxed);
        if us > 0 {
            self.slots[SUM].fetch_add(us, Ordering::Relaxed);
        }
        let (min, max) = (&self.slots[MIN], &self.slots[MAX]);
        if us < min.load(Ordering::Relaxed) {
            min.fetch_min(us, Ordering::Relaxed);
        }
        if us > max.load(Ordering::Relaxed) {
            max.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.buckets()
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    fn buckets(&self) -> &[AtomicU64] {
        &self.slots[..BUCKETS]
    }

    /// The sum of every value recorded, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.slots[SUM].load(Ordering::Relaxed)
    }

    fn min_max(&self) -> (u64, u64) {
        let load = |i: usize| self.slots[i].load(Ordering::Relaxed);
        (load(MIN), load(MAX))
    }

    /// For each bound (microseconds, ascending), how many values were at most that bound,
    /// counting a bucket only when all of it is (so within a bucket's width, low).
    pub fn cumulative(&self, bounds_us: &[u64]) -> Vec<u64> {
        let mut out = vec![0; bounds_us.len()];
        let mut seen = 0;
        let mut next = 0;
        // Bucket tops ascend, so each bound's count is the running total before the first
        // bucket that reaches past it.
        for (i, b) in self.buckets().iter().enumerate() {
            let top = upper_bound(i) - 1;
            while next < bounds_us.len() && top > bounds_us[next] {
                out[next] = seen;
                next += 1;
            }
            if next == bounds_us.len() {
                return out;
            }
            seen += b.load(Ordering::Relaxed);
        }
        out[next..].fill(seen);
        out
    }

    /// The values at quantiles `qs` (ascending, 0..=1) in microseconds, in one pass over
    /// the buckets; zeros when empty.
    pub fn quantiles_us<const N: usize>(&self, qs: [f64; N]) -> [u64; N] {
        let mut out = [0; N];
        let total = self.count();
        if total == 0 {
            return out;
        }
        let (min, max) = self.min_max();
        let ranks = qs.map(|q| ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1));
        let (mut next, mut seen) = (0, 0);
        for (i, b) in self.buckets().iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            while next < N && seen >= ranks[next] {
                // Never report beyond what was seen.
                out[next] = value_at(i).clamp(min, max);
                next += 1;
            }
            if next == N {
                return out;
            }
        }
        // Counts moved while we read: the rest is at most the largest value seen.
        out[next..].fill(max);
        out
    }

    pub fn summary(&self) -> LatencySummary {
        let count = self.count();
        if count == 0 {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let [p50, p90, p99] = self.quantiles_us([0.50, 0.90, 0.99]);
        let (min, max) = self.min_max();
        LatencySummary {
            avg: ms(self.sum_us()) / count as f64,
            min: ms(min),
            max: ms(max),
            p50: ms(p50),
            p90: ms(p90),
            p99: ms(p99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_precise() {
        let mut last = 0;
        for us in (0..200_000u64)
            .step_by(7)
            .chain([1 << 34, (1 << 35) + 5, u64::MAX])
        {
            let i = index(us);
            assert!(i >= last && i < BUCKETS, "{us} -> {i}");
            last = i;
            if (LINEAR..1 << 35).contains(&us) {
                let v = value_at(i) as f64;
                assert!(
                    (v - us as f64).abs() / us as f64 <= 1.0 / 32.0,
                    "{us} read as {v}"
                );
            }
        }
    }

    #[test]
    fn quantiles_of_a_uniform_run() {
        let h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!((s.min, s.max), (1.0, 1000.0));
        assert!((s.avg - 500.5).abs() < 1e-9);
        for (got, want) in [(s.p50, 500.0), (s.p90, 900.0), (s.p99, 990.0)] {
            assert!((got - want).abs() / want < 1.0 / 32.0, "{got} vs {want}");
        }
    }

    #[test]
    fn cumulative_counts_at_bounds() {
        let h = Histogram::default();
        for us in [10, 63, 64, 1_000, 5_000, 1_000_000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.cumulative(&[63, 1_000, 10_000, u64::MAX]), [2, 3, 5, 6]);
        assert_eq!(h.sum_us(), 10 + 63 + 64 + 1_000 + 5_000 + 1_000_000);
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Histogram::default().summary(), LatencySummary::default());
    }
}
