//! Fleet mode: one calendar quota and one circuit per provider shared by every process
//! of a namespace, kept in Redis.
//!
//! Counts live in Redis and move only through one Lua script, which reads Redis's own
//! `TIME` (so the fleet shares one clock and one calendar) and keeps each counter in a
//! hash that expires when its day or month ends. A process takes tokens `lease` at a time
//! and spends them locally, so Redis is asked once per `lease` calls; when few are left
//! the script hands them out one by one, so none sit unused in a process while another
//! is refused. Redis unreachable or slow (every call has `timeout_ms`) never fails a
//! request: the process counts alone against `limit / expected_size`, tries Redis again
//! every `sync_ms`, and when it answers adds what was spent meanwhile.
//!
//! A circuit that opens or closes by one process's counts is published at once and read
//! by the others every `sync_ms`. Half-open probes of a provider belong to the process
//! holding its probe token (a key with an expiry), so the fleet sends a provider a
//! process's worth of probes per half-open period, not one per process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::foundation::calendar::Period;
use crate::foundation::config::{ResolvedFleet, ResolvedQuota};
use crate::policy::breaker::{CircuitShare, RemoteCircuit};

/// The one script: `take` grants up to `want` tokens if every counter has them, `add`
/// counts calls made while Redis was away (or, negative, gives back an unspent lease). Answers `{granted, seconds to the soonest
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

/// The most tokens one lease takes.
const MAX_LEASE: u64 = 1_000_000;

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
    circuits: Mutex<Vec<Weak<FleetCircuit>>>,
    /// Wakes the link's thread to publish a circuit's change now.
    wake: Sender<()>,
}

/// The link's thread: rejoins while degraded, keeps circuits in step while connected.
fn link_loop(link: &Weak<FleetLink>, woken: &Receiver<()>, sync: Duration) {
    loop {
        let _ = woken.recv_timeout(sync);
        // The balancer is gone with its link.
        let Some(link) = link.upgrade() else { return };
        if link.connected.load(Ordering::Acquire) {
            link.sync_circuits();
        } else {
            link.try_join();
        }
    }
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
        let (wake, woken) = crossbeam_channel::bounded(1);
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
            circuits: Mutex::new(Vec::new()),
            wake,
        });
        link.try_join();
        let weak = Arc::downgrade(&link);
        let sync = config.sync;
        let _ = std::thread::Builder::new()
            .name("switchyard-fleet".into())
            .spawn(move || link_loop(&weak, &woken, sync));
        link
    }

    /// Publishes this process's circuit changes and reads everyone's; the first read
    /// happens as circuits join, so a new process starts knowing what the fleet knows.
    fn sync_circuits(&self) {
        let circuits: Vec<Arc<FleetCircuit>> = self
            .circuits
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for circuit in &circuits {
            circuit.publish();
        }
        for circuit in &circuits {
            circuit.read();
        }
    }

    /// Runs one Redis command on the link's connection; `None` (and the link lost) when
    /// Redis does not answer in time.
    fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut held = self.connection.lock();
        let answer = cmd.query(held.as_mut()?);
        drop(held);
        match answer {
            Ok(value) => Some(value),
            Err(_) => {
                self.lose();
                None
            }
        }
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
            if alone > 0 && self.run(&quota, "add", alone as i64).is_none() {
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
    fn run(&self, quota: &FleetQuota, mode: &str, want: i64) -> Option<(i64, u64)> {
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
        let answer: redis::RedisResult<(i64, u64)> = call.invoke(connection);
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

/// A change of this process's circuit not yet published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    OpenUntil(u64),
    Closed,
}

/// One provider's circuit in the fleet.
pub(crate) struct FleetCircuit {
    link: Arc<FleetLink>,
    /// `open:<unix ms until>` or `closed:<unix ms>`, expiring when it no longer says
    /// anything.
    key: String,
    /// Held by the process that probes the provider now.
    probe_key: String,
    /// This process's probe token value.
    me: String,
    token_ttl: Duration,
    pending: Mutex<Option<Change>>,
    /// While this process holds the probe token: until when.
    probing_until: Mutex<Option<Instant>>,
    /// The last value read or written, so a change is applied once.
    last_seen: Mutex<Option<String>>,
    remote: RemoteCircuit,
}

impl FleetCircuit {
    /// Shares a provider's circuit; `open` is how long it stays open at first.
    pub fn join(
        link: &Arc<FleetLink>,
        service: &str,
        provider: &str,
        open: Duration,
        remote: RemoteCircuit,
    ) -> Arc<FleetCircuit> {
        let ns = &link.config.namespace;
        let tag = format!("{{{ns}:{service}:{provider}}}");
        let circuit = Arc::new(FleetCircuit {
            link: link.clone(),
            key: format!("{tag}:circuit"),
            probe_key: format!("{tag}:probe"),
            me: format!("{}-{:x}", std::process::id(), rand::random::<u64>()),
            token_ttl: open.max(link.config.sync * 5),
            pending: Mutex::new(None),
            probing_until: Mutex::new(None),
            last_seen: Mutex::new(None),
            remote,
        });
        link.circuits.lock().push(Arc::downgrade(&circuit));
        if link.connected.load(Ordering::Acquire) {
            circuit.read();
        }
        circuit
    }

    /// Writes the pending change, and keeps or gives back the probe token when it is ours.
    fn publish(&self) {
        let Some(change) = self.pending.lock().take() else {
            return;
        };
        let now = unix_ms();
        let (value, ttl) = match change {
            Change::OpenUntil(until) => (format!("open:{until}"), until.saturating_sub(now)),
            Change::Closed => (
                format!("closed:{now}"),
                (self.link.config.sync.as_millis() as u64 * 10).max(1000),
            ),
        };
        let mut set = redis::cmd("SET");
        set.arg(&self.key).arg(&value).arg("PX").arg(ttl.max(1));
        if self.link.command::<()>(&set).is_none() {
            // Redis is away: the change stays this process's own.
            return;
        }
        *self.last_seen.lock() = Some(value);
        let mut probing = self.probing_until.lock();
        if probing.is_none() {
            return;
        }
        // Our probes reopened it: the token stays ours through the next half-open
        // period (others would race for it while learning of the reopening). Our probes
        // closed it: the token goes back.
        let (script, keep) = match change {
            Change::OpenUntil(until) => (
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1",
                Some(Duration::from_millis(until.saturating_sub(now)) + self.token_ttl),
            ),
            Change::Closed => (
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
                None,
            ),
        };
        *probing = keep.map(|keep| Instant::now() + keep);
        drop(probing);
        let script = redis::Script::new(script);
        let mut call = script.prepare_invoke();
        call.key(&self.probe_key)
            .arg(&self.me)
            .arg(keep.map_or(1, |k| k.as_millis() as u64));
        let mut held = self.link.connection.lock();
        if let Some(connection) = held.as_mut() {
            if call.invoke::<i64>(connection).is_err() {
                drop(held);
                self.link.lose();
            }
        }
    }

    /// Applies another process's change, once.
    fn read(&self) {
        let Some(value) = self
            .link
            .command::<Option<String>>(redis::cmd("GET").arg(&self.key))
        else {
            return;
        };
        let mut last = self.last_seen.lock();
        if value == *last {
            return;
        }
        match value.as_deref().and_then(|v| v.split_once(':')) {
            Some(("open", until)) => {
                if let Ok(ms) = until.parse::<u64>() {
                    self.remote.opened(UNIX_EPOCH + Duration::from_millis(ms));
                }
            }
            Some(("closed", _)) => {
                self.remote.closed();
            }
            _ => {}
        }
        *last = value;
    }
}

impl CircuitShare for FleetCircuit {
    fn changed(&self, open_until: Option<SystemTime>) {
        let change = match open_until {
            Some(until) => Change::OpenUntil(
                until
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
            None => Change::Closed,
        };
        *self.pending.lock() = Some(change);
        let _ = self.link.wake.try_send(());
    }

    fn may_probe(&self) -> bool {
        if !self.link.connected.load(Ordering::Acquire) {
            return true;
        }
        let now = Instant::now();
        let mut probing = self.probing_until.lock();
        if probing.is_some_and(|until| now < until) {
            return true;
        }
        let ttl = self.token_ttl.as_millis() as u64;
        let mut take = redis::cmd("SET");
        take.arg(&self.probe_key)
            .arg(&self.me)
            .arg("NX")
            .arg("PX")
            .arg(ttl);
        match self.link.command::<Option<String>>(&take) {
            Some(Some(_)) => {
                *probing = Some(now + self.token_ttl);
                true
            }
            Some(None) => false,
            // Redis went away just now: probe as a process alone would.
            None => true,
        }
    }
}
