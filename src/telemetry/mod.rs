//! Telemetry: counters and histograms recorded on the hot path, and the snapshot of them.

pub(crate) mod cost;
pub(crate) mod counters;
pub(crate) mod event;
pub(crate) mod explain;
pub(crate) mod histogram;
pub(crate) mod snapshot;
pub(crate) mod spans;
