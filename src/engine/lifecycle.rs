//! Starting the engine's threads, and stopping them without losing a request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::engine::events::{deliver_events, Audience};
use crate::engine::health_loop::probe_providers;
use crate::engine::runtime::Core;
use crate::engine::timer::keep_time;
use crate::engine::worker::serve_jobs;
use crate::foundation::clock::{SharedClock, SystemClock};
use crate::foundation::config::Resolved;
use crate::foundation::error::Error;
use crate::upstream::http;
use crate::upstream::transport::Connector;

/// Most worker threads chosen automatically.
const MAX_AUTO_WORKERS: usize = 1024;

/// Stops the engine when the last handle goes.
pub(crate) struct Lifecycle {
    core: Arc<Core>,
    stop: Mutex<Option<Sender<()>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// The events thread: joined at shutdown, so no listener runs after it returns.
    events: Mutex<Option<JoinHandle<()>>>,
}

/// Builds the runtime and starts its threads: timer, events, the health and probe loop,
/// and the workers.
pub(crate) fn start(resolved: &Resolved) -> Result<(Arc<Core>, Lifecycle), Error> {
    start_with(resolved, SystemClock::shared(), &http::connect)
}

/// [`start`] on a given clock and transports.
pub(crate) fn start_with(
    resolved: &Resolved,
    clock: SharedClock,
    connect: &Connector,
) -> Result<(Arc<Core>, Lifecycle), Error> {
    let (core, wiring) = Core::new(resolved, clock, connect);
    let core = Arc::new(core);
    // One worker per connection slot: a slot handed to a parked job then always finds a
    // free worker.
    let workers = match resolved.workers {
        0 => core.slots().clamp(1, MAX_AUTO_WORKERS),
        n => n,
    };
    let stop = core.stop_signal.clone();
    let mut handles = Vec::with_capacity(workers + 2);
    let spawn = |name: String, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name)
            .spawn(body)
            .map_err(|e| Error::Internal(format!("cannot start a thread: {e}")))
    };
    {
        let (core, stop) = (core.clone(), stop.clone());
        let body = Box::new(move || keep_time(core, wiring.timer, stop));
        handles.push(spawn("switchyard-timer".into(), body)?);
    }
    let events = {
        let audience = Audience {
            listeners: core.listeners.clone(),
            subscribers: core.subscribers.clone(),
            bus: core.events.clone(),
        };
        let stop = stop.clone();
        let (circuits, others) = (wiring.events, wiring.posted);
        let body = Box::new(move || deliver_events(audience, circuits, others, stop));
        spawn("switchyard-events".into(), body)?
    };
    {
        let (core, stop) = (core.clone(), stop.clone());
        let body = Box::new(move || probe_providers(core, stop));
        handles.push(spawn("switchyard-health".into(), body)?);
    }
    for i in 0..workers {
        let (core, stop) = (core.clone(), stop.clone());
        let receivers = core.channels.receivers();
        let body = Box::new(move || serve_jobs(core, receivers, stop));
        handles.push(spawn(format!("switchyard-worker-{i}"), body)?);
    }
    let life = Lifecycle {
        core: core.clone(),
        stop: Mutex::new(Some(wiring.stop)),
        workers: Mutex::new(handles),
        events: Mutex::new(Some(events)),
    };
    Ok((core, life))
}

impl Lifecycle {
    /// Stops admission, waits up to `grace` for requests under way, then ends the rest.
    pub fn shutdown(&self, grace: Duration) {
        let core = &self.core;
        core.closed.store(true, Ordering::SeqCst);
        let idle = core.activity.wait_idle(Instant::now() + grace);
        #[cfg(feature = "dashboard")]
        for stop_dashboard in core.dashboards.lock().drain(..) {
            stop_dashboard();
        }
        core.stopping.store(true, Ordering::SeqCst);
        core.drain();
        // Workers leave once their current attempt ends.
        drop(self.stop.lock().take());
        core.channels.wake_all();
        let workers = std::mem::take(&mut *self.workers.lock());
        let current = std::thread::current().id();
        if idle {
            for w in workers {
                // A worker may be the caller (a callback shutting down): it cannot join itself.
                if w.thread().id() != current {
                    let _ = w.join();
                }
            }
        }
        // Otherwise attempts are still on the wire: their workers deliver and exit on their
        // own, each within its attempt timeout, without holding up the caller.

        // Queued circuit events are delivered before this returns, then no more: a C
        // caller may free its listener's data once the balancer is freed. A listener that
        // shuts the balancer down is on that thread and cannot wait for itself.
        let events = self.events.lock().take();
        if let Some(events) = events {
            if events.thread().id() != current {
                let _ = events.join();
            }
        }
        core.save_state();
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::config::Config;
    use crate::foundation::request::Request;
    use crate::upstream::fake_transport::FakeTransport;
    use crate::upstream::transport::Transport;

    #[test]
    fn every_request_gets_one_outcome_across_a_shutdown() {
        let toml = "[defaults]\nworkers = 2\n[[services.s.providers]]\nname = \"a\"\n\
                    base_url = \"http://10.0.0.1\"\npool = { max_connections = 2 }\n";
        let resolved = Config::from_toml_str(toml).unwrap().resolve().unwrap();
        let clock = SystemClock::shared();
        let fake = FakeTransport::new(crate::foundation::clock::ManualClock::shared());
        let connect = {
            let fake = fake.clone();
            move |_: &crate::foundation::config::ResolvedProvider, _| {
                fake.clone() as Arc<dyn Transport>
            }
        };
        let (core, life) = start_with(&resolved, clock, &connect).unwrap();
        let tickets: Vec<_> = (0..200)
            .map(|i| {
                core.queue_request(Request::get("s", format!("/{i}")))
                    .unwrap()
            })
            .collect();
        life.shutdown(Duration::from_secs(5));
        assert!(core.is_closed());
        assert!(matches!(
            core.queue_request(Request::get("s", "/late")),
            Err(Error::ShuttingDown)
        ));
        let (mut ok, mut stopped) = (0, 0);
        for t in tickets {
            match t.wait() {
                Ok(_) => ok += 1,
                Err(Error::ShuttingDown) => stopped += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(ok + stopped, 200);
        assert_eq!(fake.sent().len(), ok, "each answered request was sent once");
        assert_eq!(core.requests_under_way(), 0);
    }
}
