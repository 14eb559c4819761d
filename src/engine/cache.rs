//! Answers kept for a while, per logical endpoint of one service (`cache_ttl_ms`): a
//! request that may share a call and finds its answer here is answered from memory, with
//! no seat, rate, quota or cost. Only 2xx answers are kept, at most `cache_max_entries`
//! per endpoint; keys are [`call_key`](crate::foundation::request::Request::call_key)s,
//! keyed hashes that never show what was asked (nor any secret in it).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::foundation::config::EndpointOptions;
use crate::foundation::names::ByName;
use crate::foundation::request::ByCallKey;
use crate::foundation::response::Response;

/// One service's caches, by endpoint name; empty when no endpoint has a TTL.
#[derive(Default)]
pub(crate) struct ServiceCache {
    endpoints: HashMap<String, EndpointCache, ByName>,
}

impl ServiceCache {
    pub fn new(endpoints: &BTreeMap<String, EndpointOptions>) -> ServiceCache {
        ServiceCache {
            endpoints: endpoints
                .iter()
                .filter(|(_, o)| o.cache_ttl_ms > 0)
                .map(|(name, o)| {
                    let ttl = Duration::from_millis(o.cache_ttl_ms);
                    (name.clone(), EndpointCache::new(ttl, o.cache_max_entries))
                })
                .collect(),
        }
    }

    /// The cache of `endpoint`, if it has one.
    pub fn of(&self, endpoint: &str) -> Option<&EndpointCache> {
        if self.endpoints.is_empty() {
            return None;
        }
        self.endpoints.get(endpoint)
    }

    /// Answers kept over every endpoint.
    pub fn entries(&self) -> usize {
        self.endpoints.values().map(EndpointCache::len).sum()
    }

    /// Keeps a 2xx answer of an endpoint that caches, for its TTL or less when the
    /// answer's `Cache-Control` says so.
    pub fn keep(&self, endpoint: &str, key: u128, response: &Response, now: Duration) {
        let Some(cache) = self.of(endpoint) else {
            return;
        };
        if !(200..300).contains(&response.status) {
            return;
        }
        let Some(lifetime) = lifetime(response, cache.ttl) else {
            return;
        };
        cache.insert(key, Arc::new(response.clone()), now, lifetime);
    }
}

/// How long an answer may be kept: the TTL, less when `Cache-Control` gives a shorter
/// `max-age`; never with `no-store` or `no-cache`.
fn lifetime(response: &Response, ttl: Duration) -> Option<Duration> {
    let mut lifetime = ttl;
    for value in response.headers.get_all("cache-control") {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return None;
            }
            if let Some(secs) = lower.strip_prefix("max-age=") {
                if let Ok(secs) = secs.trim_matches('"').parse::<u64>() {
                    lifetime = lifetime.min(Duration::from_secs(secs));
                }
            }
        }
    }
    (!lifetime.is_zero()).then_some(lifetime)
}

/// At most this many shards: a hit takes one shard's lock, briefly.
const SHARDS: usize = 16;

/// One endpoint's answers.
pub(crate) struct EndpointCache {
    ttl: Duration,
    shards: Box<[Mutex<Shard>]>,
}

struct Shard {
    entries: ByCallKey<Entry>,
    /// Keys in the order they were kept: with one TTL for the endpoint, also the order in
    /// which they expire. A key kept again leaves a stale record here, skipped by `seq`.
    order: VecDeque<(u128, u64)>,
    capacity: usize,
    next_seq: u64,
}

struct Entry {
    response: Arc<Response>,
    expires: Duration,
    seq: u64,
}

impl EndpointCache {
    fn new(ttl: Duration, max_entries: usize) -> EndpointCache {
        let shards = SHARDS.min(max_entries.max(1));
        // The capacities add up to max_entries exactly.
        let shards = (0..shards)
            .map(|i| {
                let capacity = max_entries / shards + usize::from(i < max_entries % shards);
                Mutex::new(Shard {
                    entries: ByCallKey::default(),
                    order: VecDeque::new(),
                    capacity,
                    next_seq: 0,
                })
            })
            .collect();
        EndpointCache { ttl, shards }
    }

    fn shard(&self, key: u128) -> &Mutex<Shard> {
        // The high half: the map inside uses the low one.
        &self.shards[(key >> 64) as usize % self.shards.len()]
    }

    /// A copy of the answer kept under `key`, unless it expired by `now`.
    pub fn get(&self, key: u128, now: Duration) -> Option<Response> {
        let kept = {
            let shard = self.shard(key).lock();
            let entry = shard.entries.get(&key)?;
            if entry.expires <= now {
                return None;
            }
            entry.response.clone()
        };
        // The copy is made outside the lock.
        Some(Response::clone(&kept))
    }

    fn insert(&self, key: u128, response: Arc<Response>, now: Duration, lifetime: Duration) {
        let expires = now.saturating_add(lifetime);
        let mut shard = self.shard(key).lock();
        let seq = shard.next_seq;
        shard.next_seq += 1;
        shard.entries.insert(
            key,
            Entry {
                response,
                expires,
                seq,
            },
        );
        shard.order.push_back((key, seq));
        shard.trim(now);
    }

    /// Answers kept, expired ones included until they are pushed out.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }
}

impl Shard {
    /// Drops what expired by `now` and the oldest beyond capacity; drops stale records.
    fn trim(&mut self, now: Duration) {
        while let Some(&(key, seq)) = self.order.front() {
            let live = self.entries.get(&key).filter(|e| e.seq == seq);
            let keep = match live {
                None => false,
                Some(e) => e.expires > now && self.entries.len() <= self.capacity,
            };
            if keep {
                break;
            }
            self.order.pop_front();
            if live.is_some() {
                self.entries.remove(&key);
            }
        }
        // Records of keys kept again before they expired (answers racing in); bounded.
        if self.order.len() > 2 * self.capacity + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Response {
        Response {
            status,
            ..Response::fallback(status, body)
        }
    }

    fn options(ttl_ms: u64, max: usize) -> BTreeMap<String, EndpointOptions> {
        let mut o = BTreeMap::new();
        o.insert(
            "quote".to_string(),
            EndpointOptions {
                cache_ttl_ms: ttl_ms,
                cache_max_entries: max,
                ..EndpointOptions::default()
            },
        );
        o.insert("news".to_string(), EndpointOptions::default());
        o
    }

    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn an_answer_is_served_until_its_ttl_and_only_for_its_endpoint() {
        let c = ServiceCache::new(&options(1_000, 10));
        c.keep("quote", 1, &answer(200, "a"), T0);
        c.keep("news", 2, &answer(200, "n"), T0);
        assert!(c.of("news").is_none(), "no TTL, no cache");
        let quote = c.of("quote").unwrap();
        let got = quote.get(1, T0 + Duration::from_millis(999)).unwrap();
        assert_eq!(got.body(), b"a");
        assert!(quote.get(1, T0 + Duration::from_millis(1_000)).is_none());
        assert!(quote.get(3, T0).is_none());
    }

    #[test]
    fn only_2xx_answers_are_kept_and_cache_control_is_heeded() {
        let c = ServiceCache::new(&options(60_000, 10));
        c.keep("quote", 1, &answer(404, "missing"), T0);
        c.keep(
            "quote",
            2,
            &answer(200, "x").with_header("Cache-Control", "no-store"),
            T0,
        );
        c.keep(
            "quote",
            3,
            &answer(200, "x").with_header("cache-control", "public, max-age=2"),
            T0,
        );
        let quote = c.of("quote").unwrap();
        assert!(quote.get(1, T0).is_none());
        assert!(quote.get(2, T0).is_none());
        assert!(quote.get(3, T0 + Duration::from_millis(1_999)).is_some());
        assert!(
            quote.get(3, T0 + Duration::from_secs(2)).is_none(),
            "max-age=2 < TTL"
        );
    }

    #[test]
    fn memory_stays_within_max_entries_whatever_is_kept() {
        let c = ServiceCache::new(&options(3_600_000, 1_000));
        let quote = c.of("quote").unwrap();
        let mut now = T0;
        for key in 0..1_000_000u128 {
            // Spread keys over the shards as real keyed hashes would be.
            let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
            c.keep("quote", key, &answer(200, "v"), now);
            now += Duration::from_micros(1);
        }
        assert_eq!(quote.len(), 1_000);
        let records: usize = quote.shards.iter().map(|s| s.lock().order.len()).sum();
        assert_eq!(records, 1_000);
    }

    #[test]
    fn expired_answers_go_first_and_a_key_kept_again_is_not_lost() {
        let c = ServiceCache::new(&options(1_000, 4));
        let quote = c.of("quote").unwrap();
        c.keep("quote", 7, &answer(200, "old"), T0);
        c.keep(
            "quote",
            7,
            &answer(200, "new"),
            T0 + Duration::from_millis(10),
        );
        // Far later: the first record of 7 is stale, the entry itself expired.
        let later = T0 + Duration::from_secs(5);
        c.keep("quote", 8, &answer(200, "other"), later);
        assert!(quote.get(7, later).is_none());
        assert_eq!(quote.len(), 1, "the expired entry was dropped");
        c.keep("quote", 7, &answer(200, "again"), later);
        assert_eq!(quote.get(7, later).unwrap().body(), b"again");
    }
}
