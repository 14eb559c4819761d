//! A request on its way through the balancer: what it asked, what happened so far.

use std::time::{Duration, Instant};

use crate::activity::ActiveGuard;
use crate::error::AttemptError;
use crate::request::Request;
use crate::ticket::{Outcome, Phase, Sink};

pub(crate) struct Job {
    pub request: Request,
    pub service: usize,
    pub submitted: Instant,
    pub deadline: Instant,
    pub sink: Sink,
    /// Failed attempts so far, in order.
    pub failures: Vec<AttemptError>,
    /// Providers already tried, by index in the service (the first 64).
    pub tried: u64,
    /// Whether a non-idempotent request's bytes may have reached a provider.
    pub maybe_sent: bool,
    /// Since when the job has been waiting for a worker or a slot.
    pub waiting_since: Option<Instant>,
    pub queue_wait: Duration,
    /// A provider whose slot was taken for this job by whoever handed it over.
    pub reserved: Option<usize>,
    /// Whether the job holds a place in its service's waiting line.
    pub counted: bool,
    _active: ActiveGuard,
}

impl Job {
    pub fn new(
        request: Request,
        service: usize,
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
            tried: 0,
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

    pub fn was_tried(&self, provider: usize) -> bool {
        provider < 64 && self.tried & (1 << provider) != 0
    }

    pub fn mark_tried(&mut self, provider: usize) {
        if provider < 64 {
            self.tried |= 1 << provider;
        }
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
