//! A provider's circuit over the fleet: changes published and read, one prober at a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::{unix_ms, FleetLink};
use crate::policy::breaker::{CircuitShare, RemoteCircuit};

/// A change of this process's circuit not yet published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    OpenUntil(u64),
    Closed,
}

/// One provider's circuit in the fleet.
pub(crate) struct FleetCircuit {
    link: Arc<FleetLink>,
    /// `open:<unix ms until>` or `closed:<unix ms>`, expiring when it no longer says
    /// anything.
    key: String,
    /// Held by the process that probes the provider now.
    probe_key: String,
    /// This process's probe token value.
    me: String,
    token_ttl: Duration,
    pending: Mutex<Option<Change>>,
    /// While this process holds the probe token: until when.
    probing_until: Mutex<Option<Instant>>,
    /// The last value read or written, so a change is applied once.
    last_seen: Mutex<Option<String>>,
    remote: RemoteCircuit,
}

impl FleetCircuit {
    /// Shares a provider's circuit; `open` is how long it stays open at first.
    pub fn join(
        link: &Arc<FleetLink>,
        service: &str,
        provider: &str,
        open: Duration,
        remote: RemoteCircuit,
    ) -> Arc<FleetCircuit> {
        let ns = &link.config.namespace;
        let tag = format!("{{{ns}:{service}:{provider}}}");
        let circuit = Arc::new(FleetCircuit {
            link: link.clone(),
            key: format!("{tag}:circuit"),
            probe_key: format!("{tag}:probe"),
            me: format!("{}-{:x}", std::process::id(), rand::random::<u64>()),
            token_ttl: open.max(link.config.sync * 5),
            pending: Mutex::new(None),
            probing_until: Mutex::new(None),
            last_seen: Mutex::new(None),
            remote,
        });
        link.circuits.lock().push(Arc::downgrade(&circuit));
        if link.connected.load(Ordering::Acquire) {
            circuit.read();
        }
        circuit
    }

    /// Writes the pending change, and keeps or gives back the probe token when it is ours.
    pub(super) fn publish(&self) {
        let Some(change) = self.pending.lock().take() else {
            return;
        };
        let now = unix_ms();
        let (value, ttl) = match change {
            Change::OpenUntil(until) => (format!("open:{until}"), until.saturating_sub(now)),
            Change::Closed => (
                format!("closed:{now}"),
                (self.link.config.sync.as_millis() as u64 * 10).max(1000),
            ),
        };
        let mut set = redis::cmd("SET");
        set.arg(&self.key).arg(&value).arg("PX").arg(ttl.max(1));
        if self.link.command::<()>(&set).is_none() {
            // Redis is away: the change stays this process's own.
            return;
        }
        *self.last_seen.lock() = Some(value);
        let mut probing = self.probing_until.lock();
        if probing.is_none() {
            return;
        }
        // Our probes reopened it: the token stays ours through the next half-open
        // period (others would race for it while learning of the reopening). Our probes
        // closed it: the token goes back.
        let (script, keep) = match change {
            Change::OpenUntil(until) => (
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 1",
                Some(Duration::from_millis(until.saturating_sub(now)) + self.token_ttl),
            ),
            Change::Closed => (
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1",
                None,
            ),
        };
        *probing = keep.map(|keep| Instant::now() + keep);
        drop(probing);
        let script = redis::Script::new(script);
        let mut call = script.prepare_invoke();
        call.key(&self.probe_key)
            .arg(&self.me)
            .arg(keep.map_or(1, |k| k.as_millis() as u64));
        let _: Option<i64> = self.link.invoke(&call);
    }

    /// Applies another process's change, once.
    pub(super) fn read(&self) {
        let Some(value) = self
            .link
            .command::<Option<String>>(redis::cmd("GET").arg(&self.key))
        else {
            return;
        };
        let mut last = self.last_seen.lock();
        if value == *last {
            return;
        }
        match value.as_deref().and_then(|v| v.split_once(':')) {
            Some(("open", until)) => {
                if let Ok(ms) = until.parse::<u64>() {
                    self.remote.opened(UNIX_EPOCH + Duration::from_millis(ms));
                }
            }
            Some(("closed", _)) => {
                self.remote.closed();
            }
            _ => {}
        }
        *last = value;
    }
}

impl CircuitShare for FleetCircuit {
    fn changed(&self, open_until: Option<SystemTime>) {
        let change = match open_until {
            Some(until) => Change::OpenUntil(
                until
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
            None => Change::Closed,
        };
        *self.pending.lock() = Some(change);
        let _ = self.link.wake.try_send(());
    }

    fn may_probe(&self) -> bool {
        if !self.link.connected.load(Ordering::Acquire) {
            return true;
        }
        let now = Instant::now();
        let mut probing = self.probing_until.lock();
        if probing.is_some_and(|until| now < until) {
            return true;
        }
        let ttl = self.token_ttl.as_millis() as u64;
        let mut take = redis::cmd("SET");
        take.arg(&self.probe_key)
            .arg(&self.me)
            .arg("NX")
            .arg("PX")
            .arg(ttl);
        match self.link.command::<Option<String>>(&take) {
            Some(Some(_)) => {
                *probing = Some(now + self.token_ttl);
                true
            }
            Some(None) => false,
            // Redis went away just now: probe as a process alone would.
            None => true,
        }
    }
}
