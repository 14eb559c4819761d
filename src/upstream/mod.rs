//! Upstream: providers, the transport that reaches them, services and their parking lines.

pub(crate) mod absolute_form;
pub(crate) mod admission;
pub(crate) mod allowance;
pub(crate) mod batch_form;
pub(crate) mod circuit_events;
#[cfg(test)]
pub(crate) mod fake_transport;
#[cfg(feature = "fleet")]
pub(crate) mod fleet;
pub(crate) mod http;
pub(crate) mod provider;
pub(crate) mod service;
pub(crate) mod service_snapshot;
pub(crate) mod slot;
pub(crate) mod tcp;
pub(crate) mod transport;
