//! The entry type: [`Balancer`] admits requests, runs them inline or on workers, and
//! shuts down without losing any.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::flow::activity::Activity;
use crate::policy::breaker::{Breaker, CircuitEvent, CircuitInfo, Listeners, Transition};
use crate::foundation::clock::SystemClock;
use crate::foundation::config::{Config, DashboardConfig, StrategyKind};
use crate::policy::health;
use crate::flow::job::{IndexSet, Job};
use crate::telemetry::counters::{self, Snapshot};
use crate::upstream::parking::{Channels, Next};
use crate::foundation::request::Fallback;
use crate::foundation::request::Request;
use crate::upstream::service::Service;
use crate::flow::ticket::{CallbackCell, JobPhase, Outcome, Sink, Ticket};
use crate::engine::timer::{self, Timer};
use crate::policy::window::Recent;
use crate::engine::dispatch;
use crate::foundation::error::Error;
use crate::foundation::response::Response;

/// Most worker threads chosen automatically.
const MAX_AUTO_WORKERS: usize = 1024;

/// State shared by the handle, the workers and the jobs.
pub(crate) struct Core {
    pub services: Vec<Service>,
    service_index: HashMap<String, usize>,
    pub channels: Channels,
    /// Admission has stopped.
    closed: AtomicBool,
    /// The grace is over: whatever has not started ends with `ShuttingDown`.
    pub stopping: AtomicBool,
    pub activity: Arc<Activity>,
    pub started: Instant,
    pub timer: Timer,
    /// Disconnects when the grace is over; for waits that must end at shutdown.
    pub stop_signal: Receiver<()>,
    listeners: Arc<Listeners>,
    #[cfg_attr(not(feature = "dashboard"), allow(dead_code))]
    pub dashboard_config: DashboardConfig,
    /// Status servers to stop with the balancer.
    #[cfg(feature = "dashboard")]
    dashboards: Mutex<Vec<Arc<crate::report::dashboard::StopSignal>>>,
}

impl Core {
    /// Ends every queued and parked job with `ShuttingDown`.
    pub fn drain(&self) {
        while let Some(next) = self.channels.receivers().try_next() {
            let (Next::Ready(job) | Next::Queued(job)) = next else {
                continue;
            };
            self.end_stopped(job);
        }
        for service in &self.services {
            for job in service.queue.drain_parked() {
                self.end_stopped(job);
            }
        }
    }

    /// Puts a job that waited out a backoff back in its line.
    pub fn requeue(&self, mut job: Job) {
        self.services[job.service].queue.enter(&mut job);
        self.channels.send(job);
        if self.stopping.load(Ordering::SeqCst) {
            self.drain();
        }
    }

    #[cfg(feature = "dashboard")]
    pub fn add_dashboard(&self, stop: Arc<crate::report::dashboard::StopSignal>) {
        self.dashboards.lock().push(stop);
    }

    /// The service and index of a provider, by name.
    pub fn find_provider(&self, name: &str) -> Result<(usize, usize), Error> {
        self.services
            .iter()
            .enumerate()
            .find_map(|(s, svc)| {
                svc.providers
                    .iter()
                    .position(|p| &*p.name == name)
                    .map(|p| (s, p))
            })
            .ok_or_else(|| Error::InvalidArgument(format!("no provider is named `{name}`")))
    }

    pub fn service(&self, name: &str) -> Result<&Service, Error> {
        self.service_index
            .get(name)
            .map(|&i| &self.services[i])
            .ok_or_else(|| Error::UnknownService(name.to_string()))
    }

    /// Applies an operator's action to a provider's breaker and tells the listeners.
    pub fn operate(
        &self,
        provider: &str,
        act: impl FnOnce(&Breaker) -> Option<Transition>,
    ) -> Result<(), Error> {
        let (s, p) = self.find_provider(provider)?;
        let service = &self.services[s];
        service.notify(p, act(&service.providers[p].breaker));
        Ok(())
    }

    pub fn end_stopped(&self, mut job: Job) {
        let service = &self.services[job.service];
        if let Some(slot) = job.reserved.take() {
            service.providers[slot.index].breaker.cancel(slot.permit);
            service.providers[slot.index].release();
        }
        service.queue.uncount(&mut job);
        service.record_outcome(&job, false);
        job.finish(Err(Error::ShuttingDown));
    }
}

/// Stops the balancer when the last handle goes.
struct Lifecycle {
    core: Arc<Core>,
    stop: Mutex<Option<Sender<()>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Lifecycle {
    fn shutdown(&self, grace: Duration) {
        let core = &self.core;
        core.closed.store(true, Ordering::SeqCst);
        let idle = core.activity.wait_idle(Instant::now() + grace);
        #[cfg(feature = "dashboard")]
        for dashboard in core.dashboards.lock().drain(..) {
            dashboard.stop();
        }
        core.stopping.store(true, Ordering::SeqCst);
        core.drain();
        // Workers leave once their current attempt ends.
        drop(self.stop.lock().take());
        let workers = std::mem::take(&mut *self.workers.lock());
        if idle {
            for w in workers {
                let _ = w.join();
            }
        }
        // Otherwise attempts are still on the wire: their workers deliver and exit on their
        // own, each within its attempt timeout, without holding up the caller.
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

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
            .field(
                "services",
                &self.core.service_index.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// Validates the configuration, builds every provider's pool and starts the workers.
    pub fn new(config: Config) -> Result<Balancer, Error> {
        let resolved = config.resolve()?;
        let clock = SystemClock::shared();
        let listeners = Arc::new(Listeners::default());
        let services: Vec<Service> = resolved
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // Each service its own stream, all reproducible from the one seed.
                let seed = match resolved.random_seed {
                    0 => 0,
                    seed => seed.wrapping_add(i as u64),
                };
                Service::new(s, seed, clock.clone(), listeners.clone())
            })
            .collect();
        let slots: usize = services
            .iter()
            .flat_map(|s| &s.providers)
            .map(|p| p.pool.max_connections)
            .sum();
        // One worker per connection slot: a slot handed to a parked job then always
        // finds a free worker.
        let workers = match resolved.workers {
            0 => slots.clamp(1, MAX_AUTO_WORKERS),
            n => n,
        };
        let service_index = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (timer, timer_rx) = Timer::new();
        let core = Arc::new(Core {
            services,
            service_index,
            channels: Channels::new(),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            activity: Arc::new(Activity::default()),
            started: Instant::now(),
            timer,
            stop_signal: stop_rx.clone(),
            listeners,
            dashboard_config: resolved.dashboard.clone(),
            #[cfg(feature = "dashboard")]
            dashboards: Mutex::new(Vec::new()),
        });
        let mut handles = Vec::with_capacity(workers + 2);
        let spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(body)
                .map_err(|e| Error::Internal(format!("cannot start a thread: {e}")))
        };
        {
            let (core, stop) = (core.clone(), stop_rx.clone());
            let body = Box::new(move || timer::run(core, timer_rx, stop));
            handles.push(spawn("switchyard-timer".into(), body)?);
        }
        if health::wanted(&core) {
            let (core, stop) = (core.clone(), stop_rx.clone());
            let body = Box::new(move || health::run(core, stop));
            handles.push(spawn("switchyard-health".into(), body)?);
        }
        for i in 0..workers {
            let core = core.clone();
            let receivers = core.channels.receivers();
            let stop = stop_rx.clone();
            let body = Box::new(move || dispatch::run(core, receivers, stop));
            handles.push(spawn(format!("switchyard-worker-{i}"), body)?);
        }
        let life = Arc::new(Lifecycle {
            core: core.clone(),
            stop: Mutex::new(Some(stop_tx)),
            workers: Mutex::new(handles),
        });
        Ok(Balancer { core, life })
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
        let (service, eligible) = self.admit(&request)?;
        let svc = &self.core.services[service];
        if svc.queue.has_waiting_at_or_above(request.priority) {
            return self.enqueue(service, eligible, request)?.wait();
        }
        let job = Job::new(
            request,
            service,
            eligible,
            svc.deadline,
            Sink::Caller,
            self.core.activity.enter(),
        );
        svc.stats.record_admitted();
        let driven = dispatch::drive(&self.core, job);
        if let Some(next) = driven.next {
            self.core.channels.send_ready(next);
        }
        if let Some(ticket) = driven.parked {
            self.recheck_stopping();
            return ticket.wait();
        }
        driven
            .outcome
            .unwrap_or_else(|| Err(Error::Internal("a call ended without an outcome".into())))
    }

    /// Queues a request for the workers and returns at once with its [`Ticket`].
    ///
    /// Fails at once with [`Error::QueueFull`] when the service already has
    /// `queue.max_size` requests waiting; never blocks.
    pub fn submit(&self, request: Request) -> Result<Ticket, Error> {
        let (service, eligible) = self.admit(&request)?;
        self.enqueue(service, eligible, request)
    }

    /// Like [`Balancer::submit`], but the outcome goes to `callback`, called exactly once
    /// on a worker thread (or on this thread if the request fails at admission, in which
    /// case the error is also returned and the callback is not called).
    pub fn submit_with<F>(&self, request: Request, callback: F) -> Result<(), Error>
    where
        F: FnOnce(Result<Response, Error>) + Send + 'static,
    {
        let (service, eligible) = self.admit(&request)?;
        let phase = Arc::new(JobPhase::default());
        let cell: CallbackCell = Arc::new(parking_lot::Mutex::new(Some(Box::new(callback))));
        let started = Instant::now();
        let deadline = started
            + request
                .timeout
                .unwrap_or(self.core.services[service].deadline);
        let sink = Sink::Callback(phase.clone(), cell.clone());
        self.enqueue_sink(service, eligible, request, sink)?;
        // No waiter watches the deadline of a callback request: the timer does.
        self.core.timer.expire(phase, cell, started, deadline);
        Ok(())
    }

    fn enqueue(
        &self,
        service: usize,
        eligible: IndexSet,
        request: Request,
    ) -> Result<Ticket, Error> {
        let svc = &self.core.services[service];
        let now = Instant::now();
        let deadline = now + request.timeout.unwrap_or(svc.deadline);
        let (ticket, sink) = Ticket::new(now, deadline);
        self.enqueue_sink(service, eligible, request, sink)?;
        Ok(ticket)
    }

    fn enqueue_sink(
        &self,
        service: usize,
        eligible: IndexSet,
        request: Request,
        sink: Sink,
    ) -> Result<(), Error> {
        let svc = &self.core.services[service];
        let mut job = Job::new(
            request,
            service,
            eligible,
            svc.deadline,
            sink,
            self.core.activity.enter(),
        );
        if !svc.queue.admit(&mut job) {
            svc.stats.record_rejected();
            return Err(Error::QueueFull {
                service: svc.name.clone(),
                max_size: svc.queue.max_size,
            });
        }
        svc.stats.record_admitted();
        job.start_waiting(job.submitted);
        self.core.channels.send(job);
        self.recheck_stopping();
        Ok(())
    }

    /// A job queued while shutdown was draining would wait for no one: drain again.
    fn recheck_stopping(&self) {
        if self.core.stopping.load(Ordering::SeqCst) {
            self.core.drain();
        }
    }

    /// Checks a request against the configuration; returns its service's index.
    fn admit(&self, request: &Request) -> Result<(usize, IndexSet), Error> {
        if self.core.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        request.check()?;
        let &index = self
            .core
            .service_index
            .get(&request.service)
            .ok_or_else(|| Error::UnknownService(request.service.clone()))?;
        let service = &self.core.services[index];
        let eligible = service.check(request)?;
        service.budget.deposit();
        Ok((index, eligible))
    }

    /// Stops taking requests, lets queued and running ones finish for up to `grace`,
    /// then ends the rest with [`Error::ShuttingDown`]. Returns when the queues are empty;
    /// attempts still on the wire then finish on their own. Calling it again is harmless.
    pub fn shutdown(&self, grace: Duration) {
        self.life.shutdown(grace);
    }

    /// Whether [`Balancer::shutdown`] has begun.
    pub fn is_shut_down(&self) -> bool {
        self.core.closed.load(Ordering::Acquire)
    }

    /// Requests admitted and not yet ended.
    pub fn requests_under_way(&self) -> usize {
        self.core.activity.count()
    }

    /// Every counter in the Prometheus text format 0.0.4, with `service` and `provider`
    /// labels. Configured secrets never appear in it.
    pub fn prometheus(&self) -> String {
        crate::report::prometheus::render(&self.core)
    }

    /// Starts the status server on `addr` (`"127.0.0.1:0"` picks a free port) on its own
    /// threads: the live dashboard at `/`, `/status.json`, `/metrics` (Prometheus),
    /// `/healthz`, and operator actions when `dashboard.token` is configured. Addresses
    /// other than loopback are refused unless `dashboard.allow_remote` is set. The server
    /// stops with the balancer.
    #[cfg(feature = "dashboard")]
    pub fn serve_dashboard(&self, addr: &str) -> Result<crate::Dashboard, Error> {
        if self.is_shut_down() {
            return Err(Error::ShuttingDown);
        }
        let c = &self.core.dashboard_config;
        crate::report::dashboard::start(self.core.clone(), addr, c.token.clone(), c.allow_remote)
    }

    /// A point-in-time view of every counter.
    pub fn metrics(&self) -> Snapshot {
        counters::snapshot(&self.core)
    }

    /// The circuit of a provider: state, counts in the window, last failure, next probe.
    pub fn circuit(&self, provider: &str) -> Result<CircuitInfo, Error> {
        let (s, p) = self.core.find_provider(provider)?;
        Ok(self.core.services[s].providers[p].breaker.info())
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

    /// Calls `listener` on every circuit state change, on the thread that caused it
    /// (outside every lock; keep it short).
    pub fn on_circuit_change<F>(&self, listener: F)
    where
        F: Fn(&CircuitEvent) + Send + Sync + 'static,
    {
        self.core.listeners.add(Arc::new(listener));
    }

    /// Answers a service's requests with `fallback` when every provider failed or none was
    /// available; a request's own [`Request::fallback`] takes precedence. `None` removes it.
    pub fn set_fallback<F>(&self, service: &str, fallback: Option<F>) -> Result<(), Error>
    where
        F: Fn(&Request, &Error) -> Option<Response> + Send + Sync + 'static,
    {
        let fallback = fallback.map(|f| Fallback(Arc::new(f) as Arc<crate::foundation::request::FallbackFn>));
        self.core.service(service)?.set_fallback(fallback);
        Ok(())
    }

    /// Switches a service's load-balancing strategy; takes effect with the next request.
    pub fn set_strategy(&self, service: &str, strategy: StrategyKind) -> Result<(), Error> {
        self.core.service(service)?.picker.set_kind(strategy);
        Ok(())
    }

    /// The strategy a service uses now.
    pub fn strategy(&self, service: &str) -> Result<StrategyKind, Error> {
        Ok(self.core.service(service)?.picker.kind())
    }

    /// A provider's attempts among its last 1,000 that ended within `span`: count,
    /// success rate, mean latency.
    pub fn recent_provider(&self, provider: &str, span: Duration) -> Result<Recent, Error> {
        let (s, p) = self.core.find_provider(provider)?;
        let service = &self.core.services[s];
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
        self.core.services.iter().map(|s| s.name.as_str())
    }
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Balancer>();
    is::<Ticket>();
    let _: Option<Outcome> = None;
}
