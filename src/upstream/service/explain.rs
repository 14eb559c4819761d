//! `explain`: the decision `acquire` would make for a request now, with every provider's
//! reason, read without taking a permit, a token, a seat or a strategy's turn.

use std::time::Duration;

use super::Service;
use crate::foundation::index_set::IndexSet;
use crate::foundation::request::Request;
use crate::telemetry::explain::{ExplainedProvider, Explanation};
use crate::upstream::allowance::Holdback;

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Service {
    /// The decision for `request`, whose eligible providers are `eligible`.
    pub fn explain(&self, request: &Request, eligible: &IndexSet) -> Explanation {
        let now = self.clock.now();
        let urgent = request.priority.is_urgent();
        let n = self.providers.len();
        let mut skipped: Vec<Option<String>> = vec![None; n];
        for (i, p) in self.providers.iter().enumerate() {
            let why = if !eligible.contains(i) {
                Some(format!("does not serve endpoint `{}`", request.endpoint))
            } else if !p.breaker.is_available() {
                Some(format!("circuit {}", p.breaker.state().name()))
            } else {
                match p.allowance.check(now, urgent) {
                    Ok(()) => None,
                    Err(Holdback::Rest { until, reason }) => Some(format!(
                        "resting ({}) for {} ms",
                        reason.name(),
                        ms(until.saturating_sub(now))
                    )),
                    Err(Holdback::Rate { due: Some(due) }) => Some(format!(
                        "rate limit: its next call may go in {} ms",
                        ms(due.saturating_sub(now))
                    )),
                    Err(Holdback::Rate { due: None })
                    | Err(Holdback::Quota { reserved: true, .. }) => {
                        Some("what is left is reserved for critical and high requests".into())
                    }
                    Err(Holdback::Quota { until, .. }) => Some(format!(
                        "quota used up for {} ms",
                        ms(until.saturating_sub(now))
                    )),
                }
            };
            skipped[i] = why;
        }
        let any_up = (0..n).any(|i| skipped[i].is_none() && !self.providers[i].health.is_down());
        if any_up {
            for (i, p) in self.providers.iter().enumerate() {
                if skipped[i].is_none() && p.health.is_down() {
                    skipped[i] = Some("failing its health checks (others pass)".into());
                }
            }
        }
        let lowest = (0..n)
            .filter(|&i| skipped[i].is_none())
            .map(|i| self.providers[i].tier)
            .min();
        if let Some(tier) = lowest {
            for (i, p) in self.providers.iter().enumerate() {
                if skipped[i].is_none() && p.tier > tier {
                    skipped[i] = Some(format!("tier {}: tier {tier} has a provider free", p.tier));
                }
            }
        }
        let ok = |i: usize| skipped[i].is_none();
        let (ranked, scores_mean) = self.picker.rank(&self.providers, &ok, now);
        let mut score = vec![None; n];
        for (i, s) in &ranked {
            score[*i] = Some(*s);
        }
        let pick = ranked.first().map(|(i, _)| *i);
        let strategy = self.picker.kind().name().to_string();
        let why = match (pick, lowest) {
            (Some(i), Some(tier)) => {
                let p = &self.providers[i];
                let busy = p.in_flight() >= p.seat_cap(urgent);
                format!(
                    "tier {tier} is the lowest with a provider free; {} ranks {} first{}",
                    strategy,
                    p.name,
                    if busy {
                        " (every seat is taken: the request would wait for one)"
                    } else {
                        ""
                    }
                )
            }
            _ => "no provider can take it now".to_string(),
        };
        let candidates = self
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let view = p.allowance.view(now);
                let rest = p.allowance.rest(now);
                ExplainedProvider {
                    provider: p.name.to_string(),
                    tier: p.tier,
                    circuit: p.breaker.state().name(),
                    resting_reason: rest.map(|(_, reason)| reason.name()),
                    resting_ms: rest.map(|(until, _)| ms(until.saturating_sub(now))),
                    rate_remaining: view.rate.iter().map(|w| w.remaining).min(),
                    quota_remaining: view
                        .quota
                        .iter()
                        .map(|q| q.limit.saturating_sub(q.used))
                        .min(),
                    in_flight: p.in_flight(),
                    max_connections: p.seat_cap(urgent),
                    health_down: p.health.is_down(),
                    score: score[i],
                    skipped: skipped[i].take(),
                }
            })
            .collect();
        Explanation {
            service: self.name.clone(),
            endpoint: request.endpoint.to_string(),
            strategy,
            scores_mean,
            pick: pick.map(|i| self.providers[i].name.to_string()),
            why,
            candidates,
        }
    }
}
