//! A provider's standing in active health checks: `retries` failed checks in a row mark
//! it down; one success marks it up. The checks themselves run in the engine.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct HealthState {
    down: AtomicBool,
    failures_in_a_row: AtomicU32,
    checks: AtomicU64,
    passed: AtomicU64,
}

impl HealthState {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Records a check; returns the new state when it changed (true = down).
    pub fn record(&self, ok: bool, retries: u32) -> Option<bool> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.passed.fetch_add(1, Ordering::Relaxed);
            self.failures_in_a_row.store(0, Ordering::Relaxed);
            return self.down.swap(false, Ordering::AcqRel).then_some(false);
        }
        let run = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if run >= retries.max(1) && !self.down.swap(true, Ordering::AcqRel) {
            return Some(true);
        }
        None
    }

    /// Share of checks passed; `None` before the first check.
    pub fn uptime(&self) -> Option<f64> {
        let checks = self.checks.load(Ordering::Relaxed);
        (checks > 0).then(|| self.passed.load(Ordering::Relaxed) as f64 / checks as f64)
    }

    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_retries_failures_in_a_row_up_after_one_success() {
        let h = HealthState::default();
        assert_eq!(h.record(false, 2), None);
        assert_eq!(h.record(false, 2), Some(true));
        assert!(h.is_down());
        assert_eq!(h.record(false, 2), None);
        assert_eq!(h.record(true, 2), Some(false));
        assert!(!h.is_down());
        assert_eq!(h.uptime(), Some(0.25));
    }
}
