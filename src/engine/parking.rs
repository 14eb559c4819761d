//! A service's parked jobs: those a driver could not start because every eligible
//! provider was at `max_connections`. Whoever releases a slot of the service hands it to
//! the first parked job, most urgent first, that can use it. No thread waits for a slot.
//!
//! The closures given to [`ParkingLine::park`] and [`ParkingLine::unpark`] run under the
//! line's lock; they only take slots and permits (no user code: circuit events are queued).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crate::flow::job::Job;
use crate::foundation::sync::{AtomicUsize, Mutex};

#[derive(Default)]
pub(crate) struct ParkingLine {
    parked: Mutex<[VecDeque<Job>; 4]>,
    count: AtomicUsize,
}

impl ParkingLine {
    /// Parks a job until a slot frees, unless `retry` finds one first. `retry` runs under
    /// the lock after the job is counted as parked, so a release that happens at the same
    /// moment either is seen by `retry` or sees the parked job: both sides count with a
    /// read-modify-write, so whichever comes second sees the first (checked with loom).
    ///
    /// Returns the job with what `retry` acquired, or `None` when parked.
    pub fn park<T>(&self, job: Job, retry: impl FnOnce(&Job) -> Option<T>) -> Option<(Job, T)> {
        let mut parked = self.parked.lock();
        self.count.fetch_add(1, Ordering::SeqCst);
        if let Some(found) = retry(&job) {
            self.count.fetch_sub(1, Ordering::SeqCst);
            return Some((job, found));
        }
        parked[job.request.priority.index()].push_back(job);
        None
    }

    /// After a provider released a slot: the first parked job, most urgent first, that
    /// `take` accepts (`take` acquires the slot for it). Jobs settled meanwhile leave the
    /// line and are returned in `settled`, for their driver to end outside the lock.
    pub fn unpark<T>(
        &self,
        take: impl Fn(&Job) -> Option<T>,
        settled: &mut Vec<Job>,
    ) -> Option<(Job, T)> {
        // A read-modify-write, not a load: it reads the latest count, and a parker whose
        // count went in first synchronises with it (a plain load would lean on SeqCst's
        // store-buffer guarantee, which the model checker cannot verify).
        if self.count.fetch_add(0, Ordering::SeqCst) == 0 {
            return None;
        }
        let mut parked = self.parked.lock();
        for line in parked.iter_mut() {
            let mut i = 0;
            while i < line.len() {
                let gone = line[i].is_settled();
                let taken = if gone { None } else { take(&line[i]) };
                if gone || taken.is_some() {
                    let job = line.remove(i).unwrap_or_else(|| unreachable!());
                    self.count.fetch_sub(1, Ordering::SeqCst);
                    match taken {
                        Some(t) => return Some((job, t)),
                        None => {
                            settled.push(job);
                            continue;
                        }
                    }
                }
                i += 1;
            }
        }
        None
    }

    /// Every parked job, for shutdown.
    pub fn drain(&self) -> Vec<Job> {
        let mut parked = self.parked.lock();
        let jobs: Vec<Job> = parked.iter_mut().flat_map(|line| line.drain(..)).collect();
        self.count.fetch_sub(jobs.len(), Ordering::SeqCst);
        jobs
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::activity::Activity;
    use crate::flow::ticket::Ticket;
    use crate::foundation::clock::SystemClock;
    use crate::foundation::index_set::IndexSet;
    use crate::foundation::request::{Priority, Request};
    use std::sync::Arc;
    use std::time::Duration;

    fn job(priority: Priority, activity: &Arc<Activity>) -> (Job, Ticket) {
        job_due(priority, activity, Duration::from_secs(5))
    }

    fn job_due(priority: Priority, activity: &Arc<Activity>, within: Duration) -> (Job, Ticket) {
        let clock = SystemClock::shared();
        let now = clock.now();
        let deadline = now + within;
        let (ticket, sink) = Ticket::new(clock, now, deadline);
        let request = Request::get("s", "/x").priority(priority);
        let job = Job::new(
            request,
            0,
            IndexSet::default(),
            (now, deadline),
            sink,
            activity.enter(),
        );
        (job, ticket)
    }

    #[test]
    fn a_slot_found_at_the_last_moment_keeps_the_job_out_of_the_line() {
        let (line, activity) = (ParkingLine::default(), Arc::new(Activity::default()));
        let (j, _t) = job(Priority::Normal, &activity);
        let found = line.park(j, |_| Some("slot"));
        assert_eq!(found.map(|(_, s)| s), Some("slot"));
        assert_eq!(line.len(), 0);
    }

    #[test]
    fn released_slots_go_to_the_most_urgent_job_first() {
        let (line, activity) = (ParkingLine::default(), Arc::new(Activity::default()));
        let mut tickets = Vec::new();
        for p in [
            Priority::Low,
            Priority::Normal,
            Priority::Critical,
            Priority::Low,
        ] {
            let (j, t) = job(p, &activity);
            assert!(line.park(j, |_| None::<()>).is_none());
            tickets.push(t);
        }
        assert_eq!(line.len(), 4);
        let mut settled = Vec::new();
        let order: Vec<Priority> = (0..4)
            .map(|_| {
                let (j, ()) = line.unpark(|_| Some(()), &mut settled).unwrap();
                j.request.priority
            })
            .collect();
        use Priority::*;
        assert_eq!(order, [Critical, Normal, Low, Low]);
        assert!(line.unpark(|_| Some(()), &mut settled).is_none());
        assert!(settled.is_empty());
    }

    #[test]
    fn jobs_settled_while_parked_leave_without_a_slot() {
        let (line, activity) = (ParkingLine::default(), Arc::new(Activity::default()));
        let (j, mut expired) = job_due(Priority::High, &activity, Duration::ZERO);
        assert!(line.park(j, |_| None::<()>).is_none());
        let (j, _live) = job(Priority::Low, &activity);
        assert!(line.park(j, |_| None::<()>).is_none());
        // The first job's waiter gives up: its deadline has passed.
        assert!(matches!(
            expired.try_wait(),
            Some(Err(crate::foundation::error::Error::Timeout { .. }))
        ));
        let mut settled = Vec::new();
        let offered = std::cell::Cell::new(0);
        let took = line.unpark(
            |_| {
                offered.set(offered.get() + 1);
                Some(())
            },
            &mut settled,
        );
        assert_eq!(took.map(|(j, ())| j.request.priority), Some(Priority::Low));
        assert_eq!(
            (settled.len(), offered.get()),
            (1, 1),
            "no slot for the settled job"
        );
        assert_eq!(line.len(), 0);
        drop(settled);
        assert_eq!(
            activity.count(),
            0,
            "each job counts as under way until dropped"
        );
    }
}

/// Model checks (`RUSTFLAGS="--cfg loom" cargo test --lib loom_`): every interleaving of a
/// job parking while another thread frees the only seat.
#[cfg(all(test, loom))]
mod model {
    use super::*;
    use crate::flow::activity::Activity;
    use crate::flow::ticket::Sink;
    use crate::foundation::index_set::IndexSet;
    use crate::foundation::request::Request;
    use crate::upstream::slot::Seat;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn loom_a_freed_seat_never_misses_a_parking_job() {
        loom::model(|| {
            let in_flight = Arc::new(AtomicUsize::new(0));
            let held = Seat::take(&in_flight, 1).expect("the only seat");
            let line = Arc::new(ParkingLine::default());
            let activity = Arc::new(Activity::default());
            let times = (Duration::ZERO, Duration::from_secs(1));
            let job = Job::new(
                Request::get("s", "/x"),
                0,
                IndexSet::default(),
                times,
                Sink::Caller,
                activity.enter(),
            );
            let parker = {
                let (line, in_flight) = (line.clone(), in_flight.clone());
                loom::thread::spawn(move || {
                    line.park(job, |_| Seat::take(&in_flight, 1))
                        .map(|(_, seat)| seat)
                })
            };
            // The releasing side: free the seat, then look for a parked job.
            drop(held);
            let mut settled = Vec::new();
            let handed = line.unpark(|_| Seat::take(&in_flight, 1), &mut settled);
            let found = parker.join().unwrap();
            match (found, handed) {
                (Some(_), None) | (None, Some(_)) => {}
                (None, None) => panic!("lost hand-off: the job is parked and the seat is free"),
                (Some(_), Some(_)) => panic!("one seat went to two"),
            }
            assert_eq!(line.len(), 0);
        });
    }
}
