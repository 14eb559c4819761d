//! Batching (`batch_window_ms`): requests for one endpoint that differ only in the item
//! they name, arriving within the window, go as one call to a provider that declares a
//! `batch` for the endpoint; each gets its own item. A batch travels the engine as a
//! carrier job (one seat, rate, quota and cost) holding its members; when no batch
//! provider can take it, or its call fails, it splits into single calls, so no member
//! fails because it was batched.

use crate::engine::runtime::Core;
use crate::flow::job::Job;
use crate::flow::ticket::Sink;
use crate::foundation::index_set::IndexSet;

/// The window of batch `id` ended: close it and send what it holds.
pub(crate) fn close_and_send(core: &Core, service: usize, endpoint: &str, key: u128, id: u64) {
    if let Some(batcher) = core.batchers[service].of(endpoint) {
        let members = batcher.close(key, id);
        dispatch(core, service, endpoint, members);
    }
}

/// Sends what a closed batch holds: as one call when two or more are still waiting,
/// alone when one is.
pub(crate) fn dispatch(core: &Core, service: usize, endpoint: &str, members: Vec<Job>) {
    match carrier(core, service, endpoint, members) {
        Ok(carrier) => core.requeue(carrier),
        Err(members) => split(core, members, None),
    }
}

/// The job that carries `members` as one call; the members back when fewer than two are
/// still waiting or no batch provider may take them.
pub(crate) fn carrier(
    core: &Core,
    service: usize,
    endpoint: &str,
    members: Vec<Job>,
) -> Result<Job, Vec<Job>> {
    let svc = &core.services[service];
    let waiting = still_waiting(core, members);
    let Some(batcher) = core.batchers[service].of(endpoint) else {
        return Err(waiting);
    };
    if waiting.len() < 2 {
        return Err(waiting);
    }
    let first = &waiting[0];
    let mut eligible = IndexSet::default();
    for i in 0..svc.providers.len() {
        if batcher.capable.contains(i) && first.eligible.contains(i) {
            eligible.insert(i);
        }
    }
    if eligible.is_empty() {
        return Err(waiting);
    }
    let submitted = waiting
        .iter()
        .map(|j| j.submitted)
        .min()
        .unwrap_or_default();
    let deadline = waiting.iter().map(|j| j.deadline).max().unwrap_or_default();
    let mut request = first.request.clone();
    request.priority = waiting
        .iter()
        .map(|j| j.request.priority)
        .min_by_key(|p| p.index())
        .unwrap_or(request.priority);
    let mut carrier = Job::new(
        request,
        service,
        eligible,
        (submitted, deadline),
        Sink::Caller,
        core.activity.enter(),
    );
    carrier.unbatched = true;
    carrier.batch = Some(waiting);
    Ok(carrier)
}

/// The members whose waiters have not given up; those that did are counted as the
/// failures their callers saw.
pub(crate) fn still_waiting(core: &Core, members: Vec<Job>) -> Vec<Job> {
    let mut waiting = Vec::with_capacity(members.len());
    for job in members {
        if job.is_settled() {
            let svc = &core.services[job.service];
            svc.record_outcome(false, job.submitted, job.queue_wait, job.request.priority);
        } else {
            waiting.push(job);
        }
    }
    waiting
}

/// Sends each member as a single call; `failed_at`, a batch provider whose call just
/// failed, is skipped by their first attempt. Their own failures are not counted: no
/// member fails, nor spends the retry budget, for having been batched.
pub(crate) fn split(core: &Core, members: Vec<Job>, failed_at: Option<usize>) {
    for mut job in still_waiting(core, members) {
        job.unbatched = true;
        if let Some(index) = failed_at {
            job.tried.insert(index);
        }
        core.requeue(job);
    }
}
