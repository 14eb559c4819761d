//! Engine: the runtime, its channels, and the threads that drive jobs (workers, timer,
//! health loop, event delivery), bottom to top in the order below.

pub(crate) mod batch;
pub(crate) mod batcher;
pub(crate) mod cache;
pub(crate) mod channels;
pub(crate) mod coalesce;
pub(crate) mod events;
pub(crate) mod parking;
pub(crate) mod posting;
pub(crate) mod schedule;
pub(crate) mod state_file;

pub(crate) mod runtime;

pub(crate) mod dispatch;
pub(crate) mod health_loop;
pub(crate) mod hedge;
pub(crate) mod intake;
pub(crate) mod timer;
pub(crate) mod worker;

#[cfg(test)]
mod allowance_tests;
#[cfg(test)]
mod fewer_calls_tests;
pub(crate) mod lifecycle;
#[cfg(feature = "dashboard")]
pub(crate) mod observer;
#[cfg(test)]
pub(crate) mod test_rig;
