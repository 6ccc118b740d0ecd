//! Where a Redis is and how to reach it: `redis://` and `rediss://` URLs, and a
//! connected byte stream (plain TCP or TLS) that the replica link and the target
//! writer speak RESP over.
//!
//! URL form: `redis[s]://[[user]:password@]host[:port][/db]`. The password and user
//! are percent-decoded. TLS trusts the system roots plus an optional CA file, and can
//! present a client certificate.

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
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {endpoint}: no answer within {timeout:?} (is the host reachable and the port right?)")]
    ConnectTimeout { endpoint: String, timeout: Duration },
    #[error("TLS to {endpoint} failed: {reason}")]
    Tls { endpoint: String, reason: String },
}

impl Endpoint {
    /// Parses `redis://...` or `rediss://...`.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let bad = |reason: &str| EndpointError::BadUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "redis" => false,
            "rediss" => true,
            other => {
                return Err(bad(&format!(
                    "scheme {other:?} is neither redis nor rediss"
                )))
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |text: &str| -> Result<String, EndpointError> {
            percent_decode(text)
                .ok_or_else(|| bad("user or password is not valid percent-encoded UTF-8"))
        };
        let user = Some(parsed.username())
            .filter(|u| !u.is_empty())
            .map(decode)
            .transpose()?;
        let password = parsed.password().map(decode).transpose()?;
        let db = match parsed.path().trim_start_matches('/') {
            "" => None,
            text => Some(text.parse().map_err(|_| bad(&not_a_database(text)))?),
        };
        Ok(Endpoint {
            host,
            port: parsed.port().unwrap_or(6379),
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
            Ok(Err(source)) => return Err(EndpointError::Connect { endpoint, source }),
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

/// Why the URL's path is no database. The path is shown, unless it has an `@`: then
/// it is the end of a password with a `/` (`redis://u:12/secret@host`).
fn not_a_database(path: &str) -> String {
    if path.contains('@') {
        "the path is not a database number (a password with a `/` must be \
         percent-encoded as %2F)"
            .to_owned()
    } else {
        format!("database {path:?} is not a number")
    }
}

/// The URL with any password replaced by `***`, for messages. Works on URLs that do
/// not parse, since those are the ones error messages show.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    // The last `@` anywhere, not only in the authority: a password with a `/`, `?`
    // or `#` not percent-encoded ends the authority early, and it must still be
    // hidden. A path with an `@` (no real URL has one) is hidden too: safe side.
    let Some(at) = rest.rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
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

    /// A password with a `/` (or a `?`, `#`) not percent-encoded ends the URL's
    /// authority early, so the URL does not parse, and the redaction, which looked
    /// for the `@` only before the first `/`, showed the password in the message.
    #[test]
    fn a_password_with_a_slash_is_redacted_too() {
        for (url, shown) in [
            ("redis://u:hunter/2@h:1", "redis://u:***@h:1"),
            ("redis://:hun/ter2@h:1/0", "redis://:***@h:1/0"),
            ("rediss://u:a/b@c@h", "rediss://u:***@h"),
            ("redis://u:hunter2?x@h:1", "redis://u:***@h:1"),
            ("redis://u:123/hunter@h:1", "redis://u:***@h:1"),
        ] {
            assert_eq!(redact(url), shown);
            if let Err(err) = Endpoint::parse(url) {
                let err = err.to_string();
                assert!(!err.contains("hunter") && !err.contains("a/b"), "{err}");
            }
        }
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
