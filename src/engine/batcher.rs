//! Batches still taking members (`batch_window_ms`): requests for one endpoint that
//! differ only in the item they name wait here together until the window ends or the
//! batch is full; `batch.rs` sends them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::flow::job::Job;
use crate::flow::ticket::Ticket;
use crate::foundation::config::ResolvedService;
use crate::foundation::index_set::IndexSet;
use crate::foundation::names::ByName;
use crate::foundation::request::ByCallKey;

/// One service's batching endpoints, by name.
#[derive(Default)]
pub(crate) struct ServiceBatcher {
    endpoints: HashMap<String, EndpointBatcher, ByName>,
}

pub(crate) struct EndpointBatcher {
    pub window: Duration,
    max: usize,
    /// The request parameter that names the item.
    pub param: String,
    /// Providers (by index) that have the batch form.
    pub capable: IndexSet,
    open: Mutex<ByCallKey<Open>>,
    next_id: AtomicU64,
}

/// A batch still taking members.
struct Open {
    id: u64,
    members: Vec<Job>,
}

/// What became of a job offered to a batch.
// A job that cannot be batched comes back moved, not boxed: that path allocates nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Offer {
    /// It waits in a batch that was open already.
    Joined(Option<Ticket>),
    /// It opened a batch: close it at `due` (id and key name it then).
    Opened {
        ticket: Option<Ticket>,
        key: u128,
        id: u64,
        due: Duration,
    },
    /// It filled the batch: the members go now, as one call; the job that filled it
    /// waits on `ticket` when its caller drives it.
    Full {
        members: Vec<Job>,
        ticket: Option<Ticket>,
    },
    /// It cannot be batched (it does not name an item).
    Alone(Job),
}

impl ServiceBatcher {
    pub fn new(config: &ResolvedService) -> ServiceBatcher {
        let mut endpoints = HashMap::default();
        for (name, options) in &config.endpoints {
            if options.batch_window_ms == 0 {
                continue;
            }
            let mut capable = IndexSet::default();
            let mut param = None;
            for (i, p) in config.providers.iter().enumerate() {
                if let Some(b) = p.batches.get(name) {
                    capable.insert(i);
                    param = Some(b.param.clone());
                }
            }
            // Resolution refuses a window without a batch provider.
            let Some(param) = param else { continue };
            endpoints.insert(
                name.clone(),
                EndpointBatcher {
                    window: Duration::from_millis(options.batch_window_ms),
                    max: options.batch_max,
                    param,
                    capable,
                    open: Mutex::new(ByCallKey::default()),
                    next_id: AtomicU64::new(0),
                },
            );
        }
        ServiceBatcher { endpoints }
    }

    pub fn of(&self, endpoint: &str) -> Option<&EndpointBatcher> {
        if self.endpoints.is_empty() {
            return None;
        }
        self.endpoints.get(endpoint)
    }

    /// Every batch still open, emptied (at shutdown).
    pub fn take_all(&self) -> Vec<Job> {
        let mut out = Vec::new();
        for b in self.endpoints.values() {
            for (_, open) in b.open.lock().drain() {
                out.extend(open.members);
            }
        }
        out
    }
}

impl EndpointBatcher {
    /// Puts the job in the open batch of its kind, or opens one; `park` runs under the
    /// lock (it only swaps a caller's sink for a ticket's).
    pub fn offer(
        &self,
        mut job: Job,
        now: Duration,
        park: impl FnOnce(&mut Job) -> Option<Ticket>,
    ) -> Offer {
        if job.request.param_value(&self.param).is_none() {
            return Offer::Alone(job);
        }
        let key = job.request.batch_key(&self.param);
        let mut open = self.open.lock();
        if let Some(batch) = open.get_mut(&key) {
            let ticket = park(&mut job);
            batch.members.push(job);
            if batch.members.len() < self.max {
                return Offer::Joined(ticket);
            }
            let members = open.remove(&key).map(|b| b.members).unwrap_or_default();
            return Offer::Full { members, ticket };
        }
        if self.max == 1 {
            return Offer::Alone(job);
        }
        let ticket = park(&mut job);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        open.insert(
            key,
            Open {
                id,
                members: vec![job],
            },
        );
        Offer::Opened {
            ticket,
            key,
            id,
            due: now.saturating_add(self.window),
        }
    }

    /// The members of batch `id` under `key`, if it is still open.
    pub fn close(&self, key: u128, id: u64) -> Vec<Job> {
        let mut open = self.open.lock();
        match open.get(&key) {
            Some(batch) if batch.id == id => {
                open.remove(&key).map(|b| b.members).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}
