//! Policy: state that is only read and written (windows, breaker, averages, health,
//! strategies, retry budget). No threads, no I/O.

pub(crate) mod breaker;
pub(crate) mod buckets;
pub(crate) mod health;
pub(crate) mod latency;
pub(crate) mod retry;
pub(crate) mod strategy;
pub(crate) mod window;
