//! A provider's rate limits over the fleet: GCRA in Redis, with short leases.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::FleetLink;

/// The rate script: GCRA over the fleet, on Redis's clock. Each key holds its window's
/// theoretical arrival time in milliseconds; a grant moves it `spacing` per token, and no
/// key may run more than `slack` ahead of now. Answers `{granted, ms until one is due}`.
const RATE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local grant = tonumber(ARGV[1])
local tats = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local spacing, slack = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  tats[i] = tat
  local g = math.floor((now + slack - tat) / spacing)
  if g < grant then grant = g end
  local w = tat + spacing - slack - now
  if w > wait then wait = w end
end
if grant <= 0 then return {0, math.ceil(wait)} end
for i, key in ipairs(KEYS) do
  local spacing = tonumber(ARGV[2 * i])
  local tat = tats[i] + grant * spacing
  redis.call('SET', key, tostring(tat), 'PX', math.ceil(tat - now) + 1000)
end
return {grant, 0}
"#;

/// Where a spent rate token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateToken {
    Leased,
    /// From this process's own limiter of `limit / expected_size`, while Redis is away.
    Alone,
}

/// One provider's rate limits over the fleet.
pub(crate) struct FleetRate {
    link: Arc<FleetLink>,
    keys: Vec<String>,
    /// Per key: milliseconds between calls, and how far ahead of now it may be taken.
    pacing: Vec<(f64, f64)>,
    /// Tokens per lease: what the fleet's share of the tightest limit spends in `sync_ms`,
    /// at most `lease`.
    want: u64,
    script: redis::Script,
    /// Leased tokens and until when they may be spent (a late token would burst).
    leased: Mutex<(u64, Instant)>,
    /// Clock nanoseconds before which Redis said no token is due: calls until then are
    /// turned away without asking again.
    refused_until: AtomicU64,
    /// The process's share of the limits, for while Redis is away.
    alone: crate::policy::rate::RateLimiter,
}

impl FleetRate {
    /// `None` when the provider has no rate limit.
    pub fn join(
        link: &Arc<FleetLink>,
        service: &str,
        provider: &str,
        config: &crate::foundation::config::RateConfig,
        reserve: f64,
    ) -> Option<Arc<FleetRate>> {
        let expected = link.config.expected_size.max(1);
        let windows = [
            ("per_second", 1_000.0, config.per_second),
            ("per_minute", 60_000.0, config.per_minute),
            ("per_hour", 3_600_000.0, config.per_hour),
        ];
        let ns = &link.config.namespace;
        let mut keys = Vec::new();
        let mut pacing = Vec::new();
        let mut want = link.config.lease.max(1);
        let sync_ms = link.config.sync.as_millis() as f64;
        for (name, window_ms, limit) in windows.into_iter().filter(|w| w.2 > 0) {
            let burst = config.burst.clamp(1, limit);
            let spacing = window_ms / (limit - burst + 1) as f64;
            let share = (sync_ms / spacing / expected as f64).floor() as u64;
            want = want.min(share.max(1));
            keys.push(format!("{{{ns}:{service}:{provider}}}:rate:{name}"));
            pacing.push((spacing, spacing * burst as f64));
        }
        if keys.is_empty() {
            return None;
        }
        // The slack lets a lease be taken ahead; the burst's own slack stays in it.
        for p in &mut pacing {
            p.1 = p.1.max(p.0 * want as f64);
        }
        let mut share = config.clone();
        for limit in [
            &mut share.per_second,
            &mut share.per_minute,
            &mut share.per_hour,
        ] {
            if *limit > 0 {
                *limit = (*limit / expected).max(1);
            }
        }
        share.burst = share.burst.min(share.per_second.max(1));
        let alone = crate::policy::rate::RateLimiter::new(&share, reserve)?;
        Some(Arc::new(FleetRate {
            link: link.clone(),
            keys,
            pacing,
            want,
            script: redis::Script::new(RATE_SCRIPT),
            leased: Mutex::new((0, Instant::now())),
            refused_until: AtomicU64::new(0),
            alone,
        }))
    }

    /// One call's token at clock time `now`: leased, from Redis, or alone while Redis is
    /// away. `Err(due)`: the fleet's rate lets the next call go then. Call under the
    /// allowance's lock.
    pub fn take(&self, now: Duration, urgent: bool) -> Result<RateToken, Option<Duration>> {
        if self.link.connected.load(Ordering::Acquire) {
            let refused_until = self.refused_until.load(Ordering::Acquire);
            if (now.as_nanos() as u64) < refused_until {
                return Err(Some(Duration::from_nanos(refused_until)));
            }
            {
                let mut leased = self.leased.lock();
                if leased.0 > 0 && Instant::now() < leased.1 {
                    leased.0 -= 1;
                    return Ok(RateToken::Leased);
                }
            }
            match self.ask() {
                Some((granted, _)) if granted > 0 => {
                    let valid = Instant::now() + self.link.config.sync;
                    *self.leased.lock() = (granted as u64 - 1, valid);
                    return Ok(RateToken::Leased);
                }
                Some((_, wait_ms)) => {
                    let due = now + Duration::from_millis(wait_ms.max(1));
                    self.refused_until
                        .store(due.as_nanos() as u64, Ordering::Release);
                    return Err(Some(due));
                }
                None => {}
            }
        }
        self.alone.take(now, urgent).map(|_| RateToken::Alone)
    }

    /// Gives back a token of a call never sent, taken at clock time `at`.
    pub fn refund(&self, token: RateToken, at: Duration) {
        match token {
            RateToken::Leased => self.leased.lock().0 += 1,
            RateToken::Alone => self.alone.refund(at),
        }
    }

    fn ask(&self) -> Option<(i64, u64)> {
        let mut call = self.script.prepare_invoke();
        for key in &self.keys {
            call.key(key);
        }
        call.arg(self.want);
        for (spacing, slack) in &self.pacing {
            call.arg(*spacing).arg(*slack);
        }
        self.link.invoke(&call)
    }
}
