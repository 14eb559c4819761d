//! A logical API at run time: its providers, its waiting line, and how a job gets a
//! connection slot on one of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::{ResolvedService, RetryConfig};
use crate::job::Job;
use crate::metrics::ServiceStats;
use crate::provider::Provider;
use crate::queue::ServiceQueue;
use crate::request::Request;
use crate::Error;

pub(crate) struct Service {
    pub name: String,
    pub deadline: Duration,
    pub retry: RetryConfig,
    pub providers: Vec<Provider>,
    pub queue: ServiceQueue,
    pub stats: ServiceStats,
    /// Rotates the starting point of picks inside a tier.
    turn: AtomicUsize,
}

/// What [`Service::acquire`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pick {
    /// A slot on this provider is now held for the job.
    Slot(usize),
    /// Providers are available but every slot is taken: park.
    Busy,
    /// No provider is left to try.
    Exhausted,
}

impl Service {
    pub fn new(config: &ResolvedService) -> Service {
        Service {
            name: config.name.clone(),
            deadline: config.deadline,
            retry: config.retry.clone(),
            providers: config.providers.iter().map(Provider::new).collect(),
            queue: ServiceQueue::new(config.queue.max_size),
            stats: ServiceStats::default(),
            turn: AtomicUsize::new(0),
        }
    }

    /// Checks that some provider can serve the request at all.
    pub fn check(&self, request: &Request) -> Result<(), Error> {
        let mut serving = self
            .providers
            .iter()
            .filter(|p| p.serves(request))
            .peekable();
        let Some(first) = serving.peek() else {
            return Err(Error::UnknownEndpoint {
                service: self.name.clone(),
                endpoint: request.endpoint.clone(),
            });
        };
        let missing = first.missing_param(request);
        if serving.any(|p| p.missing_param(request).is_none()) {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "endpoint `{}` of service `{}` needs parameter `{}`",
            request.endpoint,
            self.name,
            missing.unwrap_or_default()
        )))
    }

    /// Whether the job may try this provider now.
    fn eligible(&self, job: &Job, index: usize) -> bool {
        !job.was_tried(index) && self.providers[index].can_serve(&job.request)
    }

    /// Takes a slot for the job on the best available provider: the lowest tier that
    /// has an eligible provider, and inside it the next provider in turn with a free slot.
    pub fn acquire(&self, job: &Job) -> Pick {
        let Some(tier) = (0..self.providers.len())
            .filter(|&i| self.eligible(job, i))
            .map(|i| self.providers[i].tier)
            .min()
        else {
            return Pick::Exhausted;
        };
        let n = self.providers.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = (start + k) % n;
            let p = &self.providers[i];
            if p.tier == tier && self.eligible(job, i) && p.try_acquire() {
                return Pick::Slot(i);
            }
        }
        Pick::Busy
    }

    /// Takes a slot of `provider` for `job` if the job may use it.
    pub fn acquire_on(&self, job: &Job, provider: usize) -> bool {
        self.eligible(job, provider)
            && self.is_preferred_tier(job, provider)
            && self.providers[provider].try_acquire()
    }

    fn is_preferred_tier(&self, job: &Job, provider: usize) -> bool {
        let tier = self.providers[provider].tier;
        !(0..self.providers.len()).any(|i| self.providers[i].tier < tier && self.eligible(job, i))
    }
}
