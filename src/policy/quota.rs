//! Calendar quotas: how many calls a provider sells per day and per month, counted in
//! the stretch the provider counts in (days begin at `reset_utc`, months on the 1st),
//! so a balancer started at 17:00 still resets at the provider's midnight.
//!
//! Each counter keeps the clock time its stretch ends, so the hot path compares two
//! atomics; only a rollover converts clock time to the calendar.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use crate::foundation::calendar::{Period, TimeOfDay};
use crate::foundation::clock::SharedClock;
use crate::foundation::config::ResolvedQuota;

struct Counter {
    period: Period,
    limit: u64,
    /// What calls that may not use the reserve may use.
    shed_limit: u64,
    used: AtomicU64,
    /// Clock nanoseconds at which the stretch being counted ends; 0 before the first call.
    ends: AtomicU64,
    /// Unix second at which it started, to tell a stale state file from today's.
    started_unix: AtomicU64,
}

/// One counter's figures, for the metrics and the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaUse {
    pub period: Period,
    pub limit: u64,
    pub used: u64,
    /// Clock time the count resets.
    pub resets_at: Duration,
    /// Unix second the counted stretch began.
    pub started_unix: u64,
}

pub(crate) struct Quota {
    counters: Vec<Counter>,
    reset: TimeOfDay,
    clock: SharedClock,
}

impl Quota {
    /// `None` when the configuration sets no quota. `reserve` is the share kept for
    /// critical and high requests.
    pub fn new(config: &ResolvedQuota, reserve: f64, clock: SharedClock) -> Option<Quota> {
        let counters: Vec<Counter> = [
            (Period::Day, config.per_day),
            (Period::Month, config.per_month),
        ]
        .into_iter()
        .filter(|(_, limit)| *limit > 0)
        .map(|(period, limit)| Counter {
            period,
            limit,
            shed_limit: ((limit as f64) * (1.0 - reserve)).floor() as u64,
            used: AtomicU64::new(0),
            ends: AtomicU64::new(0),
            started_unix: AtomicU64::new(0),
        })
        .collect();
        if counters.is_empty() {
            return None;
        }
        Some(Quota {
            counters,
            reset: config.reset,
            clock,
        })
    }

    fn unix_secs(&self, at: Duration) -> u64 {
        self.clock
            .to_system(at)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Clock time of a Unix second.
    fn clock_time(&self, unix: u64, now: Duration) -> Duration {
        let now_unix = self
            .clock
            .to_system(now)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (now + Duration::from_secs(unix)).saturating_sub(now_unix)
    }

    /// Starts a new stretch for every counter whose stretch ended. Call under the
    /// allowance's lock.
    fn roll(&self, now: Duration) {
        let now_ns = now.as_nanos() as u64;
        for c in &self.counters {
            if now_ns < c.ends.load(Ordering::Acquire) {
                continue;
            }
            let (start, end) = c.period.bounds(self.unix_secs(now), self.reset);
            c.used.store(0, Ordering::Release);
            c.started_unix.store(start, Ordering::Release);
            let ends = self.clock_time(end, now).as_nanos() as u64;
            c.ends.store(ends.max(now_ns + 1), Ordering::Release);
        }
    }

    /// `Err(resets_at)` when a counter is used up for this kind of call.
    pub fn check(&self, now: Duration, urgent: bool) -> Result<(), Duration> {
        self.check_share(now, urgent, 1)
    }

    /// [`Quota::check`] against `1 / share` of each limit.
    fn check_share(&self, now: Duration, urgent: bool, share: u64) -> Result<(), Duration> {
        let now_ns = now.as_nanos() as u64;
        let mut blocked = None;
        for c in &self.counters {
            let ends = c.ends.load(Ordering::Acquire);
            if now_ns >= ends {
                continue; // a new stretch begins with this call
            }
            let cap = if urgent { c.limit } else { c.shed_limit } / share.max(1);
            if c.used.load(Ordering::Acquire) >= cap {
                let at = Duration::from_nanos(ends);
                blocked = Some(blocked.map_or(at, |b: Duration| b.max(at)));
            }
        }
        blocked.map_or(Ok(()), Err)
    }

    /// Counts a call against every counter if all allow it. Call under the allowance's lock.
    pub fn take(&self, now: Duration, urgent: bool) -> Result<(), Duration> {
        self.take_share(now, urgent, 1)
    }

    /// [`Quota::take`] against `1 / share` of each limit: a fleet process counting alone
    /// while the fleet's store is away.
    pub fn take_share(&self, now: Duration, urgent: bool, share: u64) -> Result<(), Duration> {
        self.roll(now);
        self.check_share(now, urgent, share)?;
        for c in &self.counters {
            c.used.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Gives back a call counted but never sent (in the same stretch only).
    pub fn refund(&self, now: Duration) {
        let now_ns = now.as_nanos() as u64;
        for c in &self.counters {
            if now_ns < c.ends.load(Ordering::Acquire) {
                let _ = c
                    .used
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            }
        }
    }

    /// The clock time the shortest counter resets: where a "quota used up" answer rests
    /// a provider whose answer said nothing more.
    pub fn next_reset(&self, now: Duration) -> Duration {
        self.roll(now);
        self.counters
            .iter()
            .map(|c| Duration::from_nanos(c.ends.load(Ordering::Acquire)))
            .min()
            .unwrap_or(now)
    }

    /// Marks every counter used up until its stretch ends (a "quota used up" answer).
    pub fn use_up(&self, now: Duration) {
        self.roll(now);
        for c in &self.counters {
            c.used.fetch_max(c.limit, Ordering::AcqRel);
        }
    }

    pub fn uses(&self, now: Duration) -> Vec<QuotaUse> {
        let now_ns = now.as_nanos() as u64;
        self.counters
            .iter()
            .map(|c| {
                let ends = c.ends.load(Ordering::Acquire);
                let current = now_ns < ends;
                let resets_at = if current {
                    Duration::from_nanos(ends)
                } else {
                    let (_, end) = c.period.bounds(self.unix_secs(now), self.reset);
                    self.clock_time(end, now)
                };
                QuotaUse {
                    period: c.period,
                    limit: c.limit,
                    used: if current {
                        c.used.load(Ordering::Acquire)
                    } else {
                        0
                    },
                    resets_at,
                    started_unix: c.started_unix.load(Ordering::Acquire),
                }
            })
            .collect()
    }

    /// Restores a count from the state file when it was made in the stretch now running.
    pub fn restore(&self, period: Period, used: u64, started_unix: u64, now: Duration) {
        self.roll(now);
        for c in self.counters.iter().filter(|c| c.period == period) {
            if c.started_unix.load(Ordering::Acquire) == started_unix {
                c.used.fetch_max(used, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::calendar::days_from_civil;
    use crate::foundation::clock::{Clock, ManualClock};
    use std::sync::Arc;

    fn at(y: i64, mo: u32, d: u32, h: u64, mi: u64) -> Duration {
        Duration::from_secs(days_from_civil(y, mo, d) as u64 * 86_400 + h * 3600 + mi * 60)
    }

    /// A manual clock reads as Unix time: set it to a calendar time.
    fn clock_at(when: Duration) -> Arc<ManualClock> {
        let clock = ManualClock::shared();
        clock.advance(when);
        clock
    }

    fn quota(
        per_day: u64,
        per_month: u64,
        reset: &str,
        reserve: f64,
        clock: &Arc<ManualClock>,
    ) -> Quota {
        let config = ResolvedQuota {
            per_day,
            per_month,
            reset: TimeOfDay::parse(reset).unwrap(),
        };
        Quota::new(&config, reserve, clock.clone()).unwrap()
    }

    #[test]
    fn a_day_resets_at_reset_utc_not_a_day_after_the_first_call() {
        let clock = clock_at(at(2026, 12, 1, 17, 0));
        let q = quota(3, 0, "06:00", 0.0, &clock);
        for _ in 0..3 {
            q.take(clock.now(), false).unwrap();
        }
        let resets = at(2026, 12, 2, 6, 0);
        assert_eq!(q.take(clock.now(), true), Err(resets));
        clock.advance(at(2026, 12, 2, 5, 59) - clock.now());
        assert!(q.take(clock.now(), true).is_err());
        clock.advance(Duration::from_secs(60));
        assert!(q.take(clock.now(), true).is_ok(), "06:00 the next day");
        assert_eq!(q.uses(clock.now())[0].used, 1);
    }

    #[test]
    fn a_month_resets_on_the_first_and_both_counters_must_allow() {
        let clock = clock_at(at(2027, 1, 31, 23, 0));
        let q = quota(10, 4, "00:00", 0.0, &clock);
        for _ in 0..4 {
            q.take(clock.now(), true).unwrap();
        }
        assert_eq!(q.take(clock.now(), true), Err(at(2027, 2, 1, 0, 0)));
        clock.advance(Duration::from_secs(3600));
        assert!(q.take(clock.now(), true).is_ok(), "February");
    }

    #[test]
    fn the_reserve_is_for_urgent_calls_and_refunds_give_back() {
        let clock = clock_at(at(2026, 12, 1, 12, 0));
        let q = quota(10, 0, "00:00", 0.5, &clock);
        let now = clock.now();
        let low: usize = (0..8).filter(|_| q.take(now, false).is_ok()).count();
        assert_eq!(low, 5);
        assert!(q.take(now, true).is_ok());
        q.refund(now);
        assert_eq!(q.uses(now)[0].used, 5);
        assert_eq!((0..8).filter(|_| q.take(now, true).is_ok()).count(), 5);
    }

    #[test]
    fn used_up_answers_and_restores_count_only_in_the_running_stretch() {
        let clock = clock_at(at(2026, 12, 1, 12, 0));
        let q = quota(100, 0, "00:00", 0.0, &clock);
        let now = clock.now();
        q.use_up(now);
        assert_eq!(q.check(now, true), Err(at(2026, 12, 2, 0, 0)));
        assert_eq!(q.next_reset(now), at(2026, 12, 2, 0, 0));
        let fresh = quota(100, 0, "00:00", 0.0, &clock);
        let today = at(2026, 12, 1, 0, 0).as_secs();
        fresh.restore(Period::Day, 40, today, now);
        fresh.restore(Period::Day, 90, today - 86_400, now);
        assert_eq!(
            fresh.uses(now)[0].used,
            40,
            "yesterday's count is not today's"
        );
    }
}
