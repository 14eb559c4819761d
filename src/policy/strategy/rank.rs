//! A strategy's ranking without a draw, for `explain`.

use std::time::Duration;

use super::{Picker, StrategyKind};
use crate::policy::candidate::Candidate;
use crate::policy::cost_aware;

impl Picker {
    /// How the strategy in use ranks the candidates `ok` lets through, best first, with
    /// each one's score, drawing nothing and changing nothing: what `explain` shows. The
    /// first is the pick, or the most likely one for a strategy that draws at random.
    /// The second value says what the scores are.
    pub fn rank<C: Candidate>(
        &self,
        providers: &[C],
        ok: &dyn Fn(usize) -> bool,
        now: Duration,
    ) -> (Vec<(usize, f64)>, &'static str) {
        let candidates: Vec<usize> = (0..providers.len()).filter(|&i| ok(i)).collect();
        let scored = |score: &dyn Fn(usize) -> f64| -> Vec<(usize, f64)> {
            let mut v: Vec<(usize, f64)> = candidates.iter().map(|&i| (i, score(i))).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v
        };
        match self.kind_for(providers, ok) {
            StrategyKind::RoundRobin => {
                let current = self.current.lock().clone();
                let scores = scored(&|i| (current[i] + i64::from(providers[i].weight())) as f64);
                (scores, "round_robin: current weight, the highest goes next")
            }
            StrategyKind::LeastConnections => (
                scored(&|i| -(providers[i].in_flight() as f64)),
                "least_connections: minus the requests in flight, ties drawn at random",
            ),
            StrategyKind::WeightedResponse => (
                scored(&|i| {
                    let (ewma, _, _) = providers[i].latency().read();
                    f64::from(providers[i].weight()) / ewma.max(0.01)
                }),
                "weighted_response: weight / latency in ms, drawn in proportion",
            ),
            StrategyKind::HealthBased => {
                let mut scores = self.health_scores(providers, &candidates, now);
                scores.sort_by(|a, b| b.1.total_cmp(&a.1));
                (
                    scores,
                    "health_based: health score, drawn among the better half",
                )
            }
            StrategyKind::PeakEwma => (
                scored(&|i| {
                    let p = &providers[i];
                    -(p.latency().decayed_peak(now) * (p.in_flight() + 1) as f64)
                }),
                "peak_ewma: minus peak latency x (in flight + 1), the better of two drawn",
            ),
            StrategyKind::CostAware => {
                // The pick without a probe first, then the rest by price.
                let pick =
                    cost_aware::pick(providers, candidates.iter().copied(), &self.slo, now, 1.0);
                let mut scores = scored(&|i| -providers[i].cost());
                if let Some(at) = scores.iter().position(|(i, _)| Some(*i) == pick) {
                    let first = scores.remove(at);
                    scores.insert(0, first);
                }
                (
                    scores,
                    "cost_aware: minus the cost per request; the cheapest meeting the slo goes",
                )
            }
        }
    }
}
