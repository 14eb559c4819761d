//! Hedging (`hedge_after_ms`): a request that may be sent twice and has no answer after
//! that long also goes to a different provider, and the first answer wins. The hedge is a
//! job of its own that shares the request's outcome: it draws on the retry budget, takes
//! a seat, rate, quota and cost like any attempt, delivers only a winning answer, and
//! otherwise ends without a word. The attempt that loses reads its answer to the end on
//! its own worker, so its connection goes back to the pool whole, never mid-answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::runtime::Core;
use crate::flow::job::{HedgeOrder, Job, Race};
use crate::flow::ticket::Outcome;

/// Sets a hedge for the job's first attempt, about to go to provider `index` at clock
/// time `sent`, when its endpoint hedges and another provider could take it.
pub(crate) fn arm(core: &Core, job: &mut Job, index: usize, sent: Duration) {
    if job.is_hedge || job.batch.is_some() || job.attempts() > 0 || job.race.is_some() {
        return;
    }
    let service = &core.services[job.service];
    let Some(after) = service.hedge_after(&job.request) else {
        return;
    };
    if service.providers.len() < 2 {
        return;
    }
    // A caller's own thread is busy with the first attempt; hedged calls are queued, so
    // only a sink with a phase gets here.
    let Some(sink) = job.sink.share() else {
        return;
    };
    let race = Arc::new(Race::default());
    job.race = Some(race.clone());
    let mut tried = job.tried.clone();
    tried.insert(index);
    let order = HedgeOrder {
        request: job.request.clone(),
        service: job.service,
        eligible: job.eligible.clone(),
        tried,
        times: (job.submitted, job.deadline),
        sink,
        race,
        trace: job.trace.clone(),
    };
    core.timer.hedge(order, sent.saturating_add(after));
}

/// The job's first attempt ended: a hedge not yet sent will not be.
pub(crate) fn first_attempt_over(job: &Job) {
    if let (false, Some(race)) = (job.is_hedge, &job.race) {
        race.first_over.store(true, Ordering::Release);
    }
}

/// The hedge's time came: it joins the line as a job of its own, unless the first
/// attempt ended, the outcome is decided, the balancer is stopping or the retry budget
/// is spent.
pub(crate) fn launch(core: &Core, order: HedgeOrder) {
    if order.is_moot() || core.stopping.load(Ordering::Acquire) {
        return;
    }
    if !core.services[order.service].budget.try_withdraw() {
        return;
    }
    core.requeue(order.into_job(core.activity.enter()));
}

/// How a hedge ends: a winning answer is delivered and counted as the request's; any
/// other end (a failure, no provider left, a lost race) is silent, since the hedged
/// job has its own outcome.
pub(crate) fn end(core: &Core, job: Job, outcome: Outcome) {
    let Ok(response) = outcome else {
        return;
    };
    if !job.claim() {
        return;
    }
    let service = &core.services[job.service];
    service.stats.record_hedge_win();
    service.record_outcome(true, job.submitted, job.queue_wait, job.request.priority);
    job.trace
        .ended(Ok((response.provider(), response.status())));
    job.finish_claimed(Ok(response));
}
