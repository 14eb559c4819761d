//! One thread for everything that happens at a set time: jobs waiting out a backoff (so no
//! worker sleeps), and the deadlines of callback requests (which have no waiter to notice).

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, Sender};

use crate::balancer::Core;
use crate::flow::job::Job;
use crate::flow::ticket::{call_back, CallbackCell, JobPhase, Phase};
use crate::foundation::error::Error;

pub(crate) struct Delayed {
    due: Instant,
    what: Due,
}

enum Due {
    /// Back to the queue.
    Requeue(Box<Job>),
    /// Time out a callback request still waiting for a worker or a slot.
    Expire {
        phase: Arc<JobPhase>,
        callback: CallbackCell,
        started: Instant,
    },
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    // Reversed: the heap's top is the earliest.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.due.cmp(&self.due)
    }
}

/// The sending side, held by the core.
pub(crate) struct Timer {
    tx: Sender<Delayed>,
}

impl Timer {
    pub fn new() -> (Timer, Receiver<Delayed>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Timer { tx }, rx)
    }

    /// Hands the job back to the queue at `due`.
    pub fn schedule(&self, job: Job, due: Instant) {
        let what = Due::Requeue(Box::new(job));
        if let Err(e) = self.tx.send(Delayed { due, what }) {
            // The timer thread is gone: the balancer has stopped.
            if let Due::Requeue(job) = e.into_inner().what {
                job.finish(Err(Error::ShuttingDown));
            }
        }
    }

    /// Times out a callback request at `due` unless it has started or ended by then.
    pub fn expire(
        &self,
        phase: Arc<JobPhase>,
        callback: CallbackCell,
        started: Instant,
        due: Instant,
    ) {
        let what = Due::Expire {
            phase,
            callback,
            started,
        };
        // Without the thread the balancer has stopped, and shutdown ends the job itself.
        let _ = self.tx.send(Delayed { due, what });
    }
}

/// The timer thread: requeues jobs as they fall due; at stop, ends the rest.
pub(crate) fn run(core: Arc<Core>, rx: Receiver<Delayed>, stop: Receiver<()>) {
    let mut heap: BinaryHeap<Delayed> = BinaryHeap::new();
    loop {
        let wait = heap
            .peek()
            .map(|d| d.due.saturating_duration_since(Instant::now()));
        let received = match wait {
            Some(wait) => select! {
                recv(rx) -> d => d.ok(),
                recv(stop) -> _ => break,
                default(wait) => None,
            },
            None => select! {
                recv(rx) -> d => d.ok(),
                recv(stop) -> _ => break,
            },
        };
        if let Some(d) = received {
            heap.push(d);
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = heap.pop() {
                fire(&core, d.what);
            }
        }
    }
    for d in heap.into_iter().chain(rx.try_iter()) {
        if let Due::Requeue(job) = d.what {
            core.end_stopped(*job);
        }
    }
}

fn fire(core: &Core, what: Due) {
    match what {
        Due::Requeue(job) => core.requeue(*job),
        Due::Expire {
            phase,
            callback,
            started,
        } => {
            if phase.shift(Phase::Waiting, Phase::Settled) {
                let elapsed = started.elapsed();
                let attempts = Vec::new();
                call_back(&callback, Err(Error::Timeout { elapsed, attempts }));
            }
        }
    }
}
