//! The Prometheus text exposition (format 0.0.4) of every counter.

use std::fmt::Write;

use crate::balancer::Core;
use crate::policy::breaker::CircuitState;
use crate::telemetry::histogram::Histogram;
use crate::foundation::request::Priority;

/// Histogram bucket bounds, in seconds.
const BOUNDS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bounds_us: Vec<u64> = BOUNDS.iter().map(|s| (s * 1e6) as u64).collect();
        let counts = h.cumulative(&bounds_us);
        let bucket = format!("{name}_bucket");
        for (bound, count) in BOUNDS.iter().zip(counts) {
            let le = bound.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum_us() as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

pub(crate) fn render(core: &Core) -> String {
    let mut out = Out(String::with_capacity(8192));
    let services = &core.services;

    out.family(
        "switchyard_uptime_seconds",
        "gauge",
        "Seconds since the balancer started.",
    );
    out.sample(
        "switchyard_uptime_seconds",
        &[],
        core.started.elapsed().as_secs_f64(),
    );

    out.family(
        "switchyard_requests_total",
        "counter",
        "Callers' requests by outcome: success, failure, rejected (queue full).",
    );
    for s in services {
        let st = &s.stats;
        for (outcome, n) in [
            ("success", st.successes()),
            ("failure", st.failures()),
            ("rejected", st.rejected()),
        ] {
            out.sample(
                "switchyard_requests_total",
                &[("service", &s.name), ("outcome", outcome)],
                n,
            );
        }
    }

    out.family(
        "switchyard_request_duration_seconds",
        "histogram",
        "Whole-request latency: queue wait, attempts and backoff.",
    );
    for s in services {
        out.histogram(
            "switchyard_request_duration_seconds",
            &[("service", &s.name)],
            s.stats.latency(),
        );
    }

    out.family(
        "switchyard_queue_depth",
        "gauge",
        "Requests waiting for a worker or a connection slot.",
    );
    for s in services {
        let depth = s.queue.depth_by_priority();
        for p in Priority::ALL {
            out.sample(
                "switchyard_queue_depth",
                &[("service", &s.name), ("priority", p.name())],
                depth[p.index()],
            );
        }
    }

    out.family(
        "switchyard_failovers_total",
        "counter",
        "Attempts sent to another provider after one failed.",
    );
    for s in services {
        for ((from, to), n) in s.stats.routes() {
            let (from, to) = (&s.providers[from].name, &s.providers[to].name);
            out.sample(
                "switchyard_failovers_total",
                &[("service", &s.name), ("from", from), ("to", to)],
                n,
            );
        }
    }

    out.family(
        "switchyard_attempts_total",
        "counter",
        "Attempts sent to a provider by outcome: success or the failure kind.",
    );
    for s in services {
        for p in &s.providers {
            let labels = |o: &'static str| {
                [
                    ("service", s.name.as_str()),
                    ("provider", &*p.name),
                    ("outcome", o),
                ]
            };
            out.sample(
                "switchyard_attempts_total",
                &labels("success"),
                p.stats.successes(),
            );
            for (kind, n) in p.stats.failures_by_kind() {
                out.sample("switchyard_attempts_total", &labels(kind.name()), n);
            }
        }
    }

    out.family(
        "switchyard_attempt_duration_seconds",
        "histogram",
        "Latency of attempts to a provider.",
    );
    for s in services {
        for p in &s.providers {
            out.histogram(
                "switchyard_attempt_duration_seconds",
                &[("service", &s.name), ("provider", &p.name)],
                p.stats.latency(),
            );
        }
    }

    out.family(
        "switchyard_in_flight",
        "gauge",
        "Attempts on the wire to a provider now.",
    );
    for s in services {
        for p in &s.providers {
            out.sample(
                "switchyard_in_flight",
                &[("service", &s.name), ("provider", &p.name)],
                p.in_flight(),
            );
        }
    }

    out.family(
        "switchyard_max_connections",
        "gauge",
        "A provider's connection cap.",
    );
    for s in services {
        for p in &s.providers {
            out.sample(
                "switchyard_max_connections",
                &[("service", &s.name), ("provider", &p.name)],
                p.pool.max_connections,
            );
        }
    }

    out.family(
        "switchyard_circuit_state",
        "gauge",
        "1 for the state a provider's circuit is in, 0 for the others.",
    );
    for s in services {
        for p in &s.providers {
            let now = p.breaker.state();
            for state in [
                CircuitState::Closed,
                CircuitState::Open,
                CircuitState::HalfOpen,
            ] {
                let labels = [
                    ("service", s.name.as_str()),
                    ("provider", &*p.name),
                    ("state", state.name()),
                ];
                out.sample("switchyard_circuit_state", &labels, u8::from(now == state));
            }
        }
    }

    out.family(
        "switchyard_circuit_transitions_total",
        "counter",
        "Times a provider's circuit entered a state.",
    );
    for s in services {
        for p in &s.providers {
            let info = p.breaker.info();
            for (to, n) in [
                ("open", info.opened),
                ("half_open", info.half_opened),
                ("closed", info.closed),
            ] {
                let labels = [
                    ("service", s.name.as_str()),
                    ("provider", &*p.name),
                    ("to", to),
                ];
                out.sample("switchyard_circuit_transitions_total", &labels, n);
            }
        }
    }

    out.family(
        "switchyard_health_up",
        "gauge",
        "0 while health checks mark a provider down, else 1.",
    );
    for s in services {
        for p in &s.providers {
            out.sample(
                "switchyard_health_up",
                &[("service", &s.name), ("provider", &p.name)],
                u8::from(!p.health.is_down()),
            );
        }
    }

    out.family(
        "switchyard_cost_total",
        "counter",
        "cost_per_request times attempts sent.",
    );
    for s in services {
        for p in &s.providers {
            let cost = p.cost_per_request * p.stats.attempts() as f64;
            out.sample(
                "switchyard_cost_total",
                &[("service", &s.name), ("provider", &p.name)],
                cost,
            );
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
