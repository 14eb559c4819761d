//! The seam between the engine and the network: one attempt out, an answer or a
//! classified failure back. `http.rs` implements it over ureq; tests use a fake.

use std::sync::Arc;
use std::time::Duration;

use crate::foundation::config::ResolvedProvider;
use crate::foundation::error::AttemptError;
use crate::foundation::request::Method;

pub(crate) trait Transport: Send + Sync {
    /// Sends one attempt and reads its answer, within `out.timeout`.
    fn send(&self, out: &Outgoing<'_>) -> Result<Answer, Failure>;

    /// One health check: a GET of `url` with `headers`; whether it answered 2xx in time.
    fn check_health(&self, url: &str, headers: &[(String, String)], timeout: Duration) -> bool;
}

/// Makes a provider's transport from its configuration and its health-check timeout.
pub(crate) type Connector = dyn Fn(&ResolvedProvider, Duration) -> Arc<dyn Transport> + Send + Sync;

/// What a provider answered, before it becomes a `Response`.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
    /// The provider's own body when a shape replaced it.
    pub raw_body: Option<Vec<u8>>,
}

/// A failed attempt, with what the failover logic needs to know about it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: AttemptError,
    /// Whether any byte of the request may have reached the provider.
    pub maybe_sent: bool,
    /// The headers of a failed answer (for `Retry-After` and rate-limit headers).
    pub headers: Option<Box<ureq::http::HeaderMap>>,
    /// Set when the attempt was never sent because the caller's input cannot go on the
    /// wire (says why): the caller's error, charged to no provider.
    pub refused: Option<String>,
}

/// What one attempt needs to go on the wire.
pub(crate) struct Outgoing<'a> {
    /// The provider's name, for the attempt's error.
    pub provider: &'a str,
    pub method: Method,
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub extra_headers: &'a [(String, String)],
    pub body: Option<&'a [u8]>,
    pub timeout: Duration,
    pub max_response_bytes: u64,
    /// Whether to follow a redirect to the same origin (`pool.follow_redirects`).
    pub follow_redirects: bool,
}
