//! One upstream at run time: how it adapts a request, and its connection slots.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::foundation::clock::SharedClock;
use crate::foundation::config::{PoolConfig, ResolvedBatch, ResolvedProvider};
use crate::foundation::error::{AttemptError, AttemptKind};
use crate::foundation::names::ByName;
use crate::foundation::request::{Method, Request};
use crate::foundation::secrets::Secrets;
use crate::foundation::shape::Shape;
use crate::foundation::sync::AtomicUsize;
use crate::foundation::template::{append_unused, encode_component, Template};
use crate::foundation::text::Text;
use crate::policy::breaker::Breaker;
use crate::policy::candidate::Candidate;
use crate::policy::classify::Classifier;
use crate::policy::classify::Verdict;
use crate::policy::health::HealthState;
use crate::policy::latency::LatencyEwma;
use crate::policy::rate_headers::{self, Announced};
use crate::policy::tail::LatencyTail;
use crate::telemetry::cost::CostLedger;
use crate::telemetry::counters::ProviderStats;
use crate::upstream::allowance::Allowance;
use crate::upstream::batch_form;
use crate::upstream::http;
use crate::upstream::slot::Seat;
use crate::upstream::transport::{Answer, Connector, Failure, Outgoing, Transport};

pub(crate) struct Provider {
    pub name: Arc<str>,
    pub tier: u8,
    pub weight: u32,
    pub reliability: f64,
    pub cost_per_request: f64,
    pub pool: PoolConfig,
    pub headers: Vec<(String, String)>,
    base_url: String,
    /// The provider's own query, encoded once: `k=v&k2=v2`.
    query: String,
    endpoints: HashMap<String, Template, ByName>,
    secrets: Secrets,
    pub transport: Arc<dyn Transport>,
    /// The longest one attempt may take: `request_timeout_ms` x the attempt cap factor.
    pub attempt_cap: Duration,
    in_flight: Arc<AtomicUsize>,
    pub stats: ProviderStats,
    pub breaker: Breaker,
    /// Rests, rate limits, quotas and what its headers announce.
    pub allowance: Allowance,
    /// What its answers mean beyond the status rule.
    pub classifier: Classifier,
    /// Response shapes by endpoint name.
    shapes: HashMap<String, Shape, ByName>,
    /// Batch forms by endpoint name.
    batches: HashMap<String, ResolvedBatch, ByName>,
    /// Connection slots that normal and low requests may use (the rest are reserved).
    shed_connections: usize,
    /// Recent latency tail over the breaker's window, for `cost_aware`.
    pub tail: LatencyTail,
    /// Calls charged (attempts, probes and health checks), by calendar stretch.
    pub charged: CostLedger,
    pub health: HealthState,
    /// `base_url` + `health_path` + the provider's query; `None` without a health path.
    pub health_url: Option<String>,
    /// Recent latency of successful attempts, for the strategies.
    pub latency: LatencyEwma,
    /// The last GET that failed here, to probe an open circuit with when there is no
    /// health path: (URL, the caller's headers).
    pub last_failed_get: parking_lot::Mutex<Option<Replay>>,
}

/// How an attempt ended, for `Service::record_attempt`.
#[derive(Debug, Default)]
pub(crate) struct AttemptEnd {
    /// Its failure's kind; `None` for an answer.
    pub failure: Option<AttemptKind>,
    /// The status it answered with, if it did.
    pub status: Option<u16>,
    /// What its headers announced.
    pub announced: Announced,
    pub elapsed: Duration,
    /// Clock time it ended.
    pub now: Duration,
}

/// A GET to send again: its URL and the caller's headers.
pub(crate) type Replay = (String, Vec<(String, String)>);

impl Provider {
    pub fn new(
        config: &ResolvedProvider,
        health_timeout: Duration,
        clock: SharedClock,
        connect: &Connector,
    ) -> Provider {
        let mut query = String::new();
        for (k, v) in &config.query {
            if !query.is_empty() {
                query.push('&');
            }
            encode_component(k, &mut query);
            query.push('=');
            encode_component(v, &mut query);
        }
        let secrets = Secrets::new(
            config
                .headers
                .iter()
                .chain(&config.query)
                .map(|(_, v)| v.clone())
                .chain(config.query.iter().map(|(_, v)| {
                    let mut encoded = String::new();
                    encode_component(v, &mut encoded);
                    encoded
                })),
        );
        let health_url = config.health_path.as_ref().map(|path| {
            let mut url = format!("{}{path}", config.base_url);
            if !query.is_empty() {
                url.push(if path.contains('?') { '&' } else { '?' });
                url.push_str(&query);
            }
            url
        });
        Provider {
            name: config.name.as_str().into(),
            tier: config.tier,
            weight: config.weight,
            reliability: config.reliability,
            cost_per_request: config.cost_per_request,
            pool: config.pool.clone(),
            headers: config.headers.clone(),
            base_url: config.base_url.clone(),
            query,
            endpoints: config
                .endpoints
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secrets,
            transport: connect(config, health_timeout),
            attempt_cap: http::attempt_cap(config),
            in_flight: Arc::default(),
            stats: ProviderStats::default(),
            breaker: Breaker::new(config.circuit_breaker.clone(), clock.clone()),
            allowance: Allowance::new(config, clock.clone()),
            classifier: Classifier::new(&config.classify),
            shapes: config
                .shapes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            batches: config
                .batches
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            shed_connections: config.pool.max_connections
                - ((config.pool.max_connections as f64) * config.reserve).floor() as usize,
            tail: LatencyTail::new(Duration::from_millis(config.circuit_breaker.window_ms)),
            charged: CostLedger::default(),
            health: HealthState::default(),
            health_url,
            latency: LatencyEwma::default(),
            last_failed_get: parking_lot::Mutex::new(None),
        }
    }

    /// Whether this provider lists the endpoint (raw paths go to every provider).
    pub fn serves(&self, request: &Request) -> bool {
        request.is_raw_path() || self.endpoints.contains_key(request.endpoint.as_str())
    }

    /// Whether this provider can build a URL for the request.
    #[cfg(test)]
    pub fn can_serve(&self, request: &Request) -> bool {
        self.missing_param(request).is_none() && self.serves(request)
    }

    /// A path parameter the request lacks for this provider's template.
    pub fn missing_param<'a>(&'a self, request: &Request) -> Option<&'a str> {
        self.endpoints
            .get(request.endpoint.as_str())
            .and_then(|t| t.missing(&request.params))
    }

    /// The provider's URL for the request: template filled, then the provider's
    /// query, then the request's remaining parameters.
    pub fn url(&self, request: &Request) -> String {
        let mut url = String::with_capacity(self.base_url.len() + request.endpoint.len() + 64);
        url.push_str(&self.base_url);
        let used = match self.endpoints.get(request.endpoint.as_str()) {
            Some(template) => template.render(&request.params, &mut url),
            None => {
                url.push_str(&request.endpoint);
                0
            }
        };
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if !self.query.is_empty() {
            url.push(sep);
            url.push_str(&self.query);
            sep = '&';
        }
        append_unused(&request.params, used, &mut sep, &mut url);
        url
    }

    /// The URL of the batch call for `items` of `endpoint`, the other parameters taken
    /// from `params`; `None` when the provider has no batch form for it.
    pub fn batch_url(
        &self,
        endpoint: &str,
        params: &[(Text, Text)],
        items: &[&str],
    ) -> Option<String> {
        let batch = self.batches.get(endpoint)?;
        let mut url = self.base_url.clone();
        url.push_str(&batch_form::target(batch, params, items));
        if !self.query.is_empty() {
            url.push('&');
            url.push_str(&self.query);
        }
        Some(url)
    }

    /// Each item's body (and raw body, when shaped) in a 2xx answer to a batch call of
    /// `endpoint`, in the order of `items`.
    pub fn batch_items(
        &self,
        endpoint: &str,
        body: &[u8],
        items: &[&str],
    ) -> Result<Vec<Option<batch_form::Item>>, String> {
        let batch = self.batches.get(endpoint).ok_or("no batch form")?;
        batch_form::split(batch, self.shapes.get(endpoint), body, items)
    }

    /// Takes a connection seat if one is free to a request of this urgency (normal and
    /// low ones leave the reserved seats free); dropping it gives it back.
    pub fn take_seat(&self, urgent: bool) -> Option<Seat> {
        Seat::take(&self.in_flight, self.seat_cap(urgent))
    }

    /// Seats a request of this urgency may fill.
    pub fn seat_cap(&self, urgent: bool) -> usize {
        if urgent {
            self.pool.max_connections
        } else {
            self.shed_connections
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether breaker and rests let an attempt through now (a hint; no permit). Rate
    /// and quota are the caller's to check: they depend on the request's priority.
    pub fn is_available(&self, now: Duration) -> bool {
        self.allowance.rest(now).is_none() && self.breaker.is_available()
    }

    /// What an answer means, by the status rule and then `classify`: a "quota used up"
    /// answer or one `classify` calls a failure becomes a failed attempt. A 2xx answer
    /// then takes the shape of endpoint `shaped_as`, if this provider has one; an answer
    /// the shape cannot read is a `protocol` failure. (A batch answer is shaped per item.)
    pub fn judge(
        &self,
        shaped_as: Option<&str>,
        result: Result<Answer, Failure>,
    ) -> Result<Answer, Failure> {
        let failed = |answer, kind, message| self.refuse(answer, kind, message);
        match result {
            Ok(mut answer) => match self.classifier.judge(answer.status, &answer.body) {
                Verdict::Answer => match shaped_as.and_then(|e| self.shapes.get(e)) {
                    Some(shape) if (200..300).contains(&answer.status) => {
                        match shape.apply(&answer.body) {
                            Ok(shaped) => {
                                let raw = std::mem::replace(&mut answer.body, shaped);
                                answer.raw_body = Some(raw);
                                // It described the provider's body, not this one.
                                answer.headers.remove(ureq::http::header::CONTENT_LENGTH);
                                Ok(answer)
                            }
                            Err(why) => Err(failed(answer, AttemptKind::Protocol, why)),
                        }
                    }
                    _ => Ok(answer),
                },
                Verdict::QuotaUsedUp => {
                    let message = if (200..300).contains(&answer.status) {
                        "quota used up (a throttle notice in the body)".to_string()
                    } else {
                        format!("quota used up (HTTP {})", answer.status)
                    };
                    Err(failed(answer, AttemptKind::Quota, message))
                }
                Verdict::Failure => {
                    let message = format!("HTTP {} counts as a failure (classify)", answer.status);
                    Err(failed(answer, AttemptKind::Status, message))
                }
            },
            Err(mut f) => {
                if f.error
                    .status
                    .is_some_and(|s| self.classifier.is_quota_status(s))
                {
                    f.error.kind = AttemptKind::Quota;
                }
                Err(f)
            }
        }
    }

    /// What an attempt's result tells this provider's breaker, windows and allowance.
    pub fn attempt_end(
        &self,
        result: &Result<Answer, Failure>,
        elapsed: Duration,
        finished: Duration,
    ) -> AttemptEnd {
        match result {
            Ok(answer) => AttemptEnd {
                failure: None,
                status: Some(answer.status),
                announced: self.announced(&answer.headers, finished),
                elapsed,
                now: finished,
            },
            Err(f) => AttemptEnd {
                failure: Some(f.error.kind),
                status: f.error.status,
                announced: f
                    .headers
                    .as_ref()
                    .map(|h| self.announced(h, finished))
                    .unwrap_or_default(),
                elapsed,
                now: finished,
            },
        }
    }

    /// An answer that counts as a failed attempt of this `kind`.
    pub fn refuse(&self, answer: Answer, kind: AttemptKind, message: String) -> Failure {
        Failure {
            error: AttemptError {
                provider: self.name.to_string(),
                kind,
                status: Some(answer.status),
                elapsed: Duration::ZERO,
                message,
            },
            maybe_sent: true,
            headers: Some(Box::new(answer.headers)),
            refused: None,
        }
    }

    /// What an answer's headers announce of the provider's limits, read at `now`.
    pub fn announced(&self, headers: &ureq::http::HeaderMap, now: Duration) -> Announced {
        let relevant = |name: &str| {
            let n = name.as_bytes();
            n.starts_with(b"x-ratelimit")
                || n.starts_with(b"x-rate-limit")
                || n.starts_with(b"ratelimit")
                || n.starts_with(b"retry-after")
        };
        // Most answers carry none of them: one pass over the names decides.
        if !headers.keys().any(|k| relevant(k.as_str())) {
            return Announced::default();
        }
        let lookup = |name: &str| {
            let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
            let first = values.next()?.to_string();
            Some(values.fold(first, |all, v| all + ", " + v))
        };
        rate_headers::read(&lookup, self.allowance.unix(now))
    }

    /// Counts one call sent at clock time `now` in the cost ledger (attempts, probes,
    /// health checks alike).
    pub fn charge(&self, now: Duration) {
        self.charged.charge(self.allowance.unix(now));
    }

    /// Removes every configured header and query value from a message.
    pub fn redact(&self, message: &mut String) {
        self.secrets.hide(message);
    }

    /// One attempt to this provider: its headers, then the caller's; its response limit
    /// and redirect setting.
    pub fn outgoing<'a>(
        &'a self,
        method: Method,
        url: &'a str,
        caller_headers: &'a [(String, String)],
        body: Option<&'a [u8]>,
        timeout: Duration,
    ) -> Outgoing<'a> {
        Outgoing {
            provider: &self.name,
            method,
            url,
            headers: &self.headers,
            extra_headers: caller_headers,
            body,
            timeout,
            max_response_bytes: self.pool.max_response_bytes,
            follow_redirects: self.pool.follow_redirects,
        }
    }
}

impl Candidate for Provider {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    fn latency(&self) -> &LatencyEwma {
        &self.latency
    }
    fn window_totals(&self) -> (u64, u64) {
        self.breaker.window_totals()
    }
    fn uptime(&self) -> Option<f64> {
        self.health.uptime()
    }
    fn cost(&self) -> f64 {
        self.cost_per_request
    }
    fn tail(&self, now: Duration) -> Option<(Duration, u64)> {
        self.tail.p99(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::config::Config;

    fn provider(extra: &str) -> Provider {
        let c = Config::from_toml_str(&format!(
            r#"[[services.s.providers]]
            name = "p"
            base_url = "http://127.0.0.1:9/api/"
            {extra}"#
        ))
        .unwrap();
        Provider::new(
            &c.resolve().unwrap().services[0].providers[0],
            Duration::from_secs(1),
            crate::foundation::clock::SystemClock::shared(),
            &http::connect,
        )
    }

    #[test]
    fn url_fills_template_then_provider_query_then_leftovers() {
        let p = provider(
            r#"query = { apiKey = "k&y" }
            endpoints = { quote = "/v2/last/{symbol}" }"#,
        );
        let req = Request::get("s", "quote")
            .param("symbol", "BRK.A")
            .param("x y", "1/2");
        assert!(p.can_serve(&req));
        assert_eq!(
            p.url(&req),
            "http://127.0.0.1:9/api/v2/last/BRK.A?apiKey=k%26y&x%20y=1%2F2"
        );
    }

    #[test]
    fn raw_paths_keep_their_query() {
        let p = provider("");
        let req = Request::get("s", "/x/y?a=1").param("b", "2");
        assert!(p.serves(&req));
        assert_eq!(p.url(&req), "http://127.0.0.1:9/api/x/y?a=1&b=2");
        assert!(!p.serves(&Request::get("s", "quote")));
    }

    #[test]
    fn missing_template_params_are_named() {
        let p = provider(r#"endpoints = { quote = "/q/{symbol}" }"#);
        let req = Request::get("s", "quote");
        assert_eq!(p.missing_param(&req), Some("symbol"));
        assert!(!p.can_serve(&req));
    }

    #[test]
    fn slots_are_capped() {
        let p = provider("pool = { max_connections = 2 }");
        let (a, _b) = (p.take_seat(false).unwrap(), p.take_seat(false).unwrap());
        assert!(p.take_seat(true).is_none());
        drop(a);
        assert!(p.take_seat(false).is_some());
    }

    #[test]
    fn reserved_seats_are_for_urgent_requests() {
        let p = provider("pool = { max_connections = 4 }\n[defaults]\nreserve = 0.5");
        let _held: Vec<_> = (0..2).map(|_| p.take_seat(false).unwrap()).collect();
        assert!(p.take_seat(false).is_none(), "half the seats are reserved");
        let _urgent = (p.take_seat(true).unwrap(), p.take_seat(true).unwrap());
        assert!(p.take_seat(true).is_none());
    }

    #[test]
    fn secrets_are_redacted() {
        let p = provider(
            r#"headers = { Authorization = "Bearer s3cret" }
            query = { key = "a b c d" }"#,
        );
        let mut m = "sent Bearer s3cret and key=a%20b%20c%20d".to_string();
        p.redact(&mut m);
        assert_eq!(m, "sent [redacted] and key=[redacted]");
    }
}
