//! Owned resources of an attempt: a connection [`Seat`] on a provider, the breaker's
//! [`Permit`] and the allowance's [`Grant`], held together as a [`Slot`]. Each gives
//! itself back when dropped, so no path can leak one or give one back twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::foundation::sync::AtomicUsize;
use crate::policy::breaker::Permit;
use crate::upstream::allowance::Grant;

/// One of a provider's `max_connections`.
#[derive(Debug)]
pub(crate) struct Seat {
    in_flight: Arc<AtomicUsize>,
}

impl Seat {
    /// Takes a seat if fewer than `cap` are taken.
    pub fn take(in_flight: &Arc<AtomicUsize>, cap: usize) -> Option<Seat> {
        in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()?;
        Some(Seat {
            in_flight: in_flight.clone(),
        })
    }
}

impl Drop for Seat {
    /// SeqCst pairs with the parking line's check: a parked job either sees this seat
    /// free or is seen by whoever freed it.
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection seat on provider `index`, with the breaker's leave to use it and the
/// call's share of the provider's rate and quota.
#[derive(Debug)]
pub(crate) struct Slot {
    pub index: usize,
    pub permit: Permit,
    pub grant: Grant,
    pub seat: Seat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_capped_and_freed_on_drop() {
        let n = Arc::new(AtomicUsize::new(0));
        let a = Seat::take(&n, 2).unwrap();
        let b = Seat::take(&n, 2).unwrap();
        assert!(Seat::take(&n, 2).is_none());
        drop(a);
        let c = Seat::take(&n, 2).unwrap();
        drop((b, c));
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}
