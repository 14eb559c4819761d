//! The `[fleet]` table: processes sharing one quota per provider through Redis.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::foundation::error::Error;
use crate::foundation::secrets;

/// The `[fleet]` table. `Debug` and `Serialize` show a password in `redis_url` as
/// `[redacted]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// `redis://[:password@]host:port[/db]`, `rediss://...` or `unix:///path`.
    #[serde(serialize_with = "redacted_url")]
    pub redis_url: String,
    /// Key prefix: processes sharing it share state.
    pub namespace: String,
    /// How long a change another process made may go unseen, and how often a process
    /// that lost Redis tries it again.
    pub sync_ms: u64,
    /// Quota tokens taken from Redis at a time (0: every request asks).
    pub lease: u64,
    /// Processes sharing; with Redis unreachable each uses `limit / expected_size`.
    pub expected_size: u64,
    /// The longest a Redis call may take before the process goes on without it.
    pub timeout_ms: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            redis_url: String::new(),
            namespace: "switchyard".into(),
            sync_ms: 200,
            lease: 10,
            expected_size: 1,
            timeout_ms: 50,
        }
    }
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis_url", &without_password(&self.redis_url))
            .field("namespace", &self.namespace)
            .field("sync_ms", &self.sync_ms)
            .field("lease", &self.lease)
            .field("expected_size", &self.expected_size)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

fn redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&without_password(url))
}

/// The URL with what sits before `@` in its authority (user and password) redacted.
pub(crate) fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}@{}", secrets::REDACTED, &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The fleet settings, checked. `Debug` hides a password in the URL.
#[derive(Clone)]
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
pub(crate) struct ResolvedFleet {
    pub redis_url: String,
    pub namespace: String,
    pub sync: Duration,
    pub lease: u64,
    pub expected_size: u64,
    pub timeout: Duration,
}

impl std::fmt::Debug for ResolvedFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedFleet")
            .field("redis_url", &without_password(&self.redis_url))
            .field("namespace", &self.namespace)
            .field("lease", &self.lease)
            .field("expected_size", &self.expected_size)
            .finish_non_exhaustive()
    }
}

impl FleetConfig {
    pub(crate) fn resolve(&self) -> Result<ResolvedFleet, Error> {
        if !cfg!(feature = "fleet") {
            return Err(Error::config(
                "fleet",
                "fleet mode needs the cargo feature \"fleet\"",
            ));
        }
        check_url(&self.redis_url)?;
        // And as the client will read it (its message could quote the password).
        #[cfg(feature = "fleet")]
        if redis::Client::open(self.redis_url.as_str()).is_err() {
            return Err(Error::config(
                "fleet.redis_url",
                "is not a URL the Redis client accepts",
            ));
        }
        if self.namespace.is_empty() || self.namespace.contains(['{', '}', ' ']) {
            return Err(Error::config(
                "fleet.namespace",
                "must be non-empty, without braces or spaces",
            ));
        }
        for (key, value) in [
            ("sync_ms", self.sync_ms),
            ("expected_size", self.expected_size),
            ("timeout_ms", self.timeout_ms),
        ] {
            if value == 0 {
                return Err(Error::config(format!("fleet.{key}"), "must be at least 1"));
            }
        }
        Ok(ResolvedFleet {
            redis_url: self.redis_url.clone(),
            namespace: self.namespace.clone(),
            sync: Duration::from_millis(self.sync_ms),
            lease: self.lease,
            expected_size: self.expected_size,
            timeout: Duration::from_millis(self.timeout_ms),
        })
    }
}

fn check_url(url: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::config("fleet.redis_url", why));
    let Some((scheme, rest)) = url.split_once("://") else {
        return bad("is not a URL (redis://host:port, rediss://host:port or unix:///path)");
    };
    match scheme {
        "redis" | "rediss" => {
            let authority = rest.split('/').next().unwrap_or("");
            let host_port = authority.rsplit('@').next().unwrap_or("");
            let (host, port) = match host_port.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
                _ => (host_port, None),
            };
            if host.is_empty() {
                return bad("names no host");
            }
            if port.is_some_and(|p| p.parse::<u16>().is_err()) {
                return bad("has a port that is not a number from 0 to 65535");
            }
            let db = rest[authority.len()..].trim_start_matches('/');
            if !db.is_empty() && db.parse::<u32>().is_err() {
                return bad("has a database that is not a number");
            }
            Ok(())
        }
        "unix" | "redis+unix" if rest.starts_with('/') => Ok(()),
        "unix" | "redis+unix" => bad("names no socket path"),
        _ => bad("must start with redis://, rediss:// or unix://"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        let c = FleetConfig {
            redis_url: "redis://:hunter2@10.0.0.1:6379/0".into(),
            ..FleetConfig::default()
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
        assert_eq!(
            without_password("redis://u:p@h:1/2"),
            "redis://[redacted]@h:1/2"
        );
    }

    #[test]
    fn urls_are_checked() {
        for good in [
            "redis://127.0.0.1:6379/0",
            "redis://localhost",
            "rediss://:pw@cache.internal:6380",
            "unix:///run/redis.sock",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1:6379",
            "http://127.0.0.1:6379",
            "redis://",
            "redis://h:port",
            "redis://h:1/x",
            "unix://",
        ] {
            let e = check_url(bad).unwrap_err().to_string();
            assert!(e.contains("fleet.redis_url"), "{bad}: {e}");
        }
    }
}
