//! Fleet mode: one calendar quota, one rate and one circuit per provider shared by every
//! process of a namespace, kept in Redis.
//!
//! Counts live in Redis and move only through one Lua script, which reads Redis's own
//! `TIME` (so the fleet shares one clock and one calendar) and keeps each counter in a
//! hash that expires when its day or month ends. A process takes tokens `lease` at a time
//! and spends them locally, so Redis is asked once per `lease` calls; when few are left
//! the script hands them out one by one, so none sit unused in a process while another
//! is refused. Redis unreachable or slow (every call has `timeout_ms`) never fails a
//! request: the process counts alone against `limit / expected_size`, tries Redis again
//! every `sync_ms`, and when it answers adds what was spent meanwhile.
//!
//! Rates are a GCRA kept in Redis on its clock, taken in short leases (what the
//! process's share spends in `sync_ms`) that expire unspent, so a late token never bursts.
//!
//! A circuit that opens or closes by one process's counts is published at once and read
//! by the others every `sync_ms`. Half-open probes of a provider belong to the process
//! holding its probe token (a key with an expiry), so the fleet sends a provider a
//! process's worth of probes per half-open period, not one per process.

mod circuit;
mod quota;
mod rate;

pub(crate) use circuit::FleetCircuit;
pub(crate) use quota::{FleetQuota, FleetTake, Token};
pub(crate) use rate::{FleetRate, RateToken};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::foundation::clock::SharedClock;
use crate::foundation::config::ResolvedFleet;
use crate::telemetry::event::{EventBus, EventKind};

/// The most tokens one lease takes.
const MAX_LEASE: u64 = 1_000_000;

/// A balancer's link to Redis, shared by its providers' quotas.
pub(crate) struct FleetLink {
    /// `None` only if the client refuses a URL the load accepted: then the process
    /// stays alone.
    client: Option<redis::Client>,
    /// One connection: a process asks Redis once per `lease` calls.
    connection: Mutex<Option<redis::Connection>>,
    config: ResolvedFleet,
    script: redis::Script,
    connected: AtomicBool,
    /// Unix milliseconds since which Redis has been unreachable; 0 while connected.
    degraded_since_ms: AtomicU64,
    members: Mutex<Vec<Weak<FleetQuota>>>,
    circuits: Mutex<Vec<Weak<FleetCircuit>>>,
    /// Wakes the link's thread to publish a circuit's change now.
    wake: Sender<()>,
    /// Where losing and joining Redis are told (`on_event`, the dashboard's log).
    events: Arc<EventBus>,
    clock: SharedClock,
}

/// The link's thread: rejoins while degraded, keeps circuits in step while connected.
fn link_loop(link: &Weak<FleetLink>, woken: &Receiver<()>, sync: Duration) {
    loop {
        let _ = woken.recv_timeout(sync);
        // The balancer is gone with its link.
        let Some(link) = link.upgrade() else { return };
        if link.connected.load(Ordering::Acquire) {
            link.sync_circuits();
        } else {
            link.try_join();
        }
    }
}

/// What a link shows in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FleetState {
    pub connected: bool,
    pub degraded_since_ms: Option<u64>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl FleetLink {
    /// Connects if Redis answers; otherwise starts degraded and keeps trying every
    /// `sync_ms` on a thread of its own, which ends with the link.
    pub fn start(
        config: &ResolvedFleet,
        events: Arc<EventBus>,
        clock: SharedClock,
    ) -> Arc<FleetLink> {
        let (wake, woken) = crossbeam_channel::bounded(1);
        let link = Arc::new(FleetLink {
            // The load checked the URL with this client already.
            client: redis::Client::open(config.redis_url.as_str()).ok(),
            connection: Mutex::new(None),
            config: config.clone(),
            script: redis::Script::new(quota::SCRIPT),
            connected: AtomicBool::new(false),
            degraded_since_ms: AtomicU64::new(unix_ms().max(1)),
            members: Mutex::new(Vec::new()),
            circuits: Mutex::new(Vec::new()),
            wake,
            events,
            clock,
        });
        link.try_join();
        let weak = Arc::downgrade(&link);
        let sync = config.sync;
        let _ = std::thread::Builder::new()
            .name("switchyard-fleet".into())
            .spawn(move || link_loop(&weak, &woken, sync));
        link
    }

    /// Publishes this process's circuit changes and reads everyone's; the first read
    /// happens as circuits join, so a new process starts knowing what the fleet knows.
    fn sync_circuits(&self) {
        let circuits: Vec<Arc<FleetCircuit>> = self
            .circuits
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for circuit in &circuits {
            circuit.publish();
        }
        for circuit in &circuits {
            circuit.read();
        }
    }

    /// Runs one Redis command on the link's connection; `None` (and the link lost) when
    /// Redis does not answer in time.
    fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        self.on_connection(|connection| cmd.query(connection))
    }

    /// Runs a script; `None` (and the link lost) when Redis does not answer in time.
    fn invoke<T: redis::FromRedisValue>(&self, call: &redis::ScriptInvocation<'_>) -> Option<T> {
        self.on_connection(|connection| call.invoke(connection))
    }

    fn on_connection<T>(
        &self,
        run: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        let mut held = self.connection.lock();
        let answer = run(held.as_mut()?);
        drop(held);
        match answer {
            Ok(value) => Some(value),
            Err(_) => {
                self.lose();
                None
            }
        }
    }

    pub fn state(&self) -> FleetState {
        let since = self.degraded_since_ms.load(Ordering::Acquire);
        FleetState {
            connected: self.connected.load(Ordering::Acquire),
            degraded_since_ms: (since != 0).then_some(since),
        }
    }

    fn connect(&self) -> Option<redis::Connection> {
        let timeout = self.config.timeout;
        let c = self
            .client
            .as_ref()?
            .get_connection_with_timeout(timeout)
            .ok()?;
        c.set_read_timeout(Some(timeout)).ok()?;
        c.set_write_timeout(Some(timeout)).ok()?;
        Some(c)
    }

    /// Connects, adds what every quota spent alone, and only then counts as connected.
    fn try_join(&self) {
        let Some(connection) = self.connect() else {
            return;
        };
        *self.connection.lock() = Some(connection);
        let members: Vec<Arc<FleetQuota>> = self
            .members
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for quota in members {
            if !quota.add_spent_alone() {
                return;
            }
        }
        self.degraded_since_ms.store(0, Ordering::Release);
        self.connected.store(true, Ordering::Release);
        self.tell(true);
    }

    fn tell(&self, connected: bool) {
        self.events
            .post(&self.clock, self.clock.now(), || EventKind::Fleet {
                connected,
            });
    }

    /// Marks Redis lost (a call failed or timed out).
    fn lose(&self) {
        *self.connection.lock() = None;
        if self.connected.swap(false, Ordering::AcqRel) {
            self.degraded_since_ms
                .store(unix_ms().max(1), Ordering::Release);
            self.tell(false);
        }
    }
}
