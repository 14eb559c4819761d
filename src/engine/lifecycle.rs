//! Starting the engine's threads, and stopping them without losing a request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use crate::engine::events::deliver_events;
use crate::engine::health_loop::{probe_providers, wanted};
use crate::engine::runtime::Core;
use crate::engine::timer::keep_time;
use crate::engine::worker::serve_jobs;
use crate::foundation::clock::SystemClock;
use crate::foundation::config::Resolved;
use crate::foundation::error::Error;

/// Most worker threads chosen automatically.
const MAX_AUTO_WORKERS: usize = 1024;

/// Stops the engine when the last handle goes.
pub(crate) struct Lifecycle {
    core: Arc<Core>,
    stop: Mutex<Option<Sender<()>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

/// Builds the runtime and starts its threads: timer, events, health loop if any provider
/// has a health path, and the workers.
pub(crate) fn start(resolved: &Resolved) -> Result<(Arc<Core>, Lifecycle), Error> {
    let (core, wiring) = Core::new(resolved, SystemClock::shared());
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
    {
        // Not joined at shutdown: a listener may be the one shutting down.
        let (listeners, stop) = (core.listeners.clone(), stop.clone());
        let body = Box::new(move || deliver_events(listeners, wiring.events, stop));
        spawn("switchyard-events".into(), body)?;
    }
    if wanted(&core) {
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
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}
