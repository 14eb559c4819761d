//! Driving a job to its outcome, on a worker thread or on the calling thread.
//!
//! One loop serves both: take a connection slot (or park until one frees), send an
//! attempt, give the slot back (handing it straight to a parked job if one waits), then
//! either deliver the outcome or try the next provider.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::balancer::Core;
use crate::error::{AttemptKind, Error};
use crate::job::Job;
use crate::queue::{Next, Receivers};
use crate::response::Response;
use crate::service::{Pick, Service};
use crate::ticket::{Outcome, Sink, Ticket};
use crate::transport::{self, Outgoing};

/// How a drive ended.
pub(crate) struct Driven {
    /// The outcome, when the job's sink is the driving caller.
    pub outcome: Option<Outcome>,
    /// Set when a caller's job had to park: its outcome arrives here.
    pub parked: Option<Ticket>,
    /// A parked job this drive handed a slot to, to run next.
    pub next: Option<Job>,
}

/// A worker thread's life: take the most urgent job, drive it, repeat until stopped.
pub(crate) fn run(core: Arc<Core>, receivers: Receivers, stop: Receiver<()>) {
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
        if let Ok(driven) = catch_unwind(AssertUnwindSafe(|| drive(&core, job))) {
            next = driven.next;
        }
    }
}

/// Drives a job until it has an outcome or parks.
pub(crate) fn drive(core: &Core, mut job: Job) -> Driven {
    let service = &core.services[job.service];
    let mut handed: Option<Job> = None;
    loop {
        let now = Instant::now();
        if core.stopping.load(Ordering::Acquire) {
            return end(core, job, Err(Error::ShuttingDown), handed);
        }
        if now >= job.deadline {
            let attempts = std::mem::take(&mut job.failures);
            let elapsed = now - job.submitted;
            return end(core, job, Err(Error::Timeout { elapsed, attempts }), handed);
        }
        if job.is_settled() {
            // A waiter gave up on it; its outcome is already delivered.
            if let Some(index) = job.reserved.take() {
                handed = pass_on(core, service, index, handed);
            }
            service.queue.uncount(&mut job);
            service
                .stats
                .record_outcome(false, job.submitted.elapsed(), job.queue_wait);
            return Driven {
                outcome: None,
                parked: None,
                next: handed,
            };
        }

        let index = match job.reserved.take() {
            Some(index) => index,
            None => match service.acquire(&job) {
                Pick::Slot(index) => index,
                Pick::Exhausted => {
                    let outcome = Err(exhausted(service, &mut job));
                    return end(core, job, outcome, handed);
                }
                Pick::Busy => match park(core, service, job) {
                    Parked::Slot(j, index) => {
                        job = j;
                        index
                    }
                    Parked::Left(driven) => {
                        return Driven {
                            next: handed,
                            ..driven
                        }
                    }
                },
            },
        };
        service.queue.uncount(&mut job);
        job.stop_waiting(now);

        if !job.begin_attempt() {
            job.reserved = Some(index);
            continue;
        }
        let provider = &service.providers[index];
        if job.attempts() > 0 {
            service.stats.record_failover();
        }
        let url = provider.url(&job.request);
        let sent = Instant::now();
        let timeout = provider.request_timeout.min(job.deadline - now);
        let result = transport::send(
            &provider.agent,
            provider.request_timeout,
            &provider.name,
            &Outgoing {
                method: job.request.method,
                url: &url,
                headers: &provider.headers,
                extra_headers: &job.request.headers,
                body: job.request.body.as_deref(),
                timeout,
                max_response_bytes: provider.pool.max_response_bytes,
            },
        );
        handed = pass_on(core, service, index, handed);

        match result {
            Ok(answer) => {
                provider.stats.record_success(sent.elapsed());
                let response = Response {
                    status: answer.status,
                    headers: answer.headers,
                    body: answer.body,
                    provider: provider.name.clone(),
                    attempts: job.attempts() + 1,
                    latency: job.submitted.elapsed(),
                    queue_wait: job.queue_wait,
                };
                return end(core, job, Ok(response), handed);
            }
            Err(mut failure) => {
                provider
                    .stats
                    .record_failure(failure.error.kind, failure.error.elapsed);
                provider.redact(&mut failure.error.message);
                job.failures.push(failure.error);
                job.mark_tried(index);
                job.maybe_sent |= failure.maybe_sent;
                job.end_attempt();
                let may_resend = job.request.is_idempotent() || !job.maybe_sent;
                if job.attempts() >= service.retry.max_attempts || !may_resend {
                    let outcome = Err(exhausted(service, &mut job));
                    return end(core, job, outcome, handed);
                }
            }
        }
    }
}

/// What [`park`] did with a job.
enum Parked {
    /// A slot turned up at the last moment: go on driving.
    Slot(Job, usize),
    /// The job left this driver (parked, refused, or handed to a worker).
    Left(Driven),
}

/// Parks a job whose providers are all busy.
fn park(core: &Core, service: &Service, mut job: Job) -> Parked {
    let mut parked = None;
    if matches!(job.sink, Sink::Caller) {
        // A caller running its own request joins the line like a submitted one would.
        if !job.counted && !service.queue.admit(&mut job) {
            service.stats.record_rejected();
            let outcome = Err(Error::QueueFull {
                service: service.name.clone(),
                max_size: service.queue.max_size,
            });
            return Parked::Left(end(core, job, outcome, None));
        }
        let (ticket, sink) = Ticket::new(job.submitted, job.deadline);
        job.sink = sink;
        parked = Some(ticket);
    }
    job.start_waiting(Instant::now());
    match service.queue.park(job, |j| match service.acquire(j) {
        Pick::Slot(index) => Some(index),
        Pick::Busy | Pick::Exhausted => None,
    }) {
        Some((job, index)) => {
            if let Some(ticket) = parked {
                // The caller waits on the ticket; a worker finishes the job.
                let mut job = job;
                job.reserved = Some(index);
                core.channels.send_ready(job);
                return Parked::Left(Driven {
                    outcome: None,
                    parked: Some(ticket),
                    next: None,
                });
            }
            Parked::Slot(job, index)
        }
        None => Parked::Left(Driven {
            outcome: None,
            parked,
            next: None,
        }),
    }
}

/// Gives a provider's slot back, straight to a parked job when one can use it. The job
/// is returned to run next; one already handed over goes to a worker instead.
fn pass_on(core: &Core, service: &Service, index: usize, handed: Option<Job>) -> Option<Job> {
    service.providers[index].release();
    let Some(mut job) = service.queue.unpark(|j| service.acquire_on(j, index)) else {
        return handed;
    };
    job.reserved = Some(index);
    match handed {
        None => Some(job),
        Some(first) => {
            core.channels.send_ready(job);
            Some(first)
        }
    }
}

/// The error of a job with no provider left to try.
fn exhausted(service: &Service, job: &mut Job) -> Error {
    let attempts = std::mem::take(&mut job.failures);
    if attempts.is_empty() {
        return Error::NoHealthyProvider {
            service: service.name.clone(),
        };
    }
    if attempts.iter().all(|a| a.kind == AttemptKind::TooLarge) {
        let limit = service.providers[0].pool.max_response_bytes;
        return Error::ResponseTooLarge { limit, attempts };
    }
    Error::AllProvidersFailed { attempts }
}

/// Delivers the outcome.
fn end(core: &Core, mut job: Job, outcome: Outcome, handed: Option<Job>) -> Driven {
    let service = &core.services[job.service];
    service.queue.uncount(&mut job);
    service
        .stats
        .record_outcome(outcome.is_ok(), job.submitted.elapsed(), job.queue_wait);
    Driven {
        outcome: job.finish(outcome),
        parked: None,
        next: handed,
    }
}
