//! Entry points for the micro-benchmarks in `benches/`: the per-request work of the
//! balancer without the network (pick a provider, take the breaker's permit and a slot,
//! give them back, record the outcome everywhere a real request records it).
//! Not part of the supported API.

use std::time::Duration;

use crate::engine::coalesce::Coalescer;
use crate::foundation::clock::{SharedClock, SystemClock};
use crate::foundation::config::{Config, Resolved, StrategyKind};
use crate::foundation::index_set::IndexSet;
use crate::foundation::request::{Priority, Request};
use crate::upstream::circuit_events::CircuitOutbox;
use crate::upstream::http;
use crate::upstream::service::{AttemptEnd, Pick, Service, Want};

/// One service of `providers` providers and a request to it.
pub struct Harness {
    service: Service,
    clock: SharedClock,
    eligible: IndexSet,
    coalescer: Coalescer,
    request: Request,
}

impl Harness {
    /// A service with `providers` providers (all tier 1) using `strategy`.
    pub fn new(providers: usize, strategy: StrategyKind) -> Harness {
        Harness::with_defaults(providers, strategy, "")
    }

    /// The same with more `[defaults]` keys (TOML), such as a rate and a quota.
    pub fn with_defaults(providers: usize, strategy: StrategyKind, defaults: &str) -> Harness {
        let mut text = format!(
            "[defaults]\nstrategy = \"{}\"\n{defaults}\n",
            strategy.name()
        );
        for i in 0..providers {
            text.push_str(&format!(
                "[[services.s.providers]]\nname = \"p{i}\"\nbase_url = \"http://127.0.0.1:{}\"\n",
                1024 + i % 60_000
            ));
        }
        let resolved = resolved(&text);
        // Circuit events go nowhere: the benchmark has no listeners.
        let (outbox, _events) = CircuitOutbox::new();
        let clock = SystemClock::shared();
        let service = Service::new(
            &resolved.services[0],
            7,
            clock.clone(),
            outbox,
            &http::connect,
        );
        let request = Request::get("s", "/x");
        let eligible = service
            .eligible_for(&request)
            .unwrap_or_else(|e| panic!("{e}"));
        let harness = Harness {
            service,
            clock,
            eligible,
            coalescer: Coalescer::default(),
            request: Request::get("s", "quote").param("symbol", "AAPL"),
        };
        // Warm the latency averages so latency strategies leave their fallback.
        for _ in 0..providers.max(1) * 8 {
            harness.select_and_record();
        }
        harness
    }

    /// Select, breaker permit, slot, release, record: what one request costs the balancer
    /// besides the network.
    pub fn select_and_record(&self) {
        let none = IndexSet::default();
        let want = Want {
            eligible: &self.eligible,
            tried: &none,
            attempts: 0,
            urgent: false,
            deadline: Duration::MAX,
        };
        let submitted = self.clock.now();
        let Pick::Slot(slot) = self.service.acquire(&want) else {
            return;
        };
        let elapsed = Duration::from_micros(250);
        // The calls a real attempt makes, in its order (see engine/dispatch.rs).
        let now = self.clock.now();
        let end = AttemptEnd {
            elapsed,
            now,
            ..AttemptEnd::default()
        };
        self.service
            .record_attempt(slot.index, slot.permit, slot.grant, &end);
        drop(slot.seat);
        self.service
            .record_outcome(true, submitted, Duration::ZERO, Priority::Normal);
    }

    /// What coalescing adds to a request that has no identical call to share (a miss):
    /// its key, the registration of its call, and its end.
    pub fn coalescing_miss(&self) {
        if let Some(key) = self.service.call_key(&self.request) {
            if self.coalescer.lead(key) {
                std::hint::black_box(self.coalescer.finish(key));
            }
        }
    }

    /// The memory one provider's counters, breaker and windows take, in bytes.
    pub fn bytes_per_provider() -> usize {
        std::mem::size_of::<crate::upstream::provider::Provider>()
            + crate::telemetry::histogram::heap_bytes()
            + crate::policy::window::heap_bytes()
    }
}

/// Keeps `keys` distinct 2xx answers of `body_bytes` each in an endpoint cache of
/// `max_entries`; returns how many it holds after (never more than `max_entries`).
pub fn fill_cache(max_entries: usize, keys: u64, body_bytes: usize) -> usize {
    use crate::engine::cache::ServiceCache;
    use crate::foundation::config::EndpointOptions;
    let options = EndpointOptions {
        cache_ttl_ms: 3_600_000,
        cache_max_entries: max_entries,
        ..EndpointOptions::default()
    };
    let cache = ServiceCache::new(&[("quote".to_string(), options)].into_iter().collect());
    let answer = crate::Response::fallback(200, vec![b'x'; body_bytes]);
    for n in 0..keys {
        // Keys as spread as the keyed hashes real requests get.
        let key = u128::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        cache.keep("quote", key, &answer, Duration::from_secs(1));
    }
    cache.entries()
}

/// The ureq agent the first provider of the configuration `toml` sends through, as the
/// balancer builds it: the TLS benchmark runs it bare to tell the agent's settings apart
/// from the balancer's own work.
pub fn provider_agent(toml: &str) -> ureq::Agent {
    http::agent(&resolved(toml).services[0].providers[0])
}

/// A benchmark's configuration, resolved; a mistake in it ends the benchmark.
fn resolved(toml: &str) -> Resolved {
    Config::from_toml_str(toml)
        .and_then(|c| c.resolve())
        .unwrap_or_else(|e| panic!("bench configuration: {e}"))
}

/// A provider's transport (its agent behind the balancer's `Transport::send`) without the
/// balancer: what the exchange itself costs, between the bare agent and `call()`.
pub struct ProviderTransport {
    transport: std::sync::Arc<dyn crate::upstream::transport::Transport>,
    attempt_cap: Duration,
    max_response_bytes: u64,
}

impl ProviderTransport {
    /// The first provider of the first service of `toml`.
    pub fn new(toml: &str) -> ProviderTransport {
        let resolved = resolved(toml);
        let provider = &resolved.services[0].providers[0];
        ProviderTransport {
            transport: http::connect(provider, Duration::from_secs(1)),
            attempt_cap: http::attempt_cap(provider),
            max_response_bytes: provider.pool.max_response_bytes,
        }
    }

    /// GETs `url` as an attempt would; the body's length, or the attempt's error.
    pub fn get(&self, url: &str) -> Result<usize, String> {
        let out = crate::upstream::transport::Outgoing {
            provider: "bench",
            method: crate::foundation::request::Method::Get,
            url,
            headers: &[],
            extra_headers: &[],
            body: None,
            timeout: self.attempt_cap,
            max_response_bytes: self.max_response_bytes,
            follow_redirects: false,
        };
        match self.transport.send(&out) {
            Ok(answer) => Ok(answer.body.len()),
            Err(failure) => Err(failure.error.to_string()),
        }
    }
}
