//! How providers are reached: TLS trust and client certificates, and proxies. A proxy
//! URL may carry credentials, so neither `Debug` nor an error ever shows more than its
//! scheme, host and port.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::foundation::error::Error;

layered! {
    /// What a provider's TLS trusts and presents (`[defaults.tls]`, per service or
    /// provider too). Certificates are always verified.
    TlsConfig, TlsOverrides {
        /// PEM file of CA certificates trusted beside the built-in (Mozilla) roots.
        ca_file: String = String::new(),
        /// Trust `ca_file` alone (a private CA). Defaults to false.
        only_ca_file: bool = false,
        /// PEM certificate chain presented for mutual TLS, with `client_key_file`.
        client_cert_file: String = String::new(),
        /// PEM private key of `client_cert_file`.
        client_key_file: String = String::new(),
    }
}

/// A provider's TLS settings with every file read and checked, once.
#[derive(Clone, Default)]
pub(crate) struct ResolvedTls {
    /// `None`: the built-in roots as they are.
    pub roots: Option<Arc<Vec<ureq::tls::Certificate<'static>>>>,
    pub client: Option<ureq::tls::ClientCert>,
}

impl std::fmt::Debug for ResolvedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedTls")
            .field("roots", &self.roots.as_ref().map(|r| r.len()))
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

/// Reads the files `tls` names; `at` is the path of the table that set them.
pub(super) fn resolve_tls(at: &str, tls: &TlsConfig) -> Result<ResolvedTls, Error> {
    let mut out = ResolvedTls::default();
    if tls.only_ca_file && tls.ca_file.is_empty() {
        return Err(Error::config(
            format!("{at}.only_ca_file"),
            "trusts ca_file alone, and ca_file is not set",
        ));
    }
    if !tls.ca_file.is_empty() {
        let here = format!("{at}.ca_file");
        let pem = read(&here, &tls.ca_file)?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(_) => {
                    return Err(Error::config(
                        here,
                        format!("{:?} is not valid PEM", tls.ca_file),
                    ))
                }
            }
        }
        if certs.is_empty() {
            return Err(Error::config(
                here,
                format!("{:?} holds no PEM certificate", tls.ca_file),
            ));
        }
        if !tls.only_ca_file {
            let builtin = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned());
            certs.extend(builtin);
        }
        out.roots = Some(Arc::new(certs));
    }
    match (
        tls.client_cert_file.is_empty(),
        tls.client_key_file.is_empty(),
    ) {
        (true, true) => {}
        (false, true) | (true, false) => {
            let missing = if tls.client_key_file.is_empty() {
                "client_key_file"
            } else {
                "client_cert_file"
            };
            return Err(Error::config(
                format!("{at}.{missing}"),
                "mutual TLS needs both client_cert_file and client_key_file",
            ));
        }
        (false, false) => {
            let here = format!("{at}.client_cert_file");
            let pem = read(&here, &tls.client_cert_file)?;
            let chain: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if chain.is_empty() {
                return Err(Error::config(
                    here,
                    format!("{:?} holds no PEM certificate", tls.client_cert_file),
                ));
            }
            let here = format!("{at}.client_key_file");
            let pem = read(&here, &tls.client_key_file)?;
            // The key itself is a secret: the error names the file only.
            let key = ureq::tls::PrivateKey::from_pem(&pem).map_err(|_| {
                Error::config(
                    &here,
                    format!("{:?} holds no PEM private key", tls.client_key_file),
                )
            })?;
            if !key_matches(&chain, &pem) {
                return Err(Error::config(
                    &here,
                    format!(
                        "{:?} is not the key of {:?}",
                        tls.client_key_file, tls.client_cert_file
                    ),
                ));
            }
            out.client = Some(ureq::tls::ClientCert::new_with_certs(&chain, key));
        }
    }
    Ok(out)
}

/// Whether the PEM key `key_pem` is the one the first certificate of `chain` names.
fn key_matches(chain: &[ureq::tls::Certificate<'static>], key_pem: &[u8]) -> bool {
    use rustls::pki_types::pem::PemObject;
    let Ok(key) = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem) else {
        return false;
    };
    let Ok(signer) = rustls::crypto::ring::sign::any_supported_type(&key) else {
        return false;
    };
    let certs = chain
        .iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec()))
        .collect();
    rustls::sign::CertifiedKey::new(certs, signer)
        .keys_match()
        .is_ok()
}

fn read(at: &str, path: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::config(at, format!("cannot read {path:?}: {e}")))
}

/// `[defaults.proxy]`, per service or provider too.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// "" (the default): from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`, with `NO_PROXY`,
    /// loopback always exempt; "none": never; a URL (`http://`, `https://`, `socks4://`,
    /// `socks5://`): that proxy for every provider not in `no_proxy`.
    #[serde(serialize_with = "shown_str")]
    pub url: String,
    /// Hosts, and suffixes (`.example.com` or `example.com` for it and its subdomains),
    /// reached directly; in addition to `NO_PROXY`.
    pub no_proxy: Vec<String>,
}

/// [`ProxyConfig`] with every key optional: set keys replace the inherited ones.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyOverrides {
    /// Overrides `url`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted_option"
    )]
    pub url: Option<String>,
    /// Overrides `no_proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<Vec<String>>,
}

fn shown_str<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&shown(url))
}

fn redacted_option<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(url) => s.serialize_some(&shown(url)),
        None => s.serialize_none(),
    }
}

impl ProxyOverrides {
    /// Writes the keys this override sets over `base`.
    pub fn apply_to(&self, base: &mut ProxyConfig) {
        if let Some(url) = &self.url {
            base.url = url.clone();
        }
        if let Some(no_proxy) = &self.no_proxy {
            base.no_proxy = no_proxy.clone();
        }
    }
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("url", &shown(&self.url))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl std::fmt::Debug for ProxyOverrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyOverrides")
            .field("url", &self.url.as_deref().map(shown))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// A proxy URL as it may be shown: without its user and password.
pub(crate) fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("[redacted]@{host}"),
        None => authority.to_string(),
    };
    let host: String = host.chars().take(80).collect();
    if scheme.is_empty() {
        host
    } else {
        format!("{}://{host}", scheme.chars().take(16).collect::<String>())
    }
}

/// How one provider is reached.
#[derive(Clone, PartialEq)]
pub(crate) enum ProxyChoice {
    /// Directly.
    Direct,
    /// Through the proxy the environment names, if any (with `NO_PROXY`).
    FromEnvironment,
    /// Through this proxy.
    Through(String),
}

impl std::fmt::Debug for ProxyChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyChoice::Direct => f.write_str("Direct"),
            ProxyChoice::FromEnvironment => f.write_str("FromEnvironment"),
            ProxyChoice::Through(url) => write!(f, "Through({})", shown(url)),
        }
    }
}

/// How the provider at `base_url` is reached under `proxy`; `at` names the proxy table.
pub(super) fn resolve_proxy(
    at: &str,
    proxy: &ProxyConfig,
    base_url: &str,
) -> Result<ProxyChoice, Error> {
    for (i, entry) in proxy.no_proxy.iter().enumerate() {
        if entry.trim_start_matches('.').is_empty() || entry.contains(['/', ' ', '@']) {
            return Err(Error::config(
                format!("{at}.no_proxy[{i}]"),
                format!("{entry:?} is not a host or a suffix"),
            ));
        }
    }
    let choice = match proxy.url.as_str() {
        "" => ProxyChoice::FromEnvironment,
        "none" => return Ok(ProxyChoice::Direct),
        url => {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(
                scheme,
                Some("http" | "https" | "socks4" | "socks4a" | "socks5")
            ) {
                return Err(Error::config(
                    format!("{at}.url"),
                    format!(
                        "{:?} is not \"\", \"none\" or an http://, https://, socks4:// or socks5:// URL",
                        shown(url)
                    ),
                ));
            }
            if ureq::Proxy::new(url).is_err() {
                return Err(Error::config(
                    format!("{at}.url"),
                    format!("{:?} is not a valid proxy URL", shown(url)),
                ));
            }
            ProxyChoice::Through(url.to_string())
        }
    };
    let host = host_of(base_url);
    if proxy
        .no_proxy
        .iter()
        .any(|entry| matches_entry(&host, entry))
    {
        return Ok(ProxyChoice::Direct);
    }
    if choice == ProxyChoice::FromEnvironment && is_loopback(&host) {
        // A proxy from the environment is for the way out, never for this machine.
        return Ok(ProxyChoice::Direct);
    }
    Ok(choice)
}

/// The host of an http(s) URL, lowercase, without brackets or port.
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host.to_ascii_lowercase()
}

fn matches_entry(host: &str, entry: &str) -> bool {
    let entry = entry.trim_start_matches('.').to_ascii_lowercase();
    host == entry || host.ends_with(&format!(".{entry}"))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(url: &str, no_proxy: &[&str]) -> ProxyConfig {
        ProxyConfig {
            url: url.into(),
            no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn loopback_is_exempt_from_the_environment_only() {
        let env = proxy("", &[]);
        for url in [
            "http://127.0.0.1:8080",
            "http://[::1]:80",
            "https://localhost/x",
        ] {
            assert_eq!(
                resolve_proxy("p", &env, url).unwrap(),
                ProxyChoice::Direct,
                "{url}"
            );
        }
        assert_eq!(
            resolve_proxy("p", &env, "https://api.example.com").unwrap(),
            ProxyChoice::FromEnvironment
        );
        let explicit = proxy("http://127.0.0.1:3128", &[]);
        assert_eq!(
            resolve_proxy("p", &explicit, "http://127.0.0.1:9").unwrap(),
            ProxyChoice::Through("http://127.0.0.1:3128".into())
        );
        assert_eq!(
            resolve_proxy("p", &proxy("none", &[]), "https://api.example.com").unwrap(),
            ProxyChoice::Direct
        );
    }

    #[test]
    fn no_proxy_takes_hosts_and_suffixes() {
        let p = proxy("http://proxy:3128", &[".example.com", "internal"]);
        for (url, direct) in [
            ("https://api.example.com", true),
            ("https://example.com", true),
            ("https://notexample.com", false),
            ("http://internal:8080", true),
            ("http://api.internal", true),
        ] {
            let choice = resolve_proxy("p", &p, url).unwrap();
            assert_eq!(choice == ProxyChoice::Direct, direct, "{url}");
        }
    }

    #[test]
    fn bad_proxies_are_refused_without_their_credentials() {
        let e = resolve_proxy(
            "defaults.proxy",
            &proxy("ftp://user:secret@h:1", &[]),
            "http://a",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("defaults.proxy.url: "), "{e}");
        assert!(!e.contains("secret") && e.contains("[redacted]@h:1"), "{e}");
        let e = resolve_proxy("defaults.proxy", &proxy("", &["a b"]), "http://a").unwrap_err();
        assert!(e.to_string().contains("defaults.proxy.no_proxy[0]: "));
        let debug = format!("{:?}", proxy("http://user:secret@h:1", &[]));
        assert!(!debug.contains("secret"), "{debug}");
    }
}
