//! What is to happen at a set time: jobs waiting out a backoff (so no worker sleeps), and
//! the deadlines of callback requests (which have no waiter to notice). The sending side
//! lives in the runtime; the timer thread (`timer.rs`) fires them.

use std::cmp::Ordering as CmpOrdering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::flow::job::Job;
use crate::flow::ticket::{CallbackCell, JobPhase};
use crate::foundation::error::Error;

pub(crate) struct Delayed {
    pub due: Instant,
    pub what: Due,
}

pub(crate) enum Due {
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
