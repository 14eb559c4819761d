//! Events for `on_event`: one per attempt, failover, circuit change, rest and quota
//! notice, posted without blocking into a bounded buffer and delivered on a thread of
//! their own. A subscriber too slow for the traffic loses events, counted, never time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::foundation::clock::SharedClock;

/// Events waiting for delivery at most; past this they are dropped and counted.
pub(crate) const BUFFER: usize = 4096;

/// One event, as `on_event` subscribers get it (JSON for C and Python).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When it happened, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub what: EventKind,
}

/// What an [`Event`] is about; `type` in its JSON.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// An attempt ended.
    Attempt {
        /// The request's service.
        service: String,
        /// The provider it went to.
        provider: String,
        /// 1 for a request's first attempt.
        attempt: u32,
        /// Whether it got an answer.
        ok: bool,
        /// The failure kind (`connect`, `timeout`, `status`, `tls`...), if it failed.
        kind: Option<&'static str>,
        /// The HTTP status, if there was one.
        status: Option<u16>,
        /// How long it took, in ms.
        elapsed_ms: f64,
        /// Whether it was a hedge (`hedge_after_ms`).
        hedge: bool,
    },
    /// A request went on to another provider after a failure.
    Failover {
        /// The request's service.
        service: String,
        /// The provider that failed.
        from: String,
        /// The one it went to.
        to: String,
    },
    /// A provider's circuit changed.
    Circuit {
        /// The provider.
        provider: String,
        /// `closed`, `open` or `half_open`.
        from: &'static str,
        /// `closed`, `open` or `half_open`.
        to: &'static str,
    },
    /// A provider started resting (its answer or headers said so, or its quota ran out).
    Rest {
        /// The provider.
        provider: String,
        /// `retry_after`, `rate_headers` or `quota`.
        reason: &'static str,
        /// How long it rests, in ms.
        ms: u64,
    },
    /// A provider answered that its quota is used up.
    Quota {
        /// The provider.
        provider: String,
        /// The HTTP status of that answer.
        status: Option<u16>,
    },
    /// Fleet mode: this process lost Redis and counts alone within its share
    /// (`connected` false), or joined again (true).
    Fleet {
        /// Whether quotas, rates and circuits are shared through Redis now.
        connected: bool,
    },
}

/// Where events are posted. Without a subscriber posting costs one atomic load.
pub(crate) struct EventBus {
    tx: Sender<Event>,
    on: AtomicBool,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl EventBus {
    pub fn new() -> (EventBus, Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::bounded(BUFFER);
        let bus = EventBus {
            tx,
            on: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        };
        (bus, rx)
    }

    /// Someone subscribed: events are made and posted from now on.
    pub fn switch_on(&self) {
        self.on.store(true, Ordering::Release);
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Posts the event `what` makes, if anyone listens; never blocks. `clock` and `now`
    /// date it.
    pub fn post(&self, clock: &SharedClock, now: Duration, what: impl FnOnce() -> EventKind) {
        if !self.is_on() {
            return;
        }
        let at = clock.to_system(now);
        let at_unix_ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let event = Event {
            at_unix_ms,
            what: what(),
        };
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.count_dropped(1),
        }
    }

    pub fn count_delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// (delivered, dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.delivered.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

/// Events a status server shows at most, the newest.
#[cfg(feature = "dashboard")]
pub(crate) const EVENT_LOG: usize = 200;

/// Of those, answered attempts at most: busy traffic must not push a circuit change or a
/// failover out of sight within a second.
#[cfg(feature = "dashboard")]
const ANSWERED_KEPT: usize = 50;

/// The last events, in two rings: answered attempts, and everything else.
#[cfg(feature = "dashboard")]
#[derive(Default)]
pub(crate) struct EventLog {
    answered: std::collections::VecDeque<Event>,
    notable: std::collections::VecDeque<Event>,
}

#[cfg(feature = "dashboard")]
impl EventLog {
    pub fn keep(&mut self, e: &Event) {
        let answered = matches!(e.what, EventKind::Attempt { ok: true, .. });
        let (ring, cap) = if answered {
            (&mut self.answered, ANSWERED_KEPT)
        } else {
            (&mut self.notable, EVENT_LOG)
        };
        if ring.len() == cap {
            ring.pop_front();
        }
        ring.push_back(e.clone());
    }

    /// The newest [`EVENT_LOG`] of both, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        let mut all: Vec<Event> = self.answered.iter().chain(&self.notable).cloned().collect();
        all.sort_by_key(|e| e.at_unix_ms);
        let skip = all.len().saturating_sub(EVENT_LOG);
        all.split_off(skip)
    }
}
