//! Counts the requests under way, so that shutdown can wait for them to end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub(crate) struct Activity {
    count: AtomicUsize,
    lock: Mutex<()>,
    idle: Condvar,
}

/// Held by every job; dropping it marks the request ended.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Activity>);

impl Activity {
    pub fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Blocks until no request is under way or `until` passes; true when idle.
    pub fn wait_idle(&self, until: Instant) -> bool {
        let mut guard = self.lock.lock();
        while self.count() > 0 {
            if self.idle.wait_until(&mut guard, until).timed_out() {
                return self.count() == 0;
            }
        }
        true
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Taking the lock orders this with a waiter between its check and its wait.
            let _guard = self.0.lock.lock();
            self.0.idle.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn waiting_for_idle_ends_when_the_last_request_does_or_at_the_limit() {
        let activity = Arc::new(Activity::default());
        assert!(activity.wait_idle(Instant::now()));
        let guard = activity.enter();
        assert!(!activity.wait_idle(Instant::now() + Duration::from_millis(5)));
        let ender = std::thread::spawn(move || drop(guard));
        assert!(activity.wait_idle(Instant::now() + Duration::from_secs(10)));
        ender.join().unwrap();
        assert_eq!(activity.count(), 0);
    }
}
