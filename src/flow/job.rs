//! A request on its way through the balancer: what it asked, what happened so far.

use std::time::Duration;

use crate::flow::activity::ActiveGuard;
use crate::flow::ticket::{Outcome, Phase, Sink};
use crate::foundation::error::AttemptError;
use crate::foundation::index_set::IndexSet;
use crate::foundation::request::Request;
use crate::upstream::admission::Place;
use crate::upstream::service::Want;
use crate::upstream::slot::Slot;

pub(crate) struct Job {
    pub request: Request,
    pub service: usize,
    /// Clock times of submission and deadline.
    pub submitted: Duration,
    pub deadline: Duration,
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
    pub waiting_since: Option<Duration>,
    pub queue_wait: Duration,
    /// A slot taken for this job by whoever handed it over.
    pub reserved: Option<Slot>,
    /// The job's place in its service's waiting line, while it waits.
    pub place: Option<Place>,
    /// Whether it looked in its endpoint's cache already (a miss is counted once).
    pub looked_in_cache: bool,
    _active: ActiveGuard,
}

impl Job {
    /// A job submitted at `now` that must end by `deadline`.
    pub fn new(
        request: Request,
        service: usize,
        eligible: IndexSet,
        (now, deadline): (Duration, Duration),
        sink: Sink,
        active: ActiveGuard,
    ) -> Job {
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
            place: None,
            looked_in_cache: false,
            _active: active,
        }
    }

    pub fn attempts(&self) -> u32 {
        self.failures.len() as u32
    }

    /// What the job asks of its service's providers now.
    pub fn want(&self) -> Want<'_> {
        Want {
            eligible: &self.eligible,
            tried: &self.tried,
            attempts: self.attempts(),
            urgent: self.request.priority.is_urgent(),
            deadline: self.deadline,
        }
    }

    pub fn start_waiting(&mut self, now: Duration) {
        self.waiting_since = Some(now);
    }

    pub fn stop_waiting(&mut self, now: Duration) {
        if let Some(since) = self.waiting_since.take() {
            self.queue_wait += now.saturating_sub(since);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::activity::Activity;
    use std::sync::Arc;

    #[test]
    fn waits_add_up_and_finishing_ends_the_activity_before_delivery() {
        let activity = Arc::new(Activity::default());
        let times = (Duration::ZERO, Duration::from_secs(1));
        let mut job = Job::new(
            Request::get("s", "/x"),
            0,
            IndexSet::default(),
            times,
            Sink::Caller,
            activity.enter(),
        );
        job.start_waiting(Duration::from_millis(10));
        job.stop_waiting(Duration::from_millis(30));
        job.stop_waiting(Duration::from_millis(90));
        job.start_waiting(Duration::from_millis(100));
        job.stop_waiting(Duration::from_millis(105));
        assert_eq!(job.queue_wait, Duration::from_millis(25));
        job.tried.insert(3);
        assert!(job.want().tried.contains(3) && job.want().attempts == 0);
        assert!(job.begin_attempt(), "a caller's job has no phase to lose");
        assert_eq!(activity.count(), 1);
        let outcome = job.finish(Err(crate::foundation::error::Error::ShuttingDown));
        assert!(outcome.is_some());
        assert_eq!(activity.count(), 0);
    }
}
