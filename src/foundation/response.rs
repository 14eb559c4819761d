//! What a caller gets back.

use std::sync::Arc;
use std::time::Duration;

use ureq::http::{HeaderMap, HeaderName, HeaderValue};

/// A provider's answer. Any status but 5xx and 429 is an answer, 404 included.
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
    pub(crate) provider: Arc<str>,
    pub(crate) attempts: u32,
    pub(crate) latency: Duration,
    pub(crate) queue_wait: Duration,
    pub(crate) fallback: bool,
    /// The provider's own body when a `shape` replaced it.
    pub(crate) raw_body: Option<Vec<u8>>,
    pub(crate) from_cache: bool,
}

impl Response {
    /// A response made by a fallback (see [`crate::Request::fallback`]); its provider
    /// reads `fallback` and [`Response::is_fallback`] is true.
    pub fn fallback(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
            provider: Arc::from("fallback"),
            attempts: 0,
            latency: Duration::ZERO,
            queue_wait: Duration::ZERO,
            fallback: true,
            raw_body: None,
            from_cache: false,
        }
    }

    /// Adds a header to a response made by a fallback. A name or value that is not valid
    /// in HTTP is left out.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            self.headers.append(n, v);
        }
        self
    }

    /// Whether a fallback made this response because no provider could answer.
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The body, at most `pool.max_response_bytes` long.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The provider's own body, as it came, when the endpoint's `shape` made
    /// [`Response::body`] from it; otherwise the body itself.
    pub fn raw_body(&self) -> &[u8] {
        self.raw_body.as_deref().unwrap_or(&self.body)
    }

    /// Whether the answer came from the endpoint's cache (`cache_ttl_ms`) rather than a
    /// call made for this request. A cached answer took 0 attempts.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// Takes the body out without copying it.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The name of the provider that answered.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// How many attempts it took, this one included (for a fallback: the attempts that failed).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The first header of that name (case-insensitive); `None` also when its value is
    /// not visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every header as (lowercase name, value), repeated names once per value, grouped by
    /// name in the order first received. Values that are not UTF-8 are skipped.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), std::str::from_utf8(v.as_bytes()).ok()?)))
    }

    /// From submission to answer: queue wait, every attempt and backoff.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// How long the request waited for a worker or a connection slot.
    pub fn queue_wait(&self) -> Duration {
        self.queue_wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fallback_response_says_so_and_keeps_its_headers() {
        let r = Response::fallback(203, "cached")
            .with_header("X-Source", "cache")
            .with_header("bad name", "ignored");
        assert!(r.is_fallback());
        assert_eq!((r.status(), r.body()), (203, &b"cached"[..]));
        assert_eq!(r.header("x-source"), Some("cache"));
        assert_eq!(r.headers().count(), 1, "an invalid header is left out");
        assert_eq!(r.into_body(), b"cached");
    }
}
