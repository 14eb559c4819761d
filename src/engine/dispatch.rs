//! Driving a job to its outcome, on a worker thread or on the calling thread.
//!
//! One loop serves both: take a connection slot and a breaker permit (or park until a slot
//! frees), send an attempt, give the slot back (handing it straight to a parked job if one
//! waits), record the outcome, then deliver it or go on: to another provider at once, or,
//! once every available provider was tried, to a new round after a backoff.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::select;

use crate::engine::batch;
use crate::engine::hedge;
use crate::engine::posting;
use crate::engine::runtime::Core;
use crate::flow::job::Job;
use crate::flow::ticket::{Outcome, Sink, Ticket};
use crate::foundation::error::{AttemptError, AttemptKind, Error};
use crate::foundation::response::Response;
use crate::policy::retry::backoff;
use crate::upstream::service::{AttemptEnd, Pick, Service};
use crate::upstream::slot::Slot;
use crate::upstream::transport::{Answer, Failure};

/// A parked job a drive handed a freed seat to, to run next. Boxed: it is rare, and a
/// job moved by value through every step of a drive would be copied each time.
pub(crate) type Handed = Option<Box<Job>>;

/// How a drive ended.
pub(crate) struct Driven {
    /// The outcome, when the job's sink is the driving caller.
    pub outcome: Option<Outcome>,
    /// Set when a caller's job had to park or back off: its outcome arrives here.
    pub parked: Option<Ticket>,
    /// A parked job this drive handed a slot to, to run next.
    pub next: Handed,
}

impl Driven {
    fn left(parked: Option<Ticket>, next: Handed) -> Driven {
        Driven {
            outcome: None,
            parked,
            next,
        }
    }
}

/// Drives a job until it has an outcome, parks or backs off.
pub(crate) fn drive(core: &Core, job: Job) -> Driven {
    drive_from(core, job, core.clock.now())
}

/// Like [`drive`], from clock time `now`, read by the caller a moment ago.
pub(crate) fn drive_from(core: &Core, mut job: Job, now: Duration) -> Driven {
    let service = &core.services[job.service];
    let mut handed: Handed = None;
    // A hedge is a second call on purpose: it neither shares one nor reads the cache;
    // nor does a batch's carrier, whose members did.
    let call_key = match job.is_hedge || job.batch.is_some() {
        true => None,
        false => service.call_key(&job.request),
    };
    let mut started = Some(now);
    loop {
        let now = started.take().unwrap_or_else(|| core.clock.now());
        if core.stopping.load(Ordering::Acquire) {
            return end(core, job, Err(Error::ShuttingDown), handed);
        }
        if now >= job.deadline {
            let outcome = Err(timed_out(&mut job, now));
            return end(core, job, outcome, handed);
        }
        if job.is_settled() {
            // A waiter gave up on it; its outcome is already delivered.
            if let Some(slot) = job.reserved.take() {
                handed = pass_on(core, job.service, slot, handed);
            }
            abandon(service, job);
            return Driven::left(None, handed);
        }

        if let (Some(key), None, 0) = (call_key, &job.reserved, job.attempts()) {
            if let Some(kept) = from_cache(core, &mut job, key, now) {
                return end(core, job, Ok(kept), handed);
            }
            // The same call is on the wire already: wait for its answer beside it.
            if core.coalescers[job.service].in_flight(key) {
                match join(core, key, job) {
                    Ok(parked) => return Driven::left(parked, handed),
                    Err(j) => job = j,
                }
            }
            if !job.unbatched {
                if let Some(batcher) = core.batchers[job.service].of(&job.request.endpoint) {
                    match batch_call::offer(core, batcher, job, now) {
                        Ok(parked) => return Driven::left(parked, handed),
                        Err(j) => job = j,
                    }
                }
            }
        }
        let slot = match job.reserved.take() {
            Some(slot) => slot,
            None => match service.acquire_at(&job.want(), now) {
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
                Pick::Wait(due) => match back_off(core, job, due.saturating_sub(now)) {
                    // Only a rate limit holds it back: wait for the token, queued.
                    Some(j) => {
                        job = j;
                        continue;
                    }
                    None => return Driven::left(None, handed),
                },
                Pick::Exhausted if job.batch.is_some() => {
                    // No batch provider can take it now: its members go alone.
                    batch::split(core, job.batch.take().unwrap_or_default(), None);
                    return Driven::left(None, handed);
                }
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
        job.place = None;
        job.stop_waiting(now);

        if job.attempts() > 0 && !service.budget.try_withdraw() {
            // Retrying now would add load to a failing provider set; stop here.
            handed = pass_on(core, job.service, slot, handed);
            let outcome = Err(exhausted(service, &mut job));
            return end(core, job, outcome, handed);
        }
        if !job.begin_attempt() {
            job.reserved = Some(slot);
            continue;
        }
        if job.batch.is_some() {
            return batch_call::send(core, job, slot, handed);
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
                    posting::failed_over(core, job.service, from, slot.index);
                }
            }
        }
        let leads = match call_key {
            Some(key) if job.attempts() == 0 => {
                if !core.coalescers[job.service].lead(key) {
                    // An identical call went on the wire while this one took its seat:
                    // give the seat back (rate and quota unspent) and wait beside it.
                    job.end_attempt();
                    handed = pass_on(core, job.service, slot, handed);
                    continue;
                }
                Some(key)
            }
            _ => None,
        };
        let url = provider.url(&job.request);
        let sent = core.clock.now();
        let was_resting = posting::resting(core, provider, sent);
        hedge::arm(core, &mut job, slot.index, sent);
        if job.is_hedge {
            service.stats.record_hedge();
        }
        let timeout = provider.attempt_cap.min(job.deadline.saturating_sub(now));
        let r = &job.request;
        let span = job.trace.attempt(
            r.method.as_str(),
            &url,
            (&provider.name, provider.tier),
            job.attempts(),
        );
        let result = span.within(|| {
            let out = provider.outgoing(r.method, &url, &r.headers, r.body.as_deref(), timeout);
            provider.judge(Some(r.endpoint.as_str()), provider.transport.send(&out))
        });
        hedge::first_attempt_over(&job);
        // One reading of the clock for everything this attempt's end records.
        let finished = core.clock.now();
        let elapsed = finished.saturating_sub(sent);
        let Slot {
            index,
            permit,
            grant,
            seat,
        } = slot;
        if let Err(Some(why)) = result.as_ref().map_err(|f| f.refused.as_ref()) {
            // The caller's input could not be put on the wire: nothing was sent, so no
            // provider is charged (permit, rate and quota go back unused).
            let error = Error::InvalidArgument(why.clone());
            drop((permit, grant));
            handed = hand_over(core, job.service, index, seat, handed);
            for follower in followers(core, job.service, leads) {
                finish_follower(core, follower, |_| Err(error.clone()));
            }
            return end(core, job, Err(error), handed);
        }
        let attempt = (job.attempts() + 1, job.is_hedge);
        let (attempt_end, next) = attempt_over(
            core,
            (
                job.service,
                Slot {
                    index,
                    permit,
                    grant,
                    seat,
                },
            ),
            &result,
            (sent, finished, was_resting),
            attempt,
            handed,
        );
        handed = next;
        span.ended(
            attempt_end.status,
            attempt_end.failure.map(AttemptKind::name),
        );

        match result {
            Ok(answer) => {
                let response = Response {
                    status: answer.status,
                    headers: answer.headers,
                    body: answer.body,
                    provider: provider.name.clone(),
                    attempts: job.attempts() + 1,
                    latency: finished.saturating_sub(job.submitted),
                    queue_wait: job.queue_wait,
                    fallback: false,
                    raw_body: answer.raw_body,
                    from_cache: false,
                };
                if let Some(key) = call_key {
                    core.caches[job.service].keep(&job.request.endpoint, key, &response, finished);
                }
                for follower in followers(core, job.service, leads) {
                    finish_follower(core, follower, |f| {
                        Ok(Response {
                            attempts: f.attempts() + 1,
                            latency: finished.saturating_sub(f.submitted),
                            queue_wait: f.queue_wait,
                            ..response.clone()
                        })
                    });
                }
                return end_at(core, job, Ok(response), handed, finished);
            }
            Err(mut failure) => {
                failure.error.elapsed = elapsed;
                if job.request.method == crate::foundation::request::Method::Get {
                    *provider.last_failed_get.lock() = Some((url, job.request.headers.clone()));
                }
                provider.redact(&mut failure.error.message);
                for follower in followers(core, job.service, leads) {
                    follower_failed(core, follower, failure.error.clone(), index);
                }
                job.failures.push(failure.error);
                job.tried.insert(index);
                job.maybe_sent |= failure.maybe_sent;
                job.end_attempt();
                let cut_short = kind_was_timeout(&job) && timeout < provider.attempt_cap;
                if cut_short || finished >= job.deadline {
                    // The request's own deadline ended it, not the providers.
                    let outcome = Err(timed_out(&mut job, finished));
                    return end(core, job, outcome, handed);
                }
                if job.attempts() >= service.retry.max_attempts || !may_resend(&job) {
                    let outcome = Err(exhausted(service, &mut job));
                    return end(core, job, outcome, handed);
                }
            }
        }
    }
}

/// The answer kept for this call by its endpoint's cache, if it has one that has not
/// expired, made the job's own.
fn from_cache(core: &Core, job: &mut Job, key: u128, now: Duration) -> Option<Response> {
    let cache = core.caches[job.service].of(&job.request.endpoint)?;
    let kept = cache.get(key, now);
    let stats = &core.services[job.service].stats;
    if kept.is_some() || !job.looked_in_cache {
        stats.record_cache(kept.is_some());
    }
    job.looked_in_cache = true;
    let kept = kept?;
    job.stop_waiting(now);
    Some(Response {
        attempts: 0,
        latency: now.saturating_sub(job.submitted),
        queue_wait: job.queue_wait,
        from_cache: true,
        ..kept
    })
}

/// An attempt on `slot` of service `service` ended with `result`: its provider records it
/// (breaker, windows, allowance), subscribers hear of it, and its seat goes to the next
/// job. `was_resting`: whether the provider rested when it was sent at `sent`.
fn attempt_over(
    core: &Core,
    (service, slot): (usize, Slot),
    result: &Result<Answer, Failure>,
    (sent, finished, was_resting): (Duration, Duration, bool),
    attempt: (u32, bool),
    handed: Handed,
) -> (AttemptEnd, Handed) {
    let svc = &core.services[service];
    let Slot {
        index,
        permit,
        grant,
        seat,
    } = slot;
    let provider = &svc.providers[index];
    let ended = provider.attempt_end(result, finished.saturating_sub(sent), finished);
    svc.record_attempt(index, permit, grant, &ended);
    posting::attempt_ended(core, (service, index), attempt, &ended, was_resting);
    (ended, hand_over(core, service, index, seat, handed))
}

/// Puts a job beside the identical call in flight, if there is one. A caller driving its
/// own job gets a ticket to wait on, as when it parks.
#[allow(clippy::result_large_err)] // see Coalescer::join
fn join(core: &Core, key: u128, job: Job) -> Result<Option<Ticket>, Job> {
    core.coalescers[job.service].join(key, job, |j| set_aside(core, j))
}

/// A job put aside to wait beside others (a shared call, a batch): it waits for neither
/// a worker nor a seat, so its queue place goes back; a caller driving its own job gets
/// a ticket to wait on.
fn set_aside(core: &Core, job: &mut Job) -> Option<Ticket> {
    job.place = None;
    job.start_waiting(core.clock.now());
    if !matches!(job.sink, Sink::Caller) {
        return None;
    }
    let (ticket, sink) = Ticket::new(core.clock.clone(), job.submitted, job.deadline);
    job.sink = sink;
    Some(ticket)
}

/// The jobs that waited for the call this drive led, if it led one; the call is over.
fn followers(core: &Core, service: usize, leads: Option<u128>) -> Vec<Job> {
    leads.map_or_else(Vec::new, |key| core.coalescers[service].finish(key))
}

/// Ends a job that waited for a shared call with what `outcome` makes of that call's.
fn finish_follower(core: &Core, mut job: Job, outcome: impl FnOnce(&Job) -> Outcome) {
    let service = &core.services[job.service];
    if job.is_settled() {
        // Its own deadline passed while it waited: its waiter has the Timeout.
        abandon(service, job);
        return;
    }
    job.stop_waiting(core.clock.now());
    service.stats.record_coalesced();
    let outcome = outcome(&job);
    end(core, job, outcome, None);
}

/// A job whose shared call failed goes on by itself, as if it had made that attempt:
/// another provider, a new round, or its own deadline.
fn follower_failed(core: &Core, mut job: Job, failure: AttemptError, index: usize) {
    let service = &core.services[job.service];
    if job.is_settled() {
        abandon(service, job);
        return;
    }
    job.stop_waiting(core.clock.now());
    job.failures.push(failure);
    job.tried.insert(index);
    if core.stopping.load(Ordering::Acquire) {
        core.end_stopped(job);
    } else if job.attempts() >= service.retry.max_attempts {
        let outcome = Err(exhausted(service, &mut job));
        end(core, job, outcome, None);
    } else {
        job.start_waiting(core.clock.now());
        core.channels.send_ready(job);
        core.recheck_stopping();
    }
}

/// The error of a job whose deadline ended it at clock time `now`, with its attempts.
fn timed_out(job: &mut Job, now: Duration) -> Error {
    Error::Timeout {
        elapsed: now.saturating_sub(job.submitted),
        attempts: std::mem::take(&mut job.failures),
    }
}

/// Whether the job's last attempt ended by timing out.
fn kind_was_timeout(job: &Job) -> bool {
    job.failures
        .last()
        .is_some_and(|f| f.kind == AttemptKind::Timeout)
}

/// A request whose bytes may have reached a provider is sent again only if idempotent.
fn may_resend(job: &Job) -> bool {
    job.request.is_idempotent() || !job.maybe_sent
}

/// Every provider not yet tried this round is unavailable. If attempts and time remain
/// and some provider is available again, starts a new round after a backoff.
fn next_round(service: &Service, job: &mut Job, now: Duration) -> Option<Duration> {
    if job.attempts() == 0 || job.attempts() >= service.retry.max_attempts || !may_resend(job) {
        return None;
    }
    if !service.may_come_back(&job.want()) {
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
    let now = core.clock.now();
    job.start_waiting(now);
    core.timer.schedule(job, now + delay);
    None
}

/// Hands a worker's job to the timer until `due` (a rate token), still queued.
fn wait_queued(core: &Core, mut job: Job, due: Duration) {
    job.start_waiting(core.clock.now());
    core.timer.schedule(job, due);
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
        if job.place.is_none() {
            match service.admission.admit(job.request.priority) {
                Some(place) => job.place = Some(place),
                None => {
                    service.stats.record_rejected();
                    let outcome = Err(Error::QueueFull {
                        service: service.name.clone(),
                        max_size: service.admission.max_size,
                    });
                    return Parked::Left(Box::new(end(core, job, outcome, None)));
                }
            }
        }
        let (ticket, sink) = Ticket::new(core.clock.clone(), job.submitted, job.deadline);
        job.sink = sink;
        parked = Some(ticket);
    }
    job.start_waiting(core.clock.now());
    let priority = job.request.priority;
    job.place
        .get_or_insert_with(|| service.admission.enter(priority));
    let found = core.lines[job.service].park(job, |j| match service.acquire(&j.want()) {
        Pick::Slot(slot) => Some(Ok(slot)),
        // A rate token is due before a seat may free: wait for it instead.
        Pick::Wait(due) => Some(Err(due)),
        Pick::Busy | Pick::Exhausted => None,
    });
    let found = match found {
        Some((job, Err(due))) => {
            wait_queued(core, job, due);
            return Parked::Left(Box::new(Driven::left(parked, None)));
        }
        Some((job, Ok(slot))) => Some((job, slot)),
        None => None,
    };
    match found {
        Some((mut job, slot)) if parked.is_some() => {
            job.place = None;
            // The caller now waits on its ticket; a worker finishes the job.
            job.reserved = Some(slot);
            core.channels.send_ready(job);
            Parked::Left(Box::new(Driven::left(parked, None)))
        }
        Some((mut job, slot)) => {
            job.place = None;
            Parked::Slot(Box::new(job), slot)
        }
        None => {
            core.recheck_stopping();
            Parked::Left(Box::new(Driven::left(parked, None)))
        }
    }
}

/// Gives back a slot whose attempt was never sent: the permit unused, the seat handed on.
fn pass_on(core: &Core, service: usize, slot: Slot, handed: Handed) -> Handed {
    let Slot {
        index,
        permit,
        grant,
        seat,
    } = slot;
    drop((permit, grant));
    hand_over(core, service, index, seat, handed)
}

/// Frees a provider's seat and hands it straight to a parked job when one can use it. The
/// job is returned to run next; one already handed over goes to a worker instead.
fn hand_over(
    core: &Core,
    service: usize,
    index: usize,
    seat: crate::upstream::slot::Seat,
    handed: Handed,
) -> Handed {
    // Free first: SeqCst pairs with the line's count, so a job parking now sees the seat.
    drop(seat);
    let svc = &core.services[service];
    let mut settled = Vec::new();
    let found = loop {
        let found = core.lines[service].unpark(|j| svc.acquire_on(&j.want(), index), &mut settled);
        match found {
            // The seat is free but the provider's rate is not: that job waits for its
            // token in the timer, and the seat goes to the next one.
            Some((job, Err(due))) => wait_queued(core, job, due),
            Some((job, Ok(slot))) => break Some((job, slot)),
            None => break None,
        }
    };
    for job in settled {
        abandon(svc, job);
    }
    let Some((mut job, slot)) = found else {
        return handed;
    };
    job.place = None;
    job.reserved = Some(slot);
    match handed {
        None => Some(Box::new(job)),
        Some(first) => {
            core.channels.send_ready(job);
            Some(first)
        }
    }
}

/// Counts a job a waiter gave up on: its outcome was delivered already.
fn abandon(service: &Service, mut job: Job) {
    job.place = None;
    if job.is_hedge || job.lost_to_its_hedge() {
        // The request's outcome is counted by whichever of the two delivered it.
        return;
    }
    service.record_outcome(false, job.submitted, job.queue_wait, job.request.priority);
}

/// The error of a job with no provider left to try.
fn exhausted(service: &Service, job: &mut Job) -> Error {
    let attempts = std::mem::take(&mut job.failures);
    if attempts.iter().all(|a| a.kind == AttemptKind::Quota) {
        // Nothing tried, or only "quota used up" answers: say who frees up when.
        let waits = service.allowance_waits(&job.want());
        if !waits.is_empty() {
            return Error::QuotaExhausted {
                service: service.name.clone(),
                waits,
            };
        }
    }
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
fn end(core: &Core, job: Job, outcome: Outcome, handed: Handed) -> Driven {
    end_at(core, job, outcome, handed, core.clock.now())
}

/// [`end`] at clock time `now`, read a moment ago.
fn end_at(core: &Core, mut job: Job, outcome: Outcome, handed: Handed, now: Duration) -> Driven {
    let service = &core.services[job.service];
    job.place = None;
    if job.is_hedge {
        hedge::end(core, job, outcome);
        return Driven::left(None, handed);
    }
    if let Some(members) = job.batch.take() {
        // A carrier's end without its call (deadline, shutdown): the members go alone.
        batch::split(core, members, None);
        return Driven::left(None, handed);
    }
    let (outcome, now) = match outcome {
        Err(e) => {
            let elapsed = now.saturating_sub(job.submitted);
            let outcome = service.fallback(&job.request, e, elapsed);
            // The request ended when its fallback did.
            (outcome, core.clock.now())
        }
        ok => (ok, now),
    };
    // Claimed before it is counted: a waiter whose deadline passed, or a hedge, may
    // have delivered first, and then this outcome is not the request's.
    if !job.claim() {
        abandon(service, job);
        return Driven::left(None, handed);
    }
    service.record_outcome_at(
        outcome.is_ok(),
        job.submitted,
        job.queue_wait,
        job.request.priority,
        now,
    );
    job.trace.ended(match &outcome {
        Ok(r) => Ok((r.provider(), r.status())),
        Err(e) => Err(e.kind().name()),
    });
    Driven {
        outcome: job.finish_claimed(outcome),
        parked: None,
        next: handed,
    }
}

mod batch_call;
#[cfg(test)]
mod tests;
