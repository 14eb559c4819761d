//! A provider's recent latency tail: attempts per latency bucket over a rolling window,
//! for the 99th percentile that `cost_aware` compares with the service's `slo`.

use std::time::Duration;

use parking_lot::Mutex;

use crate::policy::buckets::Buckets;

/// Upper bounds of the latency buckets, in ms; the last bucket is everything above.
const BOUNDS_MS: [u64; 15] = [
    5, 10, 25, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000,
];
const COUNTS: usize = BOUNDS_MS.len() + 1;
const SLICES: usize = 10;

pub(crate) struct LatencyTail {
    counts: Mutex<Buckets<COUNTS, SLICES>>,
}

impl LatencyTail {
    pub fn new(window: Duration) -> LatencyTail {
        LatencyTail {
            counts: Mutex::new(Buckets::new(window / SLICES as u32)),
        }
    }

    pub fn record(&self, latency: Duration, now: Duration) {
        let ms = latency.as_millis() as u64;
        let at = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        self.counts.lock().bump(now, at);
    }

    /// The window's 99th percentile as the upper bound of its bucket (above the last
    /// bound: `Duration::MAX`), with the number of attempts it saw; `None` without any.
    pub fn p99(&self, now: Duration) -> Option<(Duration, u64)> {
        let counts = self.counts.lock().sum(now, SLICES as u64, true);
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest bucket at or under which 99% of the attempts fall.
        let needed = total - total / 100;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= needed {
                let bound = BOUNDS_MS
                    .get(i)
                    .map_or(Duration::MAX, |ms| Duration::from_millis(*ms));
                return Some((bound, total));
            }
        }
        Some((Duration::MAX, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_tail_is_the_bucket_of_the_99th_percentile_and_ages_out() {
        let tail = LatencyTail::new(Duration::from_secs(10));
        assert_eq!(tail.p99(Duration::ZERO), None);
        for i in 0..99 {
            tail.record(20 * MS, i * MS);
        }
        tail.record(4_000 * MS, 100 * MS);
        assert_eq!(tail.p99(200 * MS), Some((25 * MS, 100)));
        tail.record(4_000 * MS, 100 * MS);
        assert_eq!(tail.p99(200 * MS), Some((5_000 * MS, 101)));
        assert_eq!(tail.p99(Duration::from_secs(12)), None, "out of the window");
    }
}
