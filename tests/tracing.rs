//! The `tracing` feature: a span per request and per attempt, with OpenTelemetry's HTTP
//! client attribute names, seen by a subscriber that records them (run with
//! `cargo test --features tracing --test tracing`).
#![cfg(feature = "tracing")]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use support::{provider, Fault, TestServer};
use switchyard::{Balancer, Request};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Debug, Default, Clone)]
struct Seen {
    name: String,
    parent: Option<u64>,
    fields: BTreeMap<String, String>,
}

#[derive(Default)]
struct Recorder {
    next: AtomicU64,
    spans: Arc<Mutex<BTreeMap<u64, Seen>>>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut seen = Seen {
            name: attrs.metadata().name().to_string(),
            parent: attrs.parent().map(|p| p.into_u64()),
            ..Seen::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        self.spans.lock().unwrap().insert(id, seen);
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(seen) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn each_request_and_attempt_has_a_span_with_the_http_client_names() {
    let recorder = Recorder::default();
    let spans = recorder.spans.clone();
    tracing::subscriber::set_global_default(recorder).unwrap();
    let (failing, good) = (TestServer::start(), TestServer::start());
    failing.set_fault(Fault::Status(503));
    let text = provider(
        "s",
        "failing",
        &failing.url(),
        "endpoints = { quote = \"/q\" }",
    ) + &provider(
        "s",
        "good",
        &good.url(),
        "tier = 2\nendpoints = { quote = \"/q\" }",
    );
    let lb = Balancer::from_toml_str(&text).unwrap();
    let r = lb
        .call(Request::get("s", "quote").param("symbol", "A"))
        .unwrap();
    assert_eq!(r.provider(), "good");
    let spans = spans.lock().unwrap().clone();
    let (request_id, request) = spans
        .iter()
        .find(|(_, s)| s.name == "switchyard.request")
        .expect("a request span");
    let f = |s: &Seen, k: &str| s.fields.get(k).cloned().unwrap_or_default();
    assert_eq!(f(request, "http.request.method"), "GET");
    assert_eq!(f(request, "switchyard.service"), "s");
    assert_eq!(f(request, "switchyard.endpoint"), "quote");
    assert_eq!(f(request, "switchyard.provider"), "good");
    assert_eq!(f(request, "http.response.status_code"), "200");
    let attempts: Vec<&Seen> = spans
        .values()
        .filter(|s| s.name == "switchyard.attempt" && s.parent == Some(*request_id))
        .collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    let first = attempts
        .iter()
        .find(|a| f(a, "switchyard.provider") == "failing")
        .unwrap();
    assert_eq!(f(first, "error.type"), "status");
    assert_eq!(f(first, "http.response.status_code"), "503");
    assert_eq!(f(first, "http.request.resend_count"), "0");
    assert_eq!(f(first, "server.address"), "127.0.0.1");
    assert_eq!(f(first, "server.port"), failing.port().to_string());
    let second = attempts
        .iter()
        .find(|a| f(a, "switchyard.provider") == "good")
        .unwrap();
    assert_eq!(
        (
            f(second, "http.request.resend_count"),
            f(second, "switchyard.tier")
        ),
        ("1".to_string(), "2".to_string())
    );
    assert!(
        spans
            .values()
            .all(|s| s.fields.values().all(|v| !v.contains("/q"))),
        "no URL recorded"
    );
}
