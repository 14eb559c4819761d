//! A request on its way through the balancer: what it asked, what happened so far.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::flow::activity::ActiveGuard;
use crate::flow::ticket::{JobPhase, Outcome, Phase, Sink};
use crate::foundation::error::AttemptError;
use crate::foundation::index_set::IndexSet;
use crate::foundation::request::Request;
use crate::telemetry::spans::RequestSpan;
use crate::upstream::admission::Place;
use crate::upstream::service::Want;
use crate::upstream::slot::Slot;

/// What a job and its hedge share.
#[derive(Debug, Default)]
pub(crate) struct Race {
    /// The job's first attempt ended (answered or failed): a hedge not yet sent is moot.
    pub first_over: AtomicBool,
}

/// A hedge waiting for its time: what it needs to become a job of its own then.
pub(crate) struct HedgeOrder {
    pub request: Request,
    pub service: usize,
    pub eligible: IndexSet,
    /// The providers the hedged job has tried, its current one included.
    pub tried: IndexSet,
    pub times: (Duration, Duration),
    pub sink: Sink,
    pub race: Arc<Race>,
    /// The hedged request's span: the hedge is one more attempt in it.
    pub trace: RequestSpan,
}

impl HedgeOrder {
    /// Whether sending it now would be pointless: the first attempt ended, or the
    /// outcome is decided.
    pub fn is_moot(&self) -> bool {
        self.race.first_over.load(Ordering::Acquire)
            || self.sink.phase().is_some_and(|p| p.is_settled())
    }

    pub fn into_job(self, active: ActiveGuard) -> Job {
        let mut job = Job::new(
            self.request,
            self.service,
            self.eligible,
            self.times,
            self.sink,
            active,
        );
        job.tried = self.tried;
        job.race = Some(self.race);
        job.is_hedge = true;
        job.trace = self.trace;
        job
    }
}

/// A queued job that either a worker or its own waiter takes, whoever comes first: a
/// caller blocked on its ticket may as well run its request itself, with no hand-off.
pub(crate) type SharedJob = Arc<parking_lot::Mutex<Option<Job>>>;

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
    /// Shared with its hedge once one is armed; see [`Race`].
    pub race: Option<Arc<Race>>,
    /// This job is the hedge of another: it delivers only a winning answer, quietly ends
    /// otherwise, and never counts as a request of its own.
    pub is_hedge: bool,
    /// It may not wait for a batch (it was split from one, or carries one).
    pub unbatched: bool,
    /// The requests this job carries as one batch call; its own outcome goes nowhere.
    pub batch: Option<Vec<Job>>,
    /// Its span, with the `tracing` feature.
    pub trace: RequestSpan,
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
            race: None,
            is_hedge: false,
            unbatched: false,
            batch: None,
            trace: RequestSpan::default(),
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

    /// Claims the job for an attempt; false when a waiter settled it first. A hedge
    /// leaves the phase to the job it hedges, whose attempt may be running.
    pub fn begin_attempt(&self) -> bool {
        if self.is_hedge {
            return !self.is_settled();
        }
        self.sink
            .phase()
            .is_none_or(|p| p.shift(Phase::Waiting, Phase::Running))
    }

    /// Hands the job back to waiting after an attempt (it will park or retry).
    pub fn end_attempt(&self) {
        if self.is_hedge {
            return;
        }
        if let Some(p) = self.sink.phase() {
            p.shift(Phase::Running, Phase::Waiting);
        }
    }

    /// Whether a hedge of this job delivered its outcome (so the job itself has nothing
    /// to record).
    pub fn lost_to_its_hedge(&self) -> bool {
        !self.is_hedge && self.sink.phase().is_some_and(JobPhase::was_hedged)
    }

    /// Decides the outcome is this job's to deliver; false when a waiter, the job it
    /// hedges or its hedge settled it first.
    pub fn claim(&self) -> bool {
        self.sink.claim(self.is_hedge)
    }

    /// Delivers an outcome [`Job::claim`] won; see [`Job::finish`].
    pub fn finish_claimed(self, outcome: Outcome) -> Option<Outcome> {
        let Job { sink, _active, .. } = self;
        drop(_active);
        sink.deliver_claimed(outcome)
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
