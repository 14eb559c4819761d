//! Entry points for the micro-benchmarks in `benches/`: the per-request work of the
//! balancer without the network (pick a provider, take the breaker's permit and a slot,
//! give them back, record the outcome everywhere a real request records it).
//! Not part of the supported API.

use std::sync::Arc;
use std::time::Duration;

use crate::policy::breaker::Listeners;
use crate::foundation::clock::SystemClock;
use crate::foundation::config::{Config, StrategyKind};
use crate::flow::job::Job;
use crate::foundation::request::Request;
use crate::upstream::service::{Pick, Service};
use crate::flow::ticket::Sink;

/// One service of `providers` providers and a request to it.
pub struct Harness {
    service: Service,
    job: Job,
}

impl Harness {
    /// A service with `providers` providers (all tier 1) using `strategy`.
    pub fn new(providers: usize, strategy: StrategyKind) -> Harness {
        let mut text = format!("[defaults]\nstrategy = \"{}\"\n", strategy.name());
        for i in 0..providers {
            text.push_str(&format!(
                "[[services.s.providers]]\nname = \"p{i}\"\nbase_url = \"http://127.0.0.1:{}\"\n",
                1024 + i % 60_000
            ));
        }
        let resolved = Config::from_toml_str(&text)
            .and_then(|c| c.resolve())
            .unwrap_or_else(|e| panic!("bench configuration: {e}"));
        let service = Service::new(
            &resolved.services[0],
            7,
            SystemClock::shared(),
            Arc::new(Listeners::default()),
        );
        let request = Request::get("s", "/x");
        let eligible = service.check(&request).unwrap_or_else(|e| panic!("{e}"));
        let activity = Arc::new(crate::flow::activity::Activity::default());
        let job = Job::new(
            request,
            0,
            eligible,
            Duration::from_secs(60),
            Sink::Caller,
            activity.enter(),
        );
        let harness = Harness { service, job };
        // Warm the latency averages so latency strategies leave their fallback.
        for _ in 0..providers.max(1) * 8 {
            harness.select_and_record();
        }
        harness
    }

    /// Select, breaker permit, slot, release, record: what one request costs the balancer
    /// besides the network.
    pub fn select_and_record(&self) {
        let Pick::Slot(slot) = self.service.acquire(&self.job) else {
            return;
        };
        let provider = &self.service.providers[slot.index];
        provider.release();
        let elapsed = Duration::from_micros(250);
        let now = self.service.clock.now();
        self.service.notify(
            slot.index,
            provider.breaker.record(slot.permit, false, elapsed),
        );
        provider.stats.record_success(elapsed, now);
        provider.latency.record(elapsed, now);
        self.service.stats.record_outcome(
            true,
            elapsed,
            Duration::ZERO,
            crate::foundation::request::Priority::Normal,
            now,
        );
    }

    /// The memory one provider's counters, breaker and windows take, in bytes.
    pub fn bytes_per_provider() -> usize {
        std::mem::size_of::<crate::upstream::provider::Provider>()
            + crate::telemetry::histogram::heap_bytes()
            + crate::policy::window::heap_bytes()
    }
}
