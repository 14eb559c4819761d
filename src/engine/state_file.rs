//! `state_file`: quota counts, rate-limit arrival times and quota rests kept across
//! restarts, so a restart in the middle of the day does not hand a free tier a second
//! day's worth of calls. Written at most every second (when something changed) and at
//! shutdown, through a new file renamed over the old one, so a crash mid-write leaves the
//! previous state. A missing file starts from zero; a corrupt one too, with a warning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::foundation::calendar::Period;
use crate::upstream::allowance::RestReason;
use crate::upstream::provider::Provider;

/// The longest rest a state file can restore.
const LONGEST_REST: Duration = Duration::from_secs(32 * 86_400);

/// The least time between two writes.
const EVERY: Duration = Duration::from_secs(1);

pub(crate) struct StateFile {
    path: PathBuf,
    /// When it was last written (clock time) and what it said.
    last: Mutex<(Option<Duration>, String)>,
    /// Whether the last write failed: a directory gone read-only is said once, not
    /// every second.
    failing: std::sync::atomic::AtomicBool,
}

impl StateFile {
    /// Reads the file at `path` into the providers' allowances.
    pub fn load<'a>(
        path: &Path,
        providers: impl Iterator<Item = &'a Provider>,
        now: Duration,
    ) -> StateFile {
        let state = StateFile {
            path: path.to_path_buf(),
            last: Mutex::new((None, String::new())),
            failing: std::sync::atomic::AtomicBool::new(false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => match serde_json::from_str::<Value>(&text) {
                Ok(tree) if tree.get("version") == Some(&json!(1)) => {
                    for p in providers {
                        if let Some(saved) = tree["providers"].get(p.name.as_ref()) {
                            restore(p, saved, now);
                        }
                    }
                    state.last.lock().1 = text;
                }
                _ => warn(path, "is not a switchyard state file; starting from zero"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn(path, &format!("cannot be read ({e}); starting from zero")),
        }
        state
    }

    /// Writes the state if a second has passed since the last write and it changed.
    pub fn save_if_due<'a>(&self, providers: impl Iterator<Item = &'a Provider>, now: Duration) {
        let due = self
            .last
            .lock()
            .0
            .is_none_or(|at| now.saturating_sub(at) >= EVERY);
        if due {
            self.save(providers, now);
        }
    }

    /// Writes the state now if it changed.
    pub fn save<'a>(&self, providers: impl Iterator<Item = &'a Provider>, now: Duration) {
        let mut all = Map::new();
        for p in providers {
            if let Some(saved) = saved(p, now) {
                all.insert(p.name.to_string(), saved);
            }
        }
        let text = json!({"version": 1, "providers": all}).to_string();
        let mut last = self.last.lock();
        last.0 = Some(now);
        if last.1 == text {
            return;
        }
        let fresh = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let written =
            std::fs::write(&fresh, &text).and_then(|()| std::fs::rename(&fresh, &self.path));
        match written {
            Ok(()) => {
                last.1 = text;
                self.failing
                    .store(false, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&fresh);
                if !self
                    .failing
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    warn(&self.path, &format!("cannot be written ({e})"));
                }
            }
        }
    }
}

fn warn(path: &Path, what: &str) {
    eprintln!("switchyard: state file {} {what}", path.display());
}

/// A provider's state as JSON; `None` when it has nothing worth keeping.
fn saved(p: &Provider, now: Duration) -> Option<Value> {
    let a = &p.allowance;
    let unix_ms = |at: Duration| a.unix(at).as_millis() as u64;
    let (quota, rate) = a.saved(now);
    let quota: Vec<Value> = quota
        .iter()
        .filter(|q| q.used > 0)
        .map(|q| json!({"window": q.period.name(), "used": q.used, "started_unix": q.started_unix}))
        .collect();
    let rate: Vec<Value> = rate
        .iter()
        .filter(|(_, tat)| *tat > now)
        .map(|(window, tat)| json!({"window": window, "due_unix_ms": unix_ms(*tat)}))
        .collect();
    let rest = a
        .rest(now)
        .filter(|(_, reason)| *reason != RestReason::RetryAfter)
        .map(|(until, reason)| json!({"until_unix_ms": unix_ms(until), "reason": reason.name()}));
    if quota.is_empty() && rate.is_empty() && rest.is_none() {
        return None;
    }
    Some(json!({"quota": quota, "rate": rate, "rest": rest}))
}

/// Puts a provider's saved state back; what does not parse is left out.
fn restore(p: &Provider, saved: &Value, now: Duration) {
    let a = &p.allowance;
    let now_unix_ms = a.unix(now).as_millis() as u64;
    // A Unix time in ms as clock time, if still ahead (and not absurdly far: a month
    // and a day is the longest any quota rests).
    let ahead = |unix_ms: u64| {
        (unix_ms > now_unix_ms)
            .then(|| now + Duration::from_millis(unix_ms - now_unix_ms).min(LONGEST_REST))
    };
    for q in saved["quota"].as_array().into_iter().flatten() {
        let period = match q["window"].as_str() {
            Some("per_day") => Period::Day,
            Some("per_month") => Period::Month,
            _ => continue,
        };
        if let (Some(used), Some(started)) = (q["used"].as_u64(), q["started_unix"].as_u64()) {
            a.restore_quota(period, used, started, now);
        }
    }
    for r in saved["rate"].as_array().into_iter().flatten() {
        if let (Some(window), Some(due)) = (r["window"].as_str(), r["due_unix_ms"].as_u64()) {
            if let Some(tat) = ahead(due) {
                a.restore_rate(window, tat);
            }
        }
    }
    let rest = &saved["rest"];
    let reason = match rest["reason"].as_str() {
        Some("quota") => Some(RestReason::Quota),
        Some("rate_headers") => Some(RestReason::RateHeaders),
        _ => None,
    };
    if let (Some(reason), Some(until)) = (reason, rest["until_unix_ms"].as_u64().and_then(ahead)) {
        a.rest_until(until, reason);
    }
}
