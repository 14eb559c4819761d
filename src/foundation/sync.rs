//! The atomics and the lock of the hand-offs that a model checker verifies (a parked job
//! and a freed seat; a job's one outcome): the standard ones and parking_lot's normally,
//! loom's when built with `--cfg loom` (see `.ci/run`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicUsize};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicUsize};

/// A mutex that does not poison, with parking_lot's `lock()`.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(
    #[cfg(not(loom))] parking_lot::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    #[cfg(not(loom))]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock()
    }

    #[cfg(loom)]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        // A panic while locked ends the model run anyway.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
