//! Observability: the status server's routes, Prometheus parsed by a real parser, secrets
//! kept out, operator actions behind a token, hostile clients, and the dashboard rendered
//! by headless Chromium.

#![cfg(feature = "dashboard")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{provider, Fault, TestServer};
use switchyard::{Balancer, CircuitState, Request};

const SECRET: &str = "sk-live-7f3a9c0b1d";

/// A plain HTTP/1.1 exchange; returns (status, body).
fn http(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut conn = TcpStream::connect(host).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n",
        if path.is_empty() { "/" } else { path }
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

struct Setup {
    servers: Vec<TestServer>,
    lb: Balancer,
    url: String,
}

impl Setup {
    /// The status server's `host:port`.
    fn host(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }
}

fn setup(extra: &str) -> Setup {
    std::env::set_var("OBS_TEST_SECRET", SECRET);
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start()).collect();
    for s in &servers {
        s.keep_log(false);
    }
    servers[2].set_fault(Fault::Status(503));
    let auth = r#"headers = { Authorization = "Bearer ${OBS_TEST_SECRET}" }
query = { apikey = "${OBS_TEST_SECRET}" }"#;
    let config = format!(
        "{extra}\n[defaults.retry]\nbase_delay_ms = 10\nmax_backoff_ms = 10\n{}{}{}",
        provider("stocks", "polygon", &servers[0].url(), auth),
        provider(
            "stocks",
            "finnhub",
            &servers[1].url(),
            "tier = 2\ncost_per_request = 0.002\nquota = { per_day = 100000 }\nrate = { per_second = 1000 }",
        ),
        provider("news", "newsapi", &servers[2].url(), auth),
    );
    let lb = Balancer::from_toml_str(&config).unwrap();
    let url = lb.serve_dashboard("127.0.0.1:0").unwrap().url();
    Setup { servers, lb, url }
}

fn traffic(lb: &Balancer, n: usize) {
    for i in 0..n {
        let _ = lb.call(Request::get("stocks", "/quote").param("i", i.to_string()));
        if i % 5 == 0 {
            let _ = lb.call(Request::get("news", "/latest"));
        }
    }
}

#[test]
fn routes_answer_and_unknown_ones_do_not() {
    let s = setup("");
    traffic(&s.lb, 20);
    let (status, page) = http("GET", &s.url, &[]);
    assert_eq!(status, 200);
    assert!(
        page.contains("<title>switchyard</title>") && !page.contains("http://"),
        "self-contained page"
    );
    let (status, json) = http("GET", &format!("{}status.json", s.url), &[]);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["services"]["stocks"]["providers"]["polygon"]["requests"],
        20
    );
    assert_eq!(v["operator_actions"], false);
    assert_eq!(
        http("GET", &format!("{}healthz", s.url), &[]),
        (200, "ok\n".into())
    );
    assert_eq!(http("GET", &format!("{}nope", s.url), &[]).0, 404);
    assert_eq!(http("DELETE", &format!("{}metrics", s.url), &[]).0, 405);
    // Operator actions are off without a token.
    assert_eq!(
        http("POST", &format!("{}api/circuit/polygon/open", s.url), &[]).0,
        403
    );
    assert_eq!(s.lb.circuit("polygon").unwrap().state, CircuitState::Closed);
}

#[test]
fn secrets_appear_nowhere() {
    let s = setup("");
    s.servers[0].keep_log(true);
    traffic(&s.lb, 30);
    for path in ["", "status.json", "metrics"] {
        let (status, body) = http("GET", &format!("{}{path}", s.url), &[]);
        assert_eq!(status, 200);
        assert!(!body.contains(SECRET), "/{path} shows the secret");
    }
    assert!(!s.lb.prometheus().contains(SECRET));
    assert!(!serde_json::to_string(&s.lb.metrics())
        .unwrap()
        .contains(SECRET));
    let err = s.lb.call(Request::get("news", "/x")).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET));
    // The providers did get it.
    assert_eq!(
        s.servers[0].seen()[0].header("authorization"),
        Some(&*format!("Bearer {SECRET}"))
    );
}

#[test]
fn operator_actions_need_the_token() {
    let s = setup("[dashboard]\ntoken = \"let-me-operate\"");
    let open = format!("{}api/circuit/polygon/open", s.url);
    assert_eq!(http("POST", &open, &[]).0, 401);
    assert_eq!(
        http("POST", &open, &[("Authorization", "Bearer wrong-token")]).0,
        401
    );
    assert_eq!(
        s.lb.circuit("polygon").unwrap().state,
        CircuitState::Closed,
        "refused requests change nothing"
    );
    assert_eq!(
        http("POST", &open, &[("Authorization", "Bearer let-me-operate")]).0,
        200
    );
    assert_eq!(s.lb.circuit("polygon").unwrap().state, CircuitState::Open);
    let close = format!("{}api/circuit/polygon/close", s.url);
    assert_eq!(
        http(
            "POST",
            &close,
            &[("Authorization", "Bearer let-me-operate")]
        )
        .0,
        200
    );
    assert_eq!(s.lb.circuit("polygon").unwrap().state, CircuitState::Closed);
    let switch = format!("{}api/service/stocks/strategy/round_robin", s.url);
    assert_eq!(
        http(
            "POST",
            &switch,
            &[("Authorization", "Bearer let-me-operate")]
        )
        .0,
        200
    );
    assert_eq!(
        s.lb.strategy("stocks").unwrap(),
        switchyard::StrategyKind::RoundRobin
    );
    let bad = format!("{}api/service/stocks/strategy/fastest", s.url);
    assert_eq!(
        http("POST", &bad, &[("Authorization", "Bearer let-me-operate")]).0,
        400
    );
    let (_, json) = http("GET", &format!("{}status.json", s.url), &[]);
    assert!(json.contains("\"operator_actions\":true") && !json.contains("let-me-operate"));
}

/// Sends `head` (request line and headers, without the blank line) on a new connection;
/// returns the whole answer, head and body.
fn exchange(host: &str, head: &str) -> String {
    let mut conn = TcpStream::connect(host).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

#[test]
fn a_rebinding_page_is_refused_and_no_page_can_frame_the_dashboard() {
    let s = setup("");
    let host = &s.host();
    let port = host.rsplit(':').next().unwrap();
    for name in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
    ] {
        let answer = exchange(host, &format!("GET /status.json HTTP/1.1\r\nHost: {name}"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{name}: {answer:.80}");
    }
    for name in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        "127.0.0.1:1".into(),
    ] {
        let answer = exchange(host, &format!("GET /status.json HTTP/1.1\r\nHost: {name}"));
        assert!(answer.starts_with("HTTP/1.1 421"), "{name}: {answer:.80}");
        assert!(!answer.contains("polygon"), "nothing of the status leaks");
    }
    let page = exchange(host, &format!("GET / HTTP/1.1\r\nHost: {host}"));
    let head = page.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(
        head.contains("content-security-policy:") && head.contains("frame-ancestors 'none'"),
        "{head}"
    );
}

#[test]
fn idle_connections_never_lock_the_operator_out() {
    let s = setup("");
    let host = s.host();
    // Twice the server's room in connections that say nothing.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(&host).unwrap())
        .collect();
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(http("GET", &format!("{}healthz", s.url), &[]).0, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
}

#[test]
fn operator_actions_reach_names_that_need_encoding() {
    let server = TestServer::start();
    let config = format!(
        "[dashboard]\ntoken = \"let-me-operate\"\n{}",
        provider("s", "alpha beta/γ", &server.url(), "")
    );
    let lb = Balancer::from_toml_str(&config).unwrap();
    let url = lb.serve_dashboard("127.0.0.1:0").unwrap().url();
    let auth = [("Authorization", "Bearer let-me-operate")];
    let open = format!("{url}api/circuit/alpha%20beta%2F%CE%B3/open");
    assert_eq!(http("POST", &open, &auth).0, 200);
    assert_eq!(
        lb.circuit("alpha beta/γ").unwrap().state,
        CircuitState::Open
    );
    assert_eq!(
        http("POST", &format!("{url}api/circuit/%ZZ/open"), &auth).0,
        400
    );
}

#[test]
fn connections_are_kept_alive() {
    let s = setup("");
    let host = s.host();
    let mut conn = TcpStream::connect(&host).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        conn.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .unwrap();
        let mut text = String::new();
        while !text.ends_with("ok\n") {
            let mut buf = [0u8; 512];
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {text:?}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(
            text.starts_with("HTTP/1.1 200") && text.contains("Connection: keep-alive"),
            "{text}"
        );
    }
}

#[test]
fn only_loopback_unless_allowed() {
    let s = setup("");
    let err = s.lb.serve_dashboard("0.0.0.0:0").unwrap_err();
    assert!(err.to_string().contains("allow_remote"), "{err}");
    let allowed = setup("[dashboard]\nallow_remote = true");
    let d = allowed.lb.serve_dashboard("0.0.0.0:0").unwrap();
    // Reached over loopback only.
    let url = format!("http://127.0.0.1:{}/healthz", d.addr().port());
    assert_eq!(http("GET", &url, &[]).0, 200);
}

#[test]
fn hostile_clients_stall_neither_the_server_nor_the_balancer() {
    let s = setup("");
    let host = s.host();
    // Ten clients that trickle their headers, and one that sends far too much.
    let mut slow: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut c = TcpStream::connect(&host).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nX-Slow: ").unwrap();
            c
        })
        .collect();
    let mut huge = TcpStream::connect(&host).unwrap();
    let _ = huge
        .write_all(format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(64 * 1024)).as_bytes());
    let started = Instant::now();
    assert_eq!(http("GET", &format!("{}healthz", s.url), &[]).0, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // The balancer does not notice.
    let started = Instant::now();
    traffic(&s.lb, 20);
    assert!(started.elapsed() < Duration::from_secs(2));
    for c in &mut slow {
        let _ = c.write_all(b"a");
    }
    let mut answer = String::new();
    let _ = huge.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.60}");
    // The trickling clients are cut off after the request deadline.
    std::thread::sleep(Duration::from_millis(2200));
    let mut buf = String::new();
    slow[0]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = slow[0].read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 408"), "{buf:.60}");
}

#[test]
fn prometheus_text_parses_and_agrees_with_the_servers() {
    let s = setup("");
    traffic(&s.lb, 50);
    // Two requests that fail over from polygon to finnhub.
    s.servers[0].set_fault(Fault::Status(500));
    for _ in 0..2 {
        assert_eq!(
            s.lb.call(Request::get("stocks", "/q")).unwrap().provider(),
            "finnhub"
        );
    }
    s.servers[0].set_fault(Fault::None);
    let (status, text) = http("GET", &format!("{}metrics", s.url), &[]);
    assert_eq!(status, 200);
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        key = sample.name + json.dumps(dict(sorted(sample.labels.items())), sort_keys=True)
        out[key] = sample.value
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'prometheus_client'") {
        assert!(
            std::env::var("CI").is_err(),
            "CI installs prometheus_client"
        );
        eprintln!("prometheus_client is not installed; skipping the parser check");
        return;
    }
    assert!(output.status.success(), "{stderr}");
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&output.stdout).unwrap();
    let get = |key: &str| {
        parsed
            .get(key)
            .and_then(|v| v.as_f64())
            .unwrap_or_else(|| panic!("{key} missing"))
    };
    let attempts = |service: &str, provider: &str, outcome: &str| {
        get(&format!(
            "switchyard_attempts_total{{\"outcome\": \"{outcome}\", \"provider\": \"{provider}\", \"service\": \"{service}\"}}"
        ))
    };
    assert_eq!(attempts("stocks", "polygon", "success"), 50.0);
    assert_eq!(attempts("stocks", "polygon", "status"), 2.0);
    assert_eq!(s.servers[0].requests(), 52);
    assert_eq!(
        attempts("stocks", "finnhub", "success"),
        s.servers[1].requests() as f64
    );
    assert_eq!(
        attempts("news", "newsapi", "status"),
        s.servers[2].requests() as f64
    );
    assert_eq!(
        get("switchyard_requests_total{\"outcome\": \"success\", \"service\": \"stocks\"}"),
        52.0
    );
    let count = get("switchyard_attempt_duration_seconds_count{\"provider\": \"polygon\", \"service\": \"stocks\"}");
    assert_eq!(count, 52.0);
    assert_eq!(
        get("switchyard_circuit_state{\"provider\": \"polygon\", \"service\": \"stocks\", \"state\": \"closed\"}"),
        1.0
    );
    assert_eq!(
        get("switchyard_failovers_total{\"from\": \"polygon\", \"service\": \"stocks\", \"to\": \"finnhub\"}"),
        2.0
    );
}

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|n| Path::new("/usr/bin").join(n))
        .find(|p| p.exists());
    assert!(
        found.is_some() || std::env::var("CI").is_err(),
        "CI installs chromium"
    );
    found
}

fn browse(chrome: &Path, profile: &Path, args: &[&str]) -> String {
    // coreutils' timeout: a browser that hangs must not hang the test run.
    let output = Command::new("timeout")
        .arg("120")
        .arg(chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_dashboard_renders_in_a_real_browser() {
    let Some(chrome) = chromium() else {
        eprintln!("chromium is not installed; skipping the browser check");
        return;
    };
    let s = setup("");
    // Live traffic for a few seconds, so the graphs have points.
    let lb = s.lb.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(30);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                traffic(&lb, 5);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(4));
    s.lb.force_open("polygon").unwrap();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let profile = target.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = browse(
        &chrome,
        &profile,
        &["--virtual-time-budget=3000", "--dump-dom", &s.url],
    );
    let shot = target.join("dashboard.png");
    browse(
        &chrome,
        &profile,
        &[
            "--virtual-time-budget=3000",
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
            &s.url,
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    driver.join().unwrap();

    for name in ["polygon", "finnhub", "newsapi"] {
        assert!(
            dom.contains(&format!("data-provider=\"{name}\"")),
            "{name} missing from the page:\n{dom:.2000}"
        );
    }
    let polygon_row = dom.split("data-provider=\"polygon\"").nth(1).unwrap();
    let polygon_row = &polygon_row[..polygon_row.find("</tr>").unwrap()];
    assert!(
        polygon_row.contains("data-state=\"open\"") && polygon_row.contains(">open<"),
        "{polygon_row}"
    );
    // Both graphs of a service have drawn points.
    let points: Vec<usize> = dom
        .split("data-points=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next()?.parse().ok())
        .collect();
    assert!(points.len() >= 8, "{points:?}");
    assert!(
        points.iter().filter(|&&n| n >= 2).count() >= 3,
        "graphs drew too few points: {points:?}"
    );
    assert!(dom.contains("data-health=\"degraded\"") || dom.contains("data-health=\"healthy\""));
    // The quota bar and the rate left of the provider that has them; the service's cost.
    let finnhub_row = dom.split("data-provider=\"finnhub\"").nth(1).unwrap();
    let finnhub_row = &finnhub_row[..finnhub_row.find("</tr>").unwrap()];
    assert!(
        finnhub_row.contains("class=\"quota\" data-window=\"per_day\"")
            && finnhub_row.contains(" / 100000 today · resets in ")
            && finnhub_row.contains("rate: ")
            && finnhub_row.contains(" of 1000 left this second"),
        "{finnhub_row}"
    );
    assert!(
        dom.contains("cost today <b data-cost=\"today\">"),
        "{dom:.3000}"
    );
    // The event log: attempts of the traffic, the forced-open circuit.
    let log = dom.split("id=\"log\"").nth(1).unwrap_or("");
    assert!(
        log.contains("data-type=\"attempt\"") && log.contains("data-type=\"circuit\""),
        "{log:.2000}"
    );
    // What fewer calls saved: counts, drawn as numbers.
    for counter in ["coalesced", "cache_hits"] {
        let shown = dom
            .split(&format!("data-saved=\"{counter}\">"))
            .nth(1)
            .and_then(|rest| rest.split('<').next());
        assert!(
            shown.is_some_and(|n| n.parse::<u64>().is_ok()),
            "{counter}: {shown:?}"
        );
    }
    assert!(
        dom.contains("data-health=\"down\""),
        "news has one provider, always failing"
    );
    assert!(shot.exists(), "screenshot saved");
}
