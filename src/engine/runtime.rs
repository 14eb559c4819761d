//! The runtime: everything the handle, the workers, the timer and the health loop share.
//! Its fields are the engine's own; the facade and the reporters go through methods.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
#[cfg(feature = "dashboard")]
use parking_lot::Mutex;

use crate::engine::batcher::ServiceBatcher;
use crate::engine::cache::ServiceCache;
use crate::engine::channels::{Channels, Next};
use crate::engine::coalesce::Coalescer;
use crate::engine::events::{Listeners, Subscribers};
use crate::engine::parking::ParkingLine;
use crate::engine::schedule::Timer;
use crate::engine::state_file::StateFile;
use crate::flow::activity::Activity;
use crate::flow::job::Job;
use crate::foundation::clock::SharedClock;
use crate::foundation::config::{DashboardConfig, Resolved};
use crate::foundation::error::Error;
use crate::foundation::names::ByName;
use crate::policy::breaker::{Breaker, CircuitInfo, Transition};
use crate::telemetry::event::EventBus;
use crate::telemetry::snapshot::Snapshot;
use crate::upstream::circuit_events::CircuitOutbox;
use crate::upstream::service::Service;
use crate::upstream::transport::Connector;

/// Up to this many services, a name is found by comparing it with each.
const FEW_SERVICES: usize = 8;

/// State shared by the handle, the workers and the jobs.
pub(crate) struct Core {
    pub(in crate::engine) services: Vec<Service>,
    /// Each service's parked jobs, by service index.
    pub(in crate::engine) lines: Vec<ParkingLine>,
    /// Each service's calls in flight that identical requests may share.
    pub(in crate::engine) coalescers: Vec<Coalescer>,
    /// Each service's kept answers, by endpoint.
    pub(in crate::engine) caches: Vec<ServiceCache>,
    /// Each service's batches still taking members, by endpoint.
    pub(in crate::engine) batchers: Vec<ServiceBatcher>,
    service_index: HashMap<String, usize, ByName>,
    pub(in crate::engine) channels: Channels,
    /// Admission has stopped.
    pub(in crate::engine) closed: AtomicBool,
    /// The grace is over: whatever has not started ends with `ShuttingDown`.
    pub(in crate::engine) stopping: AtomicBool,
    pub(in crate::engine) activity: Arc<Activity>,
    /// Where time comes from: deadlines, waits, backoffs, health checks.
    pub(in crate::engine) clock: SharedClock,
    /// Clock time at start.
    pub(in crate::engine) started: Duration,
    pub(in crate::engine) timer: Timer,
    /// Disconnects when the grace is over; for waits that must end at shutdown.
    pub(in crate::engine) stop_signal: Receiver<()>,
    pub(in crate::engine) listeners: Arc<Listeners>,
    /// `on_event` subscribers, and where events for them are posted.
    pub(in crate::engine) subscribers: Arc<Subscribers>,
    pub(in crate::engine) events: Arc<EventBus>,
    /// The last events, for status servers (kept once one has started).
    #[cfg(feature = "dashboard")]
    pub(in crate::engine) event_log: Arc<parking_lot::Mutex<crate::telemetry::event::EventLog>>,
    #[cfg(feature = "dashboard")]
    pub(in crate::engine) event_log_kept: parking_lot::Mutex<bool>,
    #[cfg_attr(not(feature = "dashboard"), allow(dead_code))]
    pub(in crate::engine) dashboard_config: DashboardConfig,
    /// Status servers to stop with the balancer.
    #[cfg(feature = "dashboard")]
    pub(in crate::engine) dashboards: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
    /// Where quota and rate state is kept across restarts.
    state: Option<StateFile>,
    /// The Redis link quotas are shared through, in fleet mode.
    #[cfg(feature = "fleet")]
    pub(in crate::engine) fleet: Option<Arc<crate::upstream::fleet::FleetLink>>,
}

/// What building a runtime leaves for the threads that will drive it.
pub(crate) struct Wiring {
    pub timer: Receiver<crate::engine::schedule::Delayed>,
    pub events: Receiver<crate::policy::breaker::CircuitEvent>,
    /// What the event bus carries to `on_event` subscribers.
    pub posted: Receiver<crate::telemetry::event::Event>,
    pub stop: crossbeam_channel::Sender<()>,
}

impl Core {
    /// A runtime for a resolved configuration, on `clock`, reaching providers through
    /// the transports `connect` makes; no thread started yet.
    pub fn new(resolved: &Resolved, clock: SharedClock, connect: &Connector) -> (Core, Wiring) {
        let (outbox, events) = CircuitOutbox::new();
        let (bus, posted) = EventBus::new();
        let bus = Arc::new(bus);
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
                Service::new(s, seed, clock.clone(), outbox.clone(), connect)
            })
            .collect();
        let service_index = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let state = resolved.state_file.as_ref().map(|path| {
            let providers = services.iter().flat_map(|s| &s.providers);
            StateFile::load(path, providers, clock.now())
        });
        #[cfg(feature = "fleet")]
        let fleet = resolved.fleet.as_ref().map(|config| {
            let link = crate::upstream::fleet::FleetLink::start(config, bus.clone(), clock.clone());
            for s in &services {
                for p in &s.providers {
                    p.allowance.join_fleet(&link, &s.name, &p.name);
                    let open = p.breaker.first_open_time();
                    let circuit = crate::upstream::fleet::FleetCircuit::join(
                        &link,
                        &s.name,
                        &p.name,
                        open,
                        p.breaker.remote(),
                    );
                    p.breaker.share_with(circuit);
                }
            }
            link
        });
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (timer, timer_rx) = Timer::new();
        let core = Core {
            lines: services.iter().map(|_| ParkingLine::default()).collect(),
            coalescers: services.iter().map(|_| Coalescer::default()).collect(),
            caches: resolved
                .services
                .iter()
                .map(|s| ServiceCache::new(&s.endpoints))
                .collect(),
            batchers: resolved.services.iter().map(ServiceBatcher::new).collect(),
            services,
            service_index,
            channels: Channels::new(),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            activity: Arc::new(Activity::default()),
            started: clock.now(),
            clock: clock.clone(),
            timer,
            stop_signal: stop_rx,
            listeners: Arc::new(Listeners::default()),
            subscribers: Arc::new(Subscribers::default()),
            events: bus,
            #[cfg(feature = "dashboard")]
            event_log: Arc::default(),
            #[cfg(feature = "dashboard")]
            event_log_kept: parking_lot::Mutex::new(false),
            dashboard_config: resolved.dashboard.clone(),
            #[cfg(feature = "dashboard")]
            dashboards: Mutex::new(Vec::new()),
            state,
            #[cfg(feature = "fleet")]
            fleet,
        };
        let wiring = Wiring {
            timer: timer_rx,
            events,
            posted,
            stop: stop_tx,
        };
        (core, wiring)
    }

    /// Writes the state file if a second has passed and something changed.
    pub fn save_state_if_due(&self) {
        if let Some(state) = &self.state {
            let providers = self.services.iter().flat_map(|s| &s.providers);
            state.save_if_due(providers, self.clock.now());
        }
    }

    /// Writes the state file now (at shutdown).
    pub fn save_state(&self) {
        if let Some(state) = &self.state {
            let providers = self.services.iter().flat_map(|s| &s.providers);
            state.save(providers, self.clock.now());
        }
    }

    /// Connection slots over every provider.
    pub fn slots(&self) -> usize {
        self.services
            .iter()
            .flat_map(|s| &s.providers)
            .map(|p| p.pool.max_connections)
            .sum()
    }

    /// Ends every queued and parked job with `ShuttingDown`.
    pub fn drain(&self) {
        while let Some(next) = self.channels.receivers().try_next() {
            let (Next::Ready(job) | Next::Queued(job)) = next else {
                continue;
            };
            self.end_stopped(job);
        }
        for line in &self.lines {
            for job in line.drain() {
                self.end_stopped(job);
            }
        }
        for batcher in &self.batchers {
            for job in batcher.take_all() {
                self.end_stopped(job);
            }
        }
    }

    /// Puts a job that waited out a backoff back in its line.
    pub fn requeue(&self, mut job: Job) {
        let priority = job.request.priority;
        let admission = &self.services[job.service].admission;
        job.place.get_or_insert_with(|| admission.enter(priority));
        self.channels.send(job);
        if self.stopping.load(Ordering::SeqCst) {
            self.drain();
        }
    }

    /// A job queued while shutdown was draining would wait for no one: drain again.
    pub fn recheck_stopping(&self) {
        if self.stopping.load(Ordering::SeqCst) {
            self.drain();
        }
    }

    /// Ends a job that the stop caught waiting; its slot, if any, goes back on drop.
    pub fn end_stopped(&self, mut job: Job) {
        if job.is_hedge {
            // The hedged job ends the request.
            return;
        }
        if let Some(members) = job.batch.take() {
            for member in members {
                self.end_stopped(member);
            }
            return;
        }
        let service = &self.services[job.service];
        job.reserved = None;
        job.place = None;
        // Claimed first, like every end: a hedge that answered counted the request.
        let claimed = job.claim();
        if claimed || !job.lost_to_its_hedge() {
            service.record_outcome(false, job.submitted, job.queue_wait, job.request.priority);
        }
        if claimed {
            job.finish_claimed(Err(Error::ShuttingDown));
        }
    }

    #[cfg(feature = "dashboard")]
    pub fn add_dashboard(&self, stop: Arc<dyn Fn() + Send + Sync>) {
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

    pub fn service_index(&self, name: &str) -> Option<usize> {
        // A few names compare faster than one hashes: every request asks this.
        if self.services.len() <= FEW_SERVICES {
            return self.services.iter().position(|s| s.name == name);
        }
        self.service_index.get(name).copied()
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Applies an operator's action to a provider's breaker; the listeners hear of it.
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

    pub fn circuit(&self, provider: &str) -> Result<CircuitInfo, Error> {
        let (s, p) = self.find_provider(provider)?;
        Ok(self.services[s].providers[p].breaker.info())
    }

    /// Adds an `on_event` subscriber; events are made from now on.
    pub fn subscribe(&self, subscriber: crate::engine::events::Subscriber) {
        self.subscribers.add(subscriber, &self.events);
    }

    pub fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn requests_under_way(&self) -> usize {
        self.activity.count()
    }

    pub fn uptime(&self) -> Duration {
        self.clock.now().saturating_sub(self.started)
    }

    #[cfg_attr(not(feature = "dashboard"), allow(dead_code))]
    pub fn dashboard_config(&self) -> &DashboardConfig {
        &self.dashboard_config
    }

    #[cfg(feature = "fleet")]
    fn fleet_snapshot(&self) -> Option<crate::telemetry::snapshot::FleetSnapshot> {
        self.fleet.as_ref().map(|link| {
            let state = link.state();
            crate::telemetry::snapshot::FleetSnapshot {
                connected: state.connected,
                degraded_since_ms: state.degraded_since_ms,
            }
        })
    }

    #[cfg(not(feature = "fleet"))]
    fn fleet_snapshot(&self) -> Option<crate::telemetry::snapshot::FleetSnapshot> {
        None
    }

    /// Every counter now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            uptime_secs: self.uptime().as_secs_f64(),
            services: self
                .services
                .iter()
                .map(|s| (s.name.clone(), s.snapshot()))
                .collect(),
            events: {
                let (delivered, dropped) = self.events.counts();
                crate::telemetry::snapshot::EventsSnapshot { delivered, dropped }
            },
            fleet: self.fleet_snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::test_rig::Rig;
    use crate::foundation::error::Error;

    #[test]
    fn operators_act_by_provider_name_and_unknown_names_are_refused() {
        let rig = Rig::new(&Rig::config(&["a", "b"], ""));
        assert_eq!(rig.core.find_provider("b").unwrap(), (0, 1));
        let e = rig.core.operate("nope", |b| b.force_open()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("nope")),
            "{e}"
        );
        rig.core.operate("a", |b| b.force_open()).unwrap();
        assert_eq!(rig.core.circuit("a").unwrap().state.name(), "open");
        let event = rig.wiring.events.try_recv().unwrap();
        assert_eq!(
            (event.service.as_str(), event.provider.as_str()),
            ("s", "a")
        );
        let snap = rig.core.snapshot();
        assert_eq!(snap.services["s"].providers["a"].circuit.state, "open");
        assert!(rig.core.service("t").is_err());
        assert_eq!(rig.core.slots(), 2 * 10);
    }
}
