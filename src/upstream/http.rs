//! The ureq [`Transport`]: one HTTP attempt over a provider's agent, and how its
//! failures are classified.
//!
//! Two measured costs shape this file: ureq's default resolver spawns a thread per
//! request whenever a timeout covers resolution, and its default idle pool (3 per host)
//! churns connections under concurrency. So each provider's agent gets a resolver that
//! answers IP literals at once and caches names, and an idle pool as large as the
//! provider's connection cap.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use std::sync::Arc;

use crate::foundation::config::{ProxyChoice, ResolvedProvider, ResolvedTls};
use crate::foundation::error::{AttemptError, AttemptKind};
use crate::foundation::request::Method;
use crate::upstream::absolute_form::AbsoluteFormConnector;
use crate::upstream::tcp::PeekingTcpConnector;
use crate::upstream::transport::{Answer, Failure, Outgoing, Transport};

/// How long a resolved host name is trusted.
const NAME_TTL: Duration = Duration::from_secs(60);

/// An attempt ends when the provider is silent for `request_timeout_ms`, and at the latest
/// after this many times that (a provider trickling bytes).
pub(crate) const ATTEMPT_CAP_FACTOR: u32 = 2;

/// The longest one attempt to a provider may take: `request_timeout_ms` x the cap factor.
pub(crate) fn attempt_cap(config: &ResolvedProvider) -> Duration {
    Duration::from_millis(config.pool.request_timeout_ms) * ATTEMPT_CAP_FACTOR
}

/// Input buffer of a connection, and the largest response head accepted.
const CONNECTION_BUFFER: usize = 32 * 1024;

/// The most a body's buffer is given before any of it is read, whatever it announces.
const FIRST_CHUNK: u64 = 64 * 1024;

/// Bytes of a failed (5xx, 429) answer read so its connection can be reused.
const DRAIN_LIMIT: u64 = 64 * 1024;

/// Builds the agent of one provider.
pub(crate) fn agent(config: &ResolvedProvider) -> ureq::Agent {
    let pool = &config.pool;
    build_agent(
        pool.max_connections,
        Duration::from_millis(pool.keep_alive_ms),
        Duration::from_millis(pool.connect_timeout_ms),
        Duration::from_millis(pool.request_timeout_ms),
        (&config.base_url, config),
    )
}

/// Builds the agent of a provider's health checks: one connection of its own.
fn health_agent(config: &ResolvedProvider, timeout: Duration) -> ureq::Agent {
    let pool = &config.pool;
    let connect = Duration::from_millis(pool.connect_timeout_ms).min(timeout);
    let keep_alive = Duration::from_millis(pool.keep_alive_ms);
    build_agent(1, keep_alive, connect, timeout, ("", config))
}

/// What the provider's TLS trusts and presents; its certificates were read at load.
fn tls_of(tls: &ResolvedTls) -> ureq::tls::TlsConfig {
    let mut builder = ureq::tls::TlsConfig::builder();
    if let Some(roots) = &tls.roots {
        builder = builder.root_certs(ureq::tls::RootCerts::Specific(roots.clone()));
    }
    builder.client_cert(tls.client.clone()).build()
}

/// The proxy a provider's calls go through, if any: the environment's is read once here.
fn proxy_of(choice: &ProxyChoice) -> Option<ureq::Proxy> {
    match choice {
        ProxyChoice::Direct => None,
        ProxyChoice::FromEnvironment => ureq::Proxy::try_from_env(),
        // Checked at load.
        ProxyChoice::Through(url) => ureq::Proxy::new(url).ok(),
    }
}

fn build_agent(
    connections: usize,
    keep_alive: Duration,
    connect: Duration,
    attempt: Duration,
    (base_url, provider): (&str, &ResolvedProvider),
) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Redirects are followed here, same origin only, or not at all: ureq's own would
        // send the provider's headers to wherever a Location points.
        .max_redirects(0)
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .max_idle_connections(connections)
        .max_idle_connections_per_host(connections)
        .max_idle_age(keep_alive)
        // ureq's 128 KiB each way per connection is most of a provider's memory; API
        // answers stream their bodies through much less.
        .input_buffer_size(CONNECTION_BUFFER)
        .output_buffer_size(CONNECTION_BUFFER / 2)
        .max_response_header_size(CONNECTION_BUFFER)
        .timeout_connect(Some(connect))
        // Constant per-read and per-write limits are set on a socket once; a limit that
        // shrinks with every call (a global one) costs a setsockopt per read and write.
        // The global cap only comes into play for a provider that trickles.
        .timeout_per_read(Some(attempt))
        .timeout_per_write(Some(attempt))
        .timeout_global(Some(attempt * ATTEMPT_CAP_FACTOR))
        .tls_config(tls_of(&provider.tls));
    let resolver = CachingResolver::for_base_url(base_url);
    // A plain-HTTP provider behind an HTTP proxy: requests in absolute form to the proxy.
    let absolute = match &provider.proxy {
        ProxyChoice::Through(url) if provider.base_url.starts_with("http://") => {
            AbsoluteFormConnector::for_proxy(url)
        }
        _ => None,
    };
    match absolute {
        Some(connector) => ureq::Agent::with_parts(config.proxy(None).build(), connector, resolver),
        None => ureq::Agent::with_parts(
            config.proxy(proxy_of(&provider.proxy)).build(),
            connector(),
            resolver,
        ),
    }
}

/// ureq's default chain (SOCKS proxy, CONNECT proxy, TCP, rustls) with the TCP connector
/// whose idle check is one system call.
fn connector() -> impl ureq::unversioned::transport::Connector {
    use ureq::unversioned::transport::{
        ConnectProxyConnector, Connector, RustlsConnector, SocksConnector,
    };
    ().chain(SocksConnector::default())
        .chain(ConnectProxyConnector::default())
        .chain(PeekingTcpConnector)
        .chain(RustlsConnector::default())
}

/// Answers IP literals without a lookup and remembers host names for [`NAME_TTL`].
#[derive(Debug, Default)]
struct CachingResolver {
    /// The provider's own authority when it is an IP literal, answered without parsing.
    own: Option<(String, ResolvedSocketAddrs)>,
    names: Mutex<HashMap<String, (ResolvedSocketAddrs, Instant)>>,
    fallback: DefaultResolver,
}

impl CachingResolver {
    fn for_base_url(base_url: &str) -> CachingResolver {
        let mut resolver = CachingResolver::default();
        let Ok(uri) = ureq::http::Uri::try_from(base_url) else {
            return resolver;
        };
        if let (Some(authority), Some(addr)) = (uri.authority(), literal(&uri)) {
            let mut addrs = resolver.fallback.empty();
            addrs.push(addr);
            resolver.own = Some((authority.as_str().to_string(), addrs));
        }
        resolver
    }
}

/// The socket address of a URI whose host is an IP literal.
fn literal(uri: &ureq::http::Uri) -> Option<SocketAddr> {
    let host = uri.host()?;
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()?;
    Some(SocketAddr::new(ip, port))
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let (Some((own, addrs)), Some(authority)) = (&self.own, uri.authority()) {
            if authority.as_str() == own {
                return Ok(addrs.clone());
            }
        }
        if let Some(addr) = literal(uri) {
            let mut addrs = self.fallback.empty();
            addrs.push(addr);
            return Ok(addrs);
        }
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        let key = format!("{host}:{port}");
        if let Some((addrs, at)) = self.names.lock().get(&key) {
            if at.elapsed() < NAME_TTL {
                return Ok(addrs.clone());
            }
        }
        let addrs = self.fallback.resolve(uri, config, timeout)?;
        self.names
            .lock()
            .insert(key, (addrs.clone(), Instant::now()));
        Ok(addrs)
    }
}

/// A provider's transport over ureq: its agent, and a second one for health checks.
pub(crate) struct UreqTransport {
    agent: ureq::Agent,
    /// The agent's whole-attempt cap: a shorter timeout (a deadline close by) costs a
    /// per-request configuration.
    agent_timeout: Duration,
    health_agent: ureq::Agent,
}

/// The ureq transport of a provider.
pub(crate) fn connect(config: &ResolvedProvider, health_timeout: Duration) -> Arc<dyn Transport> {
    Arc::new(UreqTransport {
        agent: agent(config),
        agent_timeout: attempt_cap(config),
        health_agent: health_agent(config, health_timeout),
    })
}

impl Transport for UreqTransport {
    fn send(&self, out: &Outgoing<'_>) -> Result<Answer, Failure> {
        exchange(&self.agent, self.agent_timeout, out)
    }

    fn check_health(&self, url: &str, headers: &[(String, String)], timeout: Duration) -> bool {
        let mut req = self.health_agent.get(url);
        for (name, value) in headers {
            req = req.header(name.as_str(), value.as_str());
        }
        match req.config().timeout_global(Some(timeout)).build().call() {
            Ok(mut resp) => {
                let ok = resp.status().is_success();
                let _ = resp
                    .body_mut()
                    .with_config()
                    .limit(DRAIN_LIMIT)
                    .read_to_vec();
                ok
            }
            Err(_) => false,
        }
    }
}

fn exchange(
    agent: &ureq::Agent,
    agent_timeout: Duration,
    out: &Outgoing<'_>,
) -> Result<Answer, Failure> {
    let provider = out.provider;
    let started = Instant::now();
    let fail = |kind, status, message: String, maybe_sent| Failure {
        error: AttemptError {
            provider: provider.to_string(),
            kind,
            status,
            elapsed: started.elapsed(),
            message,
        },
        maybe_sent,
        headers: None,
        refused: None,
    };

    let mut url = std::borrow::Cow::Borrowed(out.url);
    let mut hops = 0;
    let mut response = loop {
        let mut builder = ureq::http::Request::builder()
            .method(out.method.as_str())
            .uri(url.as_ref());
        for (name, value) in out.headers.iter().chain(out.extra_headers) {
            builder = builder.header(name.as_str(), value.as_str());
        }
        // The first hop has all of it: a timeout a few nanoseconds short of the agent's
        // own would cost a per-request configuration every time.
        let timeout = match hops {
            0 => out.timeout,
            _ => out.timeout.saturating_sub(started.elapsed()),
        };
        // A POST, PUT or PATCH without a body still says `Content-Length: 0`: ureq would
        // send an empty chunked body, which some servers and gateways refuse.
        let body = out.body.or(out.method.sends_body().then_some(&[][..]));
        let result = match body {
            Some(body) => builder
                .body(body)
                .map(|req| run_on_agent(agent, agent_timeout, timeout, req)),
            None => builder
                .body(())
                .map(|req| run_on_agent(agent, agent_timeout, timeout, req)),
        };
        let mut response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                let (kind, maybe_sent) = classify(&e, false);
                return Err(fail(kind, None, describe(&e), maybe_sent || hops > 0));
            }
            Err(e) => {
                // Validation at admission should make this unreachable; if it is reached,
                // it is still the caller's input, not the provider's fault.
                let mut f = fail(AttemptKind::Protocol, None, String::new(), false);
                f.refused = Some(format!("the request cannot be sent as given: {e}"));
                return Err(f);
            }
        };
        let next = out
            .follow_redirects
            .then(|| redirect_target(&url, out.method, &response))
            .flatten();
        match next {
            Some(target) if hops < MAX_REDIRECTS => {
                let _ = std::io::copy(
                    &mut response.body_mut().as_reader().take(DRAIN_LIMIT),
                    &mut std::io::sink(),
                );
                url = std::borrow::Cow::Owned(target);
                hops += 1;
            }
            _ => break response,
        }
    };

    let status = response.status().as_u16();
    if status >= 500 || status == 429 {
        // Read what is cheap to read so the connection goes back to the pool.
        let _ = std::io::copy(
            &mut response.body_mut().as_reader().take(DRAIN_LIMIT),
            &mut std::io::sink(),
        );
        let mut f = fail(
            AttemptKind::Status,
            Some(status),
            format!("HTTP {status}"),
            true,
        );
        // Its Retry-After and rate-limit headers still steer traffic.
        f.headers = Some(Box::new(std::mem::take(response.headers_mut())));
        return Err(f);
    }

    // The header map is moved into the answer, not copied.
    let (parts, mut body) = response.into_parts();
    let headers = parts.headers;
    // Sized for the body it announces (as far as the limit allows, and no more than a
    // first chunk when it announces much): one allocation, and no growing on the way.
    let announced = body.content_length().unwrap_or(0);
    let mut body_bytes =
        Vec::with_capacity(announced.min(out.max_response_bytes).min(FIRST_CHUNK) as usize);
    body.with_config()
        .limit(out.max_response_bytes)
        .reader()
        .read_to_end(&mut body_bytes)
        .map_err(|e| {
            let e = ureq::Error::from(e);
            let (kind, _) = classify(&e, true);
            fail(kind, Some(status), describe(&e), true)
        })?;
    Ok(Answer {
        status,
        headers,
        body: body_bytes,
        raw_body: None,
    })
}

/// Redirects followed at most, with `pool.follow_redirects`.
const MAX_REDIRECTS: usize = 5;

/// Where a redirect may be followed to: the same scheme, host and port only; 307 and 308
/// for any method (kept, with its body), 301, 302 and 303 only for GET and HEAD (which
/// have no body to lose). `None`: the answer is returned as it is.
fn redirect_target(
    from: &str,
    method: Method,
    response: &ureq::http::Response<ureq::Body>,
) -> Option<String> {
    let status = response.status().as_u16();
    let safe = matches!(method, Method::Get | Method::Head);
    if !(matches!(status, 307 | 308) || (matches!(status, 301..=303) && safe)) {
        return None;
    }
    let location = response.headers().get("location")?.to_str().ok()?;
    let target = resolve(from, location)?;
    (origin(&target)?.eq_ignore_ascii_case(origin(from)?)).then_some(target)
}

/// `scheme://authority` of an absolute URL.
fn origin(url: &str) -> Option<&str> {
    let after = url.find("://")? + 3;
    let end = url[after..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after + i);
    Some(&url[..end])
}

/// A `Location` resolved against the URL it came from (absolute, `//host`, `/path`, or
/// relative to the current path).
fn resolve(from: &str, location: &str) -> Option<String> {
    let location = location.split('#').next()?;
    if location.contains("://") {
        return Some(location.to_string());
    }
    let base = origin(from)?;
    if let Some(rest) = location.strip_prefix("//") {
        let scheme = &base[..base.find("://")?];
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{base}{location}"));
    }
    let path = &from[base.len()..];
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    Some(format!("{base}{dir}{location}"))
}

fn run_on_agent<B: ureq::AsSendBody>(
    agent: &ureq::Agent,
    agent_timeout: Duration,
    timeout: Duration,
    req: ureq::http::Request<B>,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    if timeout < agent_timeout {
        let req = agent
            .configure_request(req)
            .timeout_global(Some(timeout))
            .build();
        agent.run(req)
    } else {
        agent.run(req)
    }
}

/// Maps a ureq error to an attempt kind, and whether the request may have been sent.
fn classify(e: &ureq::Error, reading_body: bool) -> (AttemptKind, bool) {
    use std::io::ErrorKind as Io;
    match e {
        ureq::Error::Timeout(t) => {
            let before_send = matches!(t, ureq::Timeout::Resolve | ureq::Timeout::Connect);
            (AttemptKind::Timeout, !before_send)
        }
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => (AttemptKind::Connect, false),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => (AttemptKind::Tls, false),
        // rustls reports a handshake failure through the socket's I/O.
        ureq::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            (AttemptKind::Tls, false)
        }
        ureq::Error::BodyExceedsLimit(_) => (AttemptKind::TooLarge, true),
        ureq::Error::Protocol(_) => (AttemptKind::Protocol, true),
        ureq::Error::Io(io) => match io.kind() {
            Io::ConnectionRefused
            | Io::AddrNotAvailable
            | Io::NetworkUnreachable
            | Io::HostUnreachable
            | Io::AddrInUse => (AttemptKind::Connect, false),
            Io::TimedOut | Io::WouldBlock => (AttemptKind::Timeout, true),
            // A clean close in the middle of a body is a truncated answer.
            Io::UnexpectedEof if reading_body => (AttemptKind::Protocol, true),
            Io::InvalidData | Io::InvalidInput => (AttemptKind::Protocol, true),
            _ => (AttemptKind::Reset, true),
        },
        _ => (AttemptKind::Protocol, true),
    }
}

fn describe(e: &ureq::Error) -> String {
    match e {
        // Their text may carry the URL, and with it a configured secret.
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => "invalid request URL".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_location_resolves_or_is_refused_without_panic(
            location in "\\PC{0,60}",
            from in "(http|https)://[a-z0-9.]{1,12}(:[0-9]{1,5})?(/[a-z0-9._~-]{0,8}){0,3}",
        ) {
            if let Some(target) = resolve(&from, &location) {
                // Anything but an absolute or scheme-relative Location stays at home.
                let relative = !location.contains("://") && !location.starts_with("//");
                if relative {
                    let home = origin(&from).unwrap_or_default();
                    proptest::prop_assert!(target.starts_with(home), "{} -> {}", location, target);
                }
            }
        }
    }
}
