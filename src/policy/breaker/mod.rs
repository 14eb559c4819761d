//! A provider's circuit breaker: closed, open, half-open, on an injected clock.
//!
//! Closed, it opens when `failure_threshold` attempts fail in a row, or when inside the
//! rolling window (time-based, or the last `window_calls` calls) at least `minimum_calls`
//! ended and the share of failures, or of slow calls, reaches its threshold. Open, it
//! refuses every attempt for the open time; then half-open, it lets `half_open_max_calls`
//! probes through at a time: `success_threshold` successes close it, one failure opens it
//! again for a longer time (`open_backoff_multiplier`, capped by `max_open_ms`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::foundation::clock::SharedClock;
use crate::foundation::config::BreakerConfig;
use crate::policy::buckets::Buckets;

/// The three states of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Traffic flows; failures are counted.
    Closed,
    /// Traffic is refused without touching the network.
    Open,
    /// A few probes test whether the provider recovered.
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half_open`.
    pub fn name(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> CircuitState {
        match v {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }
}

/// A circuit changed state; delivered to listeners added with
/// [`crate::Balancer::on_circuit_change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitEvent {
    /// The provider's service.
    pub service: String,
    /// The provider.
    pub provider: String,
    /// The state it left.
    pub from: CircuitState,
    /// The state it entered.
    pub to: CircuitState,
    /// When.
    pub at: SystemTime,
}

/// A change of state, for listeners and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
}

/// Leave to send one attempt. [`Breaker::record`] consumes it with the attempt's result;
/// dropped unused, it gives a half-open probe's place back, so none can leak.
pub(crate) struct Permit {
    /// For a half-open probe: the breaker, and which half-open period it belongs to.
    probe: Option<(Arc<Mutex<Inner>>, u64)>,
}

impl Permit {
    const CLOSED: Permit = Permit { probe: None };

    #[cfg(test)]
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("probe", &self.probe.is_some())
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((inner, period)) = self.probe.take() {
            inner.lock().end_probe(period);
        }
    }
}

/// A point-in-time view of one circuit.
#[derive(Debug, Clone, Serialize)]
pub struct CircuitInfo {
    /// The state now.
    pub state: CircuitState,
    /// Failures inside the current window.
    pub failures: u64,
    /// Successes inside the current window.
    pub successes: u64,
    /// Slow calls inside the current window.
    pub slow_calls: u64,
    /// Failures in a row, up to now.
    pub consecutive_failures: u32,
    /// Successes so far in half-open.
    pub half_open_successes: u32,
    /// When the last failure was recorded, in ms since the Unix epoch.
    #[serde(serialize_with = "ser_time")]
    pub last_failure: Option<SystemTime>,
    /// While open: when probes will be let through, in ms since the Unix epoch.
    #[serde(serialize_with = "ser_time")]
    pub next_attempt: Option<SystemTime>,
    /// Whether an operator forced the state.
    pub forced: bool,
    /// Times the circuit opened.
    pub opened: u64,
    /// Times it went half-open.
    pub half_opened: u64,
    /// Times it closed again.
    pub closed: u64,
}

fn ser_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        Some(d) => s.serialize_u64(d.as_millis() as u64),
        None => s.serialize_none(),
    }
}

pub(crate) struct Breaker {
    config: BreakerConfig,
    clock: SharedClock,
    /// The state, readable without the lock: the closed fast path takes no lock.
    state: Arc<AtomicU8>,
    inner: Arc<Mutex<Inner>>,
    /// Other processes this circuit is shared with (fleet mode), once joined.
    share: once_cell::sync::OnceCell<Arc<dyn CircuitShare>>,
}

/// What a circuit shares with other processes (fleet mode); made in a layer above.
pub(crate) trait CircuitShare: Send + Sync {
    /// By this process's own counts the circuit opened until `open_until`, or closed
    /// (`None`). Called under the breaker's lock: it must not block.
    fn changed(&self, open_until: Option<SystemTime>);
    /// Whether this process may send half-open probes now. Called under the lock on the
    /// probe path only, never while closed; bounded by the store's timeout.
    fn may_probe(&self) -> bool;
}

#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
/// A handle through which another process's change reaches this circuit.
pub(crate) struct RemoteCircuit {
    clock: SharedClock,
    state: Arc<AtomicU8>,
    inner: Arc<Mutex<Inner>>,
}

#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
impl RemoteCircuit {
    /// Another process opened it until `until`: opens here too (unless forced), or
    /// stays open at least as long.
    pub fn opened(&self, until: SystemTime) -> Option<Transition> {
        let now = self.clock.now();
        let left = until
            .duration_since(self.clock.to_system(now))
            .unwrap_or_default();
        if left.is_zero() {
            return None;
        }
        let mut inner = self.inner.lock();
        if inner.forced {
            return None;
        }
        inner.open_until = inner.open_until.max(now + left);
        set_state(&mut inner, &self.state, CircuitState::Open)
    }

    /// Another process's probes closed it: closes here too (unless forced).
    pub fn closed(&self) -> Option<Transition> {
        let mut inner = self.inner.lock();
        if inner.forced {
            return None;
        }
        inner.reopenings = 0;
        set_state(&mut inner, &self.state, CircuitState::Closed)
    }
}

struct Inner {
    /// Counts half-open periods, so a probe of an earlier one is not counted in this one.
    half_open_period: u64,
    state: CircuitState,
    consecutive_failures: u32,
    window: Window,
    open_until: Duration,
    /// Re-openings from half-open since the circuit last closed.
    reopenings: u32,
    forced: bool,
    probes_in_flight: u32,
    half_open_successes: u32,
    last_failure: Option<Duration>,
    transitions: [u64; 3],
}

impl Inner {
    /// A probe of half-open period `period` ended (or was never sent).
    fn end_probe(&mut self, period: u64) {
        if period == self.half_open_period {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }
}

impl Breaker {
    pub fn new(config: BreakerConfig, clock: SharedClock) -> Breaker {
        let window = Window::new(&config);
        Breaker {
            config,
            clock,
            state: Arc::new(AtomicU8::new(CircuitState::Closed as u8)),
            inner: Arc::new(Mutex::new(Inner {
                half_open_period: 0,
                state: CircuitState::Closed,
                consecutive_failures: 0,
                window,
                open_until: Duration::ZERO,
                reopenings: 0,
                forced: false,
                probes_in_flight: 0,
                half_open_successes: 0,
                last_failure: None,
                transitions: [0; 3],
            })),
            share: once_cell::sync::OnceCell::new(),
        }
    }

    /// Shares this circuit with other processes.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub fn share_with(&self, share: Arc<dyn CircuitShare>) {
        let _ = self.share.set(share);
    }

    /// How long the circuit stays open when it first opens.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub fn first_open_time(&self) -> Duration {
        Duration::from_millis(self.config.open_ms)
    }

    /// Where other processes' changes come in.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub fn remote(&self) -> RemoteCircuit {
        RemoteCircuit {
            clock: self.clock.clone(),
            state: self.state.clone(),
            inner: self.inner.clone(),
        }
    }

    /// Whether this process may probe: always, unless the fleet gives the probes of
    /// this provider to another process now.
    fn may_probe(&self) -> bool {
        self.share.get().is_none_or(|share| share.may_probe())
    }

    pub fn state(&self) -> CircuitState {
        CircuitState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether an attempt would be let through now (a hint for picking; no permit taken).
    pub fn is_available(&self) -> bool {
        match self.state() {
            CircuitState::Closed => true,
            CircuitState::Open => {
                let inner = self.inner.lock();
                !inner.forced && self.clock.now() >= inner.open_until
            }
            CircuitState::HalfOpen => {
                self.inner.lock().probes_in_flight < self.config.half_open_max_calls
            }
        }
    }

    /// Leave for one attempt, or `None` while open or when half-open probes are all out.
    pub fn try_acquire(&self) -> (Option<Permit>, Option<Transition>) {
        if self.state() == CircuitState::Closed {
            return (Some(Permit::CLOSED), None);
        }
        let mut inner = self.inner.lock();
        let mut transition = None;
        if inner.state == CircuitState::Open {
            if inner.forced || self.clock.now() < inner.open_until || !self.may_probe() {
                return (None, None);
            }
            transition = self.enter(&mut inner, CircuitState::HalfOpen);
        } else if inner.state == CircuitState::HalfOpen
            && inner.probes_in_flight < self.config.half_open_max_calls
            && !self.may_probe()
        {
            return (None, None);
        }
        match inner.state {
            CircuitState::Closed => (Some(Permit::CLOSED), transition),
            CircuitState::HalfOpen if inner.probes_in_flight < self.config.half_open_max_calls => {
                inner.probes_in_flight += 1;
                let probe = Some((self.inner.clone(), inner.half_open_period));
                (Some(Permit { probe }), transition)
            }
            _ => (None, transition),
        }
    }

    /// Records how a permitted attempt ended.
    pub fn record(&self, permit: Permit, failed: bool, elapsed: Duration) -> Option<Transition> {
        self.record_at(permit, failed, elapsed, self.clock.now())
    }

    /// [`Breaker::record`] for an attempt that ended at clock time `now`.
    pub fn record_at(
        &self,
        mut permit: Permit,
        failed: bool,
        elapsed: Duration,
        now: Duration,
    ) -> Option<Transition> {
        let slow = self.config.slow_call_ms > 0
            && elapsed >= Duration::from_millis(self.config.slow_call_ms);
        let mut inner = self.inner.lock();
        let probe = permit.probe.take().map(|(_, period)| period);
        if let Some(period) = probe {
            inner.end_probe(period);
        }
        if failed {
            inner.last_failure = Some(now);
        }
        match inner.state {
            CircuitState::Closed => {
                inner.window.record(now, failed, slow);
                if failed {
                    inner.consecutive_failures += 1;
                } else {
                    inner.consecutive_failures = 0;
                }
                if self.should_open(&mut inner, now) {
                    inner.open_until = now + self.open_time(0);
                    return self.enter(&mut inner, CircuitState::Open);
                }
                None
            }
            CircuitState::HalfOpen if probe.is_some() => {
                // A provider that answers, but too slowly, has not recovered.
                if failed || slow {
                    inner.reopenings += 1;
                    inner.open_until = now + self.open_time(inner.reopenings);
                    self.enter(&mut inner, CircuitState::Open)
                } else {
                    inner.half_open_successes += 1;
                    if inner.half_open_successes >= self.config.success_threshold {
                        inner.reopenings = 0;
                        self.enter(&mut inner, CircuitState::Closed)
                    } else {
                        None
                    }
                }
            }
            // Attempts let through before the circuit opened, ending late: nothing to decide.
            _ => None,
        }
    }

    fn should_open(&self, inner: &mut Inner, now: Duration) -> bool {
        if inner.forced {
            return false;
        }
        if inner.consecutive_failures >= self.config.failure_threshold {
            return true;
        }
        // Both rate thresholds are above zero.
        if !inner.window.may_hold_bad(now) {
            return false;
        }
        let (calls, failures, slow) = inner.window.totals(now);
        if calls < u64::from(self.config.minimum_calls) {
            return false;
        }
        let rate = |n: u64| n as f64 / calls as f64;
        rate(failures) >= self.config.failure_rate_threshold
            || (self.config.slow_call_ms > 0 && rate(slow) >= self.config.slow_call_rate_threshold)
    }

    fn open_time(&self, reopenings: u32) -> Duration {
        let base = self.config.open_ms as f64;
        let grown = base
            * self
                .config
                .open_backoff_multiplier
                .powi(reopenings.min(64) as i32);
        let capped = grown.min(self.config.max_open_ms.max(self.config.open_ms) as f64);
        Duration::from_millis(capped as u64)
    }

    /// Moves to `to` by this process's counts, and tells the fleet of an opening or a
    /// closing (an operator's forced opening stays this process's own).
    fn enter(&self, inner: &mut Inner, to: CircuitState) -> Option<Transition> {
        let transition = set_state(inner, &self.state, to)?;
        if let Some(share) = self.share.get().filter(|_| !inner.forced) {
            match to {
                CircuitState::Open => share.changed(Some(self.clock.to_system(inner.open_until))),
                CircuitState::Closed => share.changed(None),
                CircuitState::HalfOpen => {}
            }
        }
        Some(transition)
    }

    /// Opens the circuit until [`Breaker::force_close`] or [`Breaker::reset`].
    pub fn force_open(&self) -> Option<Transition> {
        let mut inner = self.inner.lock();
        inner.forced = true;
        self.enter(&mut inner, CircuitState::Open)
    }

    /// Closes the circuit now; it opens again by the usual rules.
    pub fn force_close(&self) -> Option<Transition> {
        let mut inner = self.inner.lock();
        inner.forced = false;
        inner.reopenings = 0;
        self.enter(&mut inner, CircuitState::Closed)
    }

    /// Closes the circuit and forgets every count.
    pub fn reset(&self) -> Option<Transition> {
        let mut inner = self.inner.lock();
        inner.forced = false;
        inner.reopenings = 0;
        inner.last_failure = None;
        let t = self.enter(&mut inner, CircuitState::Closed);
        inner.consecutive_failures = 0;
        inner.window.clear();
        t
    }

    /// Calls and failures inside the window, for failover ordering.
    pub fn window_totals(&self) -> (u64, u64) {
        let now = self.clock.now();
        let (calls, failures, _) = self.inner.lock().window.totals(now);
        (calls, failures)
    }

    pub fn info(&self) -> CircuitInfo {
        let now = self.clock.now();
        let inner = self.inner.lock();
        let (calls, failures, slow) = inner.window.totals(now);
        CircuitInfo {
            state: inner.state,
            failures,
            successes: calls - failures,
            slow_calls: slow,
            consecutive_failures: inner.consecutive_failures,
            half_open_successes: inner.half_open_successes,
            last_failure: inner.last_failure.map(|t| self.clock.to_system(t)),
            next_attempt: (inner.state == CircuitState::Open && !inner.forced)
                .then(|| self.clock.to_system(inner.open_until)),
            forced: inner.forced,
            opened: inner.transitions[CircuitState::Open as usize],
            half_opened: inner.transitions[CircuitState::HalfOpen as usize],
            closed: inner.transitions[CircuitState::Closed as usize],
        }
    }
}

/// Moves to `to`, resetting what the new state starts from.
fn set_state(inner: &mut Inner, state: &AtomicU8, to: CircuitState) -> Option<Transition> {
    let from = inner.state;
    if from == to {
        return None;
    }
    inner.state = to;
    inner.transitions[to as usize] += 1;
    match to {
        CircuitState::Closed => {
            inner.consecutive_failures = 0;
            inner.window.clear();
        }
        CircuitState::HalfOpen => {
            inner.half_open_successes = 0;
            inner.probes_in_flight = 0;
            inner.half_open_period += 1;
        }
        CircuitState::Open => {}
    }
    state.store(to as u8, Ordering::Release);
    Some(Transition { from, to })
}

/// The rolling window of the rate rules: time buckets, or the last N calls.
enum Window {
    Time {
        /// Calls, failures and slow calls per tenth of `span`.
        buckets: Box<Buckets<3, TIME_BUCKETS>>,
        span: Duration,
        /// When the last failed or slow call was recorded.
        last_bad: Option<Duration>,
    },
    Count {
        ring: Vec<u8>,
        next: usize,
        filled: usize,
        /// Live entries that failed, and that were slow: kept as entries come and go.
        failures: u64,
        slow: u64,
    },
}

const TIME_BUCKETS: usize = 10;
const FAILED: u8 = 1;
const SLOW: u8 = 2;

impl Window {
    fn new(config: &BreakerConfig) -> Window {
        if config.window_calls > 0 {
            Window::Count {
                ring: vec![0; config.window_calls as usize],
                next: 0,
                filled: 0,
                failures: 0,
                slow: 0,
            }
        } else {
            let span = Duration::from_millis(config.window_ms);
            Window::Time {
                buckets: Box::new(Buckets::new(span.div_f64(TIME_BUCKETS as f64))),
                span,
                last_bad: None,
            }
        }
    }

    fn record(&mut self, now: Duration, failed: bool, slow: bool) {
        match self {
            Window::Time {
                buckets, last_bad, ..
            } => {
                buckets.add(now, [1, u64::from(failed), u64::from(slow)]);
                if failed || slow {
                    *last_bad = Some(now);
                }
            }
            Window::Count {
                ring,
                next,
                filled,
                failures,
                slow: slows,
            } => {
                let entry = if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 };
                // Before the ring is full, the entry replaced is an unused zero.
                let leaving = std::mem::replace(&mut ring[*next], entry);
                let has = |entry: u8, flag: u8| u64::from(entry & flag != 0);
                *failures = *failures + has(entry, FAILED) - has(leaving, FAILED);
                *slows = *slows + has(entry, SLOW) - has(leaving, SLOW);
                *next = (*next + 1) % ring.len();
                *filled = (*filled + 1).min(ring.len());
            }
        }
    }

    /// Whether a failed or slow call may be inside the window: without one, no rate can
    /// open the circuit, and a healthy provider's every answer need not sum the window.
    fn may_hold_bad(&self, now: Duration) -> bool {
        match self {
            Window::Time { span, last_bad, .. } => {
                last_bad.is_some_and(|at| now.saturating_sub(at) < *span)
            }
            Window::Count { failures, slow, .. } => *failures > 0 || *slow > 0,
        }
    }

    /// Calls, failures and slow calls inside the window.
    fn totals(&self, now: Duration) -> (u64, u64, u64) {
        match self {
            Window::Time { buckets, .. } => {
                let [calls, failures, slow] = buckets.sum(now, TIME_BUCKETS as u64, true);
                (calls, failures, slow)
            }
            Window::Count {
                filled,
                failures,
                slow,
                ..
            } => (*filled as u64, *failures, *slow),
        }
    }

    fn clear(&mut self) {
        match self {
            Window::Time {
                buckets, last_bad, ..
            } => {
                buckets.clear();
                *last_bad = None;
            }
            Window::Count {
                ring,
                next,
                filled,
                failures,
                slow,
            } => {
                ring.fill(0);
                (*next, *filled, *failures, *slow) = (0, 0, 0, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests;
