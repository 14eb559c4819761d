//! Circuit listeners and `on_event` subscribers, and the thread that delivers to them.
//! Circuit events are posted by whoever changed a circuit (see
//! `upstream/circuit_events.rs`), the other events into the bounded [`EventBus`]; here
//! they are delivered one at a time, in order, with no lock of the balancer held: a
//! listener may block or call the balancer without holding up any request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use crossbeam_channel::{select, Receiver};
use parking_lot::RwLock;

use crate::policy::breaker::CircuitEvent;
use crate::telemetry::event::{Event, EventBus, EventKind};

pub(crate) type Listener = Arc<dyn Fn(&CircuitEvent) + Send + Sync>;

pub(crate) type Subscriber = Arc<dyn Fn(&Event) + Send + Sync>;

/// The balancer's `on_event` subscribers.
#[derive(Default)]
pub(crate) struct Subscribers(RwLock<Vec<Subscriber>>);

impl Subscribers {
    pub fn add(&self, subscriber: Subscriber, bus: &EventBus) {
        self.0.write().push(subscriber);
        bus.switch_on();
    }

    /// Calls every subscriber with the list's lock released.
    fn deliver(&self, event: &Event, bus: &EventBus) {
        let subscribers = self.0.read().clone();
        if subscribers.is_empty() {
            return;
        }
        for subscriber in subscribers {
            let _ = catch_unwind(AssertUnwindSafe(|| subscriber(event)));
        }
        bus.count_delivered();
    }
}

/// What the delivery thread serves.
pub(crate) struct Audience {
    pub listeners: Arc<Listeners>,
    pub subscribers: Arc<Subscribers>,
    pub bus: Arc<EventBus>,
}

/// A circuit change as an event, for subscribers.
fn as_event(change: &CircuitEvent) -> Event {
    Event {
        at_unix_ms: change
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        what: EventKind::Circuit {
            provider: change.provider.clone(),
            from: change.from.name(),
            to: change.to.name(),
        },
    }
}

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

/// The delivery thread: events in order until `stop` disconnects, then the circuit
/// changes still queued. Other events still queued then are dropped (and counted): a
/// slow subscriber must not hold up shutdown by the length of its backlog.
pub(crate) fn deliver_events(
    audience: Audience,
    circuits: Receiver<CircuitEvent>,
    others: Receiver<Event>,
    stop: Receiver<()>,
) {
    let Audience {
        listeners,
        subscribers,
        bus,
    } = audience;
    let circuit_changed = |change: &CircuitEvent| {
        listeners.deliver(change);
        subscribers.deliver(&as_event(change), &bus);
    };
    loop {
        select! {
            recv(circuits) -> change => match change {
                Ok(change) => circuit_changed(&change),
                Err(_) => return,
            },
            recv(others) -> event => {
                if let Ok(event) = event {
                    subscribers.deliver(&event, &bus);
                }
            },
            recv(stop) -> _ => break,
        }
    }
    for change in circuits.try_iter() {
        circuit_changed(&change);
    }
    bus.count_dropped(others.try_iter().count() as u64);
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
        // Subscribers get circuit changes as events; a panicking one stops nothing either.
        let (bus, others) = EventBus::new();
        let (bus, subscribers) = (Arc::new(bus), Arc::new(Subscribers::default()));
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        subscribers.add(Arc::new(|_| panic!("a subscriber's bug")), &bus);
        {
            let seen = seen.clone();
            subscribers.add(
                Arc::new(move |e: &Event| seen.lock().push(serde_json::to_value(e).unwrap())),
                &bus,
            );
        }
        let audience = Audience {
            listeners,
            subscribers,
            bus: bus.clone(),
        };
        // Stop already signalled: the thread delivers what is queued and returns.
        deliver_events(audience, rx, others, stop_rx);
        // The first event added one listener, the second added another and called the first.
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let seen = seen.lock();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (&seen[0]["type"], &seen[0]["provider"], &seen[0]["to"]),
            (
                &serde_json::json!("circuit"),
                &serde_json::json!("a"),
                &serde_json::json!("open")
            )
        );
        assert_eq!(bus.counts(), (2, 0));
    }
}
