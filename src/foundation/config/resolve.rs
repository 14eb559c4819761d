//! Layering defaults -> service -> provider, and checking every value, naming the key
//! path of the first one refused.

use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::foundation::calendar::TimeOfDay;

impl Config {
    /// Layers defaults -> service -> provider and validates every value.
    pub(crate) fn resolve(&self) -> Result<Resolved, Error> {
        let d = &self.defaults;
        check_defaults(d)?;
        if self.services.is_empty() {
            return Err(Error::config("services", "no service is configured"));
        }
        let mut names = HashSet::new();
        let mut services = Vec::with_capacity(self.services.len());
        for (service_name, svc) in &self.services {
            let at = format!("services.{service_name}");
            if service_name.is_empty() {
                return Err(Error::config("services", "a service name is empty"));
            }
            let mut pool = d.pool.clone();
            svc.pool.apply_to(&mut pool);
            let mut breaker = d.circuit_breaker.clone();
            svc.circuit_breaker.apply_to(&mut breaker);
            let mut queue = d.queue.clone();
            svc.queue.apply_to(&mut queue);
            let mut retry = d.retry.clone();
            svc.retry.apply_to(&mut retry);
            let mut health_check = d.health_check.clone();
            svc.health_check.apply_to(&mut health_check);
            let deadline_ms = svc.deadline_ms.unwrap_or(d.deadline_ms);
            check_service_tables(&at, deadline_ms, &queue, &retry, &health_check)?;
            let mut rate = d.rate.clone();
            svc.rate.apply_to(&mut rate);
            let mut quota = d.quota.clone();
            svc.quota.apply_to(&mut quota);
            let mut classify = d.classify.clone();
            svc.classify.apply_to(&mut classify);
            let mut slo = d.slo.clone();
            svc.slo.apply_to(&mut slo);
            let reserve = svc.reserve.unwrap_or(d.reserve);
            share(&at, "reserve", reserve, true)?;
            check_slo(&format!("{at}.slo"), &slo)?;
            check_rate(&format!("{at}.rate"), &rate)?;
            check_quota(&format!("{at}.quota"), &quota)?;
            check_classify(&format!("{at}.classify"), &classify)?;
            if svc.providers.is_empty() {
                return Err(Error::config(
                    format!("{at}.providers"),
                    "a service needs at least one provider",
                ));
            }
            let mut providers = Vec::with_capacity(svc.providers.len());
            for (i, p) in svc.providers.iter().enumerate() {
                let at = format!("{at}.providers[{i}]");
                if !names.insert(p.name.as_str()) {
                    return Err(Error::config(
                        format!("{at}.name"),
                        format!("provider name `{}` is used twice", p.name),
                    ));
                }
                let mut pool = pool.clone();
                p.pool.apply_to(&mut pool);
                let mut breaker = breaker.clone();
                p.circuit_breaker.apply_to(&mut breaker);
                let mut limits = Limits {
                    rate: rate.clone(),
                    quota: quota.clone(),
                    classify: classify.clone(),
                };
                p.rate.apply_to(&mut limits.rate);
                p.quota.apply_to(&mut limits.quota);
                p.classify.apply_to(&mut limits.classify);
                let mut resolved = resolve_provider(&at, p, pool, breaker, limits)?;
                resolved.reserve = reserve;
                let mut proxy = d.proxy.clone();
                svc.proxy.apply_to(&mut proxy);
                p.proxy.apply_to(&mut proxy);
                // Each named where the value that decides was written.
                let written = |provider_set: bool, service_set: bool, key: &str| {
                    if provider_set {
                        format!("{at}.{key}")
                    } else if service_set {
                        format!("services.{service_name}.{key}")
                    } else {
                        format!("defaults.{key}")
                    }
                };
                let proxy_at = written(
                    p.proxy != ProxyOverrides::default(),
                    svc.proxy != ProxyOverrides::default(),
                    "proxy",
                );
                resolved.proxy = transport::resolve_proxy(&proxy_at, &proxy, &resolved.base_url)?;
                let mut tls = d.tls.clone();
                svc.tls.apply_to(&mut tls);
                p.tls.apply_to(&mut tls);
                let tls_at = written(
                    p.tls != TlsOverrides::default(),
                    svc.tls != TlsOverrides::default(),
                    "tls",
                );
                resolved.tls = transport::resolve_tls(&tls_at, &tls)?;
                providers.push(resolved);
            }
            let strategy = svc.strategy.unwrap_or(d.strategy);
            let fallback_strategy = svc.fallback_strategy.unwrap_or(d.fallback_strategy);
            let cost_aware = StrategyKind::CostAware;
            if (strategy == cost_aware || fallback_strategy == cost_aware)
                && providers.iter().all(|p| p.cost_per_request == 0.0)
            {
                let key = if strategy == cost_aware {
                    "strategy"
                } else {
                    "fallback_strategy"
                };
                return Err(Error::config(
                    format!("{at}.{key}"),
                    "cost_aware needs a cost_per_request on at least one provider",
                ));
            }
            for (name, options) in &svc.endpoints {
                let here = format!("{at}.endpoints.{name}");
                fewer_calls::check_endpoint(&here, name, options, &providers)?;
            }
            services.push(ResolvedService {
                endpoints: svc.endpoints.clone(),
                name: service_name.clone(),
                strategy,
                fallback_strategy,
                deadline: Duration::from_millis(deadline_ms),
                slo,
                queue,
                retry,
                health_check,
                providers,
            });
        }
        if let Some(token) = &self.dashboard.token {
            if token.len() < 8 || token.chars().any(|c| c.is_control() || c.is_whitespace()) {
                // The token itself is a secret: never echo it.
                return Err(Error::config(
                    "dashboard.token",
                    "must be at least 8 characters, without spaces or control characters",
                ));
            }
        }
        let state_file = match &d.state_file {
            Some(path) => Some(check_state_file(path)?),
            None => None,
        };
        let fleet = self.fleet.as_ref().map(|f| f.resolve()).transpose()?;
        Ok(Resolved {
            state_file,
            fleet,
            dashboard: self.dashboard.clone(),
            workers: d.workers,
            random_seed: d.random_seed,
            services,
        })
    }
}

/// A validated configuration with every setting layered down to where it applies.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Where quota and rate state is kept across restarts.
    pub state_file: Option<std::path::PathBuf>,
    /// Quotas shared with other processes through Redis.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code))]
    pub fleet: Option<super::ResolvedFleet>,
    pub dashboard: DashboardConfig,
    pub workers: usize,
    pub random_seed: u64,
    pub services: Vec<ResolvedService>,
}

#[derive(Debug, Clone)]
pub(crate) struct ResolvedService {
    pub name: String,
    pub strategy: StrategyKind,
    pub fallback_strategy: StrategyKind,
    pub deadline: Duration,
    pub slo: SloConfig,
    pub endpoints: BTreeMap<String, EndpointOptions>,
    pub queue: QueueConfig,
    pub retry: RetryConfig,
    pub health_check: HealthCheckConfig,
    pub providers: Vec<ResolvedProvider>,
}

#[derive(Debug, Clone)]
pub(crate) struct ResolvedProvider {
    pub name: String,
    /// Scheme, authority and path prefix, without a trailing `/`.
    pub base_url: String,
    pub tier: u8,
    pub weight: u32,
    pub reliability: f64,
    pub cost_per_request: f64,
    pub health_path: Option<String>,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub endpoints: BTreeMap<String, Template>,
    pub pool: PoolConfig,
    pub circuit_breaker: BreakerConfig,
    pub rate: RateConfig,
    pub quota: ResolvedQuota,
    pub classify: ClassifyConfig,
    /// The service's `reserve`.
    pub reserve: f64,
    /// Response shapes by endpoint name.
    pub shapes: BTreeMap<String, crate::foundation::shape::Shape>,
    /// Batch forms by endpoint name.
    pub batches: BTreeMap<String, fewer_calls::ResolvedBatch>,
    /// How it is reached.
    pub proxy: ProxyChoice,
    /// What its TLS trusts and presents, read once.
    pub tls: ResolvedTls,
}

/// A provider's quotas, with the reset time read.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ResolvedQuota {
    pub per_day: u64,
    pub per_month: u64,
    pub reset: TimeOfDay,
}

/// What limits a provider's traffic, layered down to it.
struct Limits {
    rate: RateConfig,
    quota: QuotaConfig,
    classify: ClassifyConfig,
}

fn positive(at: &str, key: &str, v: u64) -> Result<(), Error> {
    if v == 0 {
        return Err(Error::config(
            format!("{at}.{key}"),
            "must be greater than 0",
        ));
    }
    Ok(())
}

fn share(at: &str, key: &str, v: f64, zero_ok: bool) -> Result<(), Error> {
    let ok = v.is_finite() && v <= 1.0 && (v > 0.0 || (zero_ok && v == 0.0));
    if !ok {
        let range = if zero_ok {
            "0 to 1"
        } else {
            "above 0 and at most 1"
        };
        return Err(Error::config(
            format!("{at}.{key}"),
            format!("{v} is not {range}"),
        ));
    }
    Ok(())
}

fn check_defaults(d: &Defaults) -> Result<(), Error> {
    positive("defaults", "deadline_ms", d.deadline_ms)?;
    share("defaults", "reserve", d.reserve, true)?;
    check_slo("defaults.slo", &d.slo)?;
    check_rate("defaults.rate", &d.rate)?;
    check_quota("defaults.quota", &d.quota)?;
    check_classify("defaults.classify", &d.classify)?;
    if d.workers > 4096 {
        return Err(Error::config(
            "defaults.workers",
            format!("{} is more than 4096", d.workers),
        ));
    }
    check_pool("defaults.pool", &d.pool)?;
    check_breaker("defaults.circuit_breaker", &d.circuit_breaker)?;
    check_service_tables(
        "defaults",
        d.deadline_ms,
        &d.queue,
        &d.retry,
        &d.health_check,
    )
}

fn check_service_tables(
    at: &str,
    deadline_ms: u64,
    queue: &QueueConfig,
    retry: &RetryConfig,
    health: &HealthCheckConfig,
) -> Result<(), Error> {
    positive(at, "deadline_ms", deadline_ms)?;
    positive(&format!("{at}.queue"), "max_size", queue.max_size as u64)?;
    let r = format!("{at}.retry");
    positive(&r, "max_attempts", retry.max_attempts.into())?;
    if !(retry.backoff_multiplier.is_finite() && retry.backoff_multiplier >= 1.0) {
        return Err(Error::config(
            format!("{r}.backoff_multiplier"),
            format!("{} is not a number of at least 1", retry.backoff_multiplier),
        ));
    }
    if retry.max_backoff_ms < retry.base_delay_ms {
        return Err(Error::config(
            format!("{r}.max_backoff_ms"),
            format!(
                "{} is less than base_delay_ms ({})",
                retry.max_backoff_ms, retry.base_delay_ms
            ),
        ));
    }
    if !(retry.budget_ratio.is_finite() && retry.budget_ratio >= 0.0) {
        return Err(Error::config(
            format!("{r}.budget_ratio"),
            format!("{} is negative", retry.budget_ratio),
        ));
    }
    positive(&r, "budget_window_ms", retry.budget_window_ms)?;
    let h = format!("{at}.health_check");
    positive(&h, "interval_ms", health.interval_ms)?;
    positive(&h, "timeout_ms", health.timeout_ms)
}

fn check_pool(at: &str, pool: &PoolConfig) -> Result<(), Error> {
    positive(at, "max_connections", pool.max_connections as u64)?;
    if pool.max_connections > 4096 {
        return Err(Error::config(
            format!("{at}.max_connections"),
            format!("{} is more than 4096", pool.max_connections),
        ));
    }
    positive(at, "keep_alive_ms", pool.keep_alive_ms)?;
    positive(at, "connect_timeout_ms", pool.connect_timeout_ms)?;
    positive(at, "request_timeout_ms", pool.request_timeout_ms)?;
    positive(at, "max_response_bytes", pool.max_response_bytes)
}

fn check_breaker(at: &str, b: &BreakerConfig) -> Result<(), Error> {
    positive(at, "failure_threshold", b.failure_threshold.into())?;
    share(
        at,
        "failure_rate_threshold",
        b.failure_rate_threshold,
        false,
    )?;
    positive(at, "minimum_calls", b.minimum_calls.into())?;
    positive(at, "window_ms", b.window_ms)?;
    share(
        at,
        "slow_call_rate_threshold",
        b.slow_call_rate_threshold,
        false,
    )?;
    positive(at, "success_threshold", b.success_threshold.into())?;
    positive(at, "open_ms", b.open_ms)?;
    positive(at, "half_open_max_calls", b.half_open_max_calls.into())?;
    if !(b.open_backoff_multiplier.is_finite() && b.open_backoff_multiplier >= 1.0) {
        return Err(Error::config(
            format!("{at}.open_backoff_multiplier"),
            format!(
                "{} is not a number of at least 1",
                b.open_backoff_multiplier
            ),
        ));
    }
    if b.max_open_ms < b.open_ms {
        return Err(Error::config(
            format!("{at}.max_open_ms"),
            format!("{} is less than open_ms ({})", b.max_open_ms, b.open_ms),
        ));
    }
    Ok(())
}

fn check_slo(at: &str, slo: &SloConfig) -> Result<(), Error> {
    share(at, "success_rate", slo.success_rate, false)?;
    positive(at, "p99_ms", slo.p99_ms)
}

fn check_rate(at: &str, rate: &RateConfig) -> Result<(), Error> {
    positive(at, "burst", rate.burst)?;
    for (key, limit) in [
        ("per_second", rate.per_second),
        ("per_minute", rate.per_minute),
        ("per_hour", rate.per_hour),
    ] {
        if limit > 1_000_000_000 {
            return Err(Error::config(
                format!("{at}.{key}"),
                format!("{limit} is more than 1000000000"),
            ));
        }
        if limit != 0 && rate.burst > limit {
            return Err(Error::config(
                format!("{at}.burst"),
                format!("{} is more than {key} ({limit})", rate.burst),
            ));
        }
    }
    Ok(())
}

fn check_quota(at: &str, quota: &QuotaConfig) -> Result<TimeOfDay, Error> {
    TimeOfDay::parse(&quota.reset_utc).map_err(|why| Error::config(format!("{at}.reset_utc"), why))
}

fn check_classify(at: &str, c: &ClassifyConfig) -> Result<(), Error> {
    for (key, statuses) in [
        ("quota_statuses", &c.quota_statuses),
        ("failure_statuses", &c.failure_statuses),
    ] {
        if let Some(bad) = statuses.iter().find(|s| !(300..=599).contains(*s)) {
            return Err(Error::config(
                format!("{at}.{key}"),
                format!("{bad} is not a status from 300 to 599"),
            ));
        }
    }
    if let Some(both) = c
        .quota_statuses
        .iter()
        .find(|s| c.failure_statuses.contains(s))
    {
        return Err(Error::config(
            format!("{at}.failure_statuses"),
            format!("{both} is also in quota_statuses; an answer means one thing"),
        ));
    }
    for (key, texts) in [
        ("quota_body", &c.quota_body),
        ("failure_body", &c.failure_body),
    ] {
        if texts.iter().any(|t| t.is_empty()) {
            return Err(Error::config(
                format!("{at}.{key}"),
                "an empty substring would match every body",
            ));
        }
    }
    Ok(())
}

/// The state file's path, once its directory is known to take new files.
fn check_state_file(path: &str) -> Result<std::path::PathBuf, Error> {
    let at = "defaults.state_file";
    let file = std::path::PathBuf::from(path);
    if path.is_empty() || file.file_name().is_none() {
        return Err(Error::config(at, format!("{path:?} does not name a file")));
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    // Written the way the state is (a new file beside it), so a refusal shows now.
    let probe = dir.join(format!(".switchyard-probe-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(file)
        }
        Err(e) => Err(Error::config(
            at,
            format!("cannot write in directory {}: {e}", dir.display()),
        )),
    }
}

/// Provider names that mean something else to callers.
const RESERVED_NAMES: [&str; 1] = ["fallback"];

fn resolve_provider(
    at: &str,
    p: &ProviderConfig,
    pool: PoolConfig,
    breaker: BreakerConfig,
    limits: Limits,
) -> Result<ResolvedProvider, Error> {
    if p.name.trim().is_empty() {
        return Err(Error::config(format!("{at}.name"), "is empty"));
    }
    if RESERVED_NAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(&p.name))
    {
        return Err(Error::config(
            format!("{at}.name"),
            format!(
                "`{}` is reserved: answers made by a fallback name it as their provider",
                p.name
            ),
        ));
    }
    if p.name
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err(Error::config(
            format!("{at}.name"),
            format!(
                "`{}` has a quote, backslash or control character",
                p.name.escape_debug()
            ),
        ));
    }
    let base_url = check_base_url(&p.base_url).map_err(|why| {
        let shown = crate::foundation::secrets::shown_url(&p.base_url);
        Error::config(format!("{at}.base_url"), format!("{shown:?} {why}"))
    })?;
    if !(1..=3).contains(&p.tier) {
        return Err(Error::config(
            format!("{at}.tier"),
            format!("{} is not 1, 2 or 3", p.tier),
        ));
    }
    if p.weight == Some(0) {
        return Err(Error::config(
            format!("{at}.weight"),
            "must be greater than 0",
        ));
    }
    share(at, "reliability", p.reliability, true)?;
    if !(p.cost_per_request.is_finite() && p.cost_per_request >= 0.0) {
        return Err(Error::config(
            format!("{at}.cost_per_request"),
            format!("{} is not a number of at least 0", p.cost_per_request),
        ));
    }
    if let Some(h) = &p.health_path {
        if !h.starts_with('/') || h.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::config(
                format!("{at}.health_path"),
                format!("{h:?} is not a path starting with /"),
            ));
        }
    }
    for (name, value) in &p.headers {
        if name.is_empty()
            || !name
                .bytes()
                .all(crate::foundation::request::is_header_name_byte)
        {
            return Err(Error::config(
                format!("{at}.headers"),
                format!("{name:?} is not a valid header name"),
            ));
        }
        if let Some(why) = crate::foundation::request::header_value_problem(value) {
            // The value may be a secret: name the header only.
            return Err(Error::config(format!("{at}.headers.{name}"), why));
        }
    }
    for name in p.query.keys() {
        if name.is_empty() {
            return Err(Error::config(
                format!("{at}.query"),
                "a query parameter name is empty",
            ));
        }
    }
    let mut endpoints = BTreeMap::new();
    for (name, template) in &p.endpoints {
        let here = format!("{at}.endpoints.{name}");
        if name.is_empty() || name.starts_with('/') {
            return Err(Error::config(
                here,
                "an endpoint name must not be empty or start with /",
            ));
        }
        let parsed = Template::parse(template)
            .map_err(|why| Error::config(&here, format!("{template:?} {why}")))?;
        if let Some(clash) = parsed.params().find(|param| p.query.contains_key(*param)) {
            return Err(Error::config(
                here,
                format!("{{{clash}}} is also a fixed query parameter of this provider; rename one"),
            ));
        }
        endpoints.insert(name.clone(), parsed);
    }
    check_pool(&format!("{at}.pool"), &pool)?;
    check_breaker(&format!("{at}.circuit_breaker"), &breaker)?;
    check_rate(&format!("{at}.rate"), &limits.rate)?;
    let reset = check_quota(&format!("{at}.quota"), &limits.quota)?;
    check_classify(&format!("{at}.classify"), &limits.classify)?;
    let shapes = fewer_calls::resolve_shapes(at, p)?;
    let batches = fewer_calls::resolve_batches(at, p)?;
    let weight = p.weight.unwrap_or(match p.tier {
        1 => 100,
        2 => 75,
        _ => 50,
    });
    Ok(ResolvedProvider {
        name: p.name.clone(),
        base_url,
        tier: p.tier,
        weight,
        reliability: p.reliability,
        cost_per_request: p.cost_per_request,
        health_path: p.health_path.clone(),
        headers: p
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        query: p
            .query
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        endpoints,
        pool,
        circuit_breaker: breaker,
        rate: limits.rate,
        quota: ResolvedQuota {
            per_day: limits.quota.per_day,
            per_month: limits.quota.per_month,
            reset,
        },
        classify: limits.classify,
        reserve: 0.0,
        shapes,
        batches,
        proxy: ProxyChoice::FromEnvironment,
        tls: ResolvedTls::default(),
    })
}

/// Returns the URL without a trailing `/`, or why it is refused.
fn check_base_url(url: &str) -> Result<String, &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("is not an http(s) URL")?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err("has no host");
    }
    if url.contains(['?', '#']) {
        return Err("has a query or fragment; use the provider's `query` table");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("has a space or control character");
    }
    if authority.contains('@') {
        return Err("has credentials in it; use the provider's `headers` table");
    }
    ureq::http::Uri::try_from(url).map_err(|_| "is not a valid URL")?;
    Ok(url.trim_end_matches('/').to_string())
}
