//! What is to happen at a set time: jobs waiting out a backoff (so no worker sleeps),
//! hedges waiting for their time, and the deadlines of callback requests (which have no
//! waiter to notice). The sending side
//! lives in the runtime; the timer thread (`timer.rs`) fires them.

use std::cmp::Ordering as CmpOrdering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::flow::job::{HedgeOrder, Job};
use crate::flow::ticket::{CallbackCell, JobPhase};
use crate::foundation::error::Error;

pub(crate) struct Delayed {
    /// Clock time.
    pub due: Duration,
    pub what: Due,
}

pub(crate) enum Due {
    /// Back to the queue.
    Requeue(Box<Job>),
    /// Send a hedge, unless the first attempt ended by then.
    Hedge(Box<HedgeOrder>),
    /// Close batch `id` of `endpoint` under `key` and send it.
    CloseBatch {
        service: usize,
        endpoint: String,
        key: u128,
        id: u64,
    },
    /// Time out a callback request still waiting for a worker or a slot.
    Expire {
        phase: Arc<JobPhase>,
        callback: CallbackCell,
        started: Duration,
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
    pub fn schedule(&self, job: Job, due: Duration) {
        let what = Due::Requeue(Box::new(job));
        if let Err(e) = self.tx.send(Delayed { due, what }) {
            // The timer thread is gone: the balancer has stopped.
            if let Due::Requeue(job) = e.into_inner().what {
                job.finish(Err(Error::ShuttingDown));
            }
        }
    }

    /// Sends the hedge at `due` unless the first attempt ends before; a stopped timer
    /// drops it (the hedged job still has its own outcome).
    pub fn hedge(&self, order: HedgeOrder, due: Duration) {
        let _ = self.tx.send(Delayed {
            due,
            what: Due::Hedge(Box::new(order)),
        });
    }

    /// Closes a batch at `due`. False when the timer is gone (the balancer stopped): the
    /// caller then ends the batch itself.
    pub fn close_batch(
        &self,
        service: usize,
        endpoint: &str,
        key: u128,
        id: u64,
        due: Duration,
    ) -> bool {
        let what = Due::CloseBatch {
            service,
            endpoint: endpoint.to_string(),
            key,
            id,
        };
        self.tx.send(Delayed { due, what }).is_ok()
    }

    /// Times out a callback request at `due` unless it has started or ended by then.
    pub fn expire(
        &self,
        phase: Arc<JobPhase>,
        callback: CallbackCell,
        started: Duration,
        due: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::activity::Activity;
    use crate::flow::ticket::Ticket;
    use crate::foundation::clock::ManualClock;
    use crate::foundation::index_set::IndexSet;
    use crate::foundation::request::Request;
    use std::collections::BinaryHeap;

    #[test]
    fn the_earliest_is_fired_first_and_a_stopped_timer_ends_the_job() {
        let (timer, rx) = Timer::new();
        let activity = Arc::new(Activity::default());
        let clock = ManualClock::shared();
        let job = |ms: u64| {
            let (ticket, sink) = Ticket::new(clock.clone(), Duration::ZERO, Duration::from_secs(9));
            let times = (Duration::ZERO, Duration::from_secs(9));
            let job = Job::new(
                Request::get("s", "/x"),
                0,
                IndexSet::default(),
                times,
                sink,
                activity.enter(),
            );
            (job, ticket, Duration::from_millis(ms))
        };
        let mut tickets = Vec::new();
        for ms in [30, 10, 20] {
            let (j, t, due) = job(ms);
            timer.schedule(j, due);
            tickets.push(t);
        }
        let mut heap: BinaryHeap<Delayed> = rx.try_iter().collect();
        let order: Vec<u128> = std::iter::from_fn(|| heap.pop())
            .map(|d| d.due.as_millis())
            .collect();
        assert_eq!(order, [10, 20, 30]);
        // With the timer thread gone the job cannot wait: it ends at once.
        drop(rx);
        let (j, t, due) = job(5);
        timer.schedule(j, due);
        assert!(matches!(t.wait(), Err(Error::ShuttingDown)));
        drop(tickets);
    }
}
