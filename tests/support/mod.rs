//! Shared by the integration tests: the test server and configuration helpers.

#![allow(dead_code, unused_imports)]

pub mod native;
pub mod proxy;
pub mod redis;
pub mod server;
pub mod tls;

pub use server::{refused_url, Fault, Seen, TestServer};

/// Runs `each` `per` times on each of `threads` threads at once; returns every result.
pub fn from_threads<T: Send>(threads: usize, per: usize, each: impl Fn() -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| (0..per).map(|_| each()).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Waits (polling, at most 5 s) until what `count` counts reaches `n`, and fails the test
/// when it does not: for what the test's servers do on their own threads.
pub fn until(count: impl Fn() -> usize, n: usize) {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while count() < n && std::time::Instant::now() < give_up {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(count() >= n, "{} of {n}", count());
}

/// A TOML provider entry for `service` pointing at `url`.
pub fn provider(service: &str, name: &str, url: &str, extra: &str) -> String {
    format!("[[services.{service}.providers]]\nname = \"{name}\"\nbase_url = \"{url}\"\n{extra}\n")
}

/// A GET of `path` that no other request equals (a counter in its query): identical
/// requests in flight at once share one upstream call, and tests of per-call behaviour
/// need each to make its own.
pub fn distinct(service: &str, path: &str) -> switchyard::Request {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    switchyard::Request::get(service, path).param("n", n.to_string())
}
