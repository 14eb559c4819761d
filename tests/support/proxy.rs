//! A proxy on 127.0.0.1 for tests: it records what it was asked; it pipes each CONNECT
//! tunnel to its target, and answers requests in absolute form (`GET http://...`) itself,
//! `{"proxied":true}`, keeping the connection open, as if it had forwarded them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long a tunnel may sit idle before the proxy closes it.
const IDLE: Duration = Duration::from_secs(10);

pub struct TestProxy {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    authorizations: Arc<Mutex<Vec<String>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestProxy {
    pub fn start() -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let authorizations = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (log, auth, count) = (asked.clone(), authorizations.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                let (log, auth) = (log.clone(), auth.clone());
                thread::spawn(move || serve(stream, &log, &auth));
            }
        });
        TestProxy {
            addr,
            asked,
            authorizations,
            connections,
        }
    }

    /// Every `Proxy-Authorization` value received.
    pub fn authorizations(&self) -> Vec<String> {
        self.authorizations.lock().unwrap().clone()
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request line received, in order (`CONNECT 127.0.0.1:PORT HTTP/1.1`...).
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

/// One request head: its line, and its headers' values by lowercase name.
fn head(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<(String, String)>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return None;
        }
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    Some((line.trim_end().to_string(), headers))
}

fn serve(client: TcpStream, log: &Mutex<Vec<String>>, auth: &Mutex<Vec<String>>) {
    let _ = client.set_read_timeout(Some(IDLE));
    let mut reader = BufReader::new(client);
    loop {
        let Some((line, headers)) = head(&mut reader) else {
            return;
        };
        log.lock().unwrap().push(line.clone());
        for (name, value) in &headers {
            if name == "proxy-authorization" {
                auth.lock().unwrap().push(value.clone());
            }
        }
        if line.starts_with("CONNECT ") {
            return tunnel(reader.into_inner(), &line);
        }
        let length = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = b"{\"proxied\":true}";
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        let client = reader.get_mut();
        if client.write_all(answer.as_bytes()).is_err() || client.write_all(body).is_err() {
            return;
        }
    }
}

fn tunnel(mut client: TcpStream, line: &str) {
    let target = line
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("")
        .to_string();
    let Ok(upstream) = TcpStream::connect_timeout(
        &target
            .parse()
            .unwrap_or_else(|_| "127.0.0.1:9".parse().unwrap()),
        Duration::from_secs(2),
    ) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let _ = upstream.set_read_timeout(Some(IDLE));
    let (mut c2, mut u2) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    let mut upstream = upstream;
    let up = thread::spawn(move || copy(&mut c2, &mut upstream));
    copy(&mut u2, &mut client);
    let _ = up.join();
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
}
