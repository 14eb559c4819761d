//! What a provider's answer says of its own limits: the `X-RateLimit-*` family (and its
//! `-Requests` forms), the IETF `RateLimit` / `RateLimit-Policy` fields in their draft
//! shapes, `Retry-After` (seconds or HTTP date) and `retry-after-ms`.
//!
//! A provider's header is input from outside: every malformed value is ignored, no value
//! can panic, and every duration is capped.

use std::time::Duration;

use crate::foundation::calendar::http_date;

/// The longest rest or reset a header can impose.
pub(crate) const MAX_REST: Duration = Duration::from_secs(86_400);

/// A reset larger than this is a Unix time, not a number of seconds.
const UNIX_TIME_ABOVE: f64 = 1e9;

/// What an answer announced. Durations are from the moment the answer was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Announced {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Until the remaining count is whole again.
    pub reset: Option<Duration>,
    /// `Retry-After` or `retry-after-ms`: no call before then.
    pub retry_after: Option<Duration>,
}

impl Announced {
    pub fn is_empty(&self) -> bool {
        *self == Announced::default()
    }
}

/// Reads the limits an answer announces. `header` looks a header up by lower-case name
/// (repeated headers joined with ", "); `now_unix` is the wall time, for Unix-time resets
/// and HTTP dates.
pub(crate) fn read(header: &dyn Fn(&str) -> Option<String>, now_unix: Duration) -> Announced {
    let mut a = Announced::default();
    let number = |name: &str| header(name).and_then(|v| count(&v));
    let reset = |name: &str| header(name).and_then(|v| reset_value(&v, now_unix));
    // Most specific first: the request-count forms, then the plain X- family, then the
    // IETF fields.
    for (limit, remaining, reset_name) in [
        (
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ),
        (
            "x-ratelimit-requests-limit",
            "x-ratelimit-requests-remaining",
            "x-ratelimit-requests-reset",
        ),
        (
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ),
        (
            "x-rate-limit-limit",
            "x-rate-limit-remaining",
            "x-rate-limit-reset",
        ),
        ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"),
    ] {
        if a.remaining.is_none() {
            a.remaining = number(remaining);
            if a.remaining.is_some() {
                a.limit = number(limit);
                a.reset = reset(reset_name);
            }
        }
    }
    if a.remaining.is_none() {
        if let Some(field) = header("ratelimit") {
            a = ietf_field(&field, header("ratelimit-policy").as_deref());
        }
    }
    if a.limit.is_none() {
        a.limit = header("ratelimit-policy").and_then(|p| policy_quota(&p));
    }
    a.retry_after = header("retry-after-ms")
        .and_then(|v| {
            let ms = v.trim().parse::<f64>().ok()?;
            capped_seconds(ms / 1000.0)
        })
        .or_else(|| header("retry-after").and_then(|v| retry_after(&v, now_unix)));
    a
}

/// A non-negative whole count; "12" or "12.0", nothing else.
fn count(value: &str) -> Option<u64> {
    let v = value.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    let f = v.parse::<f64>().ok()?;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 1e18).then_some(f as u64)
}

fn capped_seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_REST.as_secs_f64())))
}

/// A reset as seconds, a Unix time (above 10^9), or a Go-style duration ("1m30s", "20ms").
fn reset_value(value: &str, now_unix: Duration) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs > UNIX_TIME_ABOVE && secs.is_finite() {
            // A whole Unix second may be the reset rounded down: one more keeps the
            // provider from being asked a moment before its window really ends.
            let left = secs + 1.0 - now_unix.as_secs_f64();
            return capped_seconds(left.max(0.0));
        }
        return capped_seconds(secs);
    }
    if let Some(at) = http_date(v) {
        return capped_seconds(at as f64 - now_unix.as_secs_f64()).or(Some(Duration::ZERO));
    }
    go_duration(v)
}

/// "1h2m3.5s", "6m0s", "20ms", "1.5s": what OpenAI-style resets look like.
fn go_duration(v: &str) -> Option<Duration> {
    if v.is_empty() || v.len() > 40 {
        return None;
    }
    let mut total = 0.0f64;
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    capped_seconds(total)
}

fn retry_after(value: &str, now_unix: Duration) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return capped_seconds(secs);
    }
    let at = http_date(v)?;
    Some(
        Duration::from_secs(at)
            .saturating_sub(now_unix)
            .min(MAX_REST),
    )
}

/// The IETF field in either draft shape: `limit=10, remaining=5, reset=30` (up to draft
/// 7), or structured `"policy";r=5;t=30` items (draft 8 on), of which the tightest counts.
fn ietf_field(field: &str, policy: Option<&str>) -> Announced {
    let mut a = Announced::default();
    let params = |item: &str| -> Vec<(String, String)> {
        item.split(';')
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((
                    k.trim().to_ascii_lowercase(),
                    v.trim().trim_matches('"').to_string(),
                ))
            })
            .collect()
    };
    if field.contains("remaining=") {
        for part in field.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "limit" => a.limit = count(v.split(';').next().unwrap_or("")),
                "remaining" => a.remaining = count(v),
                "reset" => a.reset = count(v).map(|s| Duration::from_secs(s).min(MAX_REST)),
                _ => {}
            }
        }
        return a;
    }
    for item in field.split(',') {
        let mut remaining = None;
        let mut reset = None;
        for (k, v) in params(item) {
            match k.as_str() {
                "r" => remaining = count(&v),
                "t" => reset = count(&v).map(|s| Duration::from_secs(s).min(MAX_REST)),
                _ => {}
            }
        }
        if let Some(r) = remaining {
            if a.remaining.is_none_or(|best| r < best) {
                a.remaining = Some(r);
                a.reset = reset;
                let name = item.split(';').next().unwrap_or("").trim();
                a.limit = policy.and_then(|p| named_policy_quota(p, name));
            }
        }
    }
    a
}

/// The quota of `RateLimit-Policy`: `10;w=60`, or `"name";q=10;w=60` (the first).
fn policy_quota(policy: &str) -> Option<u64> {
    let first = policy.split(',').next()?;
    let mut parts = first.split(';');
    let head = parts.next()?.trim();
    if let Some(n) = count(head) {
        return Some(n);
    }
    parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim() == "q")
        .and_then(|(_, v)| count(v))
}

fn named_policy_quota(policy: &str, name: &str) -> Option<u64> {
    policy
        .split(',')
        .find(|item| item.split(';').next().map(str::trim) == Some(name))
        .and_then(policy_quota)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_700_000_000);

    fn announced(headers: &[(&str, &str)]) -> Announced {
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_string())
        };
        read(&lookup, NOW)
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn the_x_ratelimit_family_in_seconds_or_unix_time() {
        let a = announced(&[
            ("X-RateLimit-Limit", "20"),
            ("X-RateLimit-Remaining", "3"),
            ("X-RateLimit-Reset", "30"),
        ]);
        assert_eq!(
            (a.limit, a.remaining, a.reset),
            (Some(20), Some(3), secs(30))
        );
        let a = announced(&[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "1700000045"),
        ]);
        assert_eq!(
            (a.remaining, a.reset),
            (Some(0), secs(46)),
            "a second for rounding"
        );
    }

    #[test]
    fn the_requests_forms_with_go_durations() {
        let a = announced(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1m30s"),
            ("x-ratelimit-remaining-tokens", "1"),
        ]);
        assert_eq!(
            (a.limit, a.remaining, a.reset),
            (Some(60), Some(59), secs(90))
        );
        let a = announced(&[
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "20ms"),
        ]);
        assert_eq!(a.reset, Some(Duration::from_millis(20)));
    }

    #[test]
    fn the_ietf_fields_in_each_draft_shape() {
        let a = announced(&[("RateLimit", "limit=100, remaining=7, reset=12")]);
        assert_eq!(
            (a.limit, a.remaining, a.reset),
            (Some(100), Some(7), secs(12))
        );
        let a = announced(&[
            ("RateLimit", "\"hour\";r=40;t=1800, \"minute\";r=2;t=20"),
            (
                "RateLimit-Policy",
                "\"hour\";q=1000;w=3600, \"minute\";q=20;w=60",
            ),
        ]);
        assert_eq!(
            (a.limit, a.remaining, a.reset),
            (Some(20), Some(2), secs(20))
        );
        let a = announced(&[
            ("RateLimit-Limit", "10"),
            ("RateLimit-Remaining", "4"),
            ("RateLimit-Reset", "9"),
        ]);
        assert_eq!(
            (a.limit, a.remaining, a.reset),
            (Some(10), Some(4), secs(9))
        );
        assert_eq!(
            announced(&[("RateLimit-Policy", "10;w=60")]).limit,
            Some(10)
        );
    }

    #[test]
    fn retry_after_in_seconds_dates_and_milliseconds() {
        assert_eq!(announced(&[("Retry-After", " 2 ")]).retry_after, secs(2));
        assert_eq!(
            announced(&[("retry-after-ms", "250")]).retry_after,
            Some(Duration::from_millis(250))
        );
        let date = "Tue, 14 Nov 2023 22:13:40 GMT"; // NOW + 20 s
        assert_eq!(announced(&[("Retry-After", date)]).retry_after, secs(20));
        assert_eq!(
            announced(&[("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")]).retry_after,
            secs(0),
            "in the past"
        );
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "-1",
            "soon",
            "1e400",
            "NaN",
            "3.5",
            "",
            "0x10",
            "9999999999999999999999",
        ] {
            let a = announced(&[
                ("X-RateLimit-Remaining", bad),
                ("Retry-After", bad),
                ("RateLimit", bad),
            ]);
            assert_eq!(a.remaining, None, "{bad:?}");
            assert!(a.retry_after.is_none_or(|r| r <= MAX_REST), "{bad:?}");
        }
        assert!(announced(&[("Content-Type", "text/plain")]).is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_header_values_give_bounded_figures_or_none(
            remaining in "\\PC{0,24}",
            reset in "\\PC{0,24}",
            field in "\\PC{0,60}",
            retry in "\\PC{0,30}",
        ) {
            let a = announced(&[
                ("x-ratelimit-remaining", remaining.as_str()),
                ("x-ratelimit-reset", reset.as_str()),
                ("ratelimit", field.as_str()),
                ("ratelimit-policy", field.as_str()),
                ("retry-after", retry.as_str()),
                ("retry-after-ms", retry.as_str()),
            ]);
            for d in [a.reset, a.retry_after].into_iter().flatten() {
                proptest::prop_assert!(d <= MAX_REST);
            }
        }

        #[test]
        fn structured_fields_of_any_numbers_never_panic(r in proptest::num::i64::ANY, t in proptest::num::f64::ANY) {
            let field = format!("\"p\";r={r};t={t}");
            let a = announced(&[("ratelimit", field.as_str())]);
            proptest::prop_assert_eq!(a.remaining, u64::try_from(r).ok());
        }
    }
}
