//! A provider's own rate limits as a generic cell rate algorithm (GCRA): one cell per
//! window (second, minute, hour), each holding its theoretical arrival time (TAT).
//!
//! With a limit of `L` per window `W` and a burst of `b`, calls are spaced `W / (L-b+1)`
//! apart with a tolerance of `b-1` spacings, so `b` may go at once after a quiet spell and
//! no window of length `W` ever holds more than `L`. Reserved headroom is a delay: a call
//! that may not use the reserve conforms only `T * r / (1 - r)` after an urgent one would,
//! which leaves urgent work a share `r` of the pace.
//!
//! Peeks read atomics; a take happens under the caller's lock, so several cells move
//! together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::foundation::config::RateConfig;

/// Slices of a window in the count of recent calls (for "remaining" in the metrics).
const SLICES: usize = 12;

struct Cell {
    name: &'static str,
    limit: u64,
    spacing_ns: u64,
    tolerance_ns: u64,
    /// Extra wait of calls that may not use the reserve; `u64::MAX` when they may not go.
    shed_ns: u64,
    /// Theoretical arrival time, clock nanoseconds.
    tat: AtomicU64,
    recent: Recent,
}

impl Cell {
    /// The clock time (ns) from which a call conforms.
    fn due(&self, urgent: bool) -> u64 {
        let base = self
            .tat
            .load(Ordering::Acquire)
            .saturating_sub(self.tolerance_ns);
        if urgent {
            base
        } else {
            base.saturating_add(self.shed_ns)
        }
    }
}

/// What one window allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowLeft {
    pub name: &'static str,
    pub limit: u64,
    /// Calls that may still go in the window that ends now (limit - calls in it).
    pub remaining: u64,
}

pub(crate) struct RateLimiter {
    cells: Vec<Cell>,
}

/// Calls taken per slice of a window, for the metrics' "remaining". Written only under
/// the allowance's lock (with the take or refund); read without it.
struct Recent {
    width_ns: u64,
    /// Per slot: slice number + 1 (0 = never used), and calls in it.
    slots: [(AtomicU64, AtomicU64); SLICES],
}

impl Recent {
    fn new(window: Duration) -> Recent {
        Recent {
            width_ns: (window.as_nanos() as u64 / SLICES as u64).max(1),
            slots: std::array::from_fn(|_| (AtomicU64::new(0), AtomicU64::new(0))),
        }
    }

    fn add(&self, now: Duration, up: bool) {
        let slice = now.as_nanos() as u64 / self.width_ns + 1;
        let (id, count) = &self.slots[slice as usize % SLICES];
        if id.load(Ordering::Relaxed) != slice {
            id.store(slice, Ordering::Relaxed);
            count.store(0, Ordering::Relaxed);
        }
        if up {
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            let n = count.load(Ordering::Relaxed);
            count.store(n.saturating_sub(1), Ordering::Relaxed);
        }
    }

    /// Calls in the slices of the window that ends now (the current one included).
    fn sum(&self, now: Duration) -> u64 {
        let current = now.as_nanos() as u64 / self.width_ns + 1;
        let oldest = (current + 1).saturating_sub(SLICES as u64).max(1);
        self.slots
            .iter()
            .filter(|(id, _)| (oldest..=current).contains(&id.load(Ordering::Relaxed)))
            .map(|(_, n)| n.load(Ordering::Relaxed))
            .sum()
    }
}

impl RateLimiter {
    /// `None` when the configuration sets no limit. `reserve` is the share kept for
    /// critical and high requests.
    pub fn new(config: &RateConfig, reserve: f64) -> Option<RateLimiter> {
        let windows = [
            ("per_second", Duration::from_secs(1), config.per_second),
            ("per_minute", Duration::from_secs(60), config.per_minute),
            ("per_hour", Duration::from_secs(3600), config.per_hour),
        ];
        let cells: Vec<Cell> = windows
            .iter()
            .filter(|(_, _, limit)| *limit > 0)
            .map(|&(name, window, limit)| {
                let burst = config.burst.clamp(1, limit);
                let spacing_ns = (window.as_nanos() / u128::from(limit - burst + 1)) as u64;
                let shed_ns = if reserve >= 1.0 {
                    u64::MAX
                } else {
                    (spacing_ns as f64 * reserve / (1.0 - reserve)) as u64
                };
                Cell {
                    name,
                    limit,
                    spacing_ns: spacing_ns.max(1),
                    tolerance_ns: spacing_ns * (burst - 1),
                    shed_ns,
                    tat: AtomicU64::new(0),
                    recent: Recent::new(window),
                }
            })
            .collect();
        if cells.is_empty() {
            return None;
        }
        Some(RateLimiter { cells })
    }

    /// The clock nanosecond from which a call of this urgency conforms; `u64::MAX` for
    /// never (all reserved).
    pub fn next_due(&self, urgent: bool) -> u64 {
        self.cells.iter().map(|c| c.due(urgent)).max().unwrap_or(0)
    }

    /// When a call may go, if not now (clock time); `None` for never (all reserved).
    pub fn due(&self, now: Duration, urgent: bool) -> Result<(), Option<Duration>> {
        let now_ns = now.as_nanos() as u64;
        let due = self.next_due(urgent);
        if due <= now_ns {
            Ok(())
        } else if due == u64::MAX {
            Err(None)
        } else {
            Err(Some(Duration::from_nanos(due)))
        }
    }

    /// Takes a call's place in every window if all allow it now. Call under the
    /// allowance's lock: the check and the moves are one step.
    pub fn take(&self, now: Duration, urgent: bool) -> Result<(), Option<Duration>> {
        self.due(now, urgent)?;
        let now_ns = now.as_nanos() as u64;
        for c in &self.cells {
            let tat = c.tat.load(Ordering::Acquire).max(now_ns);
            c.tat
                .store(tat.saturating_add(c.spacing_ns), Ordering::Release);
            c.recent.add(now, true);
        }
        Ok(())
    }

    /// Gives back a call taken at `taken` but never sent. Call under the allowance's lock.
    pub fn refund(&self, taken: Duration) {
        for c in &self.cells {
            let tat = c.tat.load(Ordering::Acquire);
            c.tat
                .store(tat.saturating_sub(c.spacing_ns), Ordering::Release);
            c.recent.add(taken, false);
        }
    }

    /// What each window allows now.
    pub fn left(&self, now: Duration) -> Vec<WindowLeft> {
        self.cells
            .iter()
            .map(|c| WindowLeft {
                name: c.name,
                limit: c.limit,
                remaining: c.limit.saturating_sub(c.recent.sum(now)),
            })
            .collect()
    }

    /// Each window's TAT, for the state file (clock time; 0 = never used).
    pub fn arrival_times(&self) -> Vec<(&'static str, Duration)> {
        self.cells
            .iter()
            .map(|c| (c.name, Duration::from_nanos(c.tat.load(Ordering::Acquire))))
            .collect()
    }

    /// Restores a window's TAT from the state file (clock time).
    pub fn restore(&self, name: &str, tat: Duration) {
        if let Some(c) = self.cells.iter().find(|c| c.name == name) {
            c.tat.store(tat.as_nanos() as u64, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limiter(per_second: u64, per_minute: u64, burst: u64, reserve: f64) -> RateLimiter {
        let config = RateConfig {
            per_second,
            per_minute,
            burst,
            ..RateConfig::default()
        };
        RateLimiter::new(&config, reserve).unwrap()
    }

    /// Takes at every millisecond for `span`, as fast as allowed; the times taken.
    fn greedy(l: &RateLimiter, span: Duration, urgent: bool) -> Vec<Duration> {
        let mut taken = Vec::new();
        let mut t = Duration::ZERO;
        while t < span {
            if l.take(t, urgent).is_ok() {
                taken.push(t);
            }
            t += MS;
        }
        taken
    }

    fn max_in_any_window(times: &[Duration], window: Duration) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn no_limit_means_no_limiter() {
        assert!(RateLimiter::new(&RateConfig::default(), 0.5).is_none());
    }

    #[test]
    fn smooth_spacing_holds_the_limit_in_every_window() {
        let l = limiter(20, 0, 1, 0.0);
        let taken = greedy(&l, Duration::from_secs(10), true);
        assert_eq!(taken.len(), 200);
        assert_eq!(taken[1] - taken[0], 50 * MS, "evenly spaced");
        assert!(max_in_any_window(&taken, Duration::from_secs(1)) <= 20);
    }

    #[test]
    fn a_burst_goes_at_once_and_the_window_still_holds() {
        let l = limiter(20, 0, 5, 0.0);
        let taken = greedy(&l, Duration::from_secs(10), true);
        // Asked every millisecond: five go back to back, then the pace takes over.
        assert_eq!(taken[4], 4 * MS, "{:?}", &taken[..6]);
        assert!(taken[5] > 50 * MS, "{:?}", &taken[..6]);
        assert!(max_in_any_window(&taken, Duration::from_secs(1)) <= 20);
        assert!(
            taken.len() >= 160,
            "the pace is lowered, not halted: {}",
            taken.len()
        );
    }

    #[test]
    fn every_window_must_allow_the_call() {
        let l = limiter(10, 30, 1, 0.0);
        let taken = greedy(&l, Duration::from_secs(60), true);
        assert!(max_in_any_window(&taken, Duration::from_secs(1)) <= 10);
        assert!(max_in_any_window(&taken, Duration::from_secs(60)) <= 30);
        assert_eq!(l.due(taken[0], true), Err(Some(Duration::from_secs(60))));
    }

    #[test]
    fn the_reserve_leaves_urgent_work_its_share() {
        let l = limiter(10, 0, 1, 0.5);
        let low = greedy(&l, Duration::from_secs(10), false);
        assert_eq!(
            low.len(),
            50,
            "half the pace for work that may not use the reserve"
        );
        let l = limiter(10, 0, 1, 0.5);
        let mut t = Duration::ZERO;
        let (mut urgent, mut other) = (0, 0);
        while t < Duration::from_secs(10) {
            // Both kinds ask every millisecond; urgent first.
            if l.take(t, true).is_ok() {
                urgent += 1;
            } else if l.take(t, false).is_ok() {
                other += 1;
            }
            t += MS;
        }
        assert_eq!(
            (urgent, other),
            (100, 0),
            "urgent work may take the whole rate"
        );
        let all_reserved = limiter(10, 0, 1, 1.0);
        assert_eq!(all_reserved.due(Duration::ZERO, false), Err(None));
        assert_eq!(all_reserved.due(Duration::ZERO, true), Ok(()));
    }

    #[test]
    fn a_refund_gives_the_place_back_and_remaining_counts_the_window() {
        let l = limiter(5, 0, 1, 0.0);
        l.take(Duration::ZERO, true).unwrap();
        assert!(l.take(Duration::ZERO, true).is_err());
        l.refund(Duration::ZERO);
        l.take(Duration::ZERO, true).unwrap();
        l.take(200 * MS, true).unwrap();
        assert_eq!(
            l.left(300 * MS),
            vec![WindowLeft {
                name: "per_second",
                limit: 5,
                remaining: 3
            }]
        );
        assert_eq!(l.left(Duration::from_secs(3))[0].remaining, 5);
    }
}
