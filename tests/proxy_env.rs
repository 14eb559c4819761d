//! Proxies from the environment, in a process of its own (the variables are read from
//! it): with every proxy variable pointing at a closed port and no NO_PROXY, providers on
//! loopback are still reached.

mod support;

use support::{provider, refused_url, TestServer};
use switchyard::{Balancer, Request};

#[test]
fn loopback_providers_are_reached_whatever_proxy_the_environment_names() {
    let closed = refused_url();
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        std::env::set_var(name, &closed);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }
    let server = TestServer::start();
    let localhost = server.url().replace("127.0.0.1", "localhost");
    let text = provider("s", "ip", &server.url(), "") + &provider("t", "name", &localhost, "");
    let lb = Balancer::from_toml_str(&text).unwrap();
    for i in 0..10 {
        for service in ["s", "t"] {
            let r = lb
                .call(Request::get(service, "/q").param("i", i.to_string()))
                .unwrap_or_else(|e| panic!("{service}: {e}"));
            assert_eq!(r.status(), 200);
        }
    }
    assert_eq!(server.requests(), 20);
}
