//! The one windowed counter: `N` time slices of `K` counts each, in fixed memory, on
//! clock time. The breaker's time window, the retry budget and the per-second traffic
//! windows are all this type.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Buckets<const K: usize, const N: usize> {
    /// In 64 bits: a u128 division costs several times a u64 one, on every record.
    width_ns: u64,
    /// Per slot: which slice it holds (slice number + 1; 0 = never used) and its counts.
    slots: [(u64, [u64; K]); N],
}

impl<const K: usize, const N: usize> Buckets<K, N> {
    /// Slices `width` long (at least a nanosecond).
    pub fn new(width: Duration) -> Self {
        Buckets {
            width_ns: u64::try_from(width.as_nanos()).unwrap_or(u64::MAX).max(1),
            slots: [(0, [0; K]); N],
        }
    }

    fn slice(&self, now: Duration) -> u64 {
        // Clock time fits 64 bits of nanoseconds for 584 years.
        now.as_nanos() as u64 / self.width_ns + 1
    }

    /// Adds `counts` to the slice that holds clock time `now`.
    pub fn add(&mut self, now: Duration, counts: [u64; K]) {
        for (total, n) in self.current(now).iter_mut().zip(counts) {
            *total = total.saturating_add(n);
        }
    }

    /// Adds one to count `k` alone: a latency bucket or a request touches one line of a
    /// wide slice, not all of them.
    pub fn bump(&mut self, now: Duration, k: usize) {
        let total = &mut self.current(now)[k];
        *total = total.saturating_add(1);
    }

    /// The counts of the slice that holds `now`, emptied first when its slot held an older one.
    fn current(&mut self, now: Duration) -> &mut [u64; K] {
        let slice = self.slice(now);
        let slot = &mut self.slots[slice as usize % N];
        if slot.0 != slice {
            *slot = (slice, [0; K]);
        }
        &mut slot.1
    }

    /// Sums the last `slices` slices before `now`, with the one in progress or without it.
    /// At most `N` slices are kept, so at most `N` are summed.
    pub fn sum(&self, now: Duration, slices: u64, with_current: bool) -> [u64; K] {
        let current = self.slice(now);
        let newest = if with_current { current } else { current - 1 };
        let oldest = (newest + 1).saturating_sub(slices.min(N as u64)).max(1);
        let mut out = [0; K];
        for (slice, counts) in &self.slots {
            if (oldest..=newest).contains(slice) {
                for (total, n) in out.iter_mut().zip(counts) {
                    *total += n;
                }
            }
        }
        out
    }

    pub fn clear(&mut self) {
        self.slots = [(0, [0; K]); N];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bump_adds_one_to_one_count_of_the_current_slice() {
        let mut b: Buckets<3, 4> = Buckets::new(10 * MS);
        b.add(Duration::ZERO, [1, 1, 1]);
        b.bump(5 * MS, 2);
        b.bump(5 * MS, 2);
        assert_eq!(b.sum(5 * MS, 1, true), [1, 1, 3]);
        // In a slice whose slot held an older one, the slot is emptied first.
        b.bump(40 * MS, 0);
        assert_eq!(b.sum(40 * MS, 1, true), [1, 0, 0]);
        assert_eq!(
            b.sum(40 * MS, 4, true),
            [1, 0, 0],
            "the slice of 0 ms is gone"
        );
    }

    #[test]
    fn slices_expire_as_time_passes() {
        let mut b: Buckets<2, 4> = Buckets::new(10 * MS);
        b.add(Duration::ZERO, [1, 0]);
        b.add(15 * MS, [1, 1]);
        b.add(19 * MS, [1, 0]);
        assert_eq!(b.sum(19 * MS, 4, true), [3, 1]);
        assert_eq!(b.sum(19 * MS, 4, false), [1, 0], "only full slices");
        assert_eq!(b.sum(19 * MS, 1, true), [2, 1]);
        // 40 ms on, the first slice's slot is reused and its counts are gone.
        b.add(40 * MS, [5, 5]);
        assert_eq!(b.sum(40 * MS, 4, true), [7, 6]);
        assert_eq!(b.sum(60 * MS, 4, true), [5, 5]);
        assert_eq!(b.sum(80 * MS, 4, true), [0, 0]);
    }

    #[test]
    fn never_more_than_n_slices_count_and_clear_forgets() {
        let mut b: Buckets<1, 3> = Buckets::new(MS);
        for i in 0..10u64 {
            b.add(Duration::from_millis(i), [1]);
        }
        assert_eq!(b.sum(9 * MS, 100, true), [3]);
        b.clear();
        assert_eq!(b.sum(9 * MS, 3, true), [0]);
    }
}
