//! Where a Redis is and how to reach it: `redis://` and `rediss://` URLs, and a
//! connected byte stream (plain TCP or TLS) that the replica link and the target
//! writer speak RESP over.
//!
//! URL form: `redis[s]://[[user]:password@]host[:port][/db]`. The password and user
//! are percent-decoded. TLS trusts the system roots plus an optional CA file, and can
//! present a client certificate.
//!
//! **One parser, written by hand, for every subcommand.** Passwords are pasted raw
//! from secret stores far more often than they are percent-encoded, and a general URL
//! parser (WHATWG rules, the `url` crate) ends the user information at the first `/`,
//! `?` or `#`: `redis://:pa/ss@host` became "empty host", and its messages quoted
//! the input. Here the user information is everything before the *last* `@` (a host,
//! port or database never contains one), split at its first `:`, so any byte may
//! appear in a password; `%XX` is decoded, any other `%` is taken literally. Messages
//! never quote anything before that `@` ([`redact`]), whatever the input.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A Redis endpoint parsed from a URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// The database in the URL path (`/3`), if any.
    pub db: Option<u32>,
    pub tls: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Shown without the password.
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let user = match (&self.user, &self.password) {
            (Some(user), _) => format!("{user}@"),
            (None, Some(_)) => ":***@".to_owned(),
            (None, None) => String::new(),
        };
        write!(f, "{scheme}://{user}{}:{}", self.host, self.port)
    }
}

/// Errors of parsing a URL or connecting; each names the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "bad Redis URL {url:?}: {reason} (expected redis[s]://[[user]:password@]host[:port][/db])"
    )]
    BadUrl { url: String, reason: String },
    /// The I/O error is part of the message, not a `source`: a cause chain printed
    /// with `{:#}` would say it twice.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        endpoint: String,
        reason: std::io::Error,
    },
    #[error("cannot connect to {endpoint}: no answer within {timeout:?} (is the host reachable and the port right?)")]
    ConnectTimeout { endpoint: String, timeout: Duration },
    #[error("TLS to {endpoint} failed: {reason}")]
    Tls { endpoint: String, reason: String },
}

impl Endpoint {
    /// Parses `redis://...` or `rediss://...` (see the module doc for the rules).
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let bad = |reason: &str| EndpointError::BadUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("it does not start with redis:// or rediss://"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad("the scheme is neither redis nor rediss")),
        };
        let (userinfo, location) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(info) => split_userinfo(info).map_err(bad)?,
            None => (None, None),
        };
        let Location { host, port, db } = parse_location(location).map_err(|r| bad(&r))?;
        Ok(Endpoint {
            host,
            port,
            user,
            password,
            db,
            tls,
        })
    }

    /// `host:port` for connecting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens a byte stream to the endpoint (TCP, then TLS for `rediss://`).
    pub async fn connect(
        &self,
        tls: &TlsOptions,
        timeout: Duration,
    ) -> Result<Box<dyn Stream>, EndpointError> {
        let endpoint = self.to_string();
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(self.address())).await {
            Err(_) => return Err(EndpointError::ConnectTimeout { endpoint, timeout }),
            Ok(Err(reason)) => return Err(EndpointError::Connect { endpoint, reason }),
            Ok(Ok(tcp)) => tcp,
        };
        // Replication and pipelines are latency-bound: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        if !self.tls {
            return Ok(Box::new(tcp));
        }
        let config = tls.client_config().map_err(|reason| EndpointError::Tls {
            endpoint: endpoint.clone(),
            reason,
        })?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| {
            EndpointError::Tls {
                endpoint: endpoint.clone(),
                reason: format!("bad server name: {e}"),
            }
        })?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| EndpointError::ConnectTimeout {
                endpoint: endpoint.clone(),
                timeout,
            })?
            .map_err(|e| EndpointError::Tls {
                endpoint,
                reason: e.to_string(),
            })?;
        Ok(Box::new(stream))
    }
}

/// A connected byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// TLS settings for `rediss://` endpoints.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// A PEM file of CA certificates to trust (besides the system's).
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate and key, for servers that require one.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Accept a server certificate issued for another host name (the chain and the
    /// validity dates are still verified): for servers reached by an address their
    /// certificate does not name.
    pub skip_verify_hostname: bool,
}

impl TlsOptions {
    fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &self.ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("reading CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
        }
        let builder = if self.skip_verify_hostname {
            let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| format!("certificate verifier: {e}"))?;
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostName(verifier)))
        } else {
            rustls::ClientConfig::builder().with_root_certificates(roots)
        };
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert_path), Some(key_path)) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
                    .and_then(|it| it.collect())
                    .map_err(|e| {
                        format!("reading client certificate {}: {e}", cert_path.display())
                    })?;
                let key = PrivateKeyDer::from_pem_file(key_path)
                    .map_err(|e| format!("reading client key {}: {e}", key_path.display()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("client certificate: {e}"))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err("a client certificate needs both the certificate and the key file".to_owned()),
        }
    }
}

/// A certificate verifier that checks everything but the host name.
#[derive(Debug)]
struct AnyHostName(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What follows the user information: `host[:port][/db]`.
struct Location {
    host: String,
    port: u16,
    db: Option<u32>,
}

/// `[user][:password]`, each percent-decoded. A message never quotes either.
fn split_userinfo(info: &str) -> Result<(Option<String>, Option<String>), &'static str> {
    let (user, password) = match info.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (info, None),
    };
    let decode = |text: &str| {
        percent_decode(text).ok_or("the user or password is not UTF-8 once percent-decoded")
    };
    let user = Some(user)
        .filter(|u| !u.is_empty())
        .map(decode)
        .transpose()?;
    let password = password.map(decode).transpose()?;
    Ok((user, password))
}

/// Parses `host[:port][/db]`; the text is after the last `@`, so it may be quoted.
fn parse_location(text: &str) -> Result<Location, String> {
    if let Some(i) = text.find(['?', '#']) {
        return Err(format!(
            "{:?} after the host is not supported (put the database in the path: /3)",
            &text[i..]
        ));
    }
    let (hostport, db) = match text.split_once('/') {
        Some((hostport, "")) => (hostport, None),
        Some((hostport, db)) => {
            let db = db
                .parse()
                .map_err(|_| format!("database {db:?} is not a number"))?;
            (hostport, Some(db))
        }
        None => (text, None),
    };
    let (host, port) = split_host_port(hostport)?;
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '%');
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    if !host.chars().all(valid) {
        return Err(format!("host {host:?} is not a host name or an IP address"));
    }
    Ok(Location {
        host: host.to_owned(),
        port,
        db,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 6379.
fn split_host_port(text: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{text:?}: an IPv6 address needs its closing ]"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{after:?} after the IPv6 address")),
            },
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None => 6379,
        Some(port) => port
            .parse()
            .ok()
            .filter(|&p: &u16| p > 0)
            .ok_or_else(|| format!("port {port:?} is not a number from 1 to 65535"))?,
    };
    Ok((host, port))
}

/// The URL with its user information (user and password) replaced by `***`, for
/// messages. Works on any text, since the URLs that do not parse are the ones
/// messages show: everything before the last `@` is hidden (after the `scheme://`
/// when there is one), so a password with any bytes in it never shows.
pub fn redact(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    // Only a scheme's `://` is kept: one inside the password (a typo'd scheme such as
    // `redis//:pa://ss@h`) is part of what is hidden.
    let is_scheme = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    };
    let keep = match url.find("://") {
        Some(i) if i + 3 <= at && is_scheme(&url[..i]) => i + 3,
        _ => 0,
    };
    format!("{}***{}", &url[..keep], &url[at..])
}

/// Decodes `%XX`; a `%` not followed by two hex digits is kept as it is (a raw
/// password pasted into the URL). `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_url_form() {
        let e = Endpoint::parse("redis://127.0.0.1:7000").expect("plain");
        assert_eq!(
            (e.host.as_str(), e.port, e.user, e.password, e.db, e.tls),
            ("127.0.0.1", 7000, None, None, None, false)
        );
        let e = Endpoint::parse("rediss://:p%40ss@example.com/3").expect("password and db");
        assert_eq!(
            (e.port, e.password.as_deref(), e.db, e.tls),
            (6379, Some("p@ss"), Some(3), true)
        );
        let e = Endpoint::parse("redis://alice:secret@[::1]:6380").expect("acl user, ipv6");
        assert_eq!(
            (e.host.as_str(), e.user.as_deref(), e.address()),
            ("::1", Some("alice"), "[::1]:6380".to_owned())
        );
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn a_raw_password_may_hold_any_byte_of_url_syntax() {
        // Found from outside: "redis://:pa/ss@..." was "empty host".
        for password in [
            "pa/ss", "a#b", "q?x=1", "at@sign", "50%off", "a:b", "/#?@:%",
        ] {
            let url = format!("redis://:{password}@127.0.0.1:1/2");
            let e = Endpoint::parse(&url).expect(password);
            assert_eq!(e.password.as_deref(), Some(password), "{url}");
            assert_eq!((e.host.as_str(), e.port, e.db), ("127.0.0.1", 1, Some(2)));
        }
        let e = Endpoint::parse("redis://bob:p%2Fw@h").expect("encoded");
        assert_eq!(
            (e.user.as_deref(), e.password.as_deref()),
            (Some("bob"), Some("p/w"))
        );
        assert_eq!(e.port, 6379);
    }

    #[test]
    fn a_typo_in_the_url_never_shows_the_password() {
        // Found from outside: "redis//:S3CRET@host:1" printed S3CRET.
        for url in [
            "redis//:S3CRET@host:1",
            "redis:/:S3CRET@host:1",
            "http://:S3CRET@host:1",
            "redis://:S3CRET@host:notaport",
            "redis://:S3CRET@host:1/x",
            "redis://:S3CRET@host:1?db=2",
            "redis://:S3CRET@",
            "redis://u:S3CRET@[::1",
        ] {
            let err = Endpoint::parse(url).expect_err(url).to_string();
            assert!(!err.contains("S3CRET"), "{url}: {err}");
            assert!(err.contains("expected redis[s]://"), "{err}");
        }
    }

    proptest::proptest! {
        /// Any password (any characters, any place of `/ # @ ? : %`) in any URL shape
        /// (typos included): the password never appears in a message or the display.
        #[test]
        fn no_message_ever_holds_the_password(
            password in "[a-zA-Z0-9/#@?:%!. ]{0,6}SECRETMARK[a-zA-Z0-9/#@?:%!. ]{0,6}",
            scheme in proptest::sample::select(vec!["redis://", "rediss://", "redis//", "redis:/", "http://", "", "REDIS://"]),
            user in "[a-z]{0,4}",
            location in "[a-z0-9.:\\[\\]/?#-]{0,12}",
        ) {
            let url = format!("{scheme}{user}:{password}@{location}");
            let shown = match Endpoint::parse(&url) {
                Ok(endpoint) => format!("{endpoint} {endpoint:?}"),
                Err(err) => format!("{err} {err:?}"),
            };
            proptest::prop_assert!(!shown.contains("SECRETMARK"), "{url:?} -> {shown}");
            proptest::prop_assert!(!redact(&url).contains("SECRETMARK"));
        }
    }

    #[test]
    fn a_password_with_a_slash_is_redacted_too() {
        for (url, shown) in [
            ("redis://u:hunter/2@h:1", "redis://***@h:1"),
            ("redis://:hun/ter2@h:1/0", "redis://***@h:1/0"),
            ("rediss://u:a/b@c@h", "rediss://***@h"),
            ("redis://u:hunter2?x@h:1", "redis://***@h:1"),
            ("redis://u:123/hunter@h:1", "redis://***@h:1"),
            // Found by the property test: a `://` inside the password of a typo'd URL.
            ("redis//:hunter://@", "***@"),
        ] {
            assert_eq!(redact(url), shown);
            if let Err(err) = Endpoint::parse(url) {
                let err = err.to_string();
                assert!(!err.contains("hunter") && !err.contains("a/b"), "{err}");
            }
        }
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_leaking_the_password() {
        for url in [
            "http://h:1",
            "redis://",
            "redis://h:1/x",
            "redis://:hunter2@h:99999",
        ] {
            let err = Endpoint::parse(url).expect_err(url).to_string();
            assert!(err.contains("expected redis[s]://"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
