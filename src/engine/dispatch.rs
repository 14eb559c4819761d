//! Driving a job to its outcome, on a worker thread or on the calling thread.
//!
//! One loop serves both: take a connection slot and a breaker permit (or park until a slot
//! frees), send an attempt, give the slot back (handing it straight to a parked job if one
//! waits), record the outcome, then deliver it or go on: to another provider at once, or,
//! once every available provider was tried, to a new round after a backoff.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use crate::balancer::Core;
use crate::foundation::error::{AttemptKind, Error};
use crate::policy::retry::backoff;
use crate::flow::job::{Job, Slot};
use crate::upstream::parking::{Next, Receivers};
use crate::foundation::response::Response;
use crate::upstream::service::{Pick, Service};
use crate::flow::ticket::{Outcome, Sink, Ticket};
use crate::upstream::http::{self, Outgoing};

/// How a drive ended.
pub(crate) struct Driven {
    /// The outcome, when the job's sink is the driving caller.
    pub outcome: Option<Outcome>,
    /// Set when a caller's job had to park or back off: its outcome arrives here.
    pub parked: Option<Ticket>,
    /// A parked job this drive handed a slot to, to run next.
    pub next: Option<Job>,
}

impl Driven {
    fn left(parked: Option<Ticket>, next: Option<Job>) -> Driven {
        Driven {
            outcome: None,
            parked,
            next,
        }
    }
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

/// Drives a job until it has an outcome, parks or backs off.
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
            if let Some(slot) = job.reserved.take() {
                service.providers[slot.index].breaker.cancel(slot.permit);
                handed = pass_on(core, service, slot.index, handed);
            }
            service.queue.uncount(&mut job);
            service.record_outcome(&job, false);
            return Driven::left(None, handed);
        }

        let slot = match job.reserved.take() {
            Some(slot) => slot,
            None => match service.acquire(&job) {
                Pick::Slot(slot) => slot,
                Pick::Busy => match park(core, service, job) {
                    Parked::Slot(j, slot) => {
                        job = *j;
                        slot
                    }
                    Parked::Left(driven) => {
                        return Driven {
                            next: handed,
                            ..*driven
                        }
                    }
                },
                Pick::Exhausted => match next_round(service, &mut job, now) {
                    Some(delay) => match back_off(core, job, delay) {
                        Some(j) => {
                            job = j;
                            continue;
                        }
                        None => return Driven::left(None, handed),
                    },
                    None => {
                        let outcome = Err(exhausted(service, &mut job));
                        return end(core, job, outcome, handed);
                    }
                },
            },
        };
        let provider = &service.providers[slot.index];
        service.queue.uncount(&mut job);
        job.stop_waiting(now);

        if job.attempts() > 0 && !service.budget.try_withdraw() {
            // Retrying now would add load to a failing provider set; stop here.
            provider.breaker.cancel(slot.permit);
            handed = pass_on(core, service, slot.index, handed);
            let outcome = Err(exhausted(service, &mut job));
            return end(core, job, outcome, handed);
        }
        if !job.begin_attempt() {
            job.reserved = Some(slot);
            continue;
        }
        if let Some(last) = job.failures.last() {
            // A retry of the same provider after a backoff is a retry, not a failover.
            if let Some(from) = service
                .providers
                .iter()
                .position(|p| *p.name == *last.provider)
            {
                if from != slot.index {
                    service.stats.record_failover(from, slot.index);
                }
            }
        }
        let url = provider.url(&job.request);
        let sent = Instant::now();
        let result = http::send(
            &provider.agent,
            provider.request_timeout * http::ATTEMPT_CAP_FACTOR,
            &provider.name,
            &Outgoing {
                method: job.request.method,
                url: &url,
                headers: &provider.headers,
                extra_headers: &job.request.headers,
                body: job.request.body.as_deref(),
                timeout: (provider.request_timeout * http::ATTEMPT_CAP_FACTOR)
                    .min(job.deadline - now),
                max_response_bytes: provider.pool.max_response_bytes,
            },
        );
        let elapsed = sent.elapsed();
        handed = pass_on(core, service, slot.index, handed);
        let transition = provider
            .breaker
            .record(slot.permit, result.is_err(), elapsed);
        service.notify(slot.index, transition);

        match result {
            Ok(answer) => {
                let clock_now = service.clock.now();
                provider.stats.record_success(elapsed, clock_now);
                provider.latency.record(elapsed, clock_now);
                let response = Response {
                    status: answer.status,
                    headers: answer.headers,
                    body: answer.body,
                    provider: provider.name.clone(),
                    attempts: job.attempts() + 1,
                    latency: job.submitted.elapsed(),
                    queue_wait: job.queue_wait,
                    fallback: false,
                };
                return end(core, job, Ok(response), handed);
            }
            Err(mut failure) => {
                provider
                    .stats
                    .record_failure(failure.error.kind, elapsed, service.clock.now());
                if let Some(rest) = failure.retry_after {
                    provider.rest_until.set(service.clock.now() + rest);
                }
                provider.redact(&mut failure.error.message);
                job.failures.push(failure.error);
                job.tried.insert(slot.index);
                job.maybe_sent |= failure.maybe_sent;
                job.end_attempt();
                if job.attempts() >= service.retry.max_attempts || !may_resend(&job) {
                    let outcome = Err(exhausted(service, &mut job));
                    return end(core, job, outcome, handed);
                }
            }
        }
    }
}

/// A request whose bytes may have reached a provider is sent again only if idempotent.
fn may_resend(job: &Job) -> bool {
    job.request.is_idempotent() || !job.maybe_sent
}

/// Every provider not yet tried this round is unavailable. If attempts and time remain
/// and some provider is available again, starts a new round after a backoff.
fn next_round(service: &Service, job: &mut Job, now: Instant) -> Option<Duration> {
    if job.attempts() == 0 || job.attempts() >= service.retry.max_attempts || !may_resend(job) {
        return None;
    }
    let clock_now = service.clock.now();
    let any = service
        .providers
        .iter()
        .enumerate()
        .any(|(i, p)| job.eligible.contains(i) && p.is_available(clock_now));
    if !any {
        return None;
    }
    let delay = backoff(&service.retry, job.round, rand::random::<f64>());
    if now + delay >= job.deadline {
        return None;
    }
    job.round += 1;
    job.tried.clear();
    Some(delay)
}

/// Waits out a backoff: on the caller's own thread, or for a worker's job in the timer,
/// so the worker serves others meanwhile. Returns the job when it is to go on now.
fn back_off(core: &Core, mut job: Job, delay: Duration) -> Option<Job> {
    if matches!(job.sink, Sink::Caller) {
        select! {
            recv(core.stop_signal) -> _ => {}
            default(delay) => {}
        }
        return Some(job);
    }
    job.start_waiting(Instant::now());
    core.timer.schedule(job, Instant::now() + delay);
    None
}

/// What [`park`] did with a job.
enum Parked {
    /// A slot turned up at the last moment: go on driving.
    Slot(Box<Job>, Slot),
    /// The job left this driver (parked, refused, or handed to a worker).
    Left(Box<Driven>),
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
            return Parked::Left(Box::new(end(core, job, outcome, None)));
        }
        let (ticket, sink) = Ticket::new(job.submitted, job.deadline);
        job.sink = sink;
        parked = Some(ticket);
    }
    job.start_waiting(Instant::now());
    let found = service.queue.park(job, |j| match service.acquire(j) {
        Pick::Slot(slot) => Some(slot),
        Pick::Busy | Pick::Exhausted => None,
    });
    match found {
        Some((mut job, slot)) if parked.is_some() => {
            // The caller now waits on its ticket; a worker finishes the job.
            job.reserved = Some(slot);
            core.channels.send_ready(job);
            Parked::Left(Box::new(Driven::left(parked, None)))
        }
        Some((job, slot)) => Parked::Slot(Box::new(job), slot),
        None => {
            if core.stopping.load(Ordering::SeqCst) {
                core.drain();
            }
            Parked::Left(Box::new(Driven::left(parked, None)))
        }
    }
}

/// Gives a provider's slot back, straight to a parked job when one can use it. The job
/// is returned to run next; one already handed over goes to a worker instead.
fn pass_on(core: &Core, service: &Service, index: usize, handed: Option<Job>) -> Option<Job> {
    service.providers[index].release();
    let Some((mut job, slot)) = service.queue.unpark(|j| service.acquire_on(j, index)) else {
        return handed;
    };
    job.reserved = Some(slot);
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

/// Delivers the outcome, or what a fallback makes of a failure.
fn end(core: &Core, mut job: Job, outcome: Outcome, handed: Option<Job>) -> Driven {
    let service = &core.services[job.service];
    service.queue.uncount(&mut job);
    let outcome = match outcome {
        Err(e) => service.fallback(&job.request, e, job.submitted.elapsed()),
        ok => ok,
    };
    service.record_outcome(&job, outcome.is_ok());
    Driven {
        outcome: job.finish(outcome),
        parked: None,
        next: handed,
    }
}
