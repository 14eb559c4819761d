//! A request on its way through the balancer: what it asked, what happened so far.

use std::time::{Duration, Instant};

use crate::flow::activity::ActiveGuard;
use crate::policy::breaker::Permit;
use crate::foundation::error::AttemptError;
use crate::foundation::request::Request;
use crate::flow::ticket::{Outcome, Phase, Sink};

pub(crate) struct Job {
    pub request: Request,
    pub service: usize,
    pub submitted: Instant,
    pub deadline: Instant,
    pub sink: Sink,
    /// Failed attempts so far, in order.
    pub failures: Vec<AttemptError>,
    /// Providers that serve the request (decided once, at admission).
    pub eligible: IndexSet,
    /// Providers tried in this round of attempts.
    pub tried: IndexSet,
    /// Rounds of attempts over every available provider so far (1 during the first).
    pub round: u32,
    /// Whether a non-idempotent request's bytes may have reached a provider.
    pub maybe_sent: bool,
    /// Since when the job has been waiting for a worker or a slot.
    pub waiting_since: Option<Instant>,
    pub queue_wait: Duration,
    /// A slot taken for this job by whoever handed it over.
    pub reserved: Option<Slot>,
    /// Whether the job holds a place in its service's waiting line.
    pub counted: bool,
    _active: ActiveGuard,
}

impl Job {
    pub fn new(
        request: Request,
        service: usize,
        eligible: IndexSet,
        deadline: Duration,
        sink: Sink,
        active: ActiveGuard,
    ) -> Job {
        let now = Instant::now();
        let deadline = now + request.timeout.unwrap_or(deadline);
        Job {
            request,
            service,
            submitted: now,
            deadline,
            sink,
            failures: Vec::new(),
            eligible,
            tried: IndexSet::default(),
            round: 1,
            maybe_sent: false,
            waiting_since: None,
            queue_wait: Duration::ZERO,
            reserved: None,
            counted: false,
            _active: active,
        }
    }

    pub fn attempts(&self) -> u32 {
        self.failures.len() as u32
    }

    pub fn start_waiting(&mut self, now: Instant) {
        self.waiting_since = Some(now);
    }

    pub fn stop_waiting(&mut self, now: Instant) {
        if let Some(since) = self.waiting_since.take() {
            self.queue_wait += now.saturating_duration_since(since);
        }
    }

    /// Whether somebody else already decided the outcome (a waiter's deadline).
    pub fn is_settled(&self) -> bool {
        self.sink.phase().is_some_and(|p| p.is_settled())
    }

    /// Claims the job for an attempt; false when a waiter settled it first.
    pub fn begin_attempt(&self) -> bool {
        self.sink
            .phase()
            .is_none_or(|p| p.shift(Phase::Waiting, Phase::Running))
    }

    /// Hands the job back to waiting after an attempt (it will park or retry).
    pub fn end_attempt(&self) {
        if let Some(p) = self.sink.phase() {
            p.shift(Phase::Running, Phase::Waiting);
        }
    }

    /// Delivers the outcome. The request stops counting as under way first, so whoever
    /// receives the outcome never sees it still counted.
    pub fn finish(self, outcome: Outcome) -> Option<Outcome> {
        let Job { sink, _active, .. } = self;
        drop(_active);
        sink.deliver(outcome)
    }
}

/// A connection slot on a provider, with the breaker's leave to use it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub index: usize,
    pub permit: Permit,
}

/// A set of provider indices: a word inline, more only for services of over 64 providers.
#[derive(Debug, Clone, Default)]
pub(crate) struct IndexSet {
    low: u64,
    high: Vec<u64>,
}

impl IndexSet {
    pub fn insert(&mut self, i: usize) {
        if i < 64 {
            self.low |= 1 << i;
        } else {
            let word = i / 64 - 1;
            if self.high.len() <= word {
                self.high.resize(word + 1, 0);
            }
            self.high[word] |= 1 << (i % 64);
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        if i < 64 {
            self.low & (1 << i) != 0
        } else {
            self.high
                .get(i / 64 - 1)
                .is_some_and(|w| w & (1 << (i % 64)) != 0)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.high.iter().all(|w| *w == 0)
    }

    pub fn clear(&mut self) {
        self.low = 0;
        self.high.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::IndexSet;

    #[test]
    fn index_set_holds_large_indices() {
        let mut s = IndexSet::default();
        for i in [0, 63, 64, 700] {
            s.insert(i);
        }
        assert!([0, 63, 64, 700].iter().all(|&i| s.contains(i)));
        assert!(![1, 65, 699, 5000].iter().any(|&i| s.contains(i)));
        s.clear();
        assert!(!s.contains(700));
    }
}
