//! Circuit listeners, and the thread that delivers circuit events to them. Events are
//! posted by whoever changed a circuit (see `upstream/circuit_events.rs`); here they are
//! delivered one at a time, in order, with no lock of the balancer held: a listener may
//! block or call the balancer without holding up any request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::{select, Receiver};
use parking_lot::RwLock;

use crate::policy::breaker::CircuitEvent;

pub(crate) type Listener = Arc<dyn Fn(&CircuitEvent) + Send + Sync>;

/// The balancer's circuit listeners.
#[derive(Default)]
pub(crate) struct Listeners(RwLock<Vec<Listener>>);

impl Listeners {
    pub fn add(&self, listener: Listener) {
        self.0.write().push(listener);
    }

    /// Calls every listener with the list's lock released, so a listener may add another.
    pub fn deliver(&self, event: &CircuitEvent) {
        let listeners = self.0.read().clone();
        for listener in listeners {
            // A panicking listener must not stop the others or the delivery thread.
            let _ = catch_unwind(AssertUnwindSafe(|| listener(event)));
        }
    }
}

/// The delivery thread: events in order until `stop` disconnects, then what is queued.
pub(crate) fn deliver_events(
    listeners: Arc<Listeners>,
    events: Receiver<CircuitEvent>,
    stop: Receiver<()>,
) {
    loop {
        select! {
            recv(events) -> event => match event {
                Ok(event) => listeners.deliver(&event),
                Err(_) => return,
            },
            recv(stop) -> _ => break,
        }
    }
    for event in events.try_iter() {
        listeners.deliver(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::breaker::{CircuitState, Transition};
    use crate::upstream::circuit_events::CircuitOutbox;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn listeners_may_add_listeners_and_panics_stop_nothing() {
        let listeners = Arc::new(Listeners::default());
        let calls = Arc::new(AtomicUsize::new(0));
        {
            let (inner, calls) = (listeners.clone(), calls.clone());
            listeners.add(Arc::new(move |_| {
                // Would deadlock if delivery held the list's lock.
                let calls = calls.clone();
                inner.add(Arc::new(move |_| {
                    calls.fetch_add(1, Ordering::SeqCst);
                }));
            }));
        }
        listeners.add(Arc::new(|_| panic!("a listener's bug")));
        let (outbox, rx) = CircuitOutbox::new();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let t = Transition {
            from: CircuitState::Closed,
            to: CircuitState::Open,
        };
        outbox.post("s", "a", t);
        outbox.post("s", "a", t);
        drop(stop_tx);
        // Stop already signalled: the thread delivers what is queued and returns.
        deliver_events(listeners, rx, stop_rx);
        // The first event added one listener, the second added another and called the first.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
