//! The timer thread: fires what falls due (see `schedule.rs`) and, at stop, ends the
//! jobs still waiting out a backoff.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, Receiver};

use crate::engine::runtime::Core;
use crate::engine::schedule::{Delayed, Due};
use crate::flow::ticket::{call_back, Phase};
use crate::foundation::error::Error;

/// The timer thread: requeues jobs as they fall due; at stop, ends the rest.
pub(crate) fn keep_time(core: Arc<Core>, rx: Receiver<Delayed>, stop: Receiver<()>) {
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
