//! A worker thread's life: take the most urgent job, drive it, repeat until stopped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::engine::channels::{Next, Receivers};
use crate::engine::dispatch;
use crate::engine::runtime::Core;
use crate::flow::job::Job;

pub(crate) fn serve_jobs(core: Arc<Core>, receivers: Receivers, stop: Receiver<()>) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match receivers.next(&stop) {
                Next::Ready(job) | Next::Queued(job) => job,
                Next::Stop => return,
            },
        };
        // A bug in one job must not stop the worker; its waiter learns of it by the
        // dropped channel (Error::Internal).
        if let Ok(driven) = catch_unwind(AssertUnwindSafe(|| dispatch::drive(&core, job))) {
            next = driven.next.map(|j| *j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_rig::Rig;
    use crate::foundation::request::Request;

    #[test]
    fn a_worker_serves_until_stopped() {
        let rig = Rig::new(&Rig::config(&["a"], ""));
        let tickets: Vec<_> = (0..20)
            .map(|i| {
                rig.core
                    .queue_request(Request::get("s", format!("/{i}")))
                    .unwrap()
            })
            .collect();
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let worker = {
            let (core, receivers) = (rig.core.clone(), rig.core.channels.receivers());
            std::thread::spawn(move || serve_jobs(core, receivers, stop))
        };
        for t in tickets {
            assert_eq!(t.wait().unwrap().status(), 200);
        }
        // As the balancer's shutdown does: disconnect, then wake whoever sleeps.
        drop(stop_tx);
        rig.core.channels.wake_all();
        worker.join().unwrap();
        assert_eq!(rig.fake("a").sent().len(), 20);
    }

    #[test]
    fn no_job_is_left_asleep_however_senders_race_sleeping_workers() {
        // Callbacks, so that no waiter runs a job itself: only a ring can wake a worker.
        let rig = Rig::new(&Rig::config(&["a"], "queue = { max_size = 10000 }"));
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let (core, receivers, stop) = (
                    rig.core.clone(),
                    rig.core.channels.receivers(),
                    stop.clone(),
                );
                std::thread::spawn(move || serve_jobs(core, receivers, stop))
            })
            .collect();
        let (done_tx, done) = crossbeam_channel::unbounded();
        std::thread::scope(|s| {
            for t in 0..4 {
                let (core, done_tx) = (&rig.core, done_tx.clone());
                s.spawn(move || {
                    for i in 0..250 {
                        let done_tx = done_tx.clone();
                        let request = Request::get("s", format!("/{t}/{i}"));
                        core.queue_with_callback(request, move |r| {
                            let _ = done_tx.send(r.is_ok());
                        })
                        .unwrap();
                        if i % 50 == 0 {
                            // Now and then, send only once every worker sleeps.
                            let until =
                                std::time::Instant::now() + std::time::Duration::from_secs(10);
                            while core.channels.sleeping_workers() < 3
                                && std::time::Instant::now() < until
                            {
                                std::thread::yield_now();
                            }
                        }
                    }
                });
            }
        });
        for n in 0..1000 {
            let ok = done.recv_timeout(std::time::Duration::from_secs(10));
            assert_eq!(ok, Ok(true), "job {n} of 1000 never served");
        }
        drop(stop_tx);
        rig.core.channels.wake_all();
        for w in workers {
            w.join().unwrap();
        }
    }
}
