//! The timer thread: fires what falls due (see `schedule.rs`) and, at stop, ends the
//! jobs still waiting out a backoff.

use std::collections::BinaryHeap;
use std::sync::Arc;

use crossbeam_channel::{select, Receiver};

use crate::engine::runtime::Core;
use crate::engine::schedule::{Delayed, Due};
use crate::flow::ticket::{call_back, Phase};
use crate::foundation::error::Error;

/// The timer thread: requeues jobs as they fall due; at stop, ends the rest.
pub(crate) fn keep_time(core: Arc<Core>, rx: Receiver<Delayed>, stop: Receiver<()>) {
    let mut heap: BinaryHeap<Delayed> = BinaryHeap::new();
    let mut purge_above = PURGE_FLOOR;
    loop {
        let wait = heap.peek().map(|d| d.due.saturating_sub(core.clock.now()));
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
        fire_due(&core, &mut heap);
        if heap.len() > purge_above {
            purge_above = purge_settled(&mut heap);
        }
    }
    for d in heap.into_iter().chain(rx.try_iter()) {
        if let Due::Requeue(job) = d.what {
            core.end_stopped(*job);
        }
    }
    for batcher in &core.batchers {
        for job in batcher.take_all() {
            core.end_stopped(job);
        }
    }
}

/// The heap is purged of settled entries whenever it grows past twice what it held after
/// the last purge, and never below this.
const PURGE_FLOOR: usize = 1024;

/// Drops the deadlines of callback requests that ended already: without this, every
/// callback request would stay in the heap for its whole deadline, finished or not, and
/// memory would grow with rate x deadline. Amortised O(1) a request. Returns the next
/// size to purge at.
fn purge_settled(heap: &mut BinaryHeap<Delayed>) -> usize {
    heap.retain(|d| match &d.what {
        Due::Expire { phase, .. } => !phase.is_settled(),
        Due::Hedge(order) => !order.is_moot(),
        Due::CloseBatch { .. } => true,
        Due::Requeue(_) => true,
    });
    (heap.len() * 2).max(PURGE_FLOOR)
}

/// Fires everything due by now, earliest first.
fn fire_due(core: &Core, heap: &mut BinaryHeap<Delayed>) {
    let now = core.clock.now();
    while heap.peek().is_some_and(|d| d.due <= now) {
        if let Some(d) = heap.pop() {
            fire(core, d.what);
        }
    }
}

fn fire(core: &Core, what: Due) {
    match what {
        Due::Requeue(job) => core.requeue(*job),
        Due::Hedge(order) => crate::engine::hedge::launch(core, *order),
        Due::CloseBatch {
            service,
            endpoint,
            key,
            id,
        } => crate::engine::batch::close_and_send(core, service, &endpoint, key, id),
        Due::Expire {
            phase,
            callback,
            started,
        } => {
            if phase.shift(Phase::Waiting, Phase::Settled) {
                let elapsed = core.clock.now().saturating_sub(started);
                let attempts = Vec::new();
                call_back(&callback, Err(Error::Timeout { elapsed, attempts }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_rig::Rig;
    use crate::foundation::request::Request;
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn due_callbacks_time_out_and_backed_off_jobs_go_back_in_line() {
        let rig = Rig::new(&Rig::config(&["a"], ""));
        let got = Arc::new(Mutex::new(Vec::new()));
        {
            let got = got.clone();
            let r = Request::get("s", "/cb").timeout(Duration::from_millis(30));
            rig.core
                .queue_with_callback(r, move |o| got.lock().unwrap().push(o.map(|r| r.status())))
                .unwrap();
        }
        let mut heap: BinaryHeap<Delayed> = rig.wiring.timer.try_iter().collect();
        assert_eq!(heap.len(), 1, "the callback's deadline is on the timer");
        fire_due(&rig.core, &mut heap);
        assert!(got.lock().unwrap().is_empty(), "not due yet");
        rig.clock.advance(Duration::from_millis(30));
        fire_due(&rig.core, &mut heap);
        assert!(matches!(
            got.lock().unwrap()[..],
            [Err(Error::Timeout { .. })]
        ));
        // The worker that takes the job later finds it settled: no second outcome.
        assert_eq!(rig.work_all(5), 1);
        assert_eq!(got.lock().unwrap().len(), 1);
        assert!(rig.fake("a").sent().is_empty());

        // A job waiting out a backoff returns to its line when due.
        let t = rig.core.queue_request(Request::get("s", "/later")).unwrap();
        let Some(crate::engine::channels::Next::Queued(mut job)) =
            rig.core.channels.receivers().try_next()
        else {
            panic!("queued");
        };
        job.place = None;
        let due = rig.core.clock.now() + Duration::from_millis(5);
        rig.core.timer.schedule(job, due);
        heap.extend(rig.wiring.timer.try_iter());
        fire_due(&rig.core, &mut heap);
        assert_eq!(rig.work_all(5), 0, "still backing off");
        rig.clock.advance(Duration::from_millis(5));
        fire_due(&rig.core, &mut heap);
        assert_eq!(
            rig.core.snapshot().services["s"].queue_depth,
            1,
            "counted again"
        );
        assert_eq!(rig.work_all(5), 1);
        assert_eq!(t.wait().unwrap().status(), 200);
    }

    #[test]
    fn finished_callback_requests_leave_the_heap_before_their_deadline() {
        let rig = Rig::new(&Rig::config(&["a"], "queue = { max_size = 10000 }"));
        for _ in 0..3000 {
            rig.core
                .queue_with_callback(Request::get("s", "/cb"), |_| {})
                .unwrap();
        }
        assert_eq!(rig.work_all(5000), 3000);
        let mut heap: BinaryHeap<Delayed> = rig.wiring.timer.try_iter().collect();
        let (ticket, _) = {
            // One still waiting: its deadline must stay.
            let t = rig.core.queue_request(Request::get("s", "/waits")).unwrap();
            (t, ())
        };
        rig.core
            .queue_with_callback(Request::get("s", "/pending"), |_| {})
            .unwrap();
        heap.extend(rig.wiring.timer.try_iter());
        assert_eq!(heap.len(), 3001);
        let next = purge_settled(&mut heap);
        assert_eq!(
            heap.len(),
            1,
            "only the pending callback request's deadline is left"
        );
        assert_eq!(next, PURGE_FLOOR);
        drop(ticket);
    }
}
