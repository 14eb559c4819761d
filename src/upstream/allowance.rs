//! What a provider lets us send: its rests (`Retry-After`, announced limits, quota
//! answers), its own rate limits and calendar quotas, what its headers say is left, and
//! the headroom kept for urgent work. A call's share of all of it is a [`Grant`], given
//! back when dropped unless the call was sent.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::foundation::calendar::{Period, TimeOfDay};
use crate::foundation::clock::{AtomicTime, SharedClock};
use crate::foundation::config::ResolvedProvider;
use crate::policy::quota::{Quota, QuotaUse};
use crate::policy::rate::{RateLimiter, WindowLeft};
use crate::policy::rate_headers::Announced;
#[cfg(feature = "fleet")]
use crate::upstream::fleet::{FleetLink, FleetQuota, FleetRate, FleetTake, RateToken, Token};

/// Why a provider rests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RestReason {
    /// A `Retry-After` (or `retry-after-ms`) of a failed answer.
    RetryAfter = 1,
    /// Its rate-limit headers said nothing is left before their reset.
    RateHeaders = 2,
    /// It answered "quota used up", or its configured quota is used up.
    Quota = 3,
}

impl RestReason {
    /// The name used in metrics and on the dashboard.
    pub fn name(self) -> &'static str {
        match self {
            RestReason::RetryAfter => "retry_after",
            RestReason::RateHeaders => "rate_headers",
            RestReason::Quota => "quota",
        }
    }

    fn from_u8(n: u8) -> Option<RestReason> {
        [
            RestReason::RetryAfter,
            RestReason::RateHeaders,
            RestReason::Quota,
        ]
        .into_iter()
        .find(|r| *r as u8 == n)
    }
}

/// Why a provider cannot take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holdback {
    /// It rests until then.
    Rest { until: Duration, reason: RestReason },
    /// Its rate limit lets the next call go then; `None`: never for this priority.
    Rate { due: Option<Duration> },
    /// Its quota is used up for this kind of call until then; `reserved` when what is
    /// left is kept for critical and high requests.
    Quota { until: Duration, reserved: bool },
}

impl Holdback {
    /// When the provider may take the call, if ever (clock time).
    pub fn frees_at(&self) -> Option<Duration> {
        match *self {
            Holdback::Rest { until, .. } | Holdback::Quota { until, .. } => Some(until),
            Holdback::Rate { due } => due,
        }
    }

    /// When only a rate token holds the call back and it is due before `deadline`: then.
    pub fn rate_due_before(&self, deadline: Duration) -> Option<Duration> {
        match *self {
            Holdback::Rate { due: Some(due) } if due < deadline => Some(due),
            _ => None,
        }
    }

    /// Whether this is about rate or quota (what `QuotaExhausted` reports), not a
    /// failure's `Retry-After`.
    pub fn is_allowance(&self) -> bool {
        !matches!(
            self,
            Holdback::Rest {
                reason: RestReason::RetryAfter,
                ..
            }
        )
    }
}

/// An unknown announced count.
const UNKNOWN: i64 = i64::MAX;

struct Limits {
    rate: Option<RateLimiter>,
    quota: Option<Quota>,
    /// Calls its headers say are left, less those sent since; [`UNKNOWN`] when not told.
    announced_left: AtomicI64,
    /// When the announced count is whole again (clock time).
    announced_reset: AtomicTime,
    /// Makes a take of rate and quota one step.
    lock: Mutex<()>,
    rate_limited: AtomicU64,
    quota_rejections: AtomicU64,
    published: Published,
    /// The quota's count shared with other processes, once joined.
    #[cfg(feature = "fleet")]
    fleet: once_cell::sync::OnceCell<Arc<FleetQuota>>,
    /// The rate limits shared with other processes, once joined.
    #[cfg(feature = "fleet")]
    fleet_rate: once_cell::sync::OnceCell<Arc<FleetRate>>,
}

/// What every check reads, on a cache line of its own: the reference counts and the
/// lock, written on every take, would otherwise evict it from every reader.
#[repr(align(128))]
#[derive(Default)]
struct Published {
    rest_until: AtomicTime,
    rest_reason: AtomicU8,
    /// Published under the lock after every change, per class (0: critical and high,
    /// 1: the rest): the clock nanosecond from which the rate lets a call go
    /// (`u64::MAX`: never), and until which the quota holds one back.
    rate_due: [AtomicU64; 2],
    quota_until: [AtomicU64; 2],
}

impl Limits {
    /// Publishes what rate and quota allow now. Call under the lock.
    fn publish(&self, now: Duration) {
        for (class, urgent) in [(0, true), (1, false)] {
            let due = self.rate.as_ref().map_or(0, |r| r.next_due(urgent));
            self.published.rate_due[class].store(due, Ordering::Release);
            let until = self.quota.as_ref().map_or(0, |q| {
                q.check(now, urgent)
                    .err()
                    .map_or(0, |until| until.as_nanos() as u64)
            });
            self.published.quota_until[class].store(until, Ordering::Release);
        }
    }
}

/// A provider's allowance; see the module text.
pub(crate) struct Allowance {
    limits: Arc<Limits>,
    clock: SharedClock,
    /// Without a configured rate or quota a take needs no lock.
    configured: bool,
    /// When its days begin (`quota.reset_utc`).
    day_starts: TimeOfDay,
    /// Its quota as configured, for joining a fleet.
    #[cfg(feature = "fleet")]
    quota_config: crate::foundation::config::ResolvedQuota,
    /// Its rate limits as configured, and its reserve, for joining a fleet.
    #[cfg(feature = "fleet")]
    rate_config: (crate::foundation::config::RateConfig, f64),
}

/// A call's share of a provider's rate, quota and announced count. Dropped unsent, it
/// gives them back.
#[derive(Default)]
pub(crate) struct Grant {
    /// The provider's limits, while the grant holds any of them.
    limits: Option<Arc<Limits>>,
    /// When rate and quota were taken (they are given back in that stretch).
    taken_at: Option<Duration>,
    /// Whether one of the announced calls left was spent.
    announced: bool,
    /// The fleet's token, if one was taken.
    #[cfg(feature = "fleet")]
    fleet_token: Option<Token>,
    /// The fleet's rate token, if one was taken.
    #[cfg(feature = "fleet")]
    fleet_rate_token: Option<RateToken>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grant")
    }
}

impl Grant {
    /// The call was sent: what it took stays taken.
    pub fn commit(mut self) {
        self.limits = None;
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let Some(limits) = self.limits.take() else {
            return;
        };
        if let Some(at) = self.taken_at {
            let _held = limits.lock.lock();
            if let Some(q) = &limits.quota {
                q.refund(at);
            }
            if let Some(r) = &limits.rate {
                r.refund(at);
            }
            #[cfg(feature = "fleet")]
            if let (Some(token), Some(fleet)) = (self.fleet_token, limits.fleet.get()) {
                fleet.refund(token);
            }
            #[cfg(feature = "fleet")]
            if let (Some(token), Some(rate)) = (self.fleet_rate_token, limits.fleet_rate.get()) {
                rate.refund(token, at);
            }
            limits.publish(at);
        }
        if self.announced {
            let _ = limits
                .announced_left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n != UNKNOWN).then_some(n + 1)
                });
        }
    }
}

/// A provider's rate and quota figures, for the metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct AllowanceView {
    pub rate: Vec<WindowLeft>,
    pub quota: Vec<QuotaUse>,
    pub rate_limited: u64,
    pub quota_rejections: u64,
    pub resting: Option<(RestReason, Duration)>,
    /// The count its headers announce as left, if they do.
    pub announced_left: Option<u64>,
}

impl Allowance {
    pub fn new(config: &ResolvedProvider, clock: SharedClock) -> Allowance {
        let rate = RateLimiter::new(&config.rate, config.reserve);
        let quota = Quota::new(&config.quota, config.reserve, clock.clone());
        let allowance = Allowance {
            configured: rate.is_some() || quota.is_some(),
            limits: Arc::new(Limits {
                rate,
                quota,
                announced_left: AtomicI64::new(UNKNOWN),
                announced_reset: AtomicTime::default(),
                lock: Mutex::new(()),
                rate_limited: AtomicU64::new(0),
                quota_rejections: AtomicU64::new(0),
                published: Published::default(),
                #[cfg(feature = "fleet")]
                fleet: once_cell::sync::OnceCell::new(),
                #[cfg(feature = "fleet")]
                fleet_rate: once_cell::sync::OnceCell::new(),
            }),
            clock,
            day_starts: config.quota.reset,
            #[cfg(feature = "fleet")]
            quota_config: config.quota.clone(),
            #[cfg(feature = "fleet")]
            rate_config: (config.rate.clone(), config.reserve),
        };
        allowance.limits.publish(allowance.clock.now());
        allowance
    }

    /// The rest in force at `now`, if any.
    pub fn rest(&self, now: Duration) -> Option<(Duration, RestReason)> {
        let until = self.limits.published.rest_until.get()?;
        if now >= until {
            return None;
        }
        let reason = RestReason::from_u8(self.limits.published.rest_reason.load(Ordering::Acquire))
            .unwrap_or(RestReason::RetryAfter);
        Some((until, reason))
    }

    /// Rests the provider until `until` (clock time), unless it already rests longer.
    pub fn rest_until(&self, until: Duration, reason: RestReason) {
        let l = &self.limits;
        let _held = l.lock.lock();
        if l.published
            .rest_until
            .get()
            .is_none_or(|current| until > current)
        {
            l.published.rest_until.set(until);
            l.published
                .rest_reason
                .store(reason as u8, Ordering::Release);
        }
    }

    /// Whether a call of this urgency could go now; what holds it back otherwise.
    /// Reads atomics only, most of them in one place.
    pub fn check(&self, now: Duration, urgent: bool) -> Result<(), Holdback> {
        if let Some((until, reason)) = self.rest(now) {
            return Err(Holdback::Rest { until, reason });
        }
        if !self.configured {
            return Ok(());
        }
        let l = &self.limits;
        let (now_ns, class) = (now.as_nanos() as u64, usize::from(!urgent));
        let until = l.published.quota_until[class].load(Ordering::Acquire);
        if now_ns < until {
            let reserved = !urgent && now_ns >= l.published.quota_until[0].load(Ordering::Acquire);
            let until = Duration::from_nanos(until);
            return Err(Holdback::Quota { until, reserved });
        }
        match l.published.rate_due[class].load(Ordering::Acquire) {
            due if due <= now_ns => Ok(()),
            u64::MAX => Err(Holdback::Rate { due: None }),
            due => Err(Holdback::Rate {
                due: Some(Duration::from_nanos(due)),
            }),
        }
    }

    /// Takes a call's share if everything allows it now.
    pub fn take(&self, now: Duration, urgent: bool) -> Result<Grant, Holdback> {
        if let Some((until, reason)) = self.rest(now) {
            return Err(Holdback::Rest { until, reason });
        }
        let mut grant = Grant::default();
        if self.configured {
            let l = &self.limits;
            let _held = l.lock.lock();
            if let Some(q) = &l.quota {
                if let Err(until) = self.take_quota(q, now, urgent, &mut grant) {
                    let reserved = !urgent && q.check(now, true).is_ok();
                    return Err(Holdback::Quota { until, reserved });
                }
            }
            if let Some(r) = &l.rate {
                #[cfg_attr(not(feature = "fleet"), allow(unused_mut))]
                let mut taken = r.take(now, urgent);
                #[cfg(feature = "fleet")]
                if let (Ok(()), Some(fleet_rate)) = (&taken, l.fleet_rate.get()) {
                    // This process's pace first, then the fleet's.
                    match fleet_rate.take(now, urgent) {
                        Ok(token) => grant.fleet_rate_token = Some(token),
                        Err(due) => {
                            r.refund(now);
                            taken = Err(due);
                        }
                    }
                }
                if let Err(due) = taken {
                    if let Some(q) = &l.quota {
                        q.refund(now);
                    }
                    #[cfg(feature = "fleet")]
                    if let (Some(token), Some(fleet)) = (grant.fleet_token.take(), l.fleet.get()) {
                        fleet.refund(token);
                    }
                    return Err(Holdback::Rate { due });
                }
            }
            l.publish(now);
            grant.limits = Some(l.clone());
            grant.taken_at = Some(now);
        }
        self.spend_announced(now, &mut grant)?;
        Ok(grant)
    }

    /// Counts a call against the quota: this process's count, and the fleet's when it
    /// shares one (alone, within its share, while the fleet's store is away).
    /// Call under the lock.
    fn take_quota(
        &self,
        q: &Quota,
        now: Duration,
        urgent: bool,
        _grant: &mut Grant,
    ) -> Result<(), Duration> {
        #[cfg(feature = "fleet")]
        if let Some(fleet) = self.limits.fleet.get() {
            return match fleet.take() {
                FleetTake::Granted(token) => {
                    // The fleet's count is the one that binds; this one shows this
                    // process's part.
                    let _ = q.take(now, true);
                    _grant.fleet_token = Some(token);
                    Ok(())
                }
                FleetTake::UsedUp { resets_in } => {
                    q.use_up(now);
                    // Checks turn calls away without asking Redis until the reset.
                    self.limits.publish(now);
                    Err(now + resets_in)
                }
                FleetTake::Alone => {
                    q.take_share(now, urgent, fleet.expected_size())?;
                    fleet.spend_alone();
                    _grant.fleet_token = Some(Token::Alone);
                    Ok(())
                }
            };
        }
        q.take(now, urgent)
    }

    /// Shares this provider's quota with the fleet's other processes.
    #[cfg(feature = "fleet")]
    pub fn join_fleet(&self, link: &Arc<FleetLink>, service: &str, provider: &str) {
        if self.limits.rate.is_some() {
            let (rate, reserve) = &self.rate_config;
            if let Some(fleet) = FleetRate::join(link, service, provider, rate, *reserve) {
                let _ = self.limits.fleet_rate.set(fleet);
            }
        }
        if self.limits.quota.is_some() {
            if let Some(fleet) = FleetQuota::join(link, service, provider, &self.quota_config) {
                let _ = self.limits.fleet.set(fleet);
            }
        }
    }

    /// One call less of what the headers announced; a rest when it was the last.
    fn spend_announced(&self, now: Duration, grant: &mut Grant) -> Result<(), Holdback> {
        let l = &self.limits;
        if l.announced_left.load(Ordering::Acquire) == UNKNOWN {
            return Ok(());
        }
        if l.announced_reset.get().is_some_and(|reset| now >= reset) {
            // The announced window is over: the next answer will say what is left.
            l.announced_left.store(UNKNOWN, Ordering::Release);
            return Ok(());
        }
        let spent = l
            .announced_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != UNKNOWN && n > 0).then_some(n - 1)
            });
        match spent {
            Ok(UNKNOWN) | Err(UNKNOWN) => Ok(()),
            Ok(before) => {
                grant.limits.get_or_insert_with(|| l.clone());
                grant.announced = true;
                if before == 1 {
                    // That was the last one: rest until the window resets.
                    let until = l.announced_reset.get().unwrap_or(now + NO_RESET_REST);
                    self.rest_until(until, RestReason::RateHeaders);
                }
                Ok(())
            }
            Err(_) => {
                let until = l.announced_reset.get().unwrap_or(now + NO_RESET_REST);
                Err(Holdback::Rest {
                    until,
                    reason: RestReason::RateHeaders,
                })
            }
        }
    }

    /// Takes in what an answer announced at `now`; `others_in_flight` calls were sent
    /// but not yet answered, so they may not be counted in the figure yet.
    pub fn announce(&self, a: &Announced, now: Duration, others_in_flight: usize) {
        let l = &self.limits;
        if let Some(remaining) = a.remaining {
            let reset = a.reset.map(|r| now + r);
            let left = (remaining.min(i64::MAX as u64 - 1) as i64)
                .saturating_sub(others_in_flight as i64)
                .max(0);
            let _held = l.lock.lock();
            let current = l.announced_left.load(Ordering::Acquire);
            let same_window = match (l.announced_reset.get(), reset) {
                (Some(old), Some(new)) => new <= old + Duration::from_secs(1),
                (None, None) => true,
                _ => false,
            };
            // Answers arrive out of order: inside one window the count only goes down.
            let left = if current != UNKNOWN && same_window {
                left.min(current)
            } else {
                left
            };
            l.announced_left.store(left, Ordering::Release);
            if let Some(reset) = reset {
                l.announced_reset.set(reset);
            }
            drop(_held);
            if left == 0 {
                let until = reset.unwrap_or(now + NO_RESET_REST);
                self.rest_until(until, RestReason::RateHeaders);
            }
        }
    }

    /// A "quota used up" answer at `now`: rests the provider until the reset its
    /// headers give, else until its quota's next reset, else until its next day begins.
    pub fn used_up(&self, a: &Announced, now: Duration) {
        let l = &self.limits;
        let from_quota = l.quota.as_ref().map(|q| {
            let _held = l.lock.lock();
            q.use_up(now);
            l.publish(now);
            q.next_reset(now)
        });
        let until = a
            .retry_after
            .or(a.reset)
            .map(|r| now + r)
            .or(from_quota)
            .unwrap_or_else(|| self.next_day(now));
        l.quota_rejections.fetch_add(1, Ordering::Relaxed);
        self.rest_until(until.max(now), RestReason::Quota);
    }

    /// Counts a call turned away from this provider for its rate or quota.
    pub fn count_holdback(&self, holdback: &Holdback) {
        let l = &self.limits;
        match holdback {
            Holdback::Rate { .. }
            | Holdback::Rest {
                reason: RestReason::RateHeaders,
                ..
            } => l.rate_limited.fetch_add(1, Ordering::Relaxed),
            Holdback::Quota { .. }
            | Holdback::Rest {
                reason: RestReason::Quota,
                ..
            } => l.quota_rejections.fetch_add(1, Ordering::Relaxed),
            Holdback::Rest { .. } => 0,
        };
    }

    pub fn view(&self, now: Duration) -> AllowanceView {
        let l = &self.limits;
        let left = l.announced_left.load(Ordering::Acquire);
        AllowanceView {
            rate: l.rate.as_ref().map(|r| r.left(now)).unwrap_or_default(),
            quota: l.quota.as_ref().map(|q| q.uses(now)).unwrap_or_default(),
            rate_limited: l.rate_limited.load(Ordering::Relaxed),
            quota_rejections: l.quota_rejections.load(Ordering::Relaxed),
            // A quota used up for every request is a rest like a quota answer's.
            resting: self
                .rest(now)
                .map(|(until, reason)| (reason, until))
                .or_else(|| {
                    let until = l.published.quota_until[0].load(Ordering::Acquire);
                    (until > now.as_nanos() as u64)
                        .then(|| (RestReason::Quota, Duration::from_nanos(until)))
                }),
            announced_left: (left != UNKNOWN
                && l.announced_reset.get().is_none_or(|reset| now < reset))
            .then_some(left as u64),
        }
    }

    /// What the state file keeps: quota counts and rate arrival times.
    pub fn saved(&self, now: Duration) -> (Vec<QuotaUse>, Vec<(&'static str, Duration)>) {
        let l = &self.limits;
        (
            l.quota.as_ref().map(|q| q.uses(now)).unwrap_or_default(),
            l.rate
                .as_ref()
                .map(|r| r.arrival_times())
                .unwrap_or_default(),
        )
    }

    /// Restores a quota count made in the stretch now running.
    pub fn restore_quota(&self, period: Period, used: u64, started_unix: u64, now: Duration) {
        if let Some(q) = &self.limits.quota {
            let _held = self.limits.lock.lock();
            q.restore(period, used, started_unix, now);
            self.limits.publish(now);
        }
    }

    /// Restores a rate window's arrival time (clock time).
    pub fn restore_rate(&self, window: &str, tat: Duration) {
        if let Some(r) = &self.limits.rate {
            let _held = self.limits.lock.lock();
            r.restore(window, tat);
            self.limits.publish(self.clock.now());
        }
    }

    /// Clock time at which the provider's next day begins.
    fn next_day(&self, now: Duration) -> Duration {
        let unix = self.unix(now);
        let (_, end) = Period::Day.bounds(unix.as_secs(), self.day_starts);
        now + Duration::from_secs(end).saturating_sub(unix)
    }

    /// The Unix time of a clock reading.
    pub fn unix(&self, at: Duration) -> Duration {
        self.clock
            .to_system(at)
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// How long a provider rests when its headers say nothing is left but not when it resets.
const NO_RESET_REST: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests;
