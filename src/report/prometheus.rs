//! The Prometheus text exposition (format 0.0.4) of every counter.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::foundation::request::Priority;
use crate::telemetry::snapshot::{
    Buckets, ProviderSnapshot, ServiceSnapshot, Snapshot, EXPORT_BOUNDS,
};

/// Escapes a label value: backslash, double quote and line feed.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A counter family with one sample per service.
    fn per_service(
        &mut self,
        services: &BTreeMap<String, ServiceSnapshot>,
        name: &str,
        help: &str,
        value: impl Fn(&ServiceSnapshot) -> u64,
    ) {
        self.family(name, "counter", help);
        for (service, s) in services {
            self.sample(name, &[("service", service)], value(s));
        }
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Buckets) {
        let bucket = format!("{name}_bucket");
        for (bound, &count) in EXPORT_BOUNDS.iter().zip(&h.cumulative) {
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count);
        self.sample(&format!("{name}_sum"), labels, h.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count);
    }
}

/// Every provider of every service: (service, provider, its snapshot), in name order.
fn providers(snapshot: &Snapshot) -> impl Iterator<Item = (&str, &str, &ProviderSnapshot)> {
    snapshot.services.iter().flat_map(|(sname, s)| {
        s.providers
            .iter()
            .map(move |(pname, p)| (sname.as_str(), pname.as_str(), p))
    })
}

/// Renders a snapshot; services and providers in name order.
pub(crate) fn render(snapshot: &Snapshot) -> String {
    let mut out = Out(String::with_capacity(8192));
    let services = &snapshot.services;

    out.family(
        "switchyard_events_total",
        "counter",
        "on_event deliveries: delivered, or dropped because the subscribers were behind.",
    );
    for (result, n) in [
        ("delivered", snapshot.events.delivered),
        ("dropped", snapshot.events.dropped),
    ] {
        out.sample("switchyard_events_total", &[("result", result)], n);
    }

    if let Some(fleet) = &snapshot.fleet {
        out.family(
            "switchyard_fleet_connected",
            "gauge",
            "1 while quotas are shared through Redis; 0 while this process counts alone.",
        );
        out.sample("switchyard_fleet_connected", &[], u8::from(fleet.connected));
        out.family(
            "switchyard_fleet_degraded_since_seconds",
            "gauge",
            "Unix time since which Redis has been away; 0 while connected.",
        );
        let since = fleet.degraded_since_ms.unwrap_or(0) as f64 / 1000.0;
        out.sample("switchyard_fleet_degraded_since_seconds", &[], since);
    }

    out.family(
        "switchyard_uptime_seconds",
        "gauge",
        "Seconds since the balancer started.",
    );
    out.sample("switchyard_uptime_seconds", &[], snapshot.uptime_secs);

    out.family(
        "switchyard_requests_total",
        "counter",
        "Callers' requests by outcome: success, failure, rejected (queue full).",
    );
    for (name, s) in services {
        for (outcome, n) in [
            ("success", s.successes),
            ("failure", s.failures),
            ("rejected", s.rejected),
        ] {
            out.sample(
                "switchyard_requests_total",
                &[("service", name), ("outcome", outcome)],
                n,
            );
        }
    }

    out.family(
        "switchyard_request_duration_seconds",
        "histogram",
        "Whole-request latency: queue wait, attempts and backoff.",
    );
    for (name, s) in services {
        out.histogram(
            "switchyard_request_duration_seconds",
            &[("service", name)],
            &s.latency_buckets,
        );
    }

    out.family(
        "switchyard_queue_depth",
        "gauge",
        "Requests waiting for a worker or a connection slot.",
    );
    for (name, s) in services {
        for p in Priority::ALL {
            let depth = s
                .queue_depth_by_priority
                .get(p.name())
                .copied()
                .unwrap_or(0);
            out.sample(
                "switchyard_queue_depth",
                &[("service", name), ("priority", p.name())],
                depth,
            );
        }
    }

    out.family(
        "switchyard_failovers_total",
        "counter",
        "Attempts sent to another provider after one failed.",
    );
    for (name, s) in services {
        for (from, to, n) in &s.routes {
            out.sample(
                "switchyard_failovers_total",
                &[("service", name), ("from", from), ("to", to)],
                n,
            );
        }
    }

    out.per_service(
        services,
        "switchyard_coalesced_total",
        "Requests answered by sharing an identical call in flight (no call of their own).",
        |s| s.coalesced,
    );

    out.family(
        "switchyard_cache_requests_total",
        "counter",
        "Requests to endpoints with a cache, by result: hit (no upstream call) or miss.",
    );
    for (name, s) in services {
        for (result, n) in [("hit", s.cache_hits), ("miss", s.cache_misses)] {
            out.sample(
                "switchyard_cache_requests_total",
                &[("service", name), ("result", result)],
                n,
            );
        }
    }

    out.per_service(
        services,
        "switchyard_batched_total",
        "Requests that went out inside a batch call of two or more.",
        |s| s.batched,
    );

    out.per_service(
        services,
        "switchyard_batch_calls_total",
        "Batch calls made, each one upstream call for its requests.",
        |s| s.batch_calls,
    );

    out.per_service(
        services,
        "switchyard_hedges_total",
        "Hedges: second attempts sent to another provider after hedge_after_ms with no answer.",
        |s| s.hedges,
    );

    out.per_service(
        services,
        "switchyard_hedge_wins_total",
        "Hedges whose answer was the one the caller got.",
        |s| s.hedge_wins,
    );

    out.family(
        "switchyard_attempts_total",
        "counter",
        "Attempts sent to a provider by outcome: success or the failure kind.",
    );
    for (sname, pname, p) in providers(snapshot) {
        let labels = |o: &'static str| [("service", sname), ("provider", pname), ("outcome", o)];
        out.sample("switchyard_attempts_total", &labels("success"), p.successes);
        for (kind, n) in &p.failures_by_kind {
            out.sample("switchyard_attempts_total", &labels(kind), n);
        }
    }

    out.family(
        "switchyard_attempt_duration_seconds",
        "histogram",
        "Latency of attempts to a provider.",
    );
    for (sname, pname, p) in providers(snapshot) {
        out.histogram(
            "switchyard_attempt_duration_seconds",
            &[("service", sname), ("provider", pname)],
            &p.latency_buckets,
        );
    }

    type Value = fn(&ProviderSnapshot) -> f64;
    let single: [(&str, &str, &str, Value); 8] = [
        (
            "switchyard_in_flight",
            "gauge",
            "Attempts on the wire to a provider now.",
            |p| p.in_flight as f64,
        ),
        (
            "switchyard_max_connections",
            "gauge",
            "A provider's connection cap.",
            |p| p.max_connections as f64,
        ),
        (
            "switchyard_health_up",
            "gauge",
            "0 while health checks mark a provider down, else 1.",
            |p| f64::from(u8::from(!p.health.down)),
        ),
        (
            "switchyard_cost_total",
            "counter",
            "cost_per_request times calls charged (attempts, probes, health checks).",
            |p| p.cost_total,
        ),
        (
            "switchyard_rate_limited_total",
            "counter",
            "Times a request was held back or sent elsewhere for a provider's rate limit \
             (configured or announced in its headers).",
            |p| p.rate_limited as f64,
        ),
        (
            "switchyard_quota_rejections_total",
            "counter",
            "Times a request was turned away from a provider for its quota (configured or answered).",
            |p| p.quota_rejections as f64,
        ),
        (
            "switchyard_resting",
            "gauge",
            "1 while a provider rests (Retry-After, rate-limit headers or quota), else 0.",
            |p| f64::from(u8::from(p.resting_reason.is_some())),
        ),
        (
            "switchyard_cost_today",
            "gauge",
            "cost_per_request times calls charged since 00:00 UTC.",
            |p| p.cost_today,
        ),
    ];
    for (family, kind, help, value) in single {
        out.family(family, kind, help);
        for (sname, pname, p) in providers(snapshot) {
            out.sample(family, &[("service", sname), ("provider", pname)], value(p));
        }
    }

    out.family(
        "switchyard_quota_remaining",
        "gauge",
        "Calls left in a provider's calendar quota (window per_day or per_month).",
    );
    for (sname, pname, p) in providers(snapshot) {
        for (window, q) in &p.quota {
            let labels = [("service", sname), ("provider", pname), ("window", window)];
            out.sample(
                "switchyard_quota_remaining",
                &labels,
                q.limit.saturating_sub(q.used),
            );
        }
    }

    out.family(
        "switchyard_rate_remaining",
        "gauge",
        "Calls left in the window of a provider's configured rate limit that ends now.",
    );
    for (sname, pname, p) in providers(snapshot) {
        for (window, r) in &p.rate {
            let labels = [("service", sname), ("provider", pname), ("window", window)];
            out.sample("switchyard_rate_remaining", &labels, r.remaining);
        }
    }

    out.family(
        "switchyard_circuit_state",
        "gauge",
        "1 for the state a provider's circuit is in, 0 for the others.",
    );
    for (sname, pname, p) in providers(snapshot) {
        for state in ["closed", "open", "half_open"] {
            let labels = [("service", sname), ("provider", pname), ("state", state)];
            out.sample(
                "switchyard_circuit_state",
                &labels,
                u8::from(p.circuit.state == state),
            );
        }
    }

    out.family(
        "switchyard_circuit_transitions_total",
        "counter",
        "Times a provider's circuit entered a state.",
    );
    for (sname, pname, p) in providers(snapshot) {
        let c = &p.circuit;
        for (to, n) in [
            ("open", c.opened),
            ("half_open", c.half_opened),
            ("closed", c.closed),
        ] {
            let labels = [("service", sname), ("provider", pname), ("to", to)];
            out.sample("switchyard_circuit_transitions_total", &labels, n);
        }
    }

    out.0
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
