//! Policy: state that is only read and written (windows, breaker, averages, health,
//! strategies, retry budget). No threads, no I/O.

pub(crate) mod breaker;
pub(crate) mod buckets;
pub(crate) mod candidate;
pub(crate) mod classify;
pub(crate) mod cost_aware;
pub(crate) mod health;
pub(crate) mod latency;
pub(crate) mod quota;
pub(crate) mod rate;
pub(crate) mod rate_headers;
pub(crate) mod retry;
pub(crate) mod strategy;
pub(crate) mod tail;
pub(crate) mod window;
