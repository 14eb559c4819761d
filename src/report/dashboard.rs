//! The status server: a small HTTP/1.1 server on its own threads with the live dashboard
//! (`/`), the metrics snapshot (`/status.json`), Prometheus (`/metrics`), `/healthz`, and
//! token-guarded operator actions. It uses only the standard library.
//!
//! A connection gets a thread of its own; each request on it must arrive whole within
//! [`REQUEST_DEADLINE`] of its first byte and within [`MAX_HEAD`] bytes; an idle kept-alive
//! connection is closed after [`KEEP_ALIVE_IDLE`]; at most [`MAX_CLIENTS`] connections are
//! served at once, and a new one past that closes the longest-idle one (503 only when none
//! is idle). So a slow or hostile client can hold a thread for seconds, never the server,
//! and never the balancer (which shares no thread or lock with this server beyond reading
//! its counters).
//!
//! Bound to loopback, the server answers only requests whose `Host` is a loopback name
//! with its port, so a web page that rebinds its own name to 127.0.0.1 cannot read it;
//! every answer forbids framing and carries a content security policy.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use crate::engine::observer::Observer;
use crate::foundation::config::StrategyKind;
use crate::foundation::error::Error;

/// The page, compiled in: no CDN, nothing fetched at run time.
const PAGE: &str = include_str!("dashboard.html");

/// The whole of a request must arrive within this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// The largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The largest request body accepted (operator actions are tiny).
const MAX_BODY: usize = 1024;
/// Clients served at once (idle keep-alive connections count).
const MAX_CLIENTS: usize = 32;
/// How long a kept-alive connection may sit idle between requests.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);
/// Requests served on one connection before it is closed.
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;
/// Seconds of history kept for the graphs.
const HISTORY: usize = 300;

/// One second of a service, for the graphs.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    /// Seconds since the balancer started.
    t: u64,
    ok: u64,
    failed: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    queued: usize,
}

/// A running status server. Dropping the handle leaves the server running; it stops with
/// the balancer, or with [`Dashboard::stop`].
#[derive(Debug)]
pub struct Dashboard {
    addr: SocketAddr,
    stop: Arc<StopSignal>,
}

/// How the balancer and the handle stop a server.
#[derive(Debug)]
pub(crate) struct StopSignal {
    stopped: AtomicBool,
    addr: SocketAddr,
}

impl StopSignal {
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            // Wake the accept loop so it sees the flag.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

impl Dashboard {
    /// The dashboard's URL, `http://ADDR:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server; requests in progress finish.
    pub fn stop(&self) {
        self.stop.stop();
    }
}

struct Server {
    observer: Observer,
    token: Option<String>,
    history: Mutex<BTreeMap<String, VecDeque<Sample>>>,
    clients: AtomicUsize,
    stop: Arc<StopSignal>,
    /// `Host` values served; `None` when `allow_remote` lets any through.
    hosts: Option<Vec<String>>,
    /// Open connections, for closing the longest-idle one when a new one needs room.
    connections: Mutex<Vec<Tracked>>,
    next_id: AtomicUsize,
}

/// An open connection: a handle to shut it with, and since when it has been idle.
struct Tracked {
    id: usize,
    stream: TcpStream,
    idle_since: Option<Instant>,
}

/// Starts a server on `addr`. Non-loopback addresses need `dashboard.allow_remote`.
pub(crate) fn start(
    observer: Observer,
    addr: &str,
    token: Option<String>,
    allow_remote: bool,
) -> Result<Dashboard, Error> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::InvalidArgument(format!("cannot listen on `{addr}`: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("no local address: {e}")))?;
    if !local.ip().is_loopback() && !allow_remote {
        return Err(Error::InvalidArgument(format!(
            "`{addr}` is not a loopback address; set dashboard.allow_remote = true to serve it"
        )));
    }
    let stop = Arc::new(StopSignal {
        stopped: AtomicBool::new(false),
        addr: if local.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], local.port()))
        } else {
            local
        },
    });
    {
        let stop = stop.clone();
        observer.on_shutdown(Arc::new(move || stop.stop()));
    }
    let port = local.port();
    let hosts = (!allow_remote).then(|| {
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect()
    });
    let server = Arc::new(Server {
        observer,
        token,
        history: Mutex::new(BTreeMap::new()),
        clients: AtomicUsize::new(0),
        stop: stop.clone(),
        hosts,
        connections: Mutex::new(Vec::new()),
        next_id: AtomicUsize::new(0),
    });
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| Error::Internal(format!("cannot start a thread: {e}")))
    };
    let s = server.clone();
    spawn(
        "switchyard-dashboard-sampler",
        Box::new(move || s.sample_every_second()),
    )?;
    let s = server.clone();
    spawn("switchyard-dashboard", Box::new(move || s.accept(listener)))?;
    Ok(Dashboard { addr: local, stop })
}

impl Server {
    fn accept(self: Arc<Self>, listener: TcpListener) {
        for conn in listener.incoming() {
            if self.stop.is_stopped() {
                return;
            }
            let Ok(conn) = conn else { continue };
            if self.clients.load(Ordering::Acquire) >= MAX_CLIENTS && !self.close_longest_idle() {
                let _ = respond(&conn, 503, "text/plain", b"busy\n", true);
                continue;
            }
            self.clients.fetch_add(1, Ordering::AcqRel);
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if let Ok(stream) = conn.try_clone() {
                let idle_since = Some(Instant::now());
                self.connections.lock().push(Tracked {
                    id,
                    stream,
                    idle_since,
                });
            }
            let me = self.clone();
            let spawned = thread::Builder::new()
                .name("switchyard-dashboard-client".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    me.serve(conn, id);
                    me.forget(id);
                });
            if spawned.is_err() {
                self.forget(id);
            }
        }
    }

    /// Makes room: shuts the connection idle the longest; false when none is idle.
    fn close_longest_idle(&self) -> bool {
        let connections = self.connections.lock();
        let oldest = connections
            .iter()
            .filter_map(|c| c.idle_since.map(|at| (at, c)))
            .min_by_key(|(at, _)| *at);
        match oldest {
            Some((_, c)) => {
                // Its thread sees the stream end and leaves; it counts itself out then.
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                true
            }
            None => false,
        }
    }

    fn set_idle(&self, id: usize, idle: bool) {
        if let Some(c) = self.connections.lock().iter_mut().find(|c| c.id == id) {
            c.idle_since = idle.then(Instant::now);
        }
    }

    fn forget(&self, id: usize) {
        self.connections.lock().retain(|c| c.id != id);
        self.clients.fetch_sub(1, Ordering::AcqRel);
    }

    fn sample_every_second(&self) {
        let tick = crossbeam_channel::tick(Duration::from_secs(1));
        while !self.stop.is_stopped() {
            let _ = tick.recv();
            let mut history = self.history.lock();
            let t = self.observer.uptime().as_secs();
            for pulse in self.observer.pulses() {
                let sample = Sample {
                    t,
                    ok: pulse.ok,
                    failed: pulse.failed,
                    p50_ms: pulse.p50_ms,
                    p99_ms: pulse.p99_ms,
                    queued: pulse.queued,
                };
                let line = history.entry(pulse.service).or_default();
                if line.len() == HISTORY {
                    line.pop_front();
                }
                line.push_back(sample);
            }
        }
    }

    /// Serves one connection: requests one after another (keep-alive, as scrapers and
    /// browsers use it), until the client closes, idles, or has made its share.
    fn serve(&self, conn: TcpStream, id: usize) {
        let _ = conn.set_write_timeout(Some(REQUEST_DEADLINE));
        for served in 0..MAX_REQUESTS_PER_CONNECTION {
            let idle = if served == 0 {
                REQUEST_DEADLINE
            } else {
                KEEP_ALIVE_IDLE
            };
            self.set_idle(id, true);
            let request = read_request(&conn, idle);
            self.set_idle(id, false);
            let request = match request {
                Ok(r) => r,
                Err(Some(status)) => {
                    let _ = respond(&conn, status, "text/plain", b"bad request\n", true);
                    return;
                }
                Err(None) if served == 0 => {
                    let _ = respond(&conn, 408, "text/plain", b"bad request\n", true);
                    return;
                }
                Err(None) => return,
            };
            let close = request
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                || served + 1 == MAX_REQUESTS_PER_CONNECTION
                || self.stop.is_stopped();
            let (status, kind, body) = self.route(&request);
            if respond(&conn, status, kind, &body, close).is_err() || close {
                return;
            }
        }
    }

    fn route(&self, r: &HttpRequest) -> (u16, &'static str, Vec<u8>) {
        const JSON: &str = "application/json";
        if let (Some(hosts), Some(host)) = (&self.hosts, r.header("host")) {
            if !hosts.iter().any(|h| h.eq_ignore_ascii_case(host.trim())) {
                // A page elsewhere that rebound its name to this address.
                return (
                    421,
                    "text/plain",
                    b"this server answers only to its loopback address\n".to_vec(),
                );
            }
        }
        let path = r.path.split('?').next().unwrap_or("");
        match (r.method.as_str(), path) {
            ("GET", "/") | ("GET", "/index.html") => {
                (200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec())
            }
            ("GET", "/healthz") => (200, "text/plain", b"ok\n".to_vec()),
            ("GET", "/metrics") => (
                200,
                "text/plain; version=0.0.4",
                crate::report::prometheus::render(&self.observer.snapshot()).into_bytes(),
            ),
            ("GET", "/status.json") => (200, JSON, self.status_json()),
            ("POST", _) if path.starts_with("/api/") => self.act(r, path),
            (_, "/") | (_, "/healthz") | (_, "/metrics") | (_, "/status.json") => {
                (405, "text/plain", b"method not allowed\n".to_vec())
            }
            _ => (404, "text/plain", b"not found\n".to_vec()),
        }
    }

    fn status_json(&self) -> Vec<u8> {
        let snapshot = self.observer.snapshot();
        let mut value = serde_json::to_value(&snapshot).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            let history = self.history.lock().clone();
            map.insert(
                "history".into(),
                serde_json::to_value(history).unwrap_or_default(),
            );
            map.insert("operator_actions".into(), self.token.is_some().into());
            map.insert(
                "event_log".into(),
                serde_json::to_value(self.observer.recent_events()).unwrap_or_default(),
            );
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// `POST /api/circuit/{provider}/{open|close|reset}` and
    /// `POST /api/service/{service}/strategy/{name}`, with the bearer token.
    fn act(&self, r: &HttpRequest, path: &str) -> (u16, &'static str, Vec<u8>) {
        let text = |status, body: String| (status, "text/plain", body.into_bytes());
        let Some(token) = &self.token else {
            return text(
                403,
                "operator actions are off: no dashboard.token is configured\n".into(),
            );
        };
        let presented = r
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
            return text(401, "a valid bearer token is required\n".into());
        }
        let Some(parts) = path
            .trim_start_matches("/api/")
            .split('/')
            .map(percent_decode)
            .collect::<Option<Vec<String>>>()
        else {
            return text(
                400,
                "a path segment is not valid percent-encoded UTF-8\n".into(),
            );
        };
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let result = match parts.as_slice() {
            ["circuit", provider, "open"] => self.observer.force_open(provider),
            ["circuit", provider, "close"] => self.observer.force_close(provider),
            ["circuit", provider, "reset"] => self.observer.reset_circuit(provider),
            ["service", service, "strategy", name] => {
                match serde_json::from_value::<StrategyKind>(serde_json::Value::String(
                    (*name).into(),
                )) {
                    Ok(kind) => self.observer.set_strategy(service, kind),
                    Err(_) => Err(Error::InvalidArgument(format!("unknown strategy `{name}`"))),
                }
            }
            _ => return text(404, "not found\n".into()),
        };
        match result {
            Ok(()) => text(200, "done\n".into()),
            Err(e) => text(400, format!("{e}\n")),
        }
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct HttpRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request: its first byte within `idle`, all of it within [`REQUEST_DEADLINE`]
/// of that. An error is the status to answer with, or `None` when no byte came.
fn read_request(mut conn: &TcpStream, idle: Duration) -> Result<HttpRequest, Option<u16>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let _ = conn.set_read_timeout(Some(idle));
    match conn.read(&mut chunk) {
        Ok(0) | Err(_) => return Err(None),
        Ok(n) => buf.extend_from_slice(&chunk[..n]),
    }
    let deadline = Instant::now() + REQUEST_DEADLINE;
    read_rest(conn, buf, deadline).map_err(Some)
}

fn read_rest(
    mut conn: &TcpStream,
    mut buf: Vec<u8>,
    deadline: Instant,
) -> Result<HttpRequest, u16> {
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Err(431);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(408);
        }
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut chunk) {
            Ok(0) => return Err(400),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(408),
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| 400u16)?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    if method.is_empty() || !path.starts_with('/') {
        return Err(400);
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().map_err(|_| 400u16))
        .transpose()?
        .unwrap_or(0);
    if length > MAX_BODY {
        return Err(413);
    }
    // The body (operator actions carry none that matters) is read and dropped.
    let mut have = buf.len() - head_end - 4;
    while have < length {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(408);
        }
        let _ = conn.set_read_timeout(Some(left));
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return Err(408),
            Ok(n) => have += n,
        }
    }
    Ok(HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        headers,
    })
}

/// The page is self-contained: its own inline script and style, requests to this server
/// only, no frames around it.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                   base-uri 'none'; form-action 'none'";

/// A percent-encoded path segment decoded; `None` for a bad escape or bytes not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn respond(
    mut conn: &TcpStream,
    status: u16,
    kind: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n\
         Content-Security-Policy: {CSP}\r\nReferrer-Policy: no-referrer\r\nConnection: {}\r\n\r\n",
        body.len(),
        if close { "close" } else { "keep-alive" }
    );
    // One write: head and body in one segment.
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    conn.write_all(&out)?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }
}
