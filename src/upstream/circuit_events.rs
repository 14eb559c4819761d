//! Circuit changes on their way to the listeners. Whoever changes a circuit posts the
//! event here, under whatever lock it holds; the engine delivers it later with no lock
//! held, so a listener may block or call the balancer.

use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender};

use crate::policy::breaker::{CircuitEvent, Transition};

/// The posting end; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct CircuitOutbox(Sender<CircuitEvent>);

impl CircuitOutbox {
    /// An outbox and the receiving end its events arrive at.
    pub fn new() -> (CircuitOutbox, Receiver<CircuitEvent>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (CircuitOutbox(tx), rx)
    }

    pub fn post(&self, service: &str, provider: &str, t: Transition) {
        // Without a receiver the balancer has stopped and nobody listens.
        let _ = self.0.send(CircuitEvent {
            service: service.to_string(),
            provider: provider.to_string(),
            from: t.from,
            to: t.to,
            at: SystemTime::now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::breaker::CircuitState;

    #[test]
    fn posted_events_arrive_in_order() {
        let (outbox, rx) = CircuitOutbox::new();
        let t = |from, to| Transition { from, to };
        outbox.post("s", "a", t(CircuitState::Closed, CircuitState::Open));
        outbox.post("s", "a", t(CircuitState::Open, CircuitState::HalfOpen));
        let got: Vec<_> = rx.try_iter().map(|e| (e.provider, e.from, e.to)).collect();
        assert_eq!(
            got,
            [
                ("a".to_string(), CircuitState::Closed, CircuitState::Open),
                ("a".to_string(), CircuitState::Open, CircuitState::HalfOpen)
            ]
        );
    }
}
