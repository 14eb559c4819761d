//! A small HTTP/1.1 server on 127.0.0.1 for tests, the demo and benchmarks: keep-alive,
//! counts what it sees, and misbehaves on demand.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest any request is held (hang, gate), so no test can wait for ever.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// How the server answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 200 with the configured body.
    None,
    /// This status with a short body.
    Status(u16),
    /// 429 or 503 with `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// Waits this long, then answers normally.
    Slow(Duration),
    /// Every n-th request (the n-th, the 2n-th...) waits this long; the rest answer at once.
    SlowEvery(usize, Duration),
    /// A batch API: `{"A":{"item":"A"},...}` for the comma-separated values of this query
    /// parameter, or `{"item":"<last path segment>"}` for a request without it.
    Items(&'static str),
    /// Reads the request and never answers (until the server stops or 30 s pass).
    Hang,
    /// Reads the request, then resets the connection (RST).
    Reset,
    /// Announces a body, sends part of it, closes.
    Truncated,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// 200 with a body of this many bytes.
    Big(usize),
    /// This 3xx status with `Location: target`, every time.
    Redirect(u16, String),
    /// The same once; then answers normally again.
    RedirectOnce(u16, String),
    /// This status with these headers and this body.
    Answer(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// 200, then the connection closes without a `Connection: close` to say so (the way
    /// a server's idle timeout ends a pooled connection).
    CloseAfter,
    /// 200 followed by bytes nobody asked for, the connection left open.
    Trailing,
}

/// How a rate-limited server announces its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Announce {
    /// `X-RateLimit-Limit/-Remaining/-Reset`, the reset in seconds.
    XRateLimit,
    /// The same, the reset as a Unix time.
    XRateLimitUnix,
    /// `x-ratelimit-limit-requests/-remaining-requests/-reset-requests`, reset as "1.5s".
    RequestsForm,
    /// `RateLimit-Limit/-Remaining/-Reset` (IETF drafts up to 6).
    IetfSeparate,
    /// `RateLimit: limit=.., remaining=.., reset=..` (IETF draft 7).
    IetfCombined,
    /// `RateLimit: "default";r=..;t=..` with `RateLimit-Policy` (IETF draft 8 on).
    IetfStructured,
}

/// A limit the server enforces itself: `limit` requests per fixed `window`, then 429
/// with `Retry-After` until the window ends.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub limit: u32,
    pub window: Duration,
    pub announce: Announce,
}

#[derive(Default)]
struct Enforced {
    limit: Option<Limit>,
    window_started: Option<Instant>,
    used: u32,
    refused: usize,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When the request was read.
    pub at: Instant,
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub connection: usize,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    fault: Mutex<Option<Fault>>,
    latency: Mutex<Duration>,
    /// Share of requests answered 500, 0.0 to 1.0.
    error_rate: Mutex<f64>,
    body: Mutex<Vec<u8>>,
    gate_closed: Mutex<bool>,
    gate: Condvar,
    connections: AtomicUsize,
    /// Connections the server has closed.
    closed: AtomicUsize,
    requests: AtomicUsize,
    /// Answers written to the end (trailing bytes included).
    answered: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    keep_log: AtomicBool,
    stopped: AtomicBool,
    /// Status answered on `/health`, whatever the fault.
    health_status: Mutex<u16>,
    health_latency: Mutex<Duration>,
    health_checks: AtomicUsize,
    enforced: Mutex<Enforced>,
    /// Requests answered under `SlowEvery`.
    paced: AtomicUsize,
}

/// A running test server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        *state.fault.lock().unwrap() = Some(Fault::None);
        *state.body.lock().unwrap() = b"{\"ok\":true}".to_vec();
        *state.health_status.lock().unwrap() = 200;
        state.keep_log.store(true, Ordering::Relaxed);
        let st = state.clone();
        thread::Builder::new()
            .name(format!("test-server-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    if st.stopped.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = st.connections.fetch_add(1, Ordering::AcqRel);
                    let st = st.clone();
                    let _ = thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn(move || {
                            serve(stream, id, &st);
                            st.closed.fetch_add(1, Ordering::AcqRel);
                        });
                }
            })
            .unwrap();
        TestServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = Some(fault);
    }

    pub fn set_latency(&self, latency: Duration) {
        *self.state.latency.lock().unwrap() = latency;
    }

    pub fn set_error_rate(&self, rate: f64) {
        *self.state.error_rate.lock().unwrap() = rate;
    }

    pub fn set_body(&self, body: impl Into<Vec<u8>>) {
        *self.state.body.lock().unwrap() = body.into();
    }

    /// What `/health` answers (200 unless set); health checks are not counted as requests.
    pub fn set_health(&self, status: u16) {
        *self.state.health_status.lock().unwrap() = status;
    }

    /// How long `/health` takes to answer (none unless set).
    pub fn set_health_latency(&self, latency: Duration) {
        *self.state.health_latency.lock().unwrap() = latency;
    }

    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::Acquire)
    }

    /// Stops recording each request (for long runs); counters go on.
    pub fn keep_log(&self, keep: bool) {
        self.state.keep_log.store(keep, Ordering::Relaxed);
    }

    /// Enforces `limit` from now on, announcing it in every answer.
    pub fn set_limit(&self, limit: Limit) {
        *self.state.enforced.lock().unwrap() = Enforced {
            limit: Some(limit),
            ..Enforced::default()
        };
    }

    /// Requests refused with 429 by the enforced limit.
    pub fn refused(&self) -> usize {
        self.state.enforced.lock().unwrap().refused
    }

    /// Holds every request until [`TestServer::open_gate`] (at most 30 s).
    pub fn close_gate(&self) {
        *self.state.gate_closed.lock().unwrap() = true;
    }

    pub fn open_gate(&self) {
        *self.state.gate_closed.lock().unwrap() = false;
        self.state.gate.notify_all();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Acquire)
    }

    /// Connections the server has closed so far (their sockets shut).
    pub fn closed(&self) -> usize {
        self.state.closed.load(Ordering::Acquire)
    }

    /// Answers written to the end so far, trailing bytes included.
    pub fn answered(&self) -> usize {
        self.state.answered.load(Ordering::Acquire)
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::Acquire)
    }

    /// Most requests being handled at once so far.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::Acquire)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Waits until `n` requests were read, at most `limit`; returns whether they were.
    pub fn wait_for_requests(&self, n: usize, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while self.requests() < n {
            if Instant::now() > until {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
        self.open_gate();
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// A port on 127.0.0.1 with nothing listening: connections are refused.
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn serve(stream: TcpStream, id: usize, st: &State) {
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let Some(seen) = read_request(&mut reader, id) else {
            return;
        };
        if st.stopped.load(Ordering::Acquire) {
            return;
        }
        if seen.path() == "/health" {
            st.health_checks.fetch_add(1, Ordering::AcqRel);
            let latency = *st.health_latency.lock().unwrap();
            if !latency.is_zero() {
                thread::sleep(latency);
            }
            let status = *st.health_status.lock().unwrap();
            if !write_response(&mut writer, status, &[], b"health") {
                return;
            }
            continue;
        }
        st.requests.fetch_add(1, Ordering::AcqRel);
        let now = st.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        st.max_in_flight.fetch_max(now, Ordering::AcqRel);
        let close = seen
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let target = seen.target.clone();
        if st.keep_log.load(Ordering::Relaxed) {
            st.seen.lock().unwrap().push(seen);
        }
        let keep_going = respond(&mut writer, st, &target);
        st.answered.fetch_add(1, Ordering::AcqRel);
        st.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !keep_going || close {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>, connection: usize) -> Option<Seen> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        at: Instant::now(),
        method,
        target,
        headers,
        body,
        connection,
    })
}

/// Answers one request; false when the connection must end.
fn respond(w: &mut TcpStream, st: &State, target: &str) -> bool {
    {
        let mut closed = st.gate_closed.lock().unwrap();
        let until = Instant::now() + HOLD_LIMIT;
        while *closed && Instant::now() < until && !st.stopped.load(Ordering::Acquire) {
            closed = st
                .gate
                .wait_timeout(closed, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
    let latency = *st.latency.lock().unwrap();
    if !latency.is_zero() {
        thread::sleep(latency);
    }
    let error_rate = *st.error_rate.lock().unwrap();
    let fault = if error_rate > 0.0 && rand::random::<f64>() < error_rate {
        Fault::Status(500)
    } else {
        st.fault.lock().unwrap().clone().unwrap_or(Fault::None)
    };
    let body = st.body.lock().unwrap().clone();
    if let Some((status, headers)) = enforce(st) {
        let body: &[u8] = if status == 429 { b"slow down" } else { &body };
        return write_response(w, status, &headers, body);
    }
    match fault {
        Fault::None => write_response(w, 200, &[], &body),
        Fault::Status(code) => write_response(w, code, &[], b"failure"),
        Fault::RetryAfter(code, secs) => {
            write_response(w, code, &[("Retry-After", secs.to_string())], b"rest")
        }
        Fault::Slow(d) => {
            thread::sleep(d);
            write_response(w, 200, &[], &body)
        }
        Fault::Items(query) => {
            let (path, qs) = target.split_once('?').unwrap_or((target, ""));
            let listed = qs
                .split('&')
                .find_map(|kv| kv.strip_prefix(query)?.strip_prefix('='))
                .map(|v| v.replace("%2C", ",").replace("%2c", ","));
            let body = match listed {
                Some(list) => {
                    let items: Vec<String> = list
                        .split(',')
                        .map(|i| format!("\"{i}\":{{\"item\":\"{i}\"}}"))
                        .collect();
                    format!("{{{}}}", items.join(","))
                }
                None => format!("{{\"item\":\"{}\"}}", path.rsplit('/').next().unwrap_or("")),
            };
            write_response(w, 200, &[], body.as_bytes())
        }
        Fault::SlowEvery(n, d) => {
            if (st.paced.fetch_add(1, Ordering::AcqRel) + 1) % n.max(1) == 0 {
                thread::sleep(d);
            }
            write_response(w, 200, &[], &body)
        }
        Fault::Hang => {
            let until = Instant::now() + HOLD_LIMIT;
            while Instant::now() < until && !st.stopped.load(Ordering::Acquire) {
                thread::sleep(Duration::from_millis(20));
            }
            false
        }
        Fault::Reset => {
            let sock = socket2::SockRef::from(&*w);
            let _ = sock.set_linger(Some(Duration::ZERO));
            let _ = w.shutdown(std::net::Shutdown::Both);
            false
        }
        Fault::Truncated => {
            let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part");
            let _ = w.flush();
            false
        }
        Fault::Garbage => {
            let _ = w.write_all(b"this is not HTTP at all\r\n\r\n");
            false
        }
        Fault::Big(n) => write_response(w, 200, &[], &vec![b'x'; n]),
        Fault::Redirect(code, target) => write_response(w, code, &[("Location", target)], b"moved"),
        Fault::Answer(code, headers, body) => write_response(w, code, &headers, &body),
        Fault::RedirectOnce(code, target) => {
            *st.fault.lock().unwrap() = Some(Fault::None);
            write_response(w, code, &[("Location", target)], b"moved")
        }
        Fault::CloseAfter => {
            write_response(w, 200, &[], &body);
            false
        }
        Fault::Trailing => write_response(w, 200, &[], &body) && w.write_all(b"surplus").is_ok(),
    }
}

/// Counts the request against the enforced limit: its status and announcing headers.
fn enforce(st: &State) -> Option<(u16, Vec<(&'static str, String)>)> {
    let mut e = st.enforced.lock().unwrap();
    let limit = e.limit?;
    let now = Instant::now();
    let started = match e.window_started {
        Some(at) if now < at + limit.window => at,
        _ => {
            e.used = 0;
            e.window_started = Some(now);
            now
        }
    };
    let left = (started + limit.window).saturating_duration_since(now);
    // Whole seconds, rounded up: a client resting that long never comes back early.
    let reset = left.as_millis().div_ceil(1000) as u64;
    let status = if e.used < limit.limit {
        e.used += 1;
        200
    } else {
        e.refused += 1;
        429
    };
    let (limit_n, remaining) = (limit.limit, limit.limit - e.used);
    // As many servers do: the Unix second of the reset, rounded down.
    let unix_reset = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + left)
        .as_secs();
    let mut headers: Vec<(&'static str, String)> = match limit.announce {
        Announce::XRateLimit => vec![
            ("X-RateLimit-Limit", limit_n.to_string()),
            ("X-RateLimit-Remaining", remaining.to_string()),
            ("X-RateLimit-Reset", reset.to_string()),
        ],
        Announce::XRateLimitUnix => vec![
            ("X-RateLimit-Limit", limit_n.to_string()),
            ("X-RateLimit-Remaining", remaining.to_string()),
            ("X-RateLimit-Reset", unix_reset.to_string()),
        ],
        Announce::RequestsForm => vec![
            ("x-ratelimit-limit-requests", limit_n.to_string()),
            ("x-ratelimit-remaining-requests", remaining.to_string()),
            ("x-ratelimit-reset-requests", format!("{reset}s")),
        ],
        Announce::IetfSeparate => vec![
            ("RateLimit-Limit", limit_n.to_string()),
            ("RateLimit-Remaining", remaining.to_string()),
            ("RateLimit-Reset", reset.to_string()),
        ],
        Announce::IetfCombined => vec![(
            "RateLimit",
            format!("limit={limit_n}, remaining={remaining}, reset={reset}"),
        )],
        Announce::IetfStructured => vec![
            ("RateLimit", format!("\"default\";r={remaining};t={reset}")),
            (
                "RateLimit-Policy",
                format!("\"default\";q={limit_n};w={}", limit.window.as_secs()),
            ),
        ],
    };
    if status == 429 {
        headers.push(("Retry-After", reset.to_string()));
    }
    Some((status, headers))
}

fn write_response(w: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> bool {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out).and_then(|_| w.flush()).is_ok()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        402 => "Payment Required",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
