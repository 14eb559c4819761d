//! Engine: the runtime, its channels, the threads that drive jobs (workers, timer, health loop).

pub(crate) mod dispatch;
pub(crate) mod timer;
