//! TLS against HTTPS servers the tests start on 127.0.0.1, with certificates made at test
//! time: verified by default, trusted through `ca_file`, mutual TLS with a client
//! certificate; failures are attempts of kind `tls` that reach no server.

mod support;

use support::tls::{Pki, TlsServer};
use support::{provider, until};
use switchyard::{AttemptKind, Balancer, Error, Request};

fn balancer(server: &TlsServer, tls: &str) -> Result<Balancer, Error> {
    let text = format!("[defaults.tls]\n{tls}\n[defaults.retry]\nmax_attempts = 1\n")
        + &provider("s", "secure", &server.url(), "");
    Balancer::from_toml_str(&text)
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn tls_failure(lb: &Balancer) -> String {
    match lb.call(Request::get("s", "/q")) {
        Err(e) => {
            let kinds: Vec<AttemptKind> = e.attempts().iter().map(|a| a.kind).collect();
            assert_eq!(kinds, [AttemptKind::Tls], "{e}");
            e.to_string()
        }
        Ok(r) => panic!("answered {} through an untrusted certificate", r.status()),
    }
}

#[test]
fn a_certificate_no_root_vouches_for_is_refused_and_trusted_with_ca_file() {
    let pki = Pki::new("trust");
    let server = TlsServer::start(&pki, false);
    let by_default = balancer(&server, "").unwrap();
    let message = tls_failure(&by_default);
    assert!(message.contains("tls"), "{message}");
    let p = &by_default.metrics().services["s"].providers["secure"];
    assert_eq!(
        (p.failures, p.failures_by_kind["tls"]),
        (1, 1),
        "counted against it"
    );
    assert_eq!(server.requests(), 0, "no request reached the server");

    let other = balancer(
        &server,
        &format!(
            "ca_file = {:?}\nonly_ca_file = true",
            path(&pki.other_ca_file)
        ),
    )
    .unwrap();
    tls_failure(&other);
    assert_eq!(server.requests(), 0);

    for extra in ["", "only_ca_file = true"] {
        let lb = balancer(
            &server,
            &format!("ca_file = {:?}\n{extra}", path(&pki.ca_file)),
        )
        .unwrap();
        for _ in 0..3 {
            let r = lb.call(Request::get("s", "/q")).unwrap();
            assert_eq!((r.status(), r.body()), (200, &b"{\"ok\":true}"[..]));
        }
    }
    assert_eq!(server.requests(), 6);
}

#[test]
fn mutual_tls_works_with_a_client_certificate_and_fails_without_one() {
    let pki = Pki::new("mutual");
    let server = TlsServer::start(&pki, true);
    let trust = format!("ca_file = {:?}", path(&pki.ca_file));
    tls_failure(&balancer(&server, &trust).unwrap());
    assert_eq!(server.requests(), 0);
    let with_cert = format!(
        "{trust}\nclient_cert_file = {:?}\nclient_key_file = {:?}",
        path(&pki.client_cert_file),
        path(&pki.client_key_file)
    );
    let lb = balancer(&server, &with_cert).unwrap();
    assert_eq!(lb.call(Request::get("s", "/q")).unwrap().status(), 200);
    assert_eq!(server.requests(), 1);
}

#[test]
fn tls_files_are_checked_at_load_with_their_path() {
    let pki = Pki::new("files");
    let server = TlsServer::start(&pki, false);
    let not_pem = pki.dir.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let missing = pki.dir.join("missing.pem");
    for (tls, want) in [
        (
            format!("ca_file = {:?}", path(&missing)),
            "defaults.tls.ca_file: cannot read",
        ),
        (
            format!("ca_file = {:?}", path(&not_pem)),
            "defaults.tls.ca_file: ",
        ),
        (
            "only_ca_file = true".to_string(),
            "defaults.tls.only_ca_file: ",
        ),
        (
            format!("client_cert_file = {:?}", path(&pki.client_cert_file)),
            "defaults.tls.client_key_file: mutual TLS needs both",
        ),
        (
            format!(
                "client_cert_file = {:?}\nclient_key_file = {:?}",
                path(&pki.client_cert_file),
                path(&not_pem)
            ),
            "defaults.tls.client_key_file: ",
        ),
        (
            format!(
                "client_cert_file = {:?}\nclient_key_file = {:?}",
                path(&pki.client_cert_file),
                path(&pki.other_key_file)
            ),
            "is not the key of",
        ),
    ] {
        let e = balancer(&server, &tls)
            .err()
            .unwrap_or_else(|| panic!("{tls}: accepted"));
        assert!(e.to_string().contains(want), "{tls}: {e}");
    }
}

/// A kept connection the server closed is checked before reuse and never sent a request:
/// with a server that closes each connection after one answer, every call succeeds on a
/// new connection and no attempt fails.
#[test]
fn a_kept_connection_the_server_closed_is_not_used_again() {
    let pki = Pki::new("closing");
    let server = TlsServer::start_closing(&pki);
    let lb = balancer(&server, &format!("ca_file = {:?}", path(&pki.ca_file))).unwrap();
    for n in 1..=10 {
        assert_eq!(lb.call(Request::get("s", "/q")).unwrap().status(), 200);
        // The close reached the client's socket before the next call looks at it.
        until(|| server.closed(), n);
    }
    assert_eq!((server.requests(), server.handshakes()), (10, 10));
    let p = &lb.metrics().services["s"].providers["secure"];
    assert_eq!((p.requests, p.failures), (10, 0), "{p:?}");
}
