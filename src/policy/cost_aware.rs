//! `cost_aware`: the cheapest candidate whose recent record meets the service's `slo`;
//! a pricier one only while every cheaper one misses it (or is out of quota or rate,
//! which the caller has already left out). A cheaper provider that misses the SLO still
//! gets a small share of probes, so its recovery is seen before its window empties.

use std::time::Duration;

use crate::foundation::config::SloConfig;
use crate::policy::candidate::Candidate;

/// Attempts in the window below which a provider's record is too thin to judge: it is
/// given the benefit of the doubt (a new or idle provider gets traffic to be measured).
const MIN_CALLS: u64 = 10;

/// Share of picks that probe the cheapest provider missing the SLO, when one is cheaper
/// than the pick.
pub(crate) const PROBE: f64 = 0.02;

/// How a candidate stands against the SLO.
fn meets<C: Candidate>(p: &C, slo: &SloConfig, now: Duration) -> bool {
    let (calls, failures) = p.window_totals();
    if calls >= MIN_CALLS {
        let success = 1.0 - failures as f64 / calls as f64;
        if success < slo.success_rate {
            return false;
        }
    }
    match p.tail(now) {
        Some((p99, seen)) if seen >= MIN_CALLS => p99 <= Duration::from_millis(slo.p99_ms),
        _ => true,
    }
}

/// The success rate in the window, for choosing among candidates that all miss the SLO.
fn success<C: Candidate>(p: &C) -> f64 {
    let (calls, failures) = p.window_totals();
    if calls == 0 {
        1.0
    } else {
        1.0 - failures as f64 / calls as f64
    }
}

/// The pick among `candidates`; `unit` is a uniform random number in 0..1.
pub(crate) fn pick<C: Candidate>(
    providers: &[C],
    candidates: impl Iterator<Item = usize>,
    slo: &SloConfig,
    now: Duration,
    unit: f64,
) -> Option<usize> {
    // (cost, in flight, index) of the best meeting the SLO and of the cheapest missing it.
    let mut best: Option<(f64, usize, usize)> = None;
    let mut cheapest_missing: Option<(f64, usize)> = None;
    let mut most_successful: Option<(f64, usize)> = None;
    for i in candidates {
        let p = &providers[i];
        let cost = p.cost();
        if meets(p, slo, now) {
            let key = (cost, p.in_flight(), i);
            if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                best = Some(key);
            }
        } else {
            if cheapest_missing.is_none_or(|c| cost < c.0) {
                cheapest_missing = Some((cost, i));
            }
            let s = success(p);
            if most_successful.is_none_or(|m| s > m.0) {
                most_successful = Some((s, i));
            }
        }
    }
    match (best, cheapest_missing) {
        (Some((cost, _, _)), Some((cheaper, probe))) if cheaper < cost && unit < PROBE => {
            Some(probe)
        }
        (Some((_, _, i)), _) => Some(i),
        // Nobody meets it: the one most likely to succeed.
        (None, _) => most_successful.map(|(_, i)| i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::latency::LatencyEwma;

    struct Fake {
        cost: f64,
        calls: u64,
        failures: u64,
        p99_ms: u64,
        latency: LatencyEwma,
    }

    impl Candidate for Fake {
        fn weight(&self) -> u32 {
            100
        }
        fn in_flight(&self) -> usize {
            0
        }
        fn latency(&self) -> &LatencyEwma {
            &self.latency
        }
        fn window_totals(&self) -> (u64, u64) {
            (self.calls, self.failures)
        }
        fn uptime(&self) -> Option<f64> {
            None
        }
        fn cost(&self) -> f64 {
            self.cost
        }
        fn tail(&self, _now: Duration) -> Option<(Duration, u64)> {
            Some((Duration::from_millis(self.p99_ms), self.calls))
        }
    }

    fn fake(cost: f64, calls: u64, failures: u64, p99_ms: u64) -> Fake {
        Fake {
            cost,
            calls,
            failures,
            p99_ms,
            latency: LatencyEwma::default(),
        }
    }

    #[test]
    fn the_cheapest_that_meets_the_slo_wins() {
        let slo = SloConfig::default();
        let now = Duration::ZERO;
        let ps = [
            fake(5.0, 100, 0, 50),
            fake(1.0, 100, 0, 50),
            fake(2.0, 100, 0, 50),
        ];
        assert_eq!(pick(&ps, 0..3, &slo, now, 0.5), Some(1));
        // The cheapest misses on errors, the next on latency.
        let ps = [
            fake(5.0, 100, 0, 50),
            fake(1.0, 100, 50, 50),
            fake(2.0, 100, 0, 3000),
        ];
        assert_eq!(pick(&ps, 0..3, &slo, now, 0.5), Some(0));
        assert_eq!(
            pick(&ps, 0..3, &slo, now, 0.0),
            Some(1),
            "a probe of the cheapest"
        );
        // Too few calls to judge: the benefit of the doubt.
        let ps = [fake(5.0, 100, 0, 50), fake(1.0, 4, 2, 50)];
        assert_eq!(pick(&ps, 0..2, &slo, now, 0.5), Some(1));
    }

    #[test]
    fn when_nobody_meets_it_the_most_successful_is_used() {
        let slo = SloConfig::default();
        let ps = [fake(5.0, 100, 30, 50), fake(1.0, 100, 50, 50)];
        assert_eq!(pick(&ps, 0..2, &slo, Duration::ZERO, 0.5), Some(0));
        assert_eq!(
            pick(&ps, std::iter::empty(), &slo, Duration::ZERO, 0.5),
            None
        );
    }
}
