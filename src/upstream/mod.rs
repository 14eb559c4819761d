//! Upstream: providers, the transport that reaches them, services and their parking lines.

pub(crate) mod http;
pub(crate) mod parking;
pub(crate) mod provider;
pub(crate) mod service;
