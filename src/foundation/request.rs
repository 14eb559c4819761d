//! What a caller asks for: a service, an endpoint and how to send it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::foundation::error::Error;
use crate::foundation::text::Text;

/// How urgent a request is. Workers always take higher priorities first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Served before everything else.
    Critical = 0,
    /// Served before `Normal` and `Low`.
    High = 1,
    /// The default.
    #[default]
    Normal = 2,
    /// Served when nothing more urgent waits.
    Low = 3,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// 0 for `Critical` up to 3 for `Low`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether requests of this priority may use the headroom `reserve` keeps.
    pub fn is_urgent(self) -> bool {
        matches!(self, Priority::Critical | Priority::High)
    }

    /// The lowercase name: `critical`, `high`, `normal`, `low`.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl FromStr for Priority {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Priority::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "priority `{s}` is not one of critical, high, normal, low"
                ))
            })
    }
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Method {
    /// `GET`, the default.
    #[default]
    Get,
    /// `HEAD`.
    Head,
    /// `POST`: not idempotent unless the request says so.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`: not idempotent unless the request says so.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
}

impl Method {
    /// The method as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    /// Whether requests of this method carry a body (and so a length, even when empty).
    pub(crate) fn sends_body(self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }

    /// Whether HTTP defines the method as idempotent (RFC 9110, 9.2.2).
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Method::Post | Method::Patch)
    }
}

impl FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        const ALL: [Method; 7] = [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Delete,
            Method::Options,
        ];
        ALL.into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "method `{s}` is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
                ))
            })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to a service's endpoint, built with chained methods.
///
/// ```
/// use switchyard::{Priority, Request};
/// use std::time::Duration;
///
/// let req = Request::get("stocks", "quote")
///     .param("symbol", "AAPL")
///     .priority(Priority::High)
///     .timeout(Duration::from_secs(2));
/// assert_eq!(req.service(), "stocks");
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) fallback: Option<Fallback>,
    pub(crate) method: Method,
    pub(crate) service: Text,
    pub(crate) endpoint: Text,
    pub(crate) params: Vec<(Text, Text)>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) priority: Priority,
    pub(crate) timeout: Option<Duration>,
    pub(crate) idempotent: Option<bool>,
}

/// The longest per-request timeout accepted: a day.
pub(crate) const MAX_TIMEOUT: Duration = Request::MAX_TIMEOUT;

impl Request {
    /// The longest [`Request::timeout`] accepted: a day. A longer one is refused with
    /// [`Error::InvalidArgument`] when the request is sent.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

    /// A request with any method. `endpoint` is a name the providers list, or a raw
    /// path starting with `/` that any provider of the service is sent.
    pub fn new(method: Method, service: impl Into<Text>, endpoint: impl Into<Text>) -> Self {
        Request {
            fallback: None,
            method,
            service: service.into(),
            endpoint: endpoint.into(),
            params: Vec::new(),
            headers: Vec::new(),
            body: None,
            priority: Priority::Normal,
            timeout: None,
            idempotent: None,
        }
    }

    /// A `GET` request.
    pub fn get(service: impl Into<Text>, endpoint: impl Into<Text>) -> Self {
        Request::new(Method::Get, service, endpoint)
    }

    /// A `POST` request.
    pub fn post(service: impl Into<Text>, endpoint: impl Into<Text>) -> Self {
        Request::new(Method::Post, service, endpoint)
    }

    /// Adds a parameter: it fills `{name}` in the provider's path template, or else
    /// goes into the query string after the provider's own query.
    pub fn param(mut self, name: impl Into<Text>, value: impl Into<Text>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// Adds a header, sent after the provider's configured headers.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets the priority. Defaults to [`Priority::Normal`].
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the whole request's deadline: queue wait, every attempt and backoff.
    /// Defaults to the service's `deadline_ms`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Marks the request safe (or not) to send twice. Defaults to what the method
    /// implies: everything but `POST` and `PATCH` is idempotent.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Answers with `fallback` when every provider failed or none was available
    /// ([`Error::AllProvidersFailed`], [`Error::NoHealthyProvider`]); returning `None`
    /// keeps the error. Takes precedence over a service's fallback.
    pub fn fallback<F>(mut self, fallback: F) -> Self
    where
        F: Fn(&Request, &Error) -> Option<crate::foundation::response::Response>
            + Send
            + Sync
            + 'static,
    {
        self.fallback = Some(Fallback(std::sync::Arc::new(fallback)));
        self
    }

    /// Sets the method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// The service this request is for.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The endpoint name or raw path.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The request's priority.
    pub fn get_priority(&self) -> Priority {
        self.priority
    }

    /// Whether the request may be sent again after its bytes reached a provider.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent.unwrap_or(self.method.is_idempotent())
    }

    /// Whether identical requests in flight at once may share one upstream call: a GET or
    /// HEAD, or a request marked idempotent.
    pub(crate) fn may_share_a_call(&self) -> bool {
        matches!(self.method, Method::Get | Method::Head) || self.idempotent == Some(true)
    }

    /// What goes upstream (method, endpoint, parameters, headers, body) as 128 bits of
    /// two hashes keyed at random for this process: identical calls in flight are found
    /// by it without keeping a copy of the request, and no caller can craft a request that
    /// collides with another's.
    pub(crate) fn call_key(&self) -> u128 {
        keyed_hash((
            self.method,
            &self.endpoint,
            &self.params,
            &self.headers,
            &self.body,
        ))
    }

    /// The key under which requests that differ only in parameter `item` may go in one
    /// batch call, keyed like [`Request::call_key`].
    pub(crate) fn batch_key(&self, item: &str) -> u128 {
        let others = self.params.iter().filter(|(k, _)| k != item);
        let others: Vec<&(Text, Text)> = others.collect();
        keyed_hash((
            self.method,
            &self.endpoint,
            others,
            &self.headers,
            &self.body,
        ))
    }

    /// The value of parameter `name`, if the request has it.
    pub(crate) fn param_value(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn is_raw_path(&self) -> bool {
        self.endpoint.starts_with('/')
    }

    /// The clock time by which a request submitted at `now` must end: its own timeout, else the service's
    /// `default`. The one place a deadline is computed; never overflows.
    pub(crate) fn deadline(&self, now: Duration, default: Duration) -> Duration {
        now.saturating_add(self.timeout.unwrap_or(default).min(MAX_TIMEOUT))
    }

    /// Checks what can be checked without the configuration: names, raw path, headers,
    /// timeout. Sending a request checks it too; this names the first problem earlier.
    pub fn validate(&self) -> Result<(), Error> {
        fn invalid(what: String) -> Result<(), Error> {
            Err(Error::InvalidArgument(what))
        }
        if self.service.is_empty() {
            return invalid("service name is empty".into());
        }
        if self.endpoint.is_empty() {
            return invalid("endpoint is empty".into());
        }
        // A path of plain characters without escapes passes every check below.
        if self.is_raw_path()
            && !self
                .endpoint
                .bytes()
                .all(|b| b != b'%' && is_plain_path_byte(b))
        {
            if let Some(c) = self
                .endpoint
                .chars()
                .find(|c| !c.is_ascii_graphic() || *c == '#')
            {
                let shown =
                    crate::foundation::error::capped(self.endpoint.escape_debug().to_string());
                return invalid(format!("raw path `{shown}` contains {c:?}; encode it"));
            }
            let bytes = self.endpoint.as_bytes();
            let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
                b == b'%'
                    && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            });
            // A path of RFC 3986 path and query characters alone parses; only another
            // one is worth a trial parse (which allocates).
            let parses = bytes.iter().all(|&b| is_plain_path_byte(b))
                || ureq::http::Uri::try_from(format!("http://h{}", self.endpoint)).is_ok();
            if !parses {
                let shown =
                    crate::foundation::error::capped(self.endpoint.escape_debug().to_string());
                return invalid(format!(
                    "raw path `{shown}` is not a valid URL path; percent-encode its special characters"
                ));
            }
            if bad_escape {
                let shown =
                    crate::foundation::error::capped(self.endpoint.escape_debug().to_string());
                return invalid(format!(
                    "raw path `{shown}` has a `%` not followed by two hex digits; encode it as %25"
                ));
            }
        }
        for (name, value) in &self.headers {
            check_header(name, value)?;
        }
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return invalid("timeout is zero".into());
            }
            if t > MAX_TIMEOUT {
                return invalid(format!(
                    "timeout {t:?} is longer than the longest accepted, {} s",
                    MAX_TIMEOUT.as_secs()
                ));
            }
        }
        Ok(())
    }
}

/// A fallback function, shared cheaply between clones of a request.
#[derive(Clone)]
pub(crate) struct Fallback(pub std::sync::Arc<FallbackFn>);

pub(crate) type FallbackFn =
    dyn Fn(&Request, &Error) -> Option<crate::foundation::response::Response> + Send + Sync;

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fallback")
    }
}

/// Checks one header a caller adds; the error names it (never its value).
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), Error> {
    if name.is_empty() || !name.bytes().all(is_header_name_byte) {
        let shown = crate::foundation::error::capped(name.escape_debug().to_string());
        return Err(Error::InvalidArgument(format!(
            "header name `{shown}` is not a valid token"
        )));
    }
    if let Some(why) = header_value_problem(value) {
        return Err(Error::InvalidArgument(format!("header `{name}` {why}")));
    }
    if let Some(reserved) = RESERVED_HEADERS
        .iter()
        .find(|r| r.eq_ignore_ascii_case(name))
    {
        return Err(Error::InvalidArgument(format!(
            "header `{name}` is set by switchyard: `{reserved}` frames or routes the request"
        )));
    }
    Ok(())
}

/// Headers that frame the message or route it: the transport sets them from the request,
/// and a caller's copy would contradict it (request smuggling, another virtual host).
const RESERVED_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// Why a header value cannot go on the wire, if it cannot: HTTP allows visible characters,
/// spaces and tabs (and bytes above 0x7F), nothing else. Never quotes the value.
pub(crate) fn header_value_problem(value: &str) -> Option<&'static str> {
    value
        .bytes()
        .find(|&b| (b < 0x20 && b != b'\t') || b == 0x7F)
        .map(|b| match b {
            b'\r' | b'\n' => "has a line break in its value",
            0 => "has a NUL in its value",
            _ => "has a control character in its value",
        })
}

/// A byte any URL path or query may hold as it is: unreserved, sub-delims, `:`, `@`,
/// `/`, `?` and `%` (whose escapes are checked apart).
fn is_plain_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// RFC 9110 token characters.
pub(crate) fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// 128 bits of SipHash-1-3 keyed at random for this process: one pass over the request
/// (two 64-bit passes cost twice that on every GET).
fn keyed_hash(value: impl std::hash::Hash) -> u128 {
    use siphasher::sip128::{Hasher128, SipHasher13};
    static KEY: once_cell::sync::Lazy<[u8; 16]> = once_cell::sync::Lazy::new(rand::random);
    let mut hasher = SipHasher13::new_with_key(&KEY);
    value.hash(&mut hasher);
    hasher.finish128().as_u128()
}

/// A map by [`Request::call_key`]: the keys are keyed hashes already, so their low half
/// is used as it is.
pub(crate) type ByCallKey<V> =
    std::collections::HashMap<u128, V, std::hash::BuildHasherDefault<KeyAsIs>>;

#[derive(Default)]
pub(crate) struct KeyAsIs(u64);

impl std::hash::Hasher for KeyAsIs {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_key_is_what_goes_upstream_and_nothing_else() {
        let base = || Request::get("s", "quote").param("symbol", "AAPL");
        assert_eq!(base().call_key(), base().call_key());
        let same = base()
            .priority(Priority::Critical)
            .timeout(Duration::from_secs(1));
        assert_eq!(
            same.call_key(),
            base().call_key(),
            "priority and timeout do not count"
        );
        for other in [
            base().param("x", "1"),
            Request::get("s", "quote").param("symbol", "MSFT"),
            base().header("Accept", "text/csv"),
            Request::new(Method::Head, "s", "quote").param("symbol", "AAPL"),
            Request::get("s", "bars").param("symbol", "AAPL"),
            // Where one part ends and the next begins counts too.
            Request::get("s", "quote").param("symbo", "lAAPL"),
            Request::get("s", "quotes").param("ymbol", "AAPL"),
            Request::get("s", "quote").header("symbol", "AAPL"),
            base().body(Vec::new()),
        ] {
            assert_ne!(other.call_key(), base().call_key(), "{other:?}");
        }
        assert!(base().may_share_a_call());
        assert!(!Request::post("s", "quote").may_share_a_call());
        assert!(Request::post("s", "quote")
            .idempotent(true)
            .may_share_a_call());
    }

    #[test]
    fn method_and_priority_parse_case_insensitively() {
        assert_eq!("post".parse::<Method>().unwrap(), Method::Post);
        assert_eq!("High".parse::<Priority>().unwrap(), Priority::High);
        assert!("FETCH"
            .parse::<Method>()
            .unwrap_err()
            .to_string()
            .contains("FETCH"));
    }

    #[test]
    fn idempotency_follows_method_unless_marked() {
        assert!(Request::get("s", "e").is_idempotent());
        assert!(!Request::post("s", "e").is_idempotent());
        assert!(Request::post("s", "e").idempotent(true).is_idempotent());
    }

    #[test]
    fn bad_headers_and_paths_are_named() {
        let e = Request::get("s", "e")
            .header("X Bad", "v")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("X Bad"), "{e}");
        let e = Request::get("s", "e")
            .header("X", "a\r\nb")
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("line break"), "{e}");
        let e = Request::get("s", "/a b").validate().unwrap_err();
        assert!(e.to_string().contains("/a b"), "{e}");
    }

    #[test]
    fn any_timeout_is_accepted_or_named_never_a_panic() {
        let now = Duration::from_secs(7);
        for t in [Duration::MAX, Duration::from_secs(86_401), Duration::ZERO] {
            let r = Request::get("s", "e").timeout(t);
            let e = r.validate().unwrap_err();
            assert!(
                matches!(e, Error::InvalidArgument(ref m) if m.contains("timeout")),
                "{e}"
            );
            // Even unvalidated, the deadline saturates instead of overflowing.
            assert!(r.deadline(now, Duration::from_secs(1)) >= now);
        }
        let r = Request::get("s", "e").timeout(MAX_TIMEOUT);
        assert!(r.validate().is_ok());
        assert_eq!(r.deadline(now, Duration::ZERO), now + MAX_TIMEOUT);
        assert_eq!(
            Request::get("s", "e").deadline(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
    }

    #[test]
    fn header_values_and_names_the_wire_cannot_carry_are_refused() {
        for (name, value) in [
            ("X-A", "a\u{1}b"),
            ("X-A", "a\u{7f}"),
            ("X-A", "a\rb"),
            ("X-A", "nul\0"),
            ("Content-Length", "5"),
            ("transfer-encoding", "chunked"),
            ("Host", "elsewhere.example"),
            ("Connection", "close"),
        ] {
            let e = Request::get("s", "e")
                .header(name, value)
                .validate()
                .unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
            assert!(!e.to_string().contains(value) || value.len() < 3, "{e}");
        }
        assert!(Request::get("s", "e")
            .header("X-A", "tab\tand é")
            .validate()
            .is_ok());
        assert!(
            Request::get("s", "/caf\u{e9}").validate().is_err(),
            "raw paths are ASCII"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// What validation accepts, the HTTP layer accepts too: nothing a caller sends
        /// can fail at the wire and be charged to a provider.
        #[test]
        fn accepted_headers_and_raw_paths_go_on_the_wire(
            name in "\\PC{0,12}",
            value in "\\PC{0,24}",
            path in "/\\PC{0,24}",
        ) {
            let header = Request::get("s", "/x").header(name.clone(), value.clone()).validate();
            if header.is_ok() {
                proptest::prop_assert!(ureq::http::HeaderName::from_bytes(name.as_bytes()).is_ok());
                proptest::prop_assert!(ureq::http::HeaderValue::from_str(&value).is_ok());
            } else {
                let e = header.unwrap_err().to_string();
                proptest::prop_assert!(e.contains("header"), "{}", e);
            }
            match Request::get("s", path.clone()).validate() {
                Ok(()) => proptest::prop_assert!(
                    ureq::http::Uri::try_from(format!("http://h{path}")).is_ok(), "{}", path
                ),
                Err(e) => proptest::prop_assert!(e.to_string().contains("raw path")),
            }
        }

        /// Paths of the characters validation lets through without a trial parse: each
        /// is accepted unless a `%` starts no escape, and what is accepted parses.
        #[test]
        fn plain_raw_paths_go_on_the_wire(path in "/[A-Za-z0-9._~!$&'()*+,;=:@/?%-]{0,32}") {
            let b = path.as_bytes();
            let bad_escape = (0..b.len()).any(|i| {
                b[i] == b'%' && !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())
            });
            let accepted = Request::get("s", path.clone()).validate().is_ok();
            proptest::prop_assert_eq!(accepted, !bad_escape, "{}", path);
            if accepted {
                proptest::prop_assert!(
                    ureq::http::Uri::try_from(format!("http://h{path}")).is_ok(), "{}", path
                );
            }
        }

        #[test]
        fn any_timeout_is_refused_by_name_or_accepted(nanos in proptest::num::u64::ANY, secs in proptest::num::u64::ANY) {
            let t = Duration::new(secs, (nanos % 1_000_000_000) as u32);
            match Request::get("s", "e").timeout(t).validate() {
                Ok(()) => proptest::prop_assert!(t <= MAX_TIMEOUT && !t.is_zero()),
                Err(e) => proptest::prop_assert!(e.to_string().contains("timeout")),
            }
        }
    }
}
