//! Delivering a request's one outcome: to a blocked caller, a [`Ticket`] or a callback.
//!
//! A job's [`Phase`] is the single arbiter of "exactly one outcome": whoever moves it to
//! `Settled` first (the worker with an answer, or a waiter whose deadline passed while
//! the job was still queued) delivers, and the other side sees that it lost.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, TryRecvError};

use crate::flow::handoff::{handoff, OutcomeReceiver, OutcomeSender};

use crate::foundation::clock::SharedClock;
use crate::foundation::sync::AtomicU8;

use crate::foundation::error::Error;
use crate::foundation::response::Response;

pub(crate) type Outcome = Result<Response, Error>;

/// Where a job is; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Waiting for a worker or a connection slot: a waiter may time it out.
    Waiting = 0,
    /// An attempt is on the wire; its own timeout ends by the deadline.
    Running = 1,
    /// The outcome is decided.
    Settled = 2,
    /// The outcome is decided, by a hedge's answer.
    Hedged = 3,
}

#[derive(Debug, Default)]
pub(crate) struct JobPhase(AtomicU8);

impl JobPhase {
    /// Moves `from` -> `to`; false when the job was elsewhere (typically settled).
    pub fn shift(&self, from: Phase, to: Phase) -> bool {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub fn settle(&self) -> bool {
        self.settle_as(Phase::Settled)
    }

    /// Settles it for a hedge, so the hedged job can tell who delivered.
    pub fn settle_for_hedge(&self) -> bool {
        self.settle_as(Phase::Hedged)
    }

    /// Decides the outcome unless it was decided already, keeping who decided it.
    fn settle_as(&self, to: Phase) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < Phase::Settled as u8).then_some(to as u8)
            })
            .is_ok()
    }

    pub fn is_settled(&self) -> bool {
        self.0.load(Ordering::Acquire) >= Phase::Settled as u8
    }

    /// Whether a hedge's answer decided the outcome.
    pub fn was_hedged(&self) -> bool {
        self.0.load(Ordering::Acquire) == Phase::Hedged as u8
    }
}

/// A completion callback, called once on a worker thread.
pub(crate) type Callback = Box<dyn FnOnce(Outcome) + Send + 'static>;

/// A callback shared by the job and the timer that fires it at the deadline if the job
/// is still waiting then; whoever settles the job's phase takes it.
pub(crate) type CallbackCell = Arc<parking_lot::Mutex<Option<Callback>>>;

/// Calls a callback, with the cell's lock already released; a panicking one must not
/// take a worker thread down with it.
pub(crate) fn call_back(cell: &CallbackCell, outcome: Outcome) {
    let callback = cell.lock().take();
    if let Some(callback) = callback {
        let _ = catch_unwind(AssertUnwindSafe(|| callback(outcome)));
    }
}

/// Where a job's outcome goes.
pub(crate) enum Sink {
    /// The thread driving the job is the caller: the outcome is returned to it.
    Caller,
    /// A [`Ticket`] holds the receiving end.
    Channel(Arc<JobPhase>, OutcomeSender<Outcome>),
    /// A callback owns the outcome.
    Callback(Arc<JobPhase>, CallbackCell),
}

impl Sink {
    pub fn phase(&self) -> Option<&JobPhase> {
        match self {
            Sink::Caller => None,
            Sink::Channel(phase, _) | Sink::Callback(phase, _) => Some(phase),
        }
    }

    /// A second sink for the same outcome (a hedge's): whoever settles first delivers.
    /// `None` for `Caller`, whose outcome can only come back to the thread driving it.
    pub fn share(&self) -> Option<Sink> {
        match self {
            Sink::Caller => None,
            Sink::Channel(phase, tx) => Some(Sink::Channel(phase.clone(), tx.clone())),
            Sink::Callback(phase, cell) => Some(Sink::Callback(phase.clone(), cell.clone())),
        }
    }

    /// Decides the outcome is this side's to deliver; false when somebody settled first.
    /// A hedge claims so that the job it hedges can tell.
    pub fn claim(&self, for_hedge: bool) -> bool {
        self.phase().is_none_or(|p| {
            if for_hedge {
                p.settle_for_hedge()
            } else {
                p.settle()
            }
        })
    }

    /// Delivers an outcome this side has claimed. Returns it for `Caller`.
    pub fn deliver_claimed(self, outcome: Outcome) -> Option<Outcome> {
        match self {
            Sink::Caller => Some(outcome),
            Sink::Channel(_, tx) => {
                tx.send(outcome);
                None
            }
            Sink::Callback(_, cell) => {
                call_back(&cell, outcome);
                None
            }
        }
    }

    /// Delivers the outcome unless somebody settled the job first. Returns it for `Caller`.
    pub fn deliver(self, outcome: Outcome) -> Option<Outcome> {
        if !self.claim(false) {
            return None;
        }
        self.deliver_claimed(outcome)
    }
}

/// How long past its deadline a waiter gives a running attempt to deliver.
pub(crate) const OVERTIME: Duration = Duration::from_millis(250);

/// A submitted request's claim on its outcome.
///
/// Every ticket gets exactly one outcome: a [`Response`] or an [`Error`], also at
/// shutdown. Dropping a ticket does not cancel the request.
pub struct Ticket {
    phase: Arc<JobPhase>,
    rx: OutcomeReceiver<Outcome>,
    clock: SharedClock,
    /// Clock times of submission and deadline.
    started: Duration,
    deadline: Duration,
    spent: bool,
    /// Runs the job on the waiting thread if no worker has taken it yet.
    run_here: Option<RunHere>,
}

/// What [`Ticket::wait`] calls first: takes its job, if still queued, and drives it.
pub(crate) type RunHere = Box<dyn FnOnce() + Send + Sync>;

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("spent", &self.spent)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// A ticket for a job submitted at clock time `started`, due by `deadline`.
    pub(crate) fn new(clock: SharedClock, started: Duration, deadline: Duration) -> (Ticket, Sink) {
        let phase = Arc::new(JobPhase::default());
        let (tx, rx) = handoff();
        let ticket = Ticket {
            phase: phase.clone(),
            rx,
            clock,
            started,
            deadline,
            spent: false,
            run_here: None,
        };
        (ticket, Sink::Channel(phase, tx))
    }

    /// Lets [`Ticket::wait`] run the job itself when it gets to it before a worker.
    pub(crate) fn run_here_first(&mut self, run: RunHere) {
        self.run_here = Some(run);
    }

    /// Blocks until the outcome; at the latest 250 ms after the request's deadline,
    /// whatever the request is doing.
    pub fn wait(mut self) -> Result<Response, Error> {
        if let Some(run) = self.run_here.take() {
            run();
        }
        if let Some(outcome) = self.poll(self.deadline) {
            return outcome;
        }
        // Past the deadline with an attempt on the wire: it ends by the deadline on its own
        // and brings its details, unless something holds it up.
        match self.receive_until(self.deadline + OVERTIME) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Disconnected) => Err(dropped()),
            Err(RecvTimeoutError::Timeout) => self.give_up(),
        }
    }

    /// Settles the job as timed out, whatever its phase; a late answer is then dropped.
    fn give_up(&mut self) -> Outcome {
        self.spent = true;
        if self.phase.settle() {
            return Err(self.timed_out());
        }
        // Settled by the worker at the last moment: its outcome is on its way.
        self.rx
            .recv_timeout(OVERTIME)
            .unwrap_or_else(|_| Err(dropped()))
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            elapsed: self.clock.now().saturating_sub(self.started),
            attempts: Vec::new(),
        }
    }

    /// Waits at most `timeout`. `None` when the outcome is not there yet; once the
    /// outcome has been returned the ticket is spent and returns `None` for ever.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<Response, Error>> {
        let until = self.clock.now().saturating_add(timeout);
        self.poll(until.min(self.deadline))
            .or_else(|| self.poll(until))
    }

    /// The outcome if it is there, without blocking; see [`Ticket::wait_timeout`].
    pub fn try_wait(&mut self) -> Option<Result<Response, Error>> {
        self.poll(self.clock.now())
    }

    /// Receives until clock time `until` (at once when it has passed).
    fn receive_until(&self, until: Duration) -> Result<Outcome, RecvTimeoutError> {
        let left = until.saturating_sub(self.clock.now());
        if left.is_zero() {
            return self.rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            });
        }
        self.rx.recv_timeout(left)
    }

    /// Receives until `until`; then, past the deadline, settles a still-waiting job as timed out.
    fn poll(&mut self, until: Duration) -> Option<Outcome> {
        if self.spent {
            return None;
        }
        let got = match self.receive_until(until) {
            Ok(outcome) => Some(outcome),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Err(dropped())),
        };
        let got = got.or_else(|| {
            // A running attempt ends by the deadline on its own and brings its details.
            (self.clock.now() >= self.deadline && self.phase.shift(Phase::Waiting, Phase::Settled))
                .then(|| Err(self.timed_out()))
        });
        self.spent = got.is_some();
        got
    }
}

fn dropped() -> Error {
    Error::Internal("the request was dropped without an outcome".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::clock::ManualClock;

    fn ticket(deadline_ms: u64) -> (Ticket, Sink, Arc<ManualClock>) {
        let clock = ManualClock::shared();
        let (t, sink) = Ticket::new(
            clock.clone(),
            Duration::ZERO,
            Duration::from_millis(deadline_ms),
        );
        (t, sink, clock)
    }

    fn answer() -> Outcome {
        Err(Error::NoHealthyProvider {
            service: "s".into(),
        })
    }

    #[test]
    fn the_outcome_arrives_once_and_the_ticket_is_then_spent() {
        let (mut t, sink, _clock) = ticket(1_000);
        assert!(t.try_wait().is_none());
        assert!(sink.deliver(answer()).is_none());
        assert!(matches!(
            t.try_wait(),
            Some(Err(Error::NoHealthyProvider { .. }))
        ));
        assert!(t.try_wait().is_none());
        assert!(t.wait_timeout(Duration::ZERO).is_none());
    }

    #[test]
    fn a_waiting_job_past_its_deadline_is_settled_by_the_ticket_and_the_late_answer_dropped() {
        let (mut t, sink, clock) = ticket(100);
        clock.advance(Duration::from_millis(100));
        assert!(
            matches!(t.try_wait(), Some(Err(Error::Timeout { elapsed, .. })) if elapsed == Duration::from_millis(100))
        );
        assert!(sink.phase().unwrap().is_settled());
        assert!(sink.deliver(answer()).is_none(), "the worker lost the race");
    }

    #[test]
    fn a_running_job_past_its_overtime_is_given_up() {
        let (t, sink, clock) = ticket(100);
        assert!(sink.phase().unwrap().shift(Phase::Waiting, Phase::Running));
        clock.advance(Duration::from_millis(100) + OVERTIME);
        assert!(matches!(t.wait(), Err(Error::Timeout { .. })));
        assert!(sink.deliver(answer()).is_none());
    }

    #[test]
    fn a_dropped_job_is_an_internal_error_not_a_hang() {
        let (t, sink, _clock) = ticket(60_000);
        drop(sink);
        assert!(matches!(t.wait(), Err(Error::Internal(_))));
    }

    #[test]
    fn exactly_one_side_settles_however_they_race() {
        for _ in 0..500 {
            let phase = Arc::new(JobPhase::default());
            let waiter = {
                let phase = phase.clone();
                std::thread::spawn(move || phase.shift(Phase::Waiting, Phase::Settled))
            };
            let worker = phase.shift(Phase::Waiting, Phase::Running) && phase.settle();
            let waiter = waiter.join().unwrap();
            assert!(worker ^ waiter, "worker {worker}, waiter {waiter}");
        }
    }

    #[test]
    fn a_callback_runs_once_with_its_cell_unlocked() {
        let cell: CallbackCell = Arc::new(parking_lot::Mutex::new(None));
        let inner = cell.clone();
        *cell.lock() = Some(Box::new(move |_| {
            // Would deadlock if the cell's lock were held while calling.
            assert!(inner.lock().is_none());
        }));
        call_back(&cell, answer());
        call_back(&cell, answer());
    }
}

/// Model checks (`RUSTFLAGS="--cfg loom" cargo test --lib loom_`): every interleaving of a
/// worker running a job to its outcome and a waiter whose deadline passes.
#[cfg(all(test, loom))]
mod model {
    use super::*;

    /// A worker's path: claim, attempt, hand back (it failed), claim again, deliver.
    fn worker(phase: &JobPhase) -> bool {
        phase.shift(Phase::Waiting, Phase::Running)
            && phase.shift(Phase::Running, Phase::Waiting)
            && phase.shift(Phase::Waiting, Phase::Running)
            && phase.settle()
    }

    #[test]
    fn loom_a_waiter_timing_out_a_waiting_job_and_a_worker_settle_once() {
        loom::model(|| {
            let phase = loom::sync::Arc::new(JobPhase::default());
            let waiter = {
                let phase = phase.clone();
                loom::thread::spawn(move || phase.shift(Phase::Waiting, Phase::Settled))
            };
            let worker_won = worker(&phase);
            let waiter_won = waiter.join().unwrap();
            assert!(
                worker_won ^ waiter_won,
                "worker {worker_won}, waiter {waiter_won}"
            );
            assert!(phase.is_settled());
        });
    }

    #[test]
    fn loom_a_waiter_giving_up_past_the_overtime_and_a_worker_settle_once() {
        loom::model(|| {
            let phase = loom::sync::Arc::new(JobPhase::default());
            let waiter = {
                let phase = phase.clone();
                loom::thread::spawn(move || phase.settle())
            };
            let worker_won = worker(&phase);
            let waiter_won = waiter.join().unwrap();
            assert!(
                worker_won ^ waiter_won,
                "worker {worker_won}, waiter {waiter_won}"
            );
        });
    }
}
