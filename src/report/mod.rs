//! Reporters: Prometheus text and the status server, reading snapshots.

#[cfg(feature = "dashboard")]
pub(crate) mod dashboard;
pub(crate) mod prometheus;
