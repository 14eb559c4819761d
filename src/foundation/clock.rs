//! Time as the breaker, windows, budget, backoff and health logic see it.
//!
//! Those modules take a [`Clock`] so their unit tests step a [`ManualClock`] and are exact,
//! with no sleeps. Time is a [`Duration`] since the clock's origin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

pub(crate) trait Clock: Send + Sync + 'static {
    /// Time since this clock's origin.
    fn now(&self) -> Duration;

    /// The wall-clock time of a reading, for people.
    fn to_system(&self, at: Duration) -> SystemTime;
}

pub(crate) type SharedClock = Arc<dyn Clock>;

/// The monotonic system clock.
pub(crate) struct SystemClock {
    origin: Instant,
    wall_origin: SystemTime,
}

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock {
            origin: Instant::now(),
            wall_origin: SystemTime::now(),
        })
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn to_system(&self, at: Duration) -> SystemTime {
        self.wall_origin + at
    }
}

/// A clock that moves only when told to.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct ManualClock {
    nanos: AtomicU64,
}

#[cfg(test)]
impl ManualClock {
    pub fn shared() -> Arc<ManualClock> {
        Arc::new(ManualClock::default())
    }

    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    fn to_system(&self, at: Duration) -> SystemTime {
        SystemTime::UNIX_EPOCH + at
    }
}

/// A point in clock time stored in an atomic, as nanoseconds; 0 means "never".
#[derive(Debug, Default)]
pub(crate) struct AtomicTime(AtomicU64);

impl AtomicTime {
    pub fn set(&self, at: Duration) {
        self.0
            .store((at.as_nanos() as u64).max(1), Ordering::Release);
    }

    pub fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }
}
