//! A service's admission count: how many of its requests wait for a worker or a slot, in
//! all and per priority. A place in the line is an owned [`Place`]: dropping it leaves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::foundation::request::Priority;

#[derive(Debug, Default)]
struct Counts {
    waiting: AtomicUsize,
    by_priority: [AtomicUsize; 4],
}

/// One service's waiting requests, counted for admission (`queue.max_size`).
#[derive(Debug)]
pub(crate) struct Admission {
    pub max_size: usize,
    counts: Arc<Counts>,
}

/// A request's place in its service's line; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    counts: Arc<Counts>,
    priority: Priority,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.counts.waiting.fetch_sub(1, Ordering::AcqRel);
        self.counts.by_priority[self.priority.index()].fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max_size: usize) -> Admission {
        Admission {
            max_size,
            counts: Arc::default(),
        }
    }

    /// A place in the line, or `None` when `max_size` are already waiting.
    pub fn admit(&self, priority: Priority) -> Option<Place> {
        self.counts
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_size).then_some(n + 1)
            })
            .ok()?;
        Some(self.place(priority))
    }

    /// A place whatever the count: for a request admitted before (back from a backoff).
    pub fn enter(&self, priority: Priority) -> Place {
        self.counts.waiting.fetch_add(1, Ordering::AcqRel);
        self.place(priority)
    }

    fn place(&self, priority: Priority) -> Place {
        self.counts.by_priority[priority.index()].fetch_add(1, Ordering::AcqRel);
        Place {
            counts: self.counts.clone(),
            priority,
        }
    }

    /// Requests waiting for a worker or a slot.
    pub fn depth(&self) -> usize {
        self.counts.waiting.load(Ordering::Acquire)
    }

    /// Requests waiting per priority, most urgent first.
    pub fn depth_by_priority(&self) -> [usize; 4] {
        std::array::from_fn(|i| self.counts.by_priority[i].load(Ordering::Acquire))
    }

    /// Whether anything more urgent than `priority` is waiting.
    pub fn has_waiting_above(&self, priority: Priority) -> bool {
        self.counts.by_priority[..priority.index()]
            .iter()
            .any(|n| n.load(Ordering::Acquire) > 0)
    }

    /// Whether anything as urgent as `priority`, or more, is waiting.
    pub fn has_waiting_at_or_above(&self, priority: Priority) -> bool {
        self.counts.by_priority[..=priority.index()]
            .iter()
            .any(|n| n.load(Ordering::Acquire) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_and_given_back_on_drop() {
        let a = Admission::new(2);
        let first = a.admit(Priority::High).unwrap();
        let second = a.admit(Priority::Low).unwrap();
        assert!(a.admit(Priority::Critical).is_none(), "full at max_size");
        assert_eq!(a.depth_by_priority(), [0, 1, 0, 1]);
        assert!(a.has_waiting_at_or_above(Priority::High));
        assert!(!a.has_waiting_at_or_above(Priority::Critical));
        assert!(a.has_waiting_above(Priority::Low) && !a.has_waiting_above(Priority::High));
        drop(first);
        assert!(!a.has_waiting_at_or_above(Priority::Normal));
        let back = a.enter(Priority::Normal);
        let beyond = a.enter(Priority::Normal);
        assert_eq!(
            a.depth(),
            3,
            "a returning request enters whatever the count"
        );
        drop((second, back, beyond));
        assert_eq!((a.depth(), a.depth_by_priority()), (0, [0; 4]));
    }
}
