//! The priority channels between callers and workers: one per priority, and `ready` for
//! jobs that already hold a slot. Workers take most urgent first.

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};

use crate::flow::job::Job;

/// The channels between callers and workers.
pub(crate) struct Channels {
    by_priority: [Sender<Job>; 4],
    /// Jobs that hold a reserved slot: taken before anything else.
    ready: Sender<Job>,
    receivers: Receivers,
}

/// A worker's end of the channels.
#[derive(Clone)]
pub(crate) struct Receivers {
    ready: Receiver<Job>,
    by_priority: [Receiver<Job>; 4],
}

impl Channels {
    pub fn new() -> Channels {
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let pairs: [(Sender<Job>, Receiver<Job>); 4] =
            std::array::from_fn(|_| crossbeam_channel::unbounded());
        let (senders, receivers): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        Channels {
            by_priority: senders.try_into().unwrap_or_else(|_| unreachable!()),
            ready: ready_tx,
            receivers: Receivers {
                ready: ready_rx,
                by_priority: receivers.try_into().unwrap_or_else(|_| unreachable!()),
            },
        }
    }

    /// Queues a job by its priority. The channels are unbounded: admission is counted
    /// per service before this, so a send never blocks and never fails while we hold
    /// the receivers.
    pub fn send(&self, job: Job) {
        let p = job.request.priority.index();
        let _ = self.by_priority[p].send(job);
    }

    /// Queues a job whose slot is already reserved.
    pub fn send_ready(&self, job: Job) {
        let _ = self.ready.send(job);
    }

    pub fn receivers(&self) -> Receivers {
        self.receivers.clone()
    }
}

/// What a worker got from [`Receivers::next`].
pub(crate) enum Next {
    /// A job that holds a reserved slot; it was not counted as waiting.
    Ready(Job),
    /// A queued job; it was counted as waiting in its service.
    Queued(Job),
    /// The stop signal fired.
    Stop,
}

impl Receivers {
    /// Blocks for the most urgent job, or until `stop` disconnects.
    pub fn next(&self, stop: &Receiver<()>) -> Next {
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            // Wait for anything to be ready, then take in priority order: a plain select
            // would pick among ready channels at random.
            let mut sel = Select::new();
            sel.recv(&self.ready);
            for rx in &self.by_priority {
                sel.recv(rx);
            }
            let stop_index = sel.recv(stop);
            if sel.ready() == stop_index
                && matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
            {
                return Next::Stop;
            }
        }
    }

    /// The most urgent job, without blocking.
    pub fn try_next(&self) -> Option<Next> {
        if let Ok(job) = self.ready.try_recv() {
            return Some(Next::Ready(job));
        }
        self.by_priority
            .iter()
            .find_map(|rx| rx.try_recv().ok())
            .map(Next::Queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::activity::Activity;
    use crate::flow::ticket::Sink;
    use crate::foundation::index_set::IndexSet;
    use crate::foundation::request::{Priority, Request};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn ready_jobs_first_then_most_urgent_first() {
        let activity = Arc::new(Activity::default());
        let job = |path: &str, priority| {
            let request = Request::get("s", path).priority(priority);
            let times = (Duration::ZERO, Duration::from_secs(1));
            Job::new(
                request,
                0,
                IndexSet::default(),
                times,
                Sink::Caller,
                activity.enter(),
            )
        };
        let channels = Channels::new();
        channels.send(job("/low", Priority::Low));
        channels.send(job("/critical", Priority::Critical));
        channels.send(job("/normal", Priority::Normal));
        channels.send_ready(job("/ready", Priority::Low));
        let receivers = channels.receivers();
        let order: Vec<String> = std::iter::from_fn(|| receivers.try_next())
            .map(|next| match next {
                Next::Ready(j) => format!("ready {}", j.request.endpoint),
                Next::Queued(j) => j.request.endpoint,
                Next::Stop => "stop".into(),
            })
            .collect();
        assert_eq!(order, ["ready /ready", "/critical", "/normal", "/low"]);
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        drop(stop_tx);
        assert!(matches!(receivers.next(&stop), Next::Stop));
    }
}
