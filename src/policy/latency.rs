//! Latency averages of one provider: a time-decayed EWMA and Finagle's peak EWMA.

use std::time::Duration;

use parking_lot::Mutex;

/// How fast latency averages forget: a sample's weight halves in about 0.7 tau.
const TAU: Duration = Duration::from_secs(1);

/// A provider's recent latency: a time-decayed EWMA and Finagle's peak EWMA, in ms.
#[derive(Debug, Default)]
pub(crate) struct LatencyEwma(Mutex<EwmaState>);

#[derive(Debug, Default, Clone, Copy)]
struct EwmaState {
    ewma: f64,
    peak: f64,
    at: Duration,
    samples: u64,
}

impl LatencyEwma {
    /// Records a successful attempt's latency at clock time `now`.
    pub fn record(&self, latency: Duration, now: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        let mut s = self.0.lock();
        if s.samples == 0 {
            *s = EwmaState {
                ewma: ms,
                peak: ms,
                at: now,
                samples: 1,
            };
            return;
        }
        let dt = now.saturating_sub(s.at).as_secs_f64();
        s.samples += 1;
        // At first a plain mean, so one slow first call (a new connection) is not
        // remembered for a whole tau; then time-weighted.
        let keep = decay(dt).min(1.0 - 1.0 / s.samples as f64);
        s.ewma = s.ewma * keep + ms * (1.0 - keep);
        // The peak jumps up at once and decays like the plain average.
        s.peak = if ms > s.peak {
            ms
        } else {
            s.peak * keep + ms * (1.0 - keep)
        };
        s.at = now;
    }

    /// (ewma ms, peak ewma ms, samples).
    pub fn read(&self) -> (f64, f64, u64) {
        let s = *self.0.lock();
        (s.ewma, s.peak, s.samples)
    }

    /// The peak EWMA as Finagle reads it: decayed by the time since the last sample, so
    /// a provider that stopped getting traffic because it was slow is probed again.
    pub fn decayed_peak(&self, now: Duration) -> f64 {
        let s = *self.0.lock();
        let dt = now.saturating_sub(s.at).as_secs_f64();
        s.peak * decay(dt)
    }
}

/// A sample's remaining weight `dt` seconds on: e^(-dt/tau). Samples a millisecond apart
/// or less, the common case under load, take four terms of the series (off by < 1e-13)
/// instead of a call into libm and its tables on every record.
fn decay(dt: f64) -> f64 {
    let x = dt / TAU.as_secs_f64();
    if x <= 1e-3 {
        1.0 - x * (1.0 - x * (0.5 - x / 6.0))
    } else {
        (-x).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_is_the_exponential_on_both_sides_of_the_series_cutoff() {
        for dt in [0.0, 1e-9, 1e-6, 2.5e-4, 1e-3, 1.0001e-3, 0.5, 3.0] {
            let exact = (-dt / TAU.as_secs_f64()).exp();
            assert!(
                (decay(dt) - exact).abs() < 1e-13,
                "dt {dt}: {} vs {exact}",
                decay(dt)
            );
        }
    }

    #[test]
    fn ewma_forgets_within_seconds_and_peak_jumps() {
        let e = LatencyEwma::default();
        e.record(Duration::from_millis(10), Duration::ZERO);
        e.record(Duration::from_millis(50), Duration::from_millis(10));
        let (ewma, peak, n) = e.read();
        assert_eq!((ewma, peak, n), (30.0, 50.0, 2), "a plain mean at first");
        for i in 0..100 {
            e.record(Duration::from_millis(10), Duration::from_millis(20 + i));
        }
        let settled = e.read().0;
        assert!(settled > 10.0 && settled < 11.0, "{settled}");
        e.record(Duration::from_millis(50), Duration::from_millis(121));
        let after = e.read().0;
        assert!(
            after > 10.5 && after < 11.0,
            "the 103rd sample weighs 1/103: {after}"
        );
        e.record(Duration::from_millis(50), Duration::from_secs(3));
        assert!(
            e.read().0 > 47.0,
            "three seconds later the average is the new latency"
        );
    }
}
