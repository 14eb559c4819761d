//! Flow: a request on its way (job), its one outcome (ticket, handed off to its waiter), and the count of those under way.

pub(crate) mod activity;
pub(crate) mod handoff;
pub(crate) mod job;
pub(crate) mod ticket;
