//! Waiting lines: the balancer's priority channels, and each service's admission count
//! and list of jobs parked until one of its providers frees a connection slot.
//!
//! Workers take from the channels most urgent first. A job a worker cannot start because
//! every eligible provider is at `max_connections` parks in its service's list, ordered by
//! priority; whoever releases a slot of that service hands it to the first parked job
//! that can use it. No thread ever waits for a slot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Select, Sender, TryRecvError};
use parking_lot::Mutex;

use crate::flow::job::Job;
use crate::foundation::request::Priority;

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

/// One service's waiting requests: counted for admission, parked when slots run out.
pub(crate) struct ServiceQueue {
    pub max_size: usize,
    waiting: AtomicUsize,
    by_priority: [AtomicUsize; 4],
    parked: Mutex<[VecDeque<Job>; 4]>,
    parked_count: AtomicUsize,
}

impl ServiceQueue {
    pub fn new(max_size: usize) -> ServiceQueue {
        ServiceQueue {
            max_size,
            waiting: AtomicUsize::new(0),
            by_priority: Default::default(),
            parked: Mutex::new(Default::default()),
            parked_count: AtomicUsize::new(0),
        }
    }

    /// Takes a place in the line for the job, or `false` when `max_size` are already waiting.
    pub fn admit(&self, job: &mut Job) -> bool {
        let priority = job.request.priority;
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_size).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.by_priority[priority.index()].fetch_add(1, Ordering::AcqRel);
            job.counted = true;
        }
        admitted
    }

    /// Counts a job back into the line whatever the count: it was admitted before.
    pub fn enter(&self, job: &mut Job) {
        if !job.counted {
            job.counted = true;
            self.waiting.fetch_add(1, Ordering::AcqRel);
            self.by_priority[job.request.priority.index()].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Gives a place back.
    fn leave(&self, priority: Priority) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.by_priority[priority.index()].fetch_sub(1, Ordering::AcqRel);
    }

    /// Requests waiting for a worker or a slot.
    pub fn depth(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Requests waiting per priority, most urgent first.
    pub fn depth_by_priority(&self) -> [usize; 4] {
        std::array::from_fn(|i| self.by_priority[i].load(Ordering::Acquire))
    }

    /// Whether anything as urgent as `priority`, or more, is waiting.
    pub fn has_waiting_at_or_above(&self, priority: Priority) -> bool {
        self.by_priority[..=priority.index()]
            .iter()
            .any(|n| n.load(Ordering::Acquire) > 0)
    }

    /// Stops counting a job as waiting (it got a slot, or it ended).
    pub fn uncount(&self, job: &mut Job) {
        if job.counted {
            job.counted = false;
            self.leave(job.request.priority);
        }
    }

    /// Parks a job until a slot frees, unless `retry` finds one first. `retry` runs under
    /// the lock after the job is counted as parked, so a release that happens at the same
    /// moment either is seen by `retry` or sees the parked job (SeqCst on both sides).
    ///
    /// Returns the job with what `retry` acquired, or `None` when parked.
    pub fn park<T>(&self, mut job: Job, retry: impl FnOnce(&Job) -> Option<T>) -> Option<(Job, T)> {
        let mut parked = self.parked.lock();
        self.parked_count.fetch_add(1, Ordering::SeqCst);
        if let Some(slot) = retry(&job) {
            self.parked_count.fetch_sub(1, Ordering::SeqCst);
            self.uncount(&mut job);
            return Some((job, slot));
        }
        self.enter(&mut job);
        parked[job.request.priority.index()].push_back(job);
        None
    }

    /// After a provider released a slot: the first parked job, most urgent first, that
    /// `take` accepts (`take` acquires the slot for it). Jobs settled meanwhile are dropped.
    pub fn unpark<T>(&self, take: impl Fn(&Job) -> Option<T>) -> Option<(Job, T)> {
        if self.parked_count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let mut parked = self.parked.lock();
        for line in parked.iter_mut() {
            let mut i = 0;
            while i < line.len() {
                let settled = line[i].is_settled();
                let taken = if settled { None } else { take(&line[i]) };
                if settled || taken.is_some() {
                    let mut job = line.remove(i).unwrap_or_else(|| unreachable!());
                    self.parked_count.fetch_sub(1, Ordering::SeqCst);
                    self.uncount(&mut job);
                    if let Some(t) = taken {
                        return Some((job, t));
                    }
                    // A settled job's waiter already has its outcome; it just goes.
                    continue;
                }
                i += 1;
            }
        }
        None
    }

    /// Every parked job, for shutdown.
    pub fn drain_parked(&self) -> Vec<Job> {
        let mut parked = self.parked.lock();
        let mut jobs: Vec<Job> = parked.iter_mut().flat_map(|line| line.drain(..)).collect();
        for job in &mut jobs {
            self.parked_count.fetch_sub(1, Ordering::SeqCst);
            self.uncount(job);
        }
        jobs
    }
}
