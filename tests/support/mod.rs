//! Shared by the integration tests: the test server and configuration helpers.

#![allow(dead_code, unused_imports)]

pub mod native;
pub mod server;

pub use server::{refused_url, Fault, Seen, TestServer};

/// A TOML provider entry for `service` pointing at `url`.
pub fn provider(service: &str, name: &str, url: &str, extra: &str) -> String {
    format!("[[services.{service}.providers]]\nname = \"{name}\"\nbase_url = \"{url}\"\n{extra}\n")
}
