//! Load-balancing strategies: which provider of a tier a request's first attempt goes to.
//!
//! A strategy sees the providers that are eligible right now (they serve the endpoint,
//! their circuit lets traffic through, they are not resting) and picks one. Every
//! strategy of a service is built up front and the one in use is an atomic, so
//! [`crate::Balancer::set_strategy`] switches at run time without a lock on the hot path.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::foundation::config::{SloConfig, StrategyKind};
use crate::policy::candidate::Candidate;
use crate::policy::cost_aware;

/// Latency samples a provider needs before latency strategies rank it.
const MIN_SAMPLES: u64 = 5;

/// Share of health-based picks made uniformly among all candidates, so providers outside
/// the better half keep being measured and come back when they recover.
const EXPLORE: f64 = 0.05;

/// Health scores this close to the best count as equally good.
const SCORE_TOLERANCE: f64 = 0.02;

/// Latencies within this factor of the fastest earn the whole speed term: loopback and a
/// loaded machine add that much noise to equally fast providers, and a sharper cut
/// starved one of them for it.
const SPEED_SLACK: f64 = 1.25;

/// Latency differences well under this are noise to the health score's speed term.
const SPEED_FLOOR_MS: f64 = 1.0;

/// Below this many candidates least-connections scans them all; above, two random choices.
const SCAN_LIMIT: usize = 16;

const KINDS: [StrategyKind; 6] = [
    StrategyKind::RoundRobin,
    StrategyKind::LeastConnections,
    StrategyKind::WeightedResponse,
    StrategyKind::HealthBased,
    StrategyKind::PeakEwma,
    StrategyKind::CostAware,
];

fn kind_index(kind: StrategyKind) -> u8 {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u8
}

/// How long health-score inputs are reused before they are read again.
const SIGNAL_TTL: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Signals {
    at: Option<Duration>,
    by_provider: Vec<Signal>,
}

/// A provider's health-score inputs.
struct Signal {
    latency_ms: f64,
    error_rate: f64,
    uptime: f64,
    cost: f64,
}

impl Signal {
    fn of<C: Candidate>(p: &C) -> Signal {
        let (calls, failures) = p.window_totals();
        Signal {
            latency_ms: p.latency().read().0 + SPEED_FLOOR_MS,
            error_rate: if calls == 0 {
                0.0
            } else {
                failures as f64 / calls as f64
            },
            uptime: p.uptime().unwrap_or(1.0),
            cost: p.cost(),
        }
    }

    /// The one health score: 0.4 uptime + 0.3 speed + 0.2 (1 - error rate) + 0.1 cost
    /// efficiency, speed and efficiency relative to the fastest and cheapest candidate.
    fn score(&self, fastest_ms: f64, cheapest: f64) -> f64 {
        let speed = (fastest_ms * SPEED_SLACK / self.latency_ms).min(1.0);
        let efficiency = if self.cost <= 0.0 {
            1.0
        } else {
            cheapest.max(0.0) / self.cost
        };
        0.4 * self.uptime + 0.3 * speed + 0.2 * (1.0 - self.error_rate) + 0.1 * efficiency
    }
}

/// Random numbers: from the OS, or from a seed for reproducible picks.
enum Randomness {
    Os,
    Seeded(Mutex<SmallRng>),
}

impl Randomness {
    fn unit(&self) -> f64 {
        match self {
            Randomness::Os => rand::rng().random::<f64>(),
            Randomness::Seeded(rng) => rng.lock().random::<f64>(),
        }
    }

    fn below(&self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// A service's strategies and which one is in use.
pub(crate) struct Picker {
    kind: AtomicU8,
    fallback: AtomicU8,
    /// Smooth weighted round robin's current weights, per provider.
    current: Mutex<Vec<i64>>,
    signals: Mutex<Signals>,
    rand: Randomness,
    /// What `cost_aware` keeps.
    slo: SloConfig,
}

impl Picker {
    pub fn new(kind: StrategyKind, fallback: StrategyKind, providers: usize, seed: u64) -> Picker {
        Picker {
            kind: AtomicU8::new(kind_index(kind)),
            fallback: AtomicU8::new(kind_index(fallback)),
            current: Mutex::new(vec![0; providers]),
            signals: Mutex::new(Signals::default()),
            rand: match seed {
                0 => Randomness::Os,
                seed => Randomness::Seeded(Mutex::new(SmallRng::seed_from_u64(seed))),
            },
            slo: SloConfig::default(),
        }
    }

    /// The service's `slo`, for `cost_aware`.
    pub fn with_slo(mut self, slo: SloConfig) -> Picker {
        self.slo = slo;
        self
    }

    pub fn kind(&self) -> StrategyKind {
        KINDS[self.kind.load(Ordering::Relaxed) as usize]
    }

    /// Whether a first attempt waits for a seat on the strategy's pick rather than take
    /// another provider's: `cost_aware`, for which a full pool is no reason to spend.
    pub fn waits_for_its_pick(&self) -> bool {
        self.kind() == StrategyKind::CostAware
    }

    pub fn set_kind(&self, kind: StrategyKind) {
        self.kind.store(kind_index(kind), Ordering::Relaxed);
    }

    /// Picks among the providers for which `ok` holds; `None` when there are none.
    /// A uniform index below `n`.
    pub fn below(&self, n: usize) -> usize {
        self.rand.below(n)
    }

    /// The strategy's choice between two sampled providers (large provider sets).
    /// Round robin becomes a weighted coin, the rest compare their own measure.
    pub fn choose_between<C: Candidate>(
        &self,
        providers: &[C],
        a: usize,
        b: usize,
        now: Duration,
    ) -> usize {
        let (pa, pb) = (&providers[a], &providers[b]);
        let lacks_data = pa.latency().read().2 < MIN_SAMPLES || pb.latency().read().2 < MIN_SAMPLES;
        let kind = match self.kind() {
            StrategyKind::WeightedResponse | StrategyKind::HealthBased | StrategyKind::PeakEwma
                if lacks_data =>
            {
                KINDS[self.fallback.load(Ordering::Relaxed) as usize]
            }
            kind => kind,
        };
        let better = |cost_a: f64, cost_b: f64| if cost_b < cost_a { b } else { a };
        match kind {
            StrategyKind::RoundRobin => {
                let (wa, wb) = (f64::from(pa.weight()), f64::from(pb.weight()));
                if self.rand.unit() * (wa + wb) < wa {
                    a
                } else {
                    b
                }
            }
            StrategyKind::LeastConnections => better(pa.in_flight() as f64, pb.in_flight() as f64),
            StrategyKind::WeightedResponse => better(
                pa.latency().read().0 / f64::from(pa.weight()),
                pb.latency().read().0 / f64::from(pb.weight()),
            ),
            StrategyKind::HealthBased => {
                // The same score and the same exploration as the full scan.
                if self.rand.unit() < EXPLORE {
                    return if self.rand.unit() < 0.5 { a } else { b };
                }
                let (sa, sb) = (Signal::of(pa), Signal::of(pb));
                let fastest = sa.latency_ms.min(sb.latency_ms);
                let cheapest = sa.cost.min(sb.cost);
                better(-sa.score(fastest, cheapest), -sb.score(fastest, cheapest))
            }
            StrategyKind::PeakEwma => {
                let cost = |p: &C| p.latency().decayed_peak(now) * (p.in_flight() + 1) as f64;
                better(cost(pa), cost(pb))
            }
            StrategyKind::CostAware => cost_aware::pick(
                providers,
                [a, b].into_iter(),
                &self.slo,
                now,
                self.rand.unit(),
            )
            .unwrap_or(a),
        }
    }

    /// `now` is clock time, for latency estimates that decay while a provider is idle.
    pub fn pick<C: Candidate>(
        &self,
        providers: &[C],
        ok: &dyn Fn(usize) -> bool,
        now: Duration,
    ) -> Option<usize> {
        // One candidate is every strategy's pick (round robin's counters end as they
        // began): no scores, locks or draws for it.
        let mut candidates = (0..providers.len()).filter(|&i| ok(i));
        let first = candidates.next()?;
        if candidates.next().is_none() {
            return Some(first);
        }
        match self.kind_for(providers, ok) {
            StrategyKind::RoundRobin => self.round_robin(providers, ok),
            StrategyKind::LeastConnections => self.least_connections(providers, ok),
            StrategyKind::WeightedResponse => self.weighted_response(providers, ok),
            StrategyKind::HealthBased => self.health_based(providers, ok, now),
            StrategyKind::PeakEwma => self.peak_ewma(providers, ok, now),
            StrategyKind::CostAware => cost_aware::pick(
                providers,
                (0..providers.len()).filter(|&i| ok(i)),
                &self.slo,
                now,
                self.rand.unit(),
            ),
        }
    }

    /// nginx's smooth weighted round robin: even spreading, exact shares.
    fn round_robin<C: Candidate>(
        &self,
        providers: &[C],
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut current = self.current.lock();
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in (0..providers.len()).filter(|&i| ok(i)) {
            let w = i64::from(providers[i].weight());
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    fn least_connections<C: Candidate>(
        &self,
        providers: &[C],
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let load = |i: usize| providers[i].in_flight();
        let count = (0..providers.len()).filter(|&i| ok(i)).count();
        if count > SCAN_LIMIT {
            let (a, b) = self.two_choices(providers.len(), count, ok)?;
            return Some(if load(b) < load(a) { b } else { a });
        }
        // Fewest in flight; ties broken at random (reservoir sampling over the ties).
        let mut best: Option<usize> = None;
        let mut ties = 0;
        for i in (0..providers.len()).filter(|&i| ok(i)) {
            match best.map(|b| load(i).cmp(&load(b))) {
                None | Some(std::cmp::Ordering::Less) => {
                    best = Some(i);
                    ties = 1;
                }
                Some(std::cmp::Ordering::Equal) => {
                    ties += 1;
                    if self.rand.below(ties) == 0 {
                        best = Some(i);
                    }
                }
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        best
    }

    /// Weighted random, weight = configured weight / recent latency.
    fn weighted_response<C: Candidate>(
        &self,
        providers: &[C],
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let weight = |i: usize| {
            let (ewma, _, _) = providers[i].latency().read();
            f64::from(providers[i].weight()) / ewma.max(0.01)
        };
        self.weighted_random(
            (0..providers.len())
                .filter(|&i| ok(i))
                .map(|i| (i, weight(i))),
        )
    }

    /// Score = 0.4 uptime + 0.3 speed + 0.2 (1 - error rate) + 0.1 cost efficiency, each
    /// 0..1 relative to the candidates; weighted random among the better half, and a
    /// small uniform share ([`EXPLORE`]) so that every provider stays measured.
    fn health_based<C: Candidate>(
        &self,
        providers: &[C],
        ok: &dyn Fn(usize) -> bool,
        now: Duration,
    ) -> Option<usize> {
        let candidates: Vec<usize> = (0..providers.len()).filter(|&i| ok(i)).collect();
        if candidates.is_empty() {
            return None;
        }
        if candidates.len() > 1 && self.rand.unit() < EXPLORE {
            return Some(candidates[self.rand.below(candidates.len())]);
        }
        let mut scored = self.health_scores(providers, &candidates, now);
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        // The better half, and whoever scores as well as it within noise: a sharp cut
        // would starve a provider for being a hair slower.
        let half = scored[scored.len().div_ceil(2) - 1].1;
        let threshold = half.min(scored[0].1 - SCORE_TOLERANCE);
        scored.retain(|(_, score)| *score >= threshold);
        self.weighted_random(scored.into_iter())
    }

    /// Each candidate's health score, relative to the others.
    fn health_scores<C: Candidate>(
        &self,
        providers: &[C],
        candidates: &[usize],
        now: Duration,
    ) -> Vec<(usize, f64)> {
        let signals = self.signals(providers, now);
        let s = |i: usize| &signals.by_provider[i];
        let fastest = candidates
            .iter()
            .map(|&i| s(i).latency_ms)
            .fold(f64::INFINITY, f64::min);
        let cheapest = candidates
            .iter()
            .map(|&i| s(i).cost)
            .fold(f64::INFINITY, f64::min);
        candidates
            .iter()
            .map(|&i| (i, s(i).score(fastest, cheapest)))
            .collect()
    }

    /// The strategy in use for these candidates: the fallback while one has too few
    /// latency samples for the main strategy to rank it fairly.
    fn kind_for<C: Candidate>(&self, providers: &[C], ok: &dyn Fn(usize) -> bool) -> StrategyKind {
        let kind = self.kind();
        let needs_latency = matches!(
            kind,
            StrategyKind::WeightedResponse | StrategyKind::HealthBased | StrategyKind::PeakEwma
        );
        if needs_latency
            && (0..providers.len()).any(|i| ok(i) && providers[i].latency().read().2 < MIN_SAMPLES)
        {
            return KINDS[self.fallback.load(Ordering::Relaxed) as usize];
        }
        kind
    }

    /// The health score's inputs, read from every provider at most every [`SIGNAL_TTL`]:
    /// reading them takes a lock per provider, scoring them takes none.
    fn signals<C: Candidate>(
        &self,
        providers: &[C],
        now: Duration,
    ) -> parking_lot::MutexGuard<'_, Signals> {
        let mut signals = self.signals.lock();
        if signals
            .at
            .is_none_or(|at| now.saturating_sub(at) >= SIGNAL_TTL)
            || signals.by_provider.len() != providers.len()
        {
            signals.at = Some(now);
            signals.by_provider = providers.iter().map(Signal::of).collect();
        }
        signals
    }

    /// Finagle's and linkerd's choice: of two random candidates, the lower
    /// peak-EWMA latency x (in flight + 1).
    fn peak_ewma<C: Candidate>(
        &self,
        providers: &[C],
        ok: &dyn Fn(usize) -> bool,
        now: Duration,
    ) -> Option<usize> {
        let count = (0..providers.len()).filter(|&i| ok(i)).count();
        let (a, b) = self.two_choices(providers.len(), count, ok)?;
        let cost = |i: usize| {
            providers[i].latency().decayed_peak(now) * (providers[i].in_flight() + 1) as f64
        };
        Some(if cost(b) < cost(a) { b } else { a })
    }

    /// Two distinct random candidates (the same one twice when there is only one).
    fn two_choices(
        &self,
        n: usize,
        count: usize,
        ok: &dyn Fn(usize) -> bool,
    ) -> Option<(usize, usize)> {
        if count == 0 {
            return None;
        }
        let nth = |k: usize| (0..n).filter(|&i| ok(i)).nth(k);
        let a = self.rand.below(count);
        if count == 1 {
            let only = nth(0)?;
            return Some((only, only));
        }
        let mut b = self.rand.below(count - 1);
        if b >= a {
            b += 1;
        }
        Some((nth(a)?, nth(b)?))
    }

    fn weighted_random(&self, items: impl Iterator<Item = (usize, f64)> + Clone) -> Option<usize> {
        let total: f64 = items.clone().map(|(_, w)| w.max(0.0)).sum();
        let mut last = None;
        if total > 0.0 {
            let mut r = self.rand.unit() * total;
            for (i, w) in items {
                last = Some(i);
                r -= w.max(0.0);
                if r < 0.0 {
                    return Some(i);
                }
            }
            return last;
        }
        items.map(|(i, _)| i).next()
    }
}

mod rank;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::latency::LatencyEwma;

    /// A candidate with settable load and record, for exact strategy tests.
    #[derive(Default)]
    struct Fake {
        weight: u32,
        in_flight: std::cell::Cell<usize>,
        latency: LatencyEwma,
        totals: (u64, u64),
        uptime: Option<f64>,
        cost: f64,
    }

    impl Candidate for Fake {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn in_flight(&self) -> usize {
            self.in_flight.get()
        }
        fn latency(&self) -> &LatencyEwma {
            &self.latency
        }
        fn window_totals(&self) -> (u64, u64) {
            self.totals
        }
        fn uptime(&self) -> Option<f64> {
            self.uptime
        }
        fn cost(&self) -> f64 {
            self.cost
        }
        fn tail(&self, _now: Duration) -> Option<(Duration, u64)> {
            None
        }
    }

    fn providers(weights: &[u32]) -> Vec<Fake> {
        weights
            .iter()
            .map(|&weight| Fake {
                weight,
                ..Fake::default()
            })
            .collect()
    }

    /// Gives a provider enough latency samples to be ranked.
    fn warm(p: &Fake, ms: u64) {
        for _ in 0..MIN_SAMPLES {
            p.latency.record(Duration::from_millis(ms), Duration::ZERO);
        }
    }

    fn shares(picker: &Picker, ps: &[Fake], n: usize) -> Vec<usize> {
        let mut counts = vec![0; ps.len()];
        for _ in 0..n {
            counts[picker.pick(ps, &|_| true, Duration::ZERO).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn smooth_round_robin_is_exact_and_interleaved() {
        let ps = providers(&[5, 1, 1]);
        let picker = Picker::new(StrategyKind::RoundRobin, StrategyKind::RoundRobin, 3, 1);
        let order: Vec<usize> = (0..7)
            .map(|_| picker.pick(&ps, &|_| true, Duration::ZERO).unwrap())
            .collect();
        // nginx's example: a a b a c a a for weights 5, 1, 1.
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(shares(&picker, &ps, 7000), [5000, 1000, 1000]);
        assert_eq!(picker.pick(&ps, &|i| i == 2, Duration::ZERO), Some(2));
        assert_eq!(picker.pick(&ps, &|_| false, Duration::ZERO), None);
    }

    #[test]
    fn least_connections_prefers_the_idle_and_breaks_ties_at_random() {
        let ps = providers(&[1, 1, 1]);
        let picker = Picker::new(
            StrategyKind::LeastConnections,
            StrategyKind::RoundRobin,
            3,
            7,
        );
        ps[0].in_flight.set(1);
        ps[1].in_flight.set(1);
        assert_eq!(picker.pick(&ps, &|_| true, Duration::ZERO), Some(2));
        ps[0].in_flight.set(0);
        let counts = shares(&picker, &ps, 1000);
        assert_eq!(counts[1], 0);
        assert!(counts[0] > 400 && counts[2] > 400, "{counts:?}");
    }

    #[test]
    fn latency_strategies_fall_back_until_every_candidate_has_data() {
        let ps = providers(&[1, 1]);
        let picker = Picker::new(StrategyKind::PeakEwma, StrategyKind::RoundRobin, 2, 3);
        warm(&ps[0], 1);
        assert_eq!(
            shares(&picker, &ps, 10),
            [5, 5],
            "round robin while p1 has no samples"
        );
        warm(&ps[1], 50);
        let counts = shares(&picker, &ps, 100);
        assert_eq!(
            counts,
            [100, 0],
            "two choices always see both and pick the faster"
        );
    }

    #[test]
    fn weighted_response_follows_inverse_latency() {
        let ps = providers(&[1, 1]);
        warm(&ps[0], 10);
        warm(&ps[1], 40);
        let picker = Picker::new(
            StrategyKind::WeightedResponse,
            StrategyKind::RoundRobin,
            2,
            11,
        );
        let counts = shares(&picker, &ps, 10_000);
        let share = counts[0] as f64 / 10_000.0;
        assert!((share - 0.8).abs() < 0.02, "{share}");
    }

    #[test]
    fn sampled_and_scanned_health_picks_share_one_score() {
        // p0 fast and clean, p1 slow with errors: both paths must prefer p0 the same way.
        let ps = providers(&[1, 1]);
        warm(&ps[0], 2);
        warm(&ps[1], 40);
        let ps = vec![
            Fake {
                totals: (100, 0),
                ..ps.into_iter().next().unwrap()
            },
            {
                let slow = Fake {
                    weight: 1,
                    totals: (100, 30),
                    cost: 0.5,
                    ..Fake::default()
                };
                warm(&slow, 40);
                slow
            },
        ];
        let picker = Picker::new(StrategyKind::HealthBased, StrategyKind::RoundRobin, 2, 9);
        let scanned = shares(&picker, &ps, 2000)[1];
        let sampled = (0..2000)
            .filter(|_| picker.choose_between(&ps, 0, 1, Duration::ZERO) == 1)
            .count();
        // Only exploration reaches p1: half of 5% of picks on either path.
        assert!((20..100).contains(&scanned), "scanned {scanned}");
        assert!((20..100).contains(&sampled), "sampled {sampled}");
    }

    #[test]
    fn every_strategy_answers_none_without_candidates() {
        let ps = providers(&[1, 1]);
        for p in &ps {
            warm(p, 5);
        }
        for kind in KINDS {
            let picker = Picker::new(kind, StrategyKind::RoundRobin, 2, 5);
            assert_eq!(
                picker.pick(&ps, &|_| false, Duration::ZERO),
                None,
                "{kind:?}"
            );
            assert_eq!(
                picker.pick(&ps, &|i| i == 1, Duration::ZERO),
                Some(1),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn seeded_picks_repeat() {
        let ps = providers(&[1, 1, 1, 1]);
        for p in &ps {
            warm(p, 5);
        }
        let run = || {
            let picker = Picker::new(StrategyKind::HealthBased, StrategyKind::RoundRobin, 4, 42);
            (0..50)
                .map(|_| picker.pick(&ps, &|_| true, Duration::ZERO).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
