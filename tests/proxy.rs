//! Proxies: an explicit `proxy.url` sends calls through a test CONNECT proxy on
//! 127.0.0.1; `no_proxy` and `"none"` go direct. (The environment's proxies are in
//! `tests/proxy_env.rs`, a process of their own, since they are read from it.)

mod support;

use support::proxy::TestProxy;
use support::{provider, TestServer};
use switchyard::{Balancer, Request};

fn through(proxy: &str, server: &TestServer) -> Balancer {
    let text = format!("[defaults.proxy]\n{proxy}\n") + &provider("s", "p", &server.url(), "");
    Balancer::from_toml_str(&text).unwrap()
}

#[test]
fn an_explicit_proxy_carries_plain_http_in_absolute_form_and_no_proxy_goes_direct() {
    let proxy = TestProxy::start();
    // Nothing listens at the provider's own address: only the proxy can answer.
    let nowhere = support::refused_url();
    let text = format!(
        "[defaults.proxy]\nurl = \"{}\"\n",
        proxy.url().replace("http://", "http://me%40corp:s3cret@")
    ) + &provider("s", "p", &nowhere, "");
    let lb = Balancer::from_toml_str(&text).unwrap();
    for i in 0..5 {
        let r = lb
            .call(Request::get("s", "/q").param("i", i.to_string()))
            .unwrap();
        assert_eq!((r.status(), r.body()), (200, &br#"{"proxied":true}"#[..]));
    }
    // A body goes too, and the next request on the connection is rewritten again.
    let post = Request::post("s", "/p").body(b"hello, proxy".to_vec());
    assert_eq!(lb.call(post).unwrap().status(), 200);
    assert_eq!(lb.call(Request::get("s", "/after")).unwrap().status(), 200);
    let asked = proxy.asked();
    let mut want: Vec<String> = (0..5)
        .map(|i| format!("GET {nowhere}/q?i={i} HTTP/1.1"))
        .collect();
    want.push(format!("POST {nowhere}/p HTTP/1.1"));
    want.push(format!("GET {nowhere}/after HTTP/1.1"));
    assert_eq!(asked, want);
    assert_eq!(proxy.connections(), 1, "one connection, reused");
    // me@corp:s3cret
    assert!(
        proxy
            .authorizations()
            .iter()
            .all(|a| a == "Basic bWVAY29ycDpzM2NyZXQ="),
        "{:?}",
        proxy.authorizations()
    );
    assert_eq!(proxy.authorizations().len(), 7);
    let shown = format!(
        "{:?} {}",
        lb.metrics(),
        serde_json::to_string(&lb.metrics()).unwrap()
    );
    assert!(!shown.contains("s3cret"));

    let direct = TestServer::start();
    for setting in [
        format!("url = \"{}\"\nno_proxy = [\"127.0.0.1\"]", proxy.url()),
        "url = \"none\"".to_string(),
    ] {
        let before = proxy.asked().len();
        let lb = through(&setting, &direct);
        assert_eq!(lb.call(Request::get("s", "/q")).unwrap().status(), 200);
        assert_eq!(proxy.asked().len(), before, "{setting}: went direct");
    }
}

#[test]
fn a_provider_can_choose_its_own_proxy() {
    let (a, b, proxy) = (TestServer::start(), TestServer::start(), TestProxy::start());
    let text = "[defaults.proxy]\nurl = \"none\"\n".to_string()
        + &provider("s", "a", &a.url(), "")
        + &provider(
            "t",
            "b",
            &b.url(),
            &format!("proxy = {{ url = \"{}\" }}", proxy.url()),
        );
    let lb = Balancer::from_toml_str(&text).unwrap();
    lb.call(Request::get("s", "/q")).unwrap();
    assert!(proxy.asked().is_empty());
    assert_eq!(
        lb.call(Request::get("t", "/q")).unwrap().body(),
        br#"{"proxied":true}"#
    );
    assert_eq!(proxy.asked().len(), 1);
    assert_eq!(b.requests(), 0, "the proxy answered for it");
}

#[test]
fn a_bad_proxy_is_refused_at_load_with_its_path_and_without_its_password() {
    let server = TestServer::start();
    let text = "[services.s.proxy]\nurl = \"ftp://me:hunter2@proxy:21\"\n".to_string()
        + &provider("s", "p", &server.url(), "");
    let e = Balancer::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("services.s.proxy.url: "), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn https_goes_through_a_connect_tunnel_and_is_verified_end_to_end() {
    let pki = support::tls::Pki::new("proxied");
    let (server, proxy) = (
        support::tls::TlsServer::start(&pki, false),
        TestProxy::start(),
    );
    let text = format!(
        "[defaults.proxy]\nurl = \"{}\"\n[defaults.tls]\nca_file = {:?}\n",
        proxy.url(),
        pki.ca_file.display().to_string()
    ) + &provider("s", "p", &server.url(), "");
    let lb = Balancer::from_toml_str(&text).unwrap();
    for _ in 0..3 {
        assert_eq!(lb.call(Request::get("s", "/q")).unwrap().status(), 200);
    }
    let port = server.url().rsplit(':').next().unwrap().to_string();
    assert_eq!(
        proxy.asked(),
        [format!("CONNECT 127.0.0.1:{port} HTTP/1.1")]
    );
    assert_eq!(server.requests(), 3);
}
