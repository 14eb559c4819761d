//! Fleet mode: one calendar quota per provider shared by every process of a namespace,
//! kept in Redis.
//!
//! Counts live in Redis and move only through one Lua script, which reads Redis's own
//! `TIME` (so the fleet shares one clock and one calendar) and keeps each counter in a
//! hash that expires when its day or month ends. A process takes tokens `lease` at a time
//! and spends them locally, so Redis is asked once per `lease` calls; when few are left
//! the script hands them out one by one, so none sit unused in a process while another
//! is refused. Redis unreachable or slow (every call has `timeout_ms`) never fails a
//! request: the process counts alone against `limit / expected_size`, tries Redis again
//! every `sync_ms`, and when it answers adds what was spent meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::foundation::calendar::Period;
use crate::foundation::config::{ResolvedFleet, ResolvedQuota};

/// The one script: `take` grants up to `want` tokens if every counter has them, `add`
/// counts calls made while Redis was away. Answers `{granted, seconds to the soonest
/// reset}`.
const SCRIPT: &str = r#"
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
    local left = limit - used
    local g = want
    if left < want * expected * 2 then g = 1 end
    if g > left then g = math.max(left, 0) end
    if g < grant then grant = g end
  end
  spans[i] = {s, e, used}
  if soonest == nil or e < soonest then soonest = e end
end
if grant > 0 then
  for i, key in ipairs(KEYS) do
    redis.call('HSET', key, 'start', spans[i][1], 'used', spans[i][3] + grant)
    redis.call('EXPIREAT', key, spans[i][2])
  end
end
return {grant, (soonest or now) - now}
"#;

/// A balancer's link to Redis, shared by its providers' quotas.
pub(crate) struct FleetLink {
    client: redis::Client,
    /// One connection: a process asks Redis once per `lease` calls.
    connection: Mutex<Option<redis::Connection>>,
    config: ResolvedFleet,
    script: redis::Script,
    connected: AtomicBool,
    /// Unix milliseconds since which Redis has been unreachable; 0 while connected.
    degraded_since_ms: AtomicU64,
    members: Mutex<Vec<Weak<FleetQuota>>>,
}

/// What a link shows in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FleetState {
    pub connected: bool,
    pub degraded_since_ms: Option<u64>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FleetLink {
    /// Connects if Redis answers; otherwise starts degraded and keeps trying every
    /// `sync_ms` on a thread of its own, which ends with the link.
    pub fn start(config: &ResolvedFleet) -> Arc<FleetLink> {
        let link = Arc::new(FleetLink {
            // The URL was checked at load; a URL redis refuses all the same stays degraded.
            client: redis::Client::open(config.redis_url.as_str())
                .unwrap_or_else(|_| redis::Client::open("redis://127.0.0.1:1").expect("valid")),
            connection: Mutex::new(None),
            config: config.clone(),
            script: redis::Script::new(SCRIPT),
            connected: AtomicBool::new(false),
            degraded_since_ms: AtomicU64::new(unix_ms().max(1)),
            members: Mutex::new(Vec::new()),
        });
        link.try_join();
        let weak = Arc::downgrade(&link);
        let sync = config.sync;
        let _ = std::thread::Builder::new()
            .name("switchyard-fleet".into())
            .spawn(move || loop {
                std::thread::sleep(sync);
                // The balancer is gone with its link.
                let Some(link) = weak.upgrade() else { return };
                if !link.connected.load(Ordering::Acquire) {
                    link.try_join();
                }
            });
        link
    }

    pub fn state(&self) -> FleetState {
        let since = self.degraded_since_ms.load(Ordering::Acquire);
        FleetState {
            connected: self.connected.load(Ordering::Acquire),
            degraded_since_ms: (since != 0).then_some(since),
        }
    }

    fn connect(&self) -> Option<redis::Connection> {
        let timeout = self.config.timeout;
        let c = self.client.get_connection_with_timeout(timeout).ok()?;
        c.set_read_timeout(Some(timeout)).ok()?;
        c.set_write_timeout(Some(timeout)).ok()?;
        Some(c)
    }

    /// Connects, adds what every quota spent alone, and only then counts as connected.
    fn try_join(&self) {
        let Some(connection) = self.connect() else {
            return;
        };
        *self.connection.lock() = Some(connection);
        let members: Vec<Arc<FleetQuota>> = self
            .members
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for quota in members {
            let alone = quota.spent_alone.swap(0, Ordering::AcqRel);
            if alone > 0 && self.run(&quota, "add", alone).is_none() {
                quota.spent_alone.fetch_add(alone, Ordering::AcqRel);
                return;
            }
        }
        self.degraded_since_ms.store(0, Ordering::Release);
        self.connected.store(true, Ordering::Release);
    }

    /// Marks Redis lost (a call failed or timed out).
    fn lose(&self) {
        *self.connection.lock() = None;
        if self.connected.swap(false, Ordering::AcqRel) {
            self.degraded_since_ms
                .store(unix_ms().max(1), Ordering::Release);
        }
    }

    /// Runs the script for one quota: `(granted, seconds to its soonest reset)`, or
    /// `None` when Redis did not answer in time.
    fn run(&self, quota: &FleetQuota, mode: &str, want: u64) -> Option<(u64, u64)> {
        let mut held = self.connection.lock();
        let connection = held.as_mut()?;
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
        let answer: redis::RedisResult<(u64, u64)> = call.invoke(connection);
        drop(held);
        match answer {
            Ok(answer) => Some(answer),
            Err(_) => {
                self.lose();
                None
            }
        }
    }
}

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
        match self.link.run(self, "take", self.link.config.lease.max(1)) {
            Some((0, resets_in)) => FleetTake::UsedUp {
                resets_in: Duration::from_secs(resets_in),
            },
            Some((granted, _)) => {
                self.leased.fetch_add(granted - 1, Ordering::AcqRel);
                FleetTake::Granted(Token::Leased)
            }
            None => FleetTake::Alone,
        }
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
