//! TLS for tests: certificates made at test time (a CA, a server certificate for
//! 127.0.0.1 and localhost, a client certificate), written to a directory of their own,
//! and an HTTPS server on 127.0.0.1 that may require a client certificate.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Files of one test's certificates.
pub struct Pki {
    pub dir: PathBuf,
    /// The CA that signed the server and client certificates.
    pub ca_file: PathBuf,
    /// Another CA, which signed nothing here.
    pub other_ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    /// A key of no certificate here.
    pub other_key_file: PathBuf,
    /// The server's certificate and key as PEM files, for servers of other make.
    pub server_cert_file: PathBuf,
    pub server_key_file: PathBuf,
    pub server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    ca_der: CertificateDer<'static>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl Pki {
    pub fn new(test: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("switchyard-tls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let authority = ca("switchyard test CA");
        let other = ca("another CA");
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &authority)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["client.test".to_string()])
            .unwrap()
            .signed_by(&client_key, &authority)
            .unwrap();
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca_file: write("ca.pem", authority.pem()),
            other_ca_file: write("other-ca.pem", other.pem()),
            client_cert_file: write("client.pem", client.pem()),
            client_key_file: write("client.key", client_key.serialize_pem()),
            other_key_file: write("other.key", KeyPair::generate().unwrap().serialize_pem()),
            server_cert_file: write("server.pem", server.pem()),
            server_key_file: write("server.key", server_key.serialize_pem()),
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_der(),
            ca_der: authority.der().clone(),
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTPS server on 127.0.0.1 answering `{"ok":true}` to every request, keep-alive.
pub struct TlsServer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl TlsServer {
    /// Serves with the PKI's server certificate; when `client_ca` is set, a client must
    /// present a certificate that CA signed.
    pub fn start(pki: &Pki, client_ca: bool) -> TlsServer {
        TlsServer::serve(pki, client_ca, false)
    }

    /// Like `start`, but each connection is closed after its first answer, with no
    /// `Connection: close` to say so (the way an idle timeout ends a kept connection).
    pub fn start_closing(pki: &Pki) -> TlsServer {
        TlsServer::serve(pki, false, true)
    }

    fn serve(pki: &Pki, client_ca: bool, closing: bool) -> TlsServer {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_ca {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone()));
        let config = Arc::new(
            builder
                .with_single_cert(pki.server_chain.clone(), key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (counted, shaken, ended) = (requests.clone(), handshakes.clone(), closed.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                shaken.fetch_add(1, Ordering::AcqRel);
                let (config, counted, ended) = (config.clone(), counted.clone(), ended.clone());
                thread::spawn(move || {
                    serve_one(stream, config, &counted, closing);
                    ended.fetch_add(1, Ordering::AcqRel);
                });
            }
        });
        TlsServer {
            addr,
            requests,
            handshakes,
            closed,
        }
    }

    /// Connections accepted, each one handshake.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::Acquire)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Requests received whole (after a handshake that succeeded).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// Connections the server has closed.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::Acquire)
    }
}

/// Answers the requests of one connection until the client or `closing` ends it.
fn serve_one(
    stream: std::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
    counted: &AtomicUsize,
    closing: bool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, stream));
    loop {
        // A whole request head, then the answer; a failed handshake ends here.
        let mut line = String::new();
        if tls.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if tls.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
        }
        counted.fetch_add(1, Ordering::AcqRel);
        let body = b"{\"ok\":true}";
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(body);
        // One record, one segment: no waiting on a delayed ACK.
        let out = tls.get_mut();
        if out.write_all(&answer).is_err() || out.flush().is_err() || closing {
            return;
        }
    }
}
