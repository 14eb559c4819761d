//! Plain-HTTP providers through an explicit HTTP proxy, the way such proxies expect: the
//! connection goes to the proxy and each request line names the whole URL
//! (`GET http://host:port/path HTTP/1.1`), with `Proxy-Authorization` when the proxy URL
//! has a user. (ureq tunnels every proxied connection with CONNECT, which many proxies
//! allow to port 443 only.) HTTPS providers keep ureq's CONNECT tunnel.

use std::fmt;

use crate::upstream::tcp::PeekingTcpConnector;

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, NextTimeout, Transport,
};

/// Connects to the proxy instead of the provider; see the module docs.
pub(crate) struct AbsoluteFormConnector {
    proxy: ureq::http::Uri,
    /// `Proxy-Authorization: Basic ...\r\n`, when the proxy URL has a user.
    authorization: Option<Vec<u8>>,
}

impl fmt::Debug for AbsoluteFormConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URI may carry the proxy's password.
        f.write_str("AbsoluteFormConnector")
    }
}

impl AbsoluteFormConnector {
    /// For `http://[user:password@]host:port` proxies; `None` for anything else.
    pub fn for_proxy(url: &str) -> Option<AbsoluteFormConnector> {
        let rest = url.strip_prefix("http://")?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (user, host) = match authority.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, authority),
        };
        let proxy: ureq::http::Uri = format!("http://{host}/").parse().ok()?;
        let authorization = user.map(|user| {
            let mut line = b"Proxy-Authorization: Basic ".to_vec();
            line.extend(base64(&percent_decoded(user)));
            line.extend(b"\r\n");
            line
        });
        Some(AbsoluteFormConnector {
            proxy,
            authorization,
        })
    }
}

impl Connector<()> for AbsoluteFormConnector {
    type Out = AbsoluteForm;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let target = details.uri;
        let origin = match (target.host(), target.port_u16()) {
            (Some(host), Some(port)) => format!("http://{host}:{port}"),
            (Some(host), None) => format!("http://{host}"),
            _ => return Err(ureq::Error::BadUri("no host".into())),
        };
        let addrs = details
            .resolver
            .resolve(&self.proxy, details.config, details.timeout)?;
        let to_proxy = ConnectionDetails {
            uri: &self.proxy,
            addrs,
            config: details.config,
            request_level: details.request_level,
            resolver: details.resolver,
            now: details.now,
            timeout: details.timeout,
            current_time: details.current_time.clone(),
            run_connector: details.run_connector.clone(),
            register_shutdown: details.register_shutdown.clone(),
        };
        let tcp = match Connector::<()>::connect(&PeekingTcpConnector, &to_proxy, None)? {
            Some(Either::B(tcp)) => tcp.boxed(),
            _ => return Err(ureq::Error::ConnectionFailed),
        };
        Ok(Some(AbsoluteForm {
            inner: tcp,
            origin: origin.into_bytes(),
            authorization: self.authorization.clone(),
            body_left: None,
        }))
    }
}

/// A connection to the proxy that writes each request line in absolute form.
pub(crate) struct AbsoluteForm {
    inner: Box<dyn Transport>,
    origin: Vec<u8>,
    authorization: Option<Vec<u8>>,
    /// Bytes of the current request's body still to go; `None` at a request's start.
    body_left: Option<u64>,
}

impl fmt::Debug for AbsoluteForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AbsoluteForm")
    }
}

impl AbsoluteForm {
    /// Rewrites the request head at the start of `out[..amount]` in place; returns the
    /// new length. A head too large for the buffer once rewritten goes as it is.
    fn rewrite(&mut self, amount: usize) -> usize {
        let out = self.inner.buffers().output();
        let head = &out[..amount];
        let Some(space) = head.iter().position(|b| *b == b' ') else {
            return amount;
        };
        if head.get(space + 1) != Some(&b'/') {
            return amount;
        }
        let Some(line_end) = find(head, b"\r\n") else {
            return amount;
        };
        let auth = self.authorization.as_deref().unwrap_or_default();
        let grown = self.origin.len() + auth.len();
        if amount + grown > out.len() {
            return amount;
        }
        // Make room, then fill it: the origin before the path, the header after the line.
        out.copy_within(line_end + 2..amount, line_end + 2 + grown);
        out.copy_within(space + 1..line_end + 2, space + 1 + self.origin.len());
        out[space + 1..space + 1 + self.origin.len()].copy_from_slice(&self.origin);
        let header_at = line_end + 2 + self.origin.len();
        out[header_at..header_at + auth.len()].copy_from_slice(auth);
        let amount = amount + grown;
        // What follows the head in this write is body already.
        if let Some(head_end) = find(&out[..amount], b"\r\n\r\n") {
            let length = content_length(&out[..head_end]);
            let sent = (amount - head_end - 4) as u64;
            self.body_left = Some(length.saturating_sub(sent)).filter(|left| *left > 0);
        }
        amount
    }
}

impl Transport for AbsoluteForm {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let amount = match self.body_left {
            None => self.rewrite(amount),
            Some(left) => {
                let left = left.saturating_sub(amount as u64);
                self.body_left = Some(left).filter(|l| *l > 0);
                amount
            }
        };
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `Content-Length` of a request head; 0 without one.
fn content_length(head: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(head);
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn base64(input: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> shift) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_a_basic_header() {
        assert_eq!(base64(b"user:pass"), b"dXNlcjpwYXNz");
        assert_eq!(base64(b"a"), b"YQ==");
        assert_eq!(base64(b"ab"), b"YWI=");
        assert_eq!(percent_decoded("me%40corp:p%3Aw"), b"me@corp:p:w");
        let c = AbsoluteFormConnector::for_proxy("http://user:pass@127.0.0.1:3128").unwrap();
        assert_eq!(
            c.authorization.as_deref(),
            Some(&b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"[..])
        );
        assert!(AbsoluteFormConnector::for_proxy("socks5://h:1").is_none());
    }

    #[test]
    fn the_length_of_a_head_is_read() {
        assert_eq!(
            content_length(b"POST / HTTP/1.1\r\nContent-Length: 12\r\nHost: a"),
            12
        );
        assert_eq!(content_length(b"GET / HTTP/1.1\r\nHost: a"), 0);
    }
}
