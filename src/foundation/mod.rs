//! Foundations: what callers send and get, errors, time, configuration.

pub(crate) mod calendar;
pub(crate) mod clock;
pub mod config;
pub(crate) mod error;
pub(crate) mod index_set;
pub(crate) mod names;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod secrets;
pub(crate) mod shape;
pub(crate) mod sync;
pub(crate) mod template;
pub(crate) mod text;
