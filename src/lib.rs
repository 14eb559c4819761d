//! # switchyard
//!
//! A blocking client-side load balancer for programs that depend on several external
//! HTTP APIs. One [`Balancer`] serves many *services* (logical APIs such as `stocks`);
//! each service has several *providers* (upstreams), each with its own connection pool.
//! A request names a service and an *endpoint*; each provider maps the endpoint to its
//! own path, query and headers.
//!
//! ```no_run
//! use switchyard::{Balancer, Priority, Request};
//!
//! let lb = Balancer::from_toml_str(r#"
//!     [[services.stocks.providers]]
//!     name = "polygon"
//!     base_url = "https://api.polygon.io"
//!     query = { apiKey = "${POLYGON_KEY}" }
//!     endpoints = { quote = "/v2/last/trade/{symbol}" }
//! "#)?;
//! let resp = lb.call(Request::get("stocks", "quote").param("symbol", "AAPL").priority(Priority::High))?;
//! println!("{} from {}: {}", resp.status(), resp.provider(), String::from_utf8_lossy(resp.body()));
//! # Ok::<(), switchyard::Error>(())
//! ```
//!
//! Requests run on the calling thread when a connection slot is free and nothing as
//! urgent is waiting; otherwise they wait in a per-priority queue served by worker
//! threads. Every request gets exactly one outcome. See `ARCHITECTURE.md` for the flow.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod balancer;
#[doc(hidden)]
pub mod bench_support;
mod engine;
#[allow(unsafe_code)]
pub mod ffi;
mod flow;
mod foundation;
mod policy;
mod report;
mod telemetry;
mod upstream;

/// The configuration schema: [`Config`] and its sections.
pub mod config {
    pub use crate::foundation::config::*;
}

pub use balancer::Balancer;
pub use flow::ticket::Ticket;
pub use foundation::config::{Config, StrategyKind};
pub use foundation::error::{AttemptError, AttemptKind, ConfigError, Error, ErrorKind, QuotaWait};
pub use foundation::request::{Method, Priority, Request};
pub use foundation::response::Response;
pub use foundation::text::Text;
pub use policy::breaker::{CircuitEvent, CircuitInfo, CircuitState};
pub use policy::window::{Recent, Throughput};
#[cfg(feature = "dashboard")]
pub use report::dashboard::Dashboard;
pub use telemetry::event::{Event, EventKind};
pub use telemetry::explain::{ExplainedProvider, Explanation};
pub use telemetry::histogram::LatencySummary;
pub use telemetry::snapshot::{
    CircuitSnapshot, EventsSnapshot, HealthSnapshot, ProviderSnapshot, QuotaWindow, RateWindow,
    ServiceSnapshot, Snapshot,
};

/// The crate's version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
