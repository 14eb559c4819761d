//! A provider's calendar quota over the fleet: leases from one Lua script on Redis's clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{FleetLink, MAX_LEASE};
use crate::foundation::calendar::Period;
use crate::foundation::config::ResolvedQuota;

/// The one script: `take` grants up to `want` tokens if every counter has them, `add`
/// counts calls made while Redis was away (or, negative, gives back an unspent lease). Answers `{granted, seconds to the soonest
/// reset}`.
pub(super) const SCRIPT: &str = r#"
local now = tonumber(redis.call('TIME')[1])
local mode, want, expected, off = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end
local day = math.floor((now - off) / 86400)
local grant = want
local spans = {}
local soonest = nil
for i, key in ipairs(KEYS) do
  local kind, limit = ARGV[3 + 2 * i], tonumber(ARGV[4 + 2 * i])
  local s, e = day, day + 1
  if kind == 'm' then
    local y, m = civil_from_days(day)
    local ny, nm = y, m + 1
    if m == 12 then ny, nm = y + 1, 1 end
    s, e = days_from_civil(y, m, 1), days_from_civil(ny, nm, 1)
  end
  s, e = s * 86400 + off, e * 86400 + off
  local held = redis.call('HMGET', key, 'start', 'used')
  local used = 0
  if tonumber(held[1]) == s then used = tonumber(held[2]) or 0 end
  if mode == 'take' then
    -- At most half of a fair share of what is left, so leases shrink as the count runs
    -- out and the last calls go one by one.
    local left = limit - used
    local g = math.max(math.min(want, math.floor(left / (2 * expected))), 1)
    if g > left then g = math.max(left, 0) end
    if g < grant then grant = g end
  end
  spans[i] = {s, e, used}
  if soonest == nil or e < soonest then soonest = e end
end
if grant ~= 0 then
  for i, key in ipairs(KEYS) do
    redis.call('HSET', key, 'start', spans[i][1], 'used', math.max(spans[i][3] + grant, 0))
    redis.call('EXPIREAT', key, spans[i][2])
  end
end
return {grant, (soonest or now) - now}
"#;

/// Where a spent token came from, so an unsent call can give it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// From this process's lease of the fleet's count.
    Leased,
    /// Counted alone while Redis was away; told to Redis when it is back.
    Alone,
}

/// What the fleet says about one more call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FleetTake {
    Granted(Token),
    /// The fleet's count is used up until its next reset (from now).
    UsedUp {
        resets_in: Duration,
    },
    /// Redis is away: the process counts alone, within its share.
    Alone,
}

/// One provider's quota in the fleet.
pub(crate) struct FleetQuota {
    link: Arc<FleetLink>,
    /// One Redis hash per counter; the braces put a provider's keys in one cluster slot.
    keys: Vec<String>,
    counters: Vec<(&'static str, u64)>,
    reset_offset: u64,
    /// Tokens taken from Redis and not yet spent.
    leased: AtomicU64,
    /// Calls made while Redis was away and not yet added to its count.
    spent_alone: AtomicU64,
    /// When the last lease was taken and how large it was: how fast this process spends.
    last_lease: Mutex<(Instant, u64)>,
}

impl Drop for FleetQuota {
    /// An unspent lease goes back to the fleet when the balancer ends.
    fn drop(&mut self) {
        let left = self.leased.swap(0, Ordering::AcqRel);
        if left > 0 && self.link.connected.load(Ordering::Acquire) {
            let _ = self
                .link
                .run(self, "add", -(left.min(i64::MAX as u64) as i64));
        }
    }
}

impl FleetQuota {
    /// `None` when the provider has no calendar quota.
    pub fn join(
        link: &Arc<FleetLink>,
        service: &str,
        provider: &str,
        quota: &ResolvedQuota,
    ) -> Option<Arc<FleetQuota>> {
        let ns = &link.config.namespace;
        let (keys, counters): (Vec<String>, Vec<(&'static str, u64)>) = [
            (Period::Day, "d", quota.per_day),
            (Period::Month, "m", quota.per_month),
        ]
        .into_iter()
        .filter(|(_, _, limit)| *limit > 0)
        .map(|(period, kind, limit)| {
            (
                format!("{{{ns}:{service}:{provider}}}:quota:{}", period.name()),
                (kind, limit),
            )
        })
        .unzip();
        if keys.is_empty() {
            return None;
        }
        let quota = Arc::new(FleetQuota {
            link: link.clone(),
            keys,
            counters,
            reset_offset: quota.reset.seconds(),
            leased: AtomicU64::new(0),
            spent_alone: AtomicU64::new(0),
            last_lease: Mutex::new((Instant::now(), 0)),
        });
        link.members.lock().push(Arc::downgrade(&quota));
        Some(quota)
    }

    /// Processes sharing the quota, as configured.
    pub fn expected_size(&self) -> u64 {
        self.link.config.expected_size
    }

    /// One call's token: from the lease, else from Redis. Call under the allowance's
    /// lock, which keeps the lease's count and Redis's in step.
    pub fn take(&self) -> FleetTake {
        if !self.link.connected.load(Ordering::Acquire) {
            return FleetTake::Alone;
        }
        if self
            .leased
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return FleetTake::Granted(Token::Leased);
        }
        let want = self.lease_wanted();
        match self.link.run(self, "take", want as i64) {
            Some((granted, resets_in)) if granted <= 0 => FleetTake::UsedUp {
                resets_in: Duration::from_secs(resets_in),
            },
            Some((granted, _)) => {
                let granted = granted as u64;
                *self.last_lease.lock() = (Instant::now(), granted);
                self.leased.fetch_add(granted - 1, Ordering::AcqRel);
                FleetTake::Granted(Token::Leased)
            }
            None => FleetTake::Alone,
        }
    }

    /// `lease` tokens, or as many as this process spends in `sync_ms` when that is more:
    /// a busy process asks Redis a few times a second, not once per `lease` calls.
    fn lease_wanted(&self) -> u64 {
        let lease = self.link.config.lease.max(1);
        let (at, granted) = *self.last_lease.lock();
        let lasted = at.elapsed().as_secs_f64().max(1e-6);
        let per_sync = granted as f64 / lasted * self.link.config.sync.as_secs_f64();
        (per_sync as u64).clamp(lease, MAX_LEASE)
    }

    /// Adds what was spent while Redis was away to its count; false if Redis did not answer.
    pub(super) fn add_spent_alone(&self) -> bool {
        let alone = self.spent_alone.swap(0, Ordering::AcqRel);
        if alone > 0 && self.link.run(self, "add", alone as i64).is_none() {
            self.spent_alone.fetch_add(alone, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Counts a call made alone.
    pub fn spend_alone(&self) {
        self.spent_alone.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives back a token of a call never sent.
    pub fn refund(&self, token: Token) {
        let counter = match token {
            Token::Leased => &self.leased,
            Token::Alone => &self.spent_alone,
        };
        match token {
            Token::Leased => counter.fetch_add(1, Ordering::AcqRel),
            Token::Alone => counter
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .unwrap_or(0),
        };
    }
}

impl FleetLink {
    /// Runs the script for one quota: `(granted, seconds to its soonest reset)`, or
    /// `None` when Redis did not answer in time.
    fn run(&self, quota: &FleetQuota, mode: &str, want: i64) -> Option<(i64, u64)> {
        let mut call = self.script.prepare_invoke();
        for key in &quota.keys {
            call.key(key);
        }
        call.arg(mode)
            .arg(want)
            .arg(self.config.expected_size)
            .arg(quota.reset_offset);
        for (kind, limit) in &quota.counters {
            call.arg(*kind).arg(*limit);
        }
        self.invoke(&call)
    }
}
