//! The small handle a status server reads and acts through: snapshots, the last second
//! of each service, the last events, and the operator's actions. It holds the runtime
//! alive, nothing more.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::runtime::Core;
use crate::foundation::config::StrategyKind;
use crate::foundation::error::Error;
use crate::telemetry::event::Event;
use crate::telemetry::snapshot::Snapshot;

#[derive(Clone)]
pub(crate) struct Observer(Arc<Core>);

/// One service's last second.
pub(crate) struct Pulse {
    pub service: String,
    pub ok: u64,
    pub failed: u64,
    /// Latency quantiles of the second's requests, in ms; `None` without requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub queued: usize,
}

impl Observer {
    /// A handle on `core`; the first one starts keeping its last events.
    pub fn new(core: Arc<Core>) -> Observer {
        let log = core.event_log.clone();
        let mut subscribed = core.event_log_kept.lock();
        if !*subscribed {
            *subscribed = true;
            core.subscribe(Arc::new(move |e: &Event| log.lock().keep(e)));
        }
        drop(subscribed);
        Observer(core)
    }

    /// The last events, oldest first.
    pub fn recent_events(&self) -> Vec<Event> {
        self.0.event_log.lock().recent()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.0.snapshot()
    }

    pub fn uptime(&self) -> Duration {
        self.0.uptime()
    }

    /// Every service's last second, in configuration order.
    pub fn pulses(&self) -> Vec<Pulse> {
        self.0
            .services()
            .iter()
            .map(|s| {
                let now = s.clock.now();
                let (ended, failed) = s.stats.recent.last_second(now);
                let quantiles = s
                    .stats
                    .recent
                    .latency_quantiles(now, Duration::from_secs(1));
                Pulse {
                    service: s.name.clone(),
                    ok: ended - failed,
                    failed,
                    p50_ms: quantiles.map(|q| q.0),
                    p99_ms: quantiles.map(|q| q.1),
                    queued: s.admission.depth(),
                }
            })
            .collect()
    }

    pub fn force_open(&self, provider: &str) -> Result<(), Error> {
        self.0.operate(provider, |b| b.force_open())
    }

    pub fn force_close(&self, provider: &str) -> Result<(), Error> {
        self.0.operate(provider, |b| b.force_close())
    }

    pub fn reset_circuit(&self, provider: &str) -> Result<(), Error> {
        self.0.operate(provider, |b| b.reset())
    }

    pub fn set_strategy(&self, service: &str, kind: StrategyKind) -> Result<(), Error> {
        self.0.service(service)?.set_strategy(kind)
    }

    /// Runs `stop` when the balancer shuts down.
    pub fn on_shutdown(&self, stop: Arc<dyn Fn() + Send + Sync>) {
        self.0.add_dashboard(stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_rig::Rig;
    use crate::foundation::request::Request;

    #[test]
    fn pulses_show_the_last_full_second_and_actions_reach_the_runtime() {
        let rig = Rig::new(&Rig::config(&["a"], ""));
        let observer = Observer::new(rig.core.clone());
        for _ in 0..3 {
            rig.core.drive_call(Request::get("s", "/x")).unwrap();
        }
        rig.clock.advance(Duration::from_secs(1));
        let pulses = observer.pulses();
        assert_eq!(pulses.len(), 1);
        assert_eq!(
            (pulses[0].service.as_str(), pulses[0].ok, pulses[0].failed),
            ("s", 3, 0)
        );
        observer.set_strategy("s", StrategyKind::PeakEwma).unwrap();
        assert_eq!(observer.snapshot().services["s"].strategy, "peak_ewma");
        observer.force_open("a").unwrap();
        assert_eq!(
            observer.snapshot().services["s"].providers["a"]
                .circuit
                .state,
            "open"
        );
        observer.reset_circuit("a").unwrap();
        assert!(observer.force_close("zz").is_err());
    }
}
