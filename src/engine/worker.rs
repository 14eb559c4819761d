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
            next = driven.next;
        }
    }
}
