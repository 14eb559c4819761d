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

mod activity;
mod balancer;
#[doc(hidden)]
pub mod bench_support;
mod breaker;
mod clock;
pub mod config;
#[cfg(feature = "dashboard")]
mod dashboard;
mod error;
mod failover;
#[allow(unsafe_code)]
pub mod ffi;
mod health;
mod histogram;
mod job;
mod metrics;
mod prometheus;
mod provider;
mod queue;
mod request;
mod response;
mod service;
mod strategy;
mod template;
mod ticket;
mod timer;
mod transport;
mod window;
mod worker;

pub use balancer::Balancer;
pub use breaker::{CircuitEvent, CircuitInfo, CircuitState};
pub use config::{Config, StrategyKind};
#[cfg(feature = "dashboard")]
pub use dashboard::Dashboard;
pub use error::{AttemptError, AttemptKind, ConfigError, Error, ErrorKind};
pub use histogram::LatencySummary;
pub use metrics::{CircuitSnapshot, HealthSnapshot, ProviderSnapshot, ServiceSnapshot, Snapshot};
pub use request::{Method, Priority, Request};
pub use response::Response;
pub use ticket::Ticket;
pub use window::{Recent, Throughput};

/// The crate's version, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
