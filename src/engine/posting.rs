//! What the engine tells `on_event` subscribers about requests: each attempt's end, a
//! rest it started, a quota notice, a failover. Nothing is made unless someone listens.

use crate::engine::runtime::Core;
use crate::foundation::error::AttemptKind;
use crate::telemetry::event::EventKind;
use std::time::Duration;

use crate::upstream::provider::Provider;
use crate::upstream::service::AttemptEnd;

/// The attempt of a request of `service` to provider `index` ended as `end`; `attempt`
/// counts from 1. `was_resting`: whether the provider rested before it was sent.
pub(crate) fn attempt_ended(
    core: &Core,
    (service, index): (usize, usize),
    (attempt, hedge): (u32, bool),
    end: &AttemptEnd,
    was_resting: bool,
) {
    if !core.events.is_on() {
        return;
    }
    let svc = &core.services[service];
    let provider = &svc.providers[index];
    core.events
        .post(&core.clock, end.now, || EventKind::Attempt {
            service: svc.name.clone(),
            provider: provider.name.to_string(),
            attempt,
            ok: end.failure.is_none(),
            kind: end.failure.map(AttemptKind::name),
            status: end.status,
            elapsed_ms: end.elapsed.as_secs_f64() * 1e3,
            hedge,
        });
    if end.failure == Some(AttemptKind::Quota) {
        core.events.post(&core.clock, end.now, || EventKind::Quota {
            provider: provider.name.to_string(),
            status: end.status,
        });
    }
    if let (false, Some((until, reason))) = (was_resting, provider.allowance.rest(end.now)) {
        core.events.post(&core.clock, end.now, || EventKind::Rest {
            provider: provider.name.to_string(),
            reason: reason.name(),
            ms: until.saturating_sub(end.now).as_millis() as u64,
        });
    }
}

/// Whether `provider` rests at `now`, read only when someone listens: a rest an attempt
/// starts is told once.
pub(crate) fn resting(core: &Core, provider: &Provider, now: Duration) -> bool {
    core.events.is_on() && provider.allowance.rest(now).is_some()
}

/// A request of `service` went on from provider `from` to provider `to`.
pub(crate) fn failed_over(core: &Core, service: usize, from: usize, to: usize) {
    if !core.events.is_on() {
        return;
    }
    let svc = &core.services[service];
    core.events
        .post(&core.clock, core.clock.now(), || EventKind::Failover {
            service: svc.name.clone(),
            from: svc.providers[from].name.to_string(),
            to: svc.providers[to].name.to_string(),
        });
}
