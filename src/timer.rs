//! Jobs waiting out a backoff, held by one thread so no worker sleeps.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, Receiver, Sender};

use crate::balancer::Core;
use crate::job::Job;

pub(crate) struct Delayed {
    due: Instant,
    job: Job,
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
        if let Err(e) = self.tx.send(Delayed { due, job }) {
            // The timer thread is gone: the balancer has stopped.
            drop(e.into_inner().job.finish(Err(crate::Error::ShuttingDown)));
        }
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
                core.requeue(d.job);
            }
        }
    }
    for d in heap.into_iter().chain(rx.try_iter()) {
        core.end_stopped(d.job);
    }
}
