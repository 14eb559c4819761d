//! Batches in dispatch: a job joins or opens one (`offer`), and a carrier makes its one
//! upstream call, on a seat of a provider with the batch form; the answer is split into
//! each member's item. A call that fails, or an answer that cannot be split, sends the
//! members on as single calls elsewhere.

use std::time::Duration;

use super::{attempt_over, end, pass_on, set_aside, Driven, Handed};
use crate::engine::batch;
use crate::engine::batcher::{EndpointBatcher, Offer};
use crate::engine::runtime::Core;
use crate::flow::job::Job;
use crate::flow::ticket::Ticket;
use crate::foundation::error::AttemptKind;
use crate::foundation::request::Method;
use crate::foundation::response::Response;
use crate::upstream::slot::Slot;

/// The body of a member whose item the batch answer does not have.
const NOT_IN_THE_ANSWER: &[u8] = br#"{"error":"not in the batch answer"}"#;

pub(super) fn send(core: &Core, mut carrier: Job, slot: Slot, handed: Handed) -> Driven {
    let service = &core.services[carrier.service];
    let endpoint = carrier.request.endpoint.clone();
    let members = batch::still_waiting(core, carrier.batch.take().unwrap_or_default());
    let param = core.batchers[carrier.service]
        .of(&endpoint)
        .map(|b| b.param.clone());
    let provider = &service.providers[slot.index];
    let (Some(param), true) = (param, members.len() >= 2) else {
        // One left (or none): it goes as a single call.
        let handed = pass_on(core, carrier.service, slot, handed);
        batch::split(core, members, None);
        return Driven::left(None, handed);
    };
    let mut names: Vec<&str> = Vec::with_capacity(members.len());
    for job in &members {
        let name = job.request.param_value(&param).unwrap_or_default();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let Some(url) = provider.batch_url(&endpoint, &carrier.request.params, &names) else {
        let handed = pass_on(core, carrier.service, slot, handed);
        batch::split(core, members, None);
        return Driven::left(None, handed);
    };
    let sent = core.clock.now();
    let was_resting = crate::engine::posting::resting(core, provider, sent);
    let deadline = members.iter().map(|j| j.deadline).min().unwrap_or(sent);
    let timeout = provider.attempt_cap.min(deadline.saturating_sub(sent));
    let r = &carrier.request;
    let outgoing = provider.outgoing(Method::Get, &url, &r.headers, None, timeout);
    let mut result = provider.judge(None, provider.transport.send(&outgoing));
    let finished = core.clock.now();
    // A 2xx answer is only good if it splits into items.
    let mut items = None;
    if let Ok(answer) = &result {
        if (200..300).contains(&answer.status) {
            match provider.batch_items(&endpoint, &answer.body, &names) {
                Ok(split) => items = Some(split),
                Err(why) => {
                    if let Ok(answer) = result {
                        result = Err(provider.refuse(answer, AttemptKind::Protocol, why));
                    }
                }
            }
        }
    }
    let index = slot.index;
    let times = (sent, finished, was_resting);
    let (_, handed) = attempt_over(
        core,
        (carrier.service, slot),
        &result,
        times,
        (1, false),
        handed,
    );
    let Ok(mut answer) = result else {
        batch::split(core, members, Some(index));
        return Driven::left(None, handed);
    };
    service.stats.record_batch(members.len());
    // Each member's body is its own item, of another length.
    answer.headers.remove(ureq::http::header::CONTENT_LENGTH);
    let positions: Vec<usize> = members
        .iter()
        .map(|job| {
            let name = job.request.param_value(&param).unwrap_or_default();
            names.iter().position(|n| *n == name).unwrap_or(0)
        })
        .collect();
    drop(names);
    for (mut job, at) in members.into_iter().zip(positions) {
        let (status, body, raw_body) = match &items {
            Some(items) => match &items[at] {
                Some(item) => (answer.status, item.body.clone(), item.raw.clone()),
                None => (404, NOT_IN_THE_ANSWER.to_vec(), None),
            },
            // Not 2xx: every member gets the whole answer.
            None => (answer.status, answer.body.clone(), None),
        };
        job.stop_waiting(finished);
        let response = Response {
            status,
            headers: answer.headers.clone(),
            body,
            provider: provider.name.clone(),
            attempts: job.attempts() + 1,
            latency: finished.saturating_sub(job.submitted),
            queue_wait: job.queue_wait,
            fallback: false,
            raw_body,
            from_cache: false,
        };
        if let Some(key) = service.call_key(&job.request) {
            core.caches[job.service].keep(&job.request.endpoint, key, &response, finished);
        }
        let _ = end(core, job, Ok(response), None);
    }
    Driven::left(None, handed)
}

/// Puts a job in a batch of its endpoint: it waits there (a ticket for a caller), or
/// comes back when it cannot be batched. A batch it opens is closed by the timer; one it
/// fills goes at once.
#[allow(clippy::result_large_err)] // see Coalescer::join
pub(super) fn offer(
    core: &Core,
    batcher: &EndpointBatcher,
    job: Job,
    now: Duration,
) -> Result<Option<Ticket>, Job> {
    let (service, endpoint) = (job.service, job.request.endpoint.clone());
    match batcher.offer(job, now, |j| set_aside(core, j)) {
        Offer::Alone(job) => Err(job),
        Offer::Joined(ticket) => Ok(ticket),
        Offer::Opened {
            ticket,
            key,
            id,
            due,
        } => {
            if !core.timer.close_batch(service, &endpoint, key, id, due) {
                // The timer is gone (stopping): end what waits now.
                for job in batcher.close(key, id) {
                    core.end_stopped(job);
                }
            }
            Ok(ticket)
        }
        Offer::Full { members, ticket } => {
            batch::dispatch(core, service, &endpoint, members);
            Ok(ticket)
        }
    }
}
