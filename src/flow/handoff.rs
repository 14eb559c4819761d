//! A one-outcome hand-off from the thread that settles a job to the thread that waits for
//! it: a slot under a lock and a condition variable.
//!
//! A channel would do, but a blocking receive on one spins and yields before it sleeps;
//! with a caller and a worker per request on a busy machine those yields are where a
//! submitted request's time went. Here the waiter sleeps at once and the sender wakes
//! exactly it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};
use parking_lot::{Condvar, Mutex};

enum Slot<T> {
    Empty,
    Full(T),
    /// Taken by the receiver, or every sender gone without sending.
    Closed,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    filled: Condvar,
    senders: AtomicUsize,
}

/// The sending end; clones share the one slot and the first send wins.
pub(crate) struct OutcomeSender<T>(Arc<Shared<T>>);

/// The receiving end.
pub(crate) struct OutcomeReceiver<T>(Arc<Shared<T>>);

pub(crate) fn handoff<T>() -> (OutcomeSender<T>, OutcomeReceiver<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot::Empty),
        filled: Condvar::new(),
        senders: AtomicUsize::new(1),
    });
    (OutcomeSender(shared.clone()), OutcomeReceiver(shared))
}

impl<T> OutcomeSender<T> {
    /// Puts the outcome in the slot unless one is there already (or the receiver is gone).
    pub fn send(self, value: T) {
        let mut slot = self.0.slot.lock();
        if matches!(*slot, Slot::Empty) {
            *slot = Slot::Full(value);
            self.0.filled.notify_one();
        }
    }
}

impl<T> Clone for OutcomeSender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        OutcomeSender(self.0.clone())
    }
}

impl<T> Drop for OutcomeSender<T> {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last sender: a waiter must not wait for an outcome nobody will send.
            let mut slot = self.0.slot.lock();
            if matches!(*slot, Slot::Empty) {
                *slot = Slot::Closed;
                self.0.filled.notify_one();
            }
        }
    }
}

impl<T> OutcomeReceiver<T> {
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut slot = self.0.slot.lock();
        Self::take(&mut slot).ok_or(TryRecvError::Empty)?
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let until = Instant::now().checked_add(timeout);
        let mut slot = self.0.slot.lock();
        loop {
            if let Some(taken) = Self::take(&mut slot) {
                return taken.map_err(|_| RecvTimeoutError::Disconnected);
            }
            let timed_out = match until {
                Some(until) => self.0.filled.wait_until(&mut slot, until).timed_out(),
                None => {
                    self.0.filled.wait(&mut slot);
                    false
                }
            };
            if timed_out {
                return Self::take(&mut slot).map_or(Err(RecvTimeoutError::Timeout), |taken| {
                    taken.map_err(|_| RecvTimeoutError::Disconnected)
                });
            }
        }
    }

    /// The outcome, or that none will come; None while the slot is empty.
    fn take(slot: &mut Slot<T>) -> Option<Result<T, TryRecvError>> {
        match std::mem::replace(slot, Slot::Closed) {
            Slot::Full(value) => Some(Ok(value)),
            Slot::Closed => Some(Err(TryRecvError::Disconnected)),
            Slot::Empty => {
                *slot = Slot::Empty;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_send_wins_and_is_received_once() {
        let (tx, rx) = handoff::<u32>();
        let second = tx.clone();
        tx.send(1);
        second.send(2);
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn an_empty_slot_times_out_and_a_dropped_sender_disconnects() {
        let (tx, rx) = handoff::<u32>();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(1)),
            Err(RecvTimeoutError::Timeout)
        );
        let clone = tx.clone();
        drop(tx);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "a clone remains");
        drop(clone);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_waiter_is_woken_by_a_send_from_another_thread() {
        for _ in 0..200 {
            let (tx, rx) = handoff::<u32>();
            let sender = std::thread::spawn(move || tx.send(7));
            assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(7));
            sender.join().unwrap();
        }
    }
}
