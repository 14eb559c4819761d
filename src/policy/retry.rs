//! What happens after a failed attempt: which provider next, how long to back off before
//! trying one again, and whether the service may afford another try at all.

use std::time::Duration;

use parking_lot::Mutex;

use crate::foundation::clock::SharedClock;
use crate::foundation::config::RetryConfig;
use crate::policy::buckets::Buckets;

/// How much the configured `reliability` weighs against live counts, in calls.
const PRIOR_WEIGHT: f64 = 20.0;

/// A provider's expected success rate: live calls in the breaker's window, blended with
/// the configured prior as if it were `PRIOR_WEIGHT` earlier calls.
pub(crate) fn success_score(reliability: f64, calls: u64, failures: u64) -> f64 {
    let successes = calls.saturating_sub(failures) as f64;
    (successes + reliability * PRIOR_WEIGHT) / (calls as f64 + PRIOR_WEIGHT)
}

/// The wait before round `round` (1 for the first repeat) of attempts over providers
/// already tried: exponential, capped, with "equal jitter" (half fixed, half random), so
/// callers that failed together do not come back together. `unit` is uniform in [0, 1).
pub(crate) fn backoff(retry: &RetryConfig, round: u32, unit: f64) -> Duration {
    let exp = retry
        .backoff_multiplier
        .powi(round.saturating_sub(1).min(64) as i32);
    let full = (retry.base_delay_ms as f64 * exp).min(retry.max_backoff_ms as f64);
    Duration::from_secs_f64(full / 1000.0 * (0.5 + 0.5 * unit.clamp(0.0, 1.0)))
}

/// Retries allowed as a share of recent requests, plus a floor per second.
///
/// Each request deposits `budget_ratio` of a retry; each retry withdraws one; deposits
/// older than `budget_window_ms` expire; `budget_min_per_sec` retries a second are always
/// allowed. Finagle's `RetryBudget` works the same way with the same defaults (20% over
/// 10 s, 10 a second). Envoy's budget limits retries in flight to a share of requests in
/// flight instead, which caps concurrency but not the rate a dying upstream set sees.
pub(crate) struct RetryBudget {
    ratio: f64,
    floor_per_sec: f64,
    window: Duration,
    clock: SharedClock,
    /// Requests and retries per tenth of the window.
    counts: Mutex<Buckets<2, SLICES>>,
}

const SLICES: usize = 10;
/// The counts of a slice.
const REQUESTS: usize = 0;
const RETRIES: usize = 1;

impl RetryBudget {
    pub fn new(retry: &RetryConfig, clock: SharedClock) -> RetryBudget {
        RetryBudget {
            ratio: retry.budget_ratio,
            floor_per_sec: f64::from(retry.budget_min_per_sec),
            window: Duration::from_millis(retry.budget_window_ms),
            clock,
            counts: Mutex::new(Buckets::new(
                Duration::from_millis(retry.budget_window_ms) / SLICES as u32,
            )),
        }
    }

    /// Counts a caller's request, admitted at clock time `now`.
    pub fn deposit(&self, now: Duration) {
        self.counts.lock().bump(now, REQUESTS);
    }

    /// Takes one retry if the budget has it.
    pub fn try_withdraw(&self) -> bool {
        let now = self.clock.now();
        let mut counts = self.counts.lock();
        let [requests, retries] = counts.sum(now, SLICES as u64, true);
        let allowed = self.ratio * requests as f64 + self.floor_per_sec * self.window.as_secs_f64();
        if (retries as f64) < allowed {
            counts.bump(now, RETRIES);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::clock::ManualClock;

    #[test]
    fn backoff_grows_caps_and_jitters_within_half() {
        let retry = RetryConfig {
            base_delay_ms: 100,
            backoff_multiplier: 2.0,
            max_backoff_ms: 1_000,
            ..RetryConfig::default()
        };
        let ms = |round, unit| backoff(&retry, round, unit).as_millis();
        assert_eq!((ms(1, 0.0), ms(1, 0.999_999)), (50, 99));
        assert_eq!((ms(2, 0.0), ms(3, 0.0), ms(4, 0.0)), (100, 200, 400));
        assert_eq!(
            (ms(5, 0.0), ms(50, 0.0)),
            (500, 500),
            "capped at max_backoff_ms"
        );
    }

    #[test]
    fn scores_blend_prior_and_live_counts() {
        assert_eq!(success_score(0.9, 0, 0), 0.9);
        assert!((success_score(1.0, 20, 20) - 0.5).abs() < 1e-12);
        assert!(success_score(0.99, 100, 1) > success_score(0.999, 100, 10));
    }

    #[test]
    fn budget_allows_a_share_plus_a_floor_and_forgets_old_requests() {
        let clock = ManualClock::shared();
        let retry = RetryConfig {
            budget_ratio: 0.2,
            budget_min_per_sec: 1,
            budget_window_ms: 10_000,
            ..RetryConfig::default()
        };
        let budget = RetryBudget::new(&retry, clock.clone());
        for _ in 0..100 {
            budget.deposit(Duration::ZERO);
        }
        // 20% of 100 plus 1/s over 10 s.
        let granted = (0..1000).take_while(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 30);
        clock.advance(Duration::from_secs(10));
        let granted = (0..1000).take_while(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 10, "old requests expired; only the floor is left");
    }
}
