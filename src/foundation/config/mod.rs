//! The configuration schema (TOML or JSON), `${VAR}` expansion, layering and validation.
//!
//! A document is read into [`Config`], which mirrors the file: `[defaults]`, then per
//! service optional overrides, then per provider optional `pool` and `circuit_breaker`
//! overrides. Loading layers defaults -> service -> provider and checks every
//! value, naming the key path of the first one it refuses.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::foundation::error::Error;
use crate::foundation::secrets;
use crate::foundation::template::Template;

mod dashboard;
pub use dashboard::DashboardConfig;
mod fewer_calls;
pub(crate) use fewer_calls::ResolvedBatch;
mod fleet;
pub use fleet::FleetConfig;
pub(crate) use fleet::ResolvedFleet;
mod resolve;
pub(crate) use resolve::{Resolved, ResolvedProvider, ResolvedQuota, ResolvedService};

/// Defines a settings table twice: complete (with the contract's defaults) and as an
/// override whose every key is optional, so a service or provider can change one key.
macro_rules! layered {
    (
        $(#[$meta:meta])*
        $name:ident, $overrides:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $( $field: $default, )* }
            }
        }

        #[doc = concat!("[`", stringify!($name), "`] with every key optional: set keys replace the inherited ones.")]
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $overrides {
            $(
                #[doc = concat!("Overrides `", stringify!($field), "`.")]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl $overrides {
            /// Writes the keys this override sets over `base`.
            pub fn apply_to(&self, base: &mut $name) {
                $( if let Some(v) = &self.$field { base.$field = v.clone(); } )*
            }
        }
    };
}

// After the macro, which it uses.
mod transport;
pub(crate) use transport::{ProxyChoice, ResolvedTls};
pub use transport::{ProxyConfig, ProxyOverrides, TlsConfig, TlsOverrides};

layered! {
    /// Connections to one provider.
    PoolConfig, PoolOverrides {
        /// Requests in flight to one provider at once. Defaults to 10.
        max_connections: usize = 10,
        /// How long an idle connection is kept open, in ms. Defaults to 30 s.
        keep_alive_ms: u64 = 30_000,
        /// Time allowed to open a connection, in ms. Defaults to 5 s.
        connect_timeout_ms: u64 = 5_000,
        /// An attempt fails when the provider sends nothing for this long, in ms, and at the
        /// latest after twice this in all. Defaults to 15 s.
        request_timeout_ms: u64 = 15_000,
        /// Largest response body accepted, in bytes. Defaults to 10 MiB.
        max_response_bytes: u64 = 10 * 1024 * 1024,
        /// Follow redirects to the same scheme, host and port (at most 5; 307 and 308
        /// keep method and body; 301, 302 and 303 only for GET and HEAD). Any other 3xx,
        /// and every 3xx when off, is returned as the answer. Defaults to false.
        follow_redirects: bool = false,
    }
}

layered! {
    /// When a provider's circuit opens, and how it closes again.
    BreakerConfig, BreakerOverrides {
        /// Consecutive failures that open the circuit. Defaults to 5.
        failure_threshold: u32 = 5,
        /// Share of failed calls inside the window that opens it. Defaults to 0.5.
        failure_rate_threshold: f64 = 0.5,
        /// Calls that must have ended inside the window before the rate rules apply. Defaults to 20.
        minimum_calls: u32 = 20,
        /// The rolling window of the rate rules, in ms. Defaults to 30 s.
        window_ms: u64 = 30_000,
        /// Calls slower than this count as slow, in ms; 0 turns the slow-call rule off. Defaults to 0.
        slow_call_ms: u64 = 0,
        /// Share of slow calls inside the window that opens it. Defaults to 1.0.
        slow_call_rate_threshold: f64 = 1.0,
        /// Successes in half-open that close the circuit. Defaults to 3.
        success_threshold: u32 = 3,
        /// Time open before half-open probes are let through, in ms. Defaults to 60 s.
        open_ms: u64 = 60_000,
        /// Probes in flight at once while half-open. Defaults to 3.
        half_open_max_calls: u32 = 3,
        /// When above 0, the rate rules look at the last this many calls instead of
        /// `window_ms` (a count-based window). Defaults to 0.
        window_calls: u32 = 0,
        /// Growth of the open time each time a half-open probe fails. Defaults to 1.0 (none).
        open_backoff_multiplier: f64 = 1.0,
        /// The longest open time, in ms. Defaults to 10 minutes.
        max_open_ms: u64 = 600_000,
    }
}

layered! {
    /// A service's waiting line.
    QueueConfig, QueueOverrides {
        /// Requests of one service that may wait for a worker or a connection slot. Defaults to 1000.
        max_size: usize = 1000,
    }
}

layered! {
    /// How often, and how soon, a failed request is tried again.
    RetryConfig, RetryOverrides {
        /// Attempts per request, all providers together. Defaults to 3.
        max_attempts: u32 = 3,
        /// Wait before retrying the same provider, in ms. Defaults to 1 s.
        base_delay_ms: u64 = 1_000,
        /// Growth of that wait per retry. Defaults to 2.0.
        backoff_multiplier: f64 = 2.0,
        /// The longest wait, in ms. Defaults to 30 s.
        max_backoff_ms: u64 = 30_000,
        /// Retries allowed as a share of requests inside the budget window. Defaults to 0.2.
        budget_ratio: f64 = 0.2,
        /// Retries allowed per second in any case. Defaults to 10.
        budget_min_per_sec: u32 = 10,
        /// The budget's window, in ms. Defaults to 10 s.
        budget_window_ms: u64 = 10_000,
    }
}

layered! {
    /// Active health checks of providers that have a `health_path`.
    HealthCheckConfig, HealthCheckOverrides {
        /// Time between checks, in ms. Defaults to 30 s.
        interval_ms: u64 = 30_000,
        /// Time allowed for one check, in ms. Defaults to 5 s.
        timeout_ms: u64 = 5_000,
        /// Failed checks in a row before a provider is marked down. Defaults to 2.
        retries: u32 = 2,
    }
}

layered! {
    /// A provider's own rate limits, smooth (GCRA): a limit of N per window lets calls
    /// through at most N in any window of that length. 0 means no limit.
    RateConfig, RateOverrides {
        /// Calls per second. Defaults to 0 (no limit).
        per_second: u64 = 0,
        /// Calls per minute. Defaults to 0 (no limit).
        per_minute: u64 = 0,
        /// Calls per hour. Defaults to 0 (no limit).
        per_hour: u64 = 0,
        /// Calls that may go at once after a quiet spell; the steady pace is lowered so
        /// that no window ever holds more than its limit. Defaults to 1 (perfectly even).
        burst: u64 = 1,
    }
}

layered! {
    /// Calendar quotas: counters that reset at the provider's boundary, not 24 hours
    /// after the balancer started. 0 means no quota.
    QuotaConfig, QuotaOverrides {
        /// Calls per day; the day starts at `reset_utc`. Defaults to 0 (no quota).
        per_day: u64 = 0,
        /// Calls per month; the month starts on the 1st at `reset_utc`. Defaults to 0.
        per_month: u64 = 0,
        /// When days (and months) begin, as `HH:MM` in UTC. Defaults to "00:00".
        reset_utc: String = "00:00".to_string(),
    }
}

layered! {
    /// What an answer means beyond the status rule (5xx and 429 are provider failures).
    ClassifyConfig, ClassifyOverrides {
        /// Statuses meaning "quota used up": the provider rests until its quota resets,
        /// the request fails over, and the breaker does not count it. Defaults to `[402]`.
        quota_statuses: Vec<u16> = vec![402],
        /// Substrings of a 2xx body meaning the same (a throttle notice sent with 200).
        quota_body: Vec<String> = Vec::new(),
        /// More statuses that count as provider failures.
        failure_statuses: Vec<u16> = Vec::new(),
        /// Substrings of a 2xx body that make it a provider failure.
        failure_body: Vec<String> = Vec::new(),
    }
}

layered! {
    /// What `strategy = "cost_aware"` keeps: a provider is used, cheapest first, while
    /// its record over the breaker's window meets this.
    SloConfig, SloOverrides {
        /// Share of attempts that must succeed. Defaults to 0.99.
        success_rate: f64 = 0.99,
        /// The 99th percentile latency allowed, in ms. Defaults to 2000.
        p99_ms: u64 = 2_000,
    }
}

/// Options of one logical endpoint of a service (`[services.S.endpoints.E]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointOptions {
    /// Identical requests (GET or HEAD, or marked idempotent: same endpoint, parameters,
    /// headers and body) in flight at once share one upstream call; each caller gets its
    /// own response and its own deadline. Defaults to true.
    pub coalesce: bool,
    /// Above 0: 2xx answers to requests that may share a call are served from memory for
    /// this long (less when the answer's `Cache-Control` says so). Defaults to 0, off.
    pub cache_ttl_ms: u64,
    /// At most this many answers are kept; the oldest go first. Defaults to 10000.
    pub cache_max_entries: usize,
    /// Above 0: a request that may share a call (GET, HEAD or idempotent) with no answer
    /// after this long also goes to a different provider; the first answer wins. Hedges
    /// draw on the retry budget. Defaults to 0, off.
    pub hedge_after_ms: u64,
    /// Above 0: requests for this endpoint arriving within this many ms are merged into
    /// one call to a provider that declares a `batch` for it. Defaults to 0, off.
    pub batch_window_ms: u64,
    /// Items in one batch call at most. Defaults to 50.
    pub batch_max: usize,
}

/// How a provider answers many items of one endpoint in one call (`batch = { E = {...} }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Path template of the batch call (other `{param}`s of the request fill it).
    pub path: String,
    /// The request parameter that names the item (the same for every provider).
    pub param: String,
    /// The query parameter the batch call lists the items in.
    pub query: String,
    /// What goes between two items in that list. Defaults to ",".
    #[serde(default = "default_join")]
    pub join: String,
    /// JSON pointer to one item in the answer, with `{param}` where the item's name goes.
    pub item: String,
}

fn default_join() -> String {
    ",".to_string()
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            coalesce: true,
            cache_ttl_ms: 0,
            cache_max_entries: 10_000,
            hedge_after_ms: 0,
            batch_window_ms: 0,
            batch_max: 50,
        }
    }
}

/// How a provider is picked among the available ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest requests in flight.
    LeastConnections,
    /// Weighted random by inverse recent response time.
    WeightedResponse,
    /// A blended score of uptime, speed, errors and cost.
    HealthBased,
    /// Two random choices compared by peak-EWMA latency times load.
    PeakEwma,
    /// The cheapest provider whose recent record meets the service's `slo`.
    CostAware,
}

impl StrategyKind {
    /// The name used in configuration and metrics.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round_robin",
            StrategyKind::LeastConnections => "least_connections",
            StrategyKind::WeightedResponse => "weighted_response",
            StrategyKind::HealthBased => "health_based",
            StrategyKind::PeakEwma => "peak_ewma",
            StrategyKind::CostAware => "cost_aware",
        }
    }
}

/// The `[defaults]` table: settings every service starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// The load-balancing strategy. Defaults to `health_based`.
    pub strategy: StrategyKind,
    /// Used while the main strategy has too little data. Defaults to `round_robin`.
    pub fallback_strategy: StrategyKind,
    /// Worker threads of the whole balancer; 0 picks one per connection slot. Defaults to 0.
    pub workers: usize,
    /// A whole request's time: queue wait, every attempt and backoff, in ms. Defaults to 45 s.
    pub deadline_ms: u64,
    /// 0 seeds picks from the OS; any other value makes them reproducible. Defaults to 0.
    pub random_seed: u64,
    /// Connection settings per provider.
    pub pool: PoolConfig,
    /// Circuit breaker settings per provider.
    pub circuit_breaker: BreakerConfig,
    /// Queue settings per service.
    pub queue: QueueConfig,
    /// Retry settings per service.
    pub retry: RetryConfig,
    /// Health check settings per service.
    pub health_check: HealthCheckConfig,
    /// Rate limits per provider.
    pub rate: RateConfig,
    /// Calendar quotas per provider.
    pub quota: QuotaConfig,
    /// What answers mean, per provider.
    pub classify: ClassifyConfig,
    /// Share of each provider's rate, quota and connection slots that only critical and
    /// high requests may use; normal and low are refused first. 0 to 1. Defaults to 0.
    pub reserve: f64,
    /// What `cost_aware` keeps, per service.
    pub slo: SloConfig,
    /// Where quota and rate state is kept across restarts; none keeps it in memory only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<String>,
    /// How providers are reached through proxies.
    pub proxy: ProxyConfig,
    /// What providers' TLS trusts and presents.
    pub tls: TlsConfig,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            strategy: StrategyKind::HealthBased,
            fallback_strategy: StrategyKind::RoundRobin,
            workers: 0,
            deadline_ms: 45_000,
            random_seed: 0,
            pool: PoolConfig::default(),
            circuit_breaker: BreakerConfig::default(),
            queue: QueueConfig::default(),
            retry: RetryConfig::default(),
            health_check: HealthCheckConfig::default(),
            rate: RateConfig::default(),
            quota: QuotaConfig::default(),
            classify: ClassifyConfig::default(),
            reserve: 0.0,
            slo: SloConfig::default(),
            state_file: None,
            proxy: ProxyConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// One logical API (`[services.NAME]`): overrides of the defaults, and its providers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Overrides `defaults.strategy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyKind>,
    /// Overrides `defaults.fallback_strategy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_strategy: Option<StrategyKind>,
    /// Overrides `defaults.deadline_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Overrides of `defaults.pool` for every provider of the service.
    pub pool: PoolOverrides,
    /// Overrides of `defaults.circuit_breaker` for every provider of the service.
    pub circuit_breaker: BreakerOverrides,
    /// Overrides of `defaults.queue`.
    pub queue: QueueOverrides,
    /// Overrides of `defaults.retry`.
    pub retry: RetryOverrides,
    /// Overrides of `defaults.health_check`.
    pub health_check: HealthCheckOverrides,
    /// Overrides of `defaults.rate` for every provider of the service.
    pub rate: RateOverrides,
    /// Overrides of `defaults.quota` for every provider of the service.
    pub quota: QuotaOverrides,
    /// Overrides of `defaults.classify` for every provider of the service.
    pub classify: ClassifyOverrides,
    /// Overrides `defaults.reserve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserve: Option<f64>,
    /// Overrides of `defaults.slo`.
    pub slo: SloOverrides,
    /// Overrides of `defaults.proxy` for every provider of the service.
    pub proxy: ProxyOverrides,
    /// Overrides of `defaults.tls` for every provider of the service.
    pub tls: TlsOverrides,
    /// Options per logical endpoint (or raw path), by name.
    pub endpoints: BTreeMap<String, EndpointOptions>,
    /// The upstreams that serve this service. At least one.
    pub providers: Vec<ProviderConfig>,
}

/// One upstream (`[[services.NAME.providers]]`). `Debug` and `Serialize` show header
/// and query values as `[redacted]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique in the whole configuration. Required.
    pub name: String,
    /// `http://` or `https://` URL; a path in it prefixes every endpoint. Required.
    pub base_url: String,
    /// 1, 2 or 3: lower tiers are tried first. Defaults to 1.
    #[serde(default = "default_tier")]
    pub tier: u8,
    /// Share of traffic; defaults to 100, 75 or 50 by tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Prior success rate, 0 to 1; orders alternatives inside a tier. Defaults to 1.0.
    #[serde(default = "default_reliability")]
    pub reliability: f64,
    /// Cost of one attempt, in any unit; summed in the metrics. Defaults to 0.
    #[serde(default)]
    pub cost_per_request: f64,
    /// Path of active health checks; none means no active checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// Headers sent with every request (secret values allowed: they are never shown).
    #[serde(default, serialize_with = "secrets::redacted_values")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters sent with every request, before the request's own (never shown).
    #[serde(default, serialize_with = "secrets::redacted_values")]
    pub query: BTreeMap<String, String>,
    /// Endpoint name -> path template with `{param}` placeholders.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// Overrides of the service's pool settings.
    #[serde(default)]
    pub pool: PoolOverrides,
    /// Overrides of the service's circuit breaker settings.
    #[serde(default)]
    pub circuit_breaker: BreakerOverrides,
    /// Overrides of the service's rate limits.
    #[serde(default)]
    pub rate: RateOverrides,
    /// Overrides of the service's quotas.
    #[serde(default)]
    pub quota: QuotaOverrides,
    /// Overrides of the service's proxy settings.
    #[serde(default)]
    pub proxy: ProxyOverrides,
    /// Overrides of the service's TLS settings.
    #[serde(default)]
    pub tls: TlsOverrides,
    /// Overrides of the service's answer classification.
    #[serde(default)]
    pub classify: ClassifyOverrides,
    /// Endpoint name -> (field -> JSON pointer into this provider's 2xx answer): the
    /// caller's body becomes an object of those fields whichever provider answered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shape: BTreeMap<String, BTreeMap<String, String>>,
    /// Endpoint name -> how this provider answers many of its items in one call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub batch: BTreeMap<String, BatchConfig>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("base_url", &secrets::shown_url(&self.base_url))
            .field("tier", &self.tier)
            .field("weight", &self.weight)
            .field("reliability", &self.reliability)
            .field("cost_per_request", &self.cost_per_request)
            .field("health_path", &self.health_path)
            .field("headers", &secrets::RedactedMap(&self.headers))
            .field("query", &secrets::RedactedMap(&self.query))
            .field("endpoints", &self.endpoints)
            .field("pool", &self.pool)
            .field("circuit_breaker", &self.circuit_breaker)
            .field("rate", &self.rate)
            .field("quota", &self.quota)
            .field("classify", &self.classify)
            .field("proxy", &self.proxy)
            .field("tls", &self.tls)
            .field("shape", &self.shape)
            .field("batch", &self.batch)
            .finish()
    }
}

fn default_tier() -> u8 {
    1
}

fn default_reliability() -> f64 {
    1.0
}

/// A whole configuration document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Settings every service starts from.
    #[serde(default)]
    pub defaults: Defaults,
    /// The services by name. At least one.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    /// The status server started by `Balancer::serve_dashboard`.
    #[serde(default)]
    pub dashboard: DashboardConfig,
    /// Shared quotas across processes (cargo feature `fleet`); absent: each process alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetConfig>,
}

/// The format of a configuration text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

impl Config {
    /// Checks the whole configuration as `Balancer::new` would (files it names included),
    /// without starting anything or reaching any provider or Redis.
    pub fn validate(&self) -> Result<(), Error> {
        self.resolve().map(|_| ())
    }

    /// Parses a TOML document, expanding `${VAR}` from the environment.
    pub fn from_toml_str(text: &str) -> Result<Config, Error> {
        Config::from_str_as(text, Format::Toml)
    }

    /// Parses a JSON document, expanding `${VAR}` from the environment.
    pub fn from_json_str(text: &str) -> Result<Config, Error> {
        Config::from_str_as(text, Format::Json)
    }

    /// Reads a file: JSON when its name ends in `.json`, TOML otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config("", format!("cannot read {}: {e}", path.display())))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Config::from_str_as(&text, if is_json { Format::Json } else { Format::Toml })
    }

    /// Parses text in the given format, or guesses it when `format` is `None`
    /// (a document whose first non-blank character is `{` is JSON).
    pub fn from_str_as(text: &str, format: impl Into<Option<Format>>) -> Result<Config, Error> {
        let format = format.into().unwrap_or_else(|| {
            if text.trim_start().starts_with('{') {
                Format::Json
            } else {
                Format::Toml
            }
        });
        let mut tree: serde_json::Value = match format {
            Format::Json => serde_json::from_str(text).map_err(|e| {
                // serde_json names the place, never the text.
                Error::config("", format!("invalid JSON: {e}"))
            })?,
            Format::Toml => {
                let table: toml::Table = toml::from_str(text).map_err(|e| {
                    // toml's own message quotes the line, which may hold a secret.
                    let at = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
                    let line = text[..at].matches('\n').count() + 1;
                    let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
                    let why = secrets::scrub(e.message(), &[]);
                    Error::config(
                        "",
                        format!("invalid TOML at line {line}, column {column}: {why}"),
                    )
                })?;
                serde_json::to_value(table).map_err(|e| Error::config("", e.to_string()))?
            }
        };
        let mut path = String::new();
        let mut expanded = Vec::new();
        expand_env(&mut tree, &mut path, &mut expanded)?;
        let scrubbed = |e: Error| match e {
            Error::Config(c) => Error::config(c.path, secrets::scrub(&c.reason, &expanded)),
            other => other,
        };
        let config: Config = serde_path_to_error::deserialize(tree)
            .map_err(|e| {
                let path = e.path().to_string();
                Error::config(
                    if path == "." { String::new() } else { path },
                    e.into_inner().to_string(),
                )
            })
            .map_err(scrubbed)?;
        config.resolve().map_err(scrubbed)?;
        Ok(config)
    }
}

/// Replaces `${VAR}` in every string of the tree; `path` tracks where we are for errors.
/// The values brought in are added to `expanded`, to be kept out of messages.
fn expand_env(
    value: &mut serde_json::Value,
    path: &mut String,
    expanded: &mut Vec<String>,
) -> Result<(), Error> {
    match value {
        serde_json::Value::String(s) if s.contains("${") => {
            *s = expand_string(s, expanded).map_err(|why| Error::config(path.clone(), why))?;
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, expanded)?;
                path.truncate(len);
            }
        }
        serde_json::Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                expand_env(item, path, expanded)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_string(s: &str, expanded: &mut Vec<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "a `${` has no closing `}`".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable reference"
            ));
        }
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        expanded.push(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
