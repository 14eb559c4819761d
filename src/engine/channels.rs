//! The priority channels between callers and workers: one per priority, and `ready` for
//! jobs that already hold a slot. Workers take most urgent first.
//!
//! An idle worker sleeps on a doorbell rather than in a select over the five channels: a
//! select registers with every channel and spins and yields before it sleeps, which on a
//! busy machine cost more than the job hand-off itself. A send rings only when a worker
//! sleeps, and wakes one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::{Condvar, Mutex};

use crate::flow::job::{Job, SharedJob};

/// What the priority channels carry.
// A job travels by value, as it always has: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Entry {
    Job(Job),
    /// A job its waiter may have taken already; then the entry is skipped.
    Shared(SharedJob),
}

/// The channels between callers and workers.
pub(crate) struct Channels {
    by_priority: [Sender<Entry>; 4],
    /// Jobs that hold a reserved slot: taken before anything else.
    ready: Sender<Job>,
    receivers: Receivers,
}

/// A worker's end of the channels.
#[derive(Clone)]
pub(crate) struct Receivers {
    ready: Receiver<Job>,
    by_priority: [Receiver<Entry>; 4],
    doorbell: Arc<Doorbell>,
}

/// Where idle workers sleep.
#[derive(Default)]
struct Doorbell {
    /// Workers asleep or about to be; read by every send.
    sleeping: AtomicUsize,
    /// Rings so far: a worker about to sleep sleeps only if none came since it looked.
    rings: AtomicUsize,
    /// Held only to check `rings` and sleep, so a worker preempted while holding it
    /// holds up no sender for long.
    lock: Mutex<()>,
    rung: Condvar,
}

impl Doorbell {
    /// After a send: wakes one sleeping worker, if any.
    fn ring(&self) {
        // SeqCst pairs with `Receivers::next`: either the sender sees the worker counted
        // as sleeping, or the worker's last look at the channels sees the job.
        self.rings.fetch_add(1, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) > 0 {
            let _held = self.lock.lock();
            self.rung.notify_one();
        }
    }
}

impl Channels {
    pub fn new() -> Channels {
        let (ready_tx, ready_rx) = crossbeam_channel::unbounded();
        let pairs: [(Sender<Entry>, Receiver<Entry>); 4] =
            std::array::from_fn(|_| crossbeam_channel::unbounded());
        let (senders, receivers): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        Channels {
            by_priority: senders.try_into().unwrap_or_else(|_| unreachable!()),
            ready: ready_tx,
            receivers: Receivers {
                ready: ready_rx,
                by_priority: receivers.try_into().unwrap_or_else(|_| unreachable!()),
                doorbell: Arc::default(),
            },
        }
    }

    /// Queues a job by its priority. The channels are unbounded: admission is counted
    /// per service before this, so a send never blocks and never fails while we hold
    /// the receivers.
    pub fn send(&self, job: Job) {
        let p = job.request.priority.index();
        let _ = self.by_priority[p].send(Entry::Job(job));
        self.receivers.doorbell.ring();
    }

    /// Queues a job by its priority that its waiter may take first.
    pub fn send_shared(&self, job: Job) -> SharedJob {
        let p = job.request.priority.index();
        let shared: SharedJob = Arc::new(parking_lot::Mutex::new(Some(job)));
        let _ = self.by_priority[p].send(Entry::Shared(shared.clone()));
        self.receivers.doorbell.ring();
        shared
    }

    /// Queues a job whose slot is already reserved.
    pub fn send_ready(&self, job: Job) {
        let _ = self.ready.send(job);
        self.receivers.doorbell.ring();
    }

    /// Wakes every sleeping worker: the stop signal has fired.
    pub fn wake_all(&self) {
        let doorbell = &self.receivers.doorbell;
        doorbell.rings.fetch_add(1, Ordering::SeqCst);
        let _held = doorbell.lock.lock();
        doorbell.rung.notify_all();
    }

    /// Workers asleep on the doorbell (or about to be), for tests that race them.
    #[cfg(test)]
    pub fn sleeping_workers(&self) -> usize {
        self.receivers.doorbell.sleeping.load(Ordering::SeqCst)
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
    /// Blocks for the most urgent job, or until `stop` disconnects (then
    /// [`Channels::wake_all`] wakes whoever sleeps).
    pub fn next(&self, stop: &Receiver<()>) -> Next {
        let stopped = || matches!(stop.try_recv(), Err(TryRecvError::Disconnected));
        loop {
            if let Some(next) = self.try_next() {
                return next;
            }
            if stopped() {
                return Next::Stop;
            }
            let bell = &self.doorbell;
            let seen = bell.rings.load(Ordering::SeqCst);
            bell.sleeping.fetch_add(1, Ordering::SeqCst);
            // A last look with the count raised: a job sent after it rings.
            let found = self.try_next();
            if found.is_none() && !stopped() {
                let mut held = bell.lock.lock();
                if bell.rings.load(Ordering::SeqCst) == seen {
                    bell.rung.wait(&mut held);
                }
            }
            bell.sleeping.fetch_sub(1, Ordering::SeqCst);
            if let Some(next) = found {
                return next;
            }
        }
    }

    /// The most urgent job, without blocking.
    pub fn try_next(&self) -> Option<Next> {
        if let Ok(job) = self.ready.try_recv() {
            return Some(Next::Ready(job));
        }
        for rx in &self.by_priority {
            while let Ok(entry) = rx.try_recv() {
                let job = match entry {
                    Entry::Job(job) => Some(job),
                    Entry::Shared(shared) => shared.lock().take(),
                };
                if let Some(job) = job {
                    return Some(Next::Queued(job));
                }
            }
        }
        None
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
                Next::Queued(j) => j.request.endpoint.to_string(),
                Next::Stop => "stop".into(),
            })
            .collect();
        assert_eq!(order, ["ready /ready", "/critical", "/normal", "/low"]);
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        drop(stop_tx);
        assert!(matches!(receivers.next(&stop), Next::Stop));
    }
}
