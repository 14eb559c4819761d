//! The entry type: [`Balancer`] admits requests, runs them inline or on workers, and
//! shuts down without losing any.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::lifecycle::{self, Lifecycle};
use crate::engine::runtime::Core;
use crate::flow::ticket::Ticket;
use crate::foundation::config::{Config, StrategyKind};
use crate::foundation::error::Error;
use crate::foundation::request::{Fallback, FallbackFn, Request};
use crate::foundation::response::Response;
use crate::policy::breaker::{CircuitEvent, CircuitInfo};
use crate::policy::window::Recent;
use crate::telemetry::snapshot::Snapshot;

/// A client-side load balancer over the configured services and providers.
///
/// Cheap to clone: clones share everything. `Send + Sync`; many threads may call it at
/// once. When the last clone is dropped the balancer shuts down with no grace: queued
/// requests end with [`Error::ShuttingDown`], requests on the wire finish.
#[derive(Clone)]
pub struct Balancer {
    core: Arc<Core>,
    life: Arc<Lifecycle>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("services", &self.services().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Validates the configuration, builds every provider's pool and starts the workers.
    pub fn new(config: Config) -> Result<Balancer, Error> {
        let resolved = config.resolve()?;
        let (core, life) = lifecycle::start(&resolved)?;
        Ok(Balancer {
            core,
            life: Arc::new(life),
        })
    }

    /// Reads a configuration file (JSON when it ends in `.json`, else TOML).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Balancer, Error> {
        Balancer::new(Config::from_file(path)?)
    }

    /// Reads a TOML configuration.
    pub fn from_toml_str(text: &str) -> Result<Balancer, Error> {
        Balancer::new(Config::from_toml_str(text)?)
    }

    /// Reads a JSON configuration.
    pub fn from_json_str(text: &str) -> Result<Balancer, Error> {
        Balancer::new(Config::from_json_str(text)?)
    }

    /// Sends a request and blocks until its outcome.
    ///
    /// When a connection slot is free and nothing as urgent waits in the service's line,
    /// the request runs on the calling thread (no hand-off); otherwise it queues like
    /// [`Balancer::submit`] and the caller waits.
    pub fn call(&self, request: Request) -> Result<Response, Error> {
        self.core.drive_call(request)
    }

    /// Queues a request for the workers and returns at once with its [`Ticket`].
    ///
    /// Fails at once with [`Error::QueueFull`] when the service already has
    /// `queue.max_size` requests waiting; never blocks.
    pub fn submit(&self, request: Request) -> Result<Ticket, Error> {
        self.core.queue_request(request)
    }

    /// Like [`Balancer::submit`], but the outcome goes to `callback`, called exactly once
    /// on a worker thread (or on this thread if the request fails at admission, in which
    /// case the error is also returned and the callback is not called).
    pub fn submit_with<F>(&self, request: Request, callback: F) -> Result<(), Error>
    where
        F: FnOnce(Result<Response, Error>) + Send + 'static,
    {
        self.core.queue_with_callback(request, callback)
    }

    /// Stops taking requests, lets queued and running ones finish for up to `grace`,
    /// then ends the rest with [`Error::ShuttingDown`]. Returns when the queues are empty;
    /// attempts still on the wire then finish on their own. Calling it again is harmless.
    pub fn shutdown(&self, grace: Duration) {
        self.life.shutdown(grace);
    }

    /// Whether [`Balancer::shutdown`] has begun.
    pub fn is_shut_down(&self) -> bool {
        self.core.is_closed()
    }

    /// Requests admitted and not yet ended.
    pub fn requests_under_way(&self) -> usize {
        self.core.requests_under_way()
    }

    /// Every counter in the Prometheus text format 0.0.4, with `service` and `provider`
    /// labels. Configured secrets never appear in it.
    pub fn prometheus(&self) -> String {
        crate::report::prometheus::render(&self.core.snapshot())
    }

    /// Starts the status server on `addr` (`"127.0.0.1:0"` picks a free port) on its own
    /// threads: the live dashboard at `/`, `/status.json`, `/metrics` (Prometheus),
    /// `/healthz`, and operator actions when `dashboard.token` is configured. Addresses
    /// other than loopback are refused unless `dashboard.allow_remote` is set. The server
    /// stops with the balancer.
    #[cfg(feature = "dashboard")]
    pub fn serve_dashboard(
        &self,
        addr: &str,
    ) -> Result<crate::report::dashboard::Dashboard, Error> {
        if self.is_shut_down() {
            return Err(Error::ShuttingDown);
        }
        let c = self.core.dashboard_config();
        let observer = crate::engine::observer::Observer::new(self.core.clone());
        crate::report::dashboard::start(observer, addr, c.token.clone(), c.allow_remote)
    }

    /// A point-in-time view of every counter.
    pub fn metrics(&self) -> Snapshot {
        self.core.snapshot()
    }

    /// What would happen to `request` now, without sending it: every provider of its
    /// service with its tier, circuit, rest and its reason, rate and quota left, load and
    /// score, why it could not be the pick, and the pick. Nothing is sent, taken or counted.
    pub fn explain(&self, request: &Request) -> Result<crate::Explanation, Error> {
        self.core.explain(request)
    }

    /// The circuit of a provider: state, counts in the window, last failure, next probe.
    pub fn circuit(&self, provider: &str) -> Result<CircuitInfo, Error> {
        self.core.circuit(provider)
    }

    /// Opens a provider's circuit until [`Balancer::force_close`] or
    /// [`Balancer::reset_circuit`]: no request goes to it meanwhile.
    pub fn force_open(&self, provider: &str) -> Result<(), Error> {
        self.core.operate(provider, |b| b.force_open())
    }

    /// Closes a provider's circuit now; it opens again by the usual rules.
    pub fn force_close(&self, provider: &str) -> Result<(), Error> {
        self.core.operate(provider, |b| b.force_close())
    }

    /// Closes a provider's circuit and forgets its counts.
    pub fn reset_circuit(&self, provider: &str) -> Result<(), Error> {
        self.core.operate(provider, |b| b.reset())
    }

    /// Calls `listener` on every circuit state change. Calls come one at a time, in order,
    /// on the balancer's events thread, with no lock held: a listener may block or call
    /// the balancer without holding up any request. [`Balancer::shutdown`] delivers what
    /// is queued, then no more.
    pub fn on_circuit_change<F>(&self, listener: F)
    where
        F: Fn(&CircuitEvent) + Send + Sync + 'static,
    {
        self.core.listeners().add(Arc::new(listener));
    }

    /// Calls `subscriber` with every event from now on: each attempt's end, failover,
    /// circuit change, rest and quota notice ([`Event`](crate::Event); its JSON for C
    /// and Python). Calls come one at a time, in order, on the events thread, with no
    /// lock of the balancer held. Events wait in a bounded buffer (4,096): a subscriber
    /// slower than the traffic loses the excess, counted in `events.dropped`, and never
    /// slows a request. At shutdown, events still waiting are dropped.
    pub fn on_event<F>(&self, subscriber: F)
    where
        F: Fn(&crate::Event) + Send + Sync + 'static,
    {
        self.core.subscribe(Arc::new(subscriber));
    }

    /// Answers a service's requests with `fallback` when every provider failed or none was
    /// available; a request's own [`Request::fallback`] takes precedence. `None` removes it.
    pub fn set_fallback<F>(&self, service: &str, fallback: Option<F>) -> Result<(), Error>
    where
        F: Fn(&Request, &Error) -> Option<Response> + Send + Sync + 'static,
    {
        let fallback = fallback.map(|f| Fallback(Arc::new(f) as Arc<FallbackFn>));
        self.core.service(service)?.set_fallback(fallback);
        Ok(())
    }

    /// Switches a service's load-balancing strategy; takes effect with the next request.
    pub fn set_strategy(&self, service: &str, strategy: StrategyKind) -> Result<(), Error> {
        self.core.service(service)?.set_strategy(strategy)
    }

    /// The strategy a service uses now.
    pub fn strategy(&self, service: &str) -> Result<StrategyKind, Error> {
        Ok(self.core.service(service)?.picker.kind())
    }

    /// A provider's attempts among its last 1,000 that ended within `span`: count,
    /// success rate, mean latency.
    pub fn recent_provider(&self, provider: &str, span: Duration) -> Result<Recent, Error> {
        let (s, p) = self.core.find_provider(provider)?;
        let service = &self.core.services()[s];
        Ok(service.providers[p]
            .stats
            .recent
            .recent(service.clock.now(), span))
    }

    /// A service's requests among its last 1,000 that ended within `span`.
    pub fn recent_service(&self, service: &str, span: Duration) -> Result<Recent, Error> {
        let service = self.core.service(service)?;
        Ok(service.stats.recent.recent(service.clock.now(), span))
    }

    /// The names of the configured services.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.core.services().iter().map(|s| s.name.as_str())
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Balancer>();
    is::<Ticket>();
}
