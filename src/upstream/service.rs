//! A logical API at run time: its providers, its waiting line, and how a job gets a
//! connection slot on one of them.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;

use crate::foundation::clock::SharedClock;
use crate::foundation::config::{HealthCheckConfig, ResolvedService, RetryConfig, StrategyKind};
use crate::foundation::error::{AttemptKind, Error, QuotaWait};
use crate::foundation::index_set::IndexSet;
use crate::foundation::names::ByName;
use crate::foundation::request::{Fallback, Priority, Request};
use crate::foundation::response::Response;
use crate::policy::breaker::{Permit, Transition};
use crate::policy::retry::{success_score, RetryBudget};
use crate::policy::strategy::Picker;
use crate::telemetry::counters::ServiceStats;
use crate::upstream::admission::Admission;
use crate::upstream::allowance::{Grant, Holdback, RestReason};
use crate::upstream::circuit_events::CircuitOutbox;
use crate::upstream::provider::Provider;
use crate::upstream::slot::Slot;
use crate::upstream::transport::Connector;

pub(crate) struct Service {
    pub name: String,
    pub deadline: Duration,
    pub retry: RetryConfig,
    pub health_check: HealthCheckConfig,
    pub providers: Vec<Provider>,
    pub admission: Admission,
    pub stats: ServiceStats,
    pub budget: RetryBudget,
    pub clock: SharedClock,
    outbox: CircuitOutbox,
    fallback: RwLock<Option<Fallback>>,
    pub picker: Picker,
    /// Provider indices by tier, lowest tier first.
    by_tier: Vec<Vec<usize>>,
    /// Every provider; the providers listing each endpoint name.
    all: IndexSet,
    listing: HashMap<String, IndexSet, ByName>,
    /// Whether any endpoint template has a `{param}` (then requests are checked for it).
    has_params: bool,
    /// Whether a provider has a price: only then can `cost_aware` run, so only then are
    /// the latency tails, its one input no other strategy reads, recorded.
    priced: bool,
    /// Endpoints whose identical requests do not share calls (`coalesce = false`).
    alone: std::collections::HashSet<String, ByName>,
    /// Endpoints whose requests are hedged, and after how long (`hedge_after_ms`).
    hedged: HashMap<String, Duration, ByName>,
}

/// Above this many providers, first picks sample instead of scanning.
const SAMPLED_ABOVE: usize = 64;
/// Draws a sampled pick makes before it gives up and scans.
const SAMPLES: usize = 12;

/// What a job wants of [`Service::acquire`]: where it may go, where it has been.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    /// Providers that serve the request.
    pub eligible: &'a IndexSet,
    /// Providers tried in this round of attempts.
    pub tried: &'a IndexSet,
    /// Failed attempts so far (0 for a first attempt, which the strategy picks).
    pub attempts: u32,
    /// Critical and high requests may use the reserved headroom.
    pub urgent: bool,
    /// The job's deadline (clock time): a rate token due later is no use to it.
    pub deadline: Duration,
}

pub(crate) use crate::upstream::provider::AttemptEnd;

/// Why [`Service::seize`] got no slot.
enum Seize {
    /// The breaker said no.
    Refused,
    /// The provider's rate or quota said no (another job took what was left).
    Held(Holdback),
    /// Every seat this request may use is taken.
    Busy,
}

/// What [`Service::acquire`] found.
#[derive(Debug)]
pub(crate) enum Pick {
    /// A slot on this provider is now held for the job.
    Slot(Slot),
    /// Providers are available but every slot is taken: park.
    Busy,
    /// Only rate limits hold the job back; one lets it go at this clock time.
    Wait(Duration),
    /// No provider the job has not tried this round is available.
    Exhausted,
}

impl Service {
    pub fn new(
        config: &ResolvedService,
        seed: u64,
        clock: SharedClock,
        outbox: CircuitOutbox,
        connect: &Connector,
    ) -> Service {
        let health_timeout = Duration::from_millis(config.health_check.timeout_ms);
        Service {
            name: config.name.clone(),
            deadline: config.deadline,
            retry: config.retry.clone(),
            health_check: config.health_check.clone(),
            providers: config
                .providers
                .iter()
                .map(|p| Provider::new(p, health_timeout, clock.clone(), connect))
                .collect(),
            admission: Admission::new(config.queue.max_size),
            stats: ServiceStats::default(),
            budget: RetryBudget::new(&config.retry, clock.clone()),
            clock,
            outbox,
            fallback: RwLock::new(None),
            all: {
                let mut all = IndexSet::default();
                (0..config.providers.len()).for_each(|i| all.insert(i));
                all
            },
            listing: {
                let mut listing = HashMap::<String, IndexSet, ByName>::default();
                for (i, p) in config.providers.iter().enumerate() {
                    for name in p.endpoints.keys() {
                        listing.entry(name.clone()).or_default().insert(i);
                    }
                }
                listing
            },
            alone: config
                .endpoints
                .iter()
                .filter(|(_, o)| !o.coalesce)
                .map(|(name, _)| name.clone())
                .collect(),
            hedged: config
                .endpoints
                .iter()
                .filter(|(_, o)| o.hedge_after_ms > 0)
                .map(|(name, o)| (name.clone(), Duration::from_millis(o.hedge_after_ms)))
                .collect(),
            priced: config.providers.iter().any(|p| p.cost_per_request > 0.0),
            has_params: config
                .providers
                .iter()
                .any(|p| p.endpoints.values().any(|t| t.params().next().is_some())),
            by_tier: {
                let mut tiers: Vec<u8> = config.providers.iter().map(|p| p.tier).collect();
                tiers.sort_unstable();
                tiers.dedup();
                tiers
                    .iter()
                    .map(|t| {
                        (0..config.providers.len())
                            .filter(|&i| config.providers[i].tier == *t)
                            .collect()
                    })
                    .collect()
            },
            picker: Picker::new(
                config.strategy,
                config.fallback_strategy,
                config.providers.len(),
                seed,
            )
            .with_slo(config.slo.clone()),
        }
    }

    /// The providers that can serve the request, or why none can.
    pub fn eligible_for(&self, request: &Request) -> Result<IndexSet, Error> {
        let listed = if request.is_raw_path() {
            Some(&self.all)
        } else {
            self.listing.get(request.endpoint.as_str())
        };
        // Without path parameters to check, the set is known from the configuration.
        if let (Some(set), false) = (listed, self.has_params) {
            return Ok(set.clone());
        }
        let mut eligible = IndexSet::default();
        let mut missing = None;
        let mut serving = false;
        for (i, p) in self.providers.iter().enumerate() {
            if !p.serves(request) {
                continue;
            }
            serving = true;
            match p.missing_param(request) {
                None => eligible.insert(i),
                Some(param) => missing = missing.or(Some(param)),
            }
        }
        if !eligible.is_empty() {
            return Ok(eligible);
        }
        if !serving {
            return Err(Error::UnknownEndpoint {
                service: self.name.clone(),
                endpoint: request.endpoint.to_string(),
            });
        }
        Err(Error::InvalidArgument(format!(
            "endpoint `{}` of service `{}` needs parameter `{}`",
            request.endpoint,
            self.name,
            missing.unwrap_or_default()
        )))
    }

    /// Switches the strategy; `cost_aware` needs a price on at least one provider, as
    /// at load.
    pub fn set_strategy(&self, kind: StrategyKind) -> Result<(), Error> {
        if kind == StrategyKind::CostAware && !self.priced {
            return Err(Error::InvalidArgument(format!(
                "cost_aware needs a cost_per_request on at least one provider of `{}`",
                self.name
            )));
        }
        self.picker.set_kind(kind);
        Ok(())
    }

    /// The key under which identical requests in flight share one call; `None` for a
    /// request that may not share (not GET, HEAD or marked idempotent, or its endpoint
    /// says `coalesce = false`).
    pub fn call_key(&self, request: &Request) -> Option<u128> {
        (request.may_share_a_call() && !self.alone.contains(request.endpoint.as_str()))
            .then(|| request.call_key())
    }

    /// How long a request waits for its first attempt's answer before it is also sent to
    /// another provider; `None` when it is not hedged (its endpoint says nothing, or it
    /// may not be sent twice).
    pub fn hedge_after(&self, request: &Request) -> Option<Duration> {
        if self.hedged.is_empty() || !request.may_share_a_call() {
            return None;
        }
        self.hedged.get(request.endpoint.as_str()).copied()
    }

    pub fn set_fallback(&self, fallback: Option<Fallback>) {
        *self.fallback.write() = fallback;
    }

    /// What the request's or the service's fallback makes of a failure.
    /// Runs user code: call it with no lock of the balancer held.
    pub fn fallback(
        &self,
        request: &Request,
        error: Error,
        elapsed: Duration,
    ) -> Result<Response, Error> {
        if !matches!(
            error,
            Error::AllProvidersFailed { .. }
                | Error::NoHealthyProvider { .. }
                | Error::QuotaExhausted { .. }
        ) {
            return Err(error);
        }
        let service_fallback = self.fallback.read().clone();
        let Some(fallback) = request.fallback.clone().or(service_fallback) else {
            return Err(error);
        };
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (fallback.0)(request, &error)
        }));
        match made {
            Ok(Some(response)) => Ok(Response {
                fallback: true,
                attempts: error.attempts().len() as u32,
                latency: elapsed,
                ..response
            }),
            _ => Err(error),
        }
    }

    /// Counts a caller's request as ended.
    pub fn record_outcome(
        &self,
        ok: bool,
        submitted: Duration,
        queue_wait: Duration,
        priority: Priority,
    ) {
        self.record_outcome_at(ok, submitted, queue_wait, priority, self.clock.now());
    }

    /// Counts a caller's request as ended at clock time `now`.
    pub fn record_outcome_at(
        &self,
        ok: bool,
        submitted: Duration,
        queue_wait: Duration,
        priority: Priority,
        now: Duration,
    ) {
        let latency = now.saturating_sub(submitted);
        self.stats
            .record_outcome(ok, latency, queue_wait, priority, now);
    }

    /// Records how an attempt on provider `index` ended, everywhere it counts: the
    /// provider's rate and quota keep what it took, cost, breaker (a "quota used up"
    /// answer is not a breaker failure), counters, latency, and the rests and counts its
    /// headers announce.
    pub fn record_attempt(&self, index: usize, permit: Permit, grant: Grant, end: &AttemptEnd) {
        let p = &self.providers[index];
        let (elapsed, now) = (end.elapsed, end.now);
        grant.commit();
        p.charge(now);
        match end.failure {
            Some(AttemptKind::Quota) => {
                // Not the provider failing: its breaker and latency do not count it.
                drop(permit);
                p.stats.record_failure(AttemptKind::Quota, elapsed, now);
                p.allowance.used_up(&end.announced, now);
            }
            failure => {
                let transition = p.breaker.record_at(permit, failure.is_some(), elapsed, now);
                self.notify(index, transition);
                if self.priced {
                    p.tail.record(elapsed, now);
                }
                match failure {
                    None => {
                        p.stats.record_success(elapsed, now);
                        p.latency.record(elapsed, now);
                    }
                    Some(kind) => p.stats.record_failure(kind, elapsed, now),
                }
                if let (Some(rest), Some(429 | 503)) = (end.announced.retry_after, end.status) {
                    p.allowance.rest_until(now + rest, RestReason::RetryAfter);
                }
            }
        }
        if !end.announced.is_empty() {
            let others = p.in_flight().saturating_sub(1);
            p.allowance.announce(&end.announced, now, others);
        }
    }

    /// Queues a circuit change for the listeners; they run later, on the events thread.
    pub fn notify(&self, provider: usize, transition: Option<Transition>) {
        if let Some(t) = transition {
            self.outbox
                .post(&self.name, &self.providers[provider].name, t);
        }
    }

    /// Whether the job may go to this provider now, health, rate and quota aside.
    fn candidate(&self, want: &Want, i: usize, now: Duration, refused: &IndexSet) -> bool {
        let p = &self.providers[i];
        want.eligible.contains(i)
            && !want.tried.contains(i)
            && !refused.contains(i)
            && p.is_available(now)
    }

    /// Takes breaker permit, allowance and seat on provider `i`, in that order (a seat
    /// given back untouched would have to be handed to a parked job).
    fn seize(&self, i: usize, want: &Want, now: Duration) -> Result<Slot, Seize> {
        let p = &self.providers[i];
        let (permit, transition) = p.breaker.try_acquire();
        self.notify(i, transition);
        let permit = permit.ok_or(Seize::Refused)?;
        let grant = p.allowance.take(now, want.urgent).map_err(|held| {
            p.allowance.count_holdback(&held);
            Seize::Held(held)
        })?;
        let seat = p.take_seat(want.urgent).ok_or(Seize::Busy)?;
        Ok(Slot {
            index: i,
            permit,
            grant,
            seat,
        })
    }

    /// Providers that the job could use but for their rate or quota, and the earliest
    /// rate token due before the job's deadline in each tier.
    fn held_back(&self, want: &Want, now: Duration) -> (IndexSet, [Option<Duration>; 4]) {
        let mut held = IndexSet::default();
        let mut due_by_tier = [None; 4];
        let none = IndexSet::default();
        for i in 0..self.providers.len() {
            if !want.eligible.contains(i) || want.tried.contains(i) {
                continue;
            }
            let p = &self.providers[i];
            let Err(holdback) = p.allowance.check(now, want.urgent) else {
                continue;
            };
            // Counted even when resting: that rest may be its headers' or its quota's.
            p.allowance.count_holdback(&holdback);
            if self.candidate(want, i, now, &none) {
                held.insert(i);
                if let Some(due) = holdback.rate_due_before(want.deadline) {
                    let tier = &mut due_by_tier[usize::from(p.tier).min(3)];
                    *tier = Some(tier.map_or(due, |t: Duration| t.min(due)));
                }
            }
        }
        (held, due_by_tier)
    }

    /// Takes a slot, a breaker permit and a share of the provider's allowance for the
    /// job, in the lowest tier that has a candidate: the strategy's pick for a first
    /// attempt, the most reliable provider for a failover, the next one when that one is
    /// busy. Providers marked down by health checks are passed over unless every
    /// candidate is down (then all are tried, rather than failing every request). A tier
    /// whose only candidates wait for a rate token due before the deadline is waited for.
    pub fn acquire(&self, want: &Want) -> Pick {
        self.acquire_at(want, self.clock.now())
    }

    /// [`Service::acquire`] at clock time `now`, read by the caller a moment before.
    pub fn acquire_at(&self, want: &Want, now: Duration) -> Pick {
        let n = self.providers.len();
        if n > SAMPLED_ABOVE && want.attempts == 0 {
            if let Some(slot) = self.acquire_sampled(want, now) {
                return Pick::Slot(slot);
            }
        }
        let (held, due_by_tier) = self.held_back(want, now);
        // A rate token another job took between the look and the take.
        let mut raced: Option<Duration> = None;
        let mut refused = IndexSet::default();
        let mut busy = IndexSet::default();
        // Each round refuses or finds busy one more provider, or returns.
        for _ in 0..=n {
            // Each provider is looked at once a round; the tiers and the strategy below ask
            // the set. Health checks' "down" counts unless every candidate is down.
            let (mut candidates, mut up) = (IndexSet::default(), IndexSet::default());
            for i in 0..n {
                if self.candidate(want, i, now, &refused) {
                    candidates.insert(i);
                    if !self.providers[i].health.is_down() {
                        up.insert(i);
                    }
                }
            }
            let usable = if up.is_empty() { candidates } else { up };
            let usable = |i: usize| usable.contains(i);
            let waits_in = |tier: u8| due_by_tier[usize::from(tier).min(3)];
            let Some(tier) = (0..n)
                .filter(|&i| usable(i))
                .filter(|&i| !held.contains(i) || waits_in(self.providers[i].tier).is_some())
                .map(|i| self.providers[i].tier)
                .min()
            else {
                return raced.map_or(Pick::Exhausted, Pick::Wait);
            };
            let ready = |i: usize| self.providers[i].tier == tier && usable(i) && !held.contains(i);
            let free = |i: usize| ready(i) && !busy.contains(i);
            let waits_for_seat = want.attempts == 0 && self.picker.waits_for_its_pick();
            let choice = if waits_for_seat {
                self.picker.pick(&self.providers, &ready, now)
            } else if want.attempts == 0 {
                self.picker.pick(&self.providers, &free, now)
            } else {
                self.most_reliable(&free)
            };
            let Some(i) = choice else {
                if !(0..n).any(ready) {
                    if let Some(due) = waits_in(tier) {
                        return Pick::Wait(due);
                    }
                }
                return Pick::Busy;
            };
            match self.seize(i, want, now) {
                Ok(slot) => return Pick::Slot(slot),
                Err(Seize::Refused) => refused.insert(i),
                Err(Seize::Held(held)) => {
                    if let Some(due) = held.rate_due_before(want.deadline) {
                        raced = Some(raced.map_or(due, |r| r.min(due)));
                    }
                    refused.insert(i);
                }
                Err(Seize::Busy) if waits_for_seat => return Pick::Busy,
                Err(Seize::Busy) => busy.insert(i),
            }
        }
        Pick::Busy
    }

    /// For large provider sets, a first attempt draws a few providers of the lowest tier
    /// at random and lets the strategy choose between two that are usable, so a pick costs
    /// the same with 1,000 providers as with 10. `None` sends the caller to the full scan
    /// (which also handles health panic mode, busy pools, rate waits and unavailable tiers).
    fn acquire_sampled(&self, want: &Want, now: Duration) -> Option<Slot> {
        let lowest = &self.by_tier[0];
        let none = IndexSet::default();
        let mut found = [usize::MAX; 2];
        let mut count = 0;
        for _ in 0..SAMPLES {
            let i = lowest[self.picker.below(lowest.len())];
            let p = &self.providers[i];
            if found[..count].contains(&i)
                || !self.candidate(want, i, now, &none)
                || p.health.is_down()
                || p.in_flight() >= p.seat_cap(want.urgent)
                || p.allowance.check(now, want.urgent).is_err()
            {
                continue;
            }
            found[count] = i;
            count += 1;
            if count == 2 {
                break;
            }
        }
        if count < 2 {
            return None;
        }
        let first = self
            .picker
            .choose_between(&self.providers, found[0], found[1], now);
        let second = if first == found[0] {
            found[1]
        } else {
            found[0]
        };
        [first, second]
            .into_iter()
            .find_map(|i| self.seize(i, want, now).ok())
    }

    /// Whether some eligible provider could take the job again before its deadline:
    /// available, and not out of quota (a rate token due in time is fine). A new round of
    /// attempts is worth a backoff only then.
    pub fn may_come_back(&self, want: &Want) -> bool {
        let now = self.clock.now();
        self.providers.iter().enumerate().any(|(i, p)| {
            want.eligible.contains(i)
                && p.is_available(now)
                && p.allowance
                    .check(now, want.urgent)
                    .map_or_else(|h| h.rate_due_before(want.deadline).is_some(), |()| true)
        })
    }

    /// What holds back each eligible provider the job could not use for its rate or
    /// quota (for `QuotaExhausted`), with when it frees up.
    pub fn allowance_waits(&self, want: &Want) -> Vec<QuotaWait> {
        let now = self.clock.now();
        let mut waits = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            if !want.eligible.contains(i) || !p.breaker.is_available() {
                continue;
            }
            let Err(held) = p.allowance.check(now, want.urgent) else {
                continue;
            };
            if !held.is_allowance() {
                continue;
            }
            let reason = match held {
                Holdback::Rest { reason, .. } => reason.name(),
                Holdback::Rate { .. } => "rate",
                Holdback::Quota { reserved: true, .. } => "reserve",
                Holdback::Quota { .. } => "quota",
            };
            waits.push(QuotaWait {
                provider: p.name.to_string(),
                reason,
                frees_in: held.frees_at().map(|at| at.saturating_sub(now)),
            });
        }
        waits
    }

    /// The candidate most likely to succeed: live success rate blended with `reliability`.
    fn most_reliable(&self, keep: &dyn Fn(usize) -> bool) -> Option<usize> {
        (0..self.providers.len())
            .filter(|&i| keep(i))
            .map(|i| {
                let p = &self.providers[i];
                let (calls, failures) = p.breaker.window_totals();
                (success_score(p.reliability, calls, failures), i)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, i)| i)
    }

    /// Takes a slot of `provider`, just released, for a parked job if it may use it;
    /// `Err(due)` when only the provider's rate holds the job back until `due`.
    pub fn acquire_on(&self, want: &Want, provider: usize) -> Option<Result<Slot, Duration>> {
        let now = self.clock.now();
        let none = IndexSet::default();
        if !self.candidate(want, provider, now, &none)
            || !self.is_preferred_tier(want, provider, now)
        {
            return None;
        }
        if let Err(held) = self.providers[provider].allowance.check(now, want.urgent) {
            return held.rate_due_before(want.deadline).map(Err);
        }
        if want.attempts == 0 && self.picker.waits_for_its_pick() {
            // A job waiting for the cheapest provider's seat does not take a pricier
            // one's instead.
            let tier = self.providers[provider].tier;
            let ready = |i: usize| {
                self.providers[i].tier == tier
                    && self.candidate(want, i, now, &none)
                    && self.providers[i].allowance.check(now, want.urgent).is_ok()
            };
            if self.picker.pick(&self.providers, &ready, now) != Some(provider) {
                return None;
            }
        }
        self.seize(provider, want, now).ok().map(Ok)
    }

    fn is_preferred_tier(&self, want: &Want, provider: usize, now: Duration) -> bool {
        let tier = self.providers[provider].tier;
        let none = IndexSet::default();
        !(0..self.providers.len()).any(|i| {
            self.providers[i].tier < tier
                && self.candidate(want, i, now, &none)
                && self.providers[i].allowance.check(now, want.urgent).is_ok()
        })
    }
}

mod explain;
#[cfg(test)]
mod tests;
