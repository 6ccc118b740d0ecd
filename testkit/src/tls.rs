//! A throwaway certificate authority and certificates for `rediss://` tests.
//!
//! [`TlsMaterial::generate`] makes a CA, a server certificate for `127.0.0.1` /
//! `localhost` and a client certificate, all signed by that CA, and writes them as
//! PEM files into a temporary directory that redis-server reads. Only the 7.0 build
//! (Debian's) has TLS; asking another version for TLS is an error at start.
//!
//! The material is for tests only: it must never be written outside its temporary
//! directory nor trusted by anything but the test's own clients and servers.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// PEM files of a CA, a server and a client certificate, in a temporary directory.
#[derive(Debug)]
pub struct TlsMaterial {
    dir: tempfile::TempDir,
    pub ca_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl TlsMaterial {
    /// Generates a fresh CA and certificates (ECDSA P-256, valid for the test run).
    pub fn generate() -> anyhow::Result<TlsMaterial> {
        let dir = tempfile::Builder::new().prefix("lockstep-tls-").tempdir()?;

        let ca_key = KeyPair::generate().context("generating the test CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "lockstep test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the test CA")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |name: &str| -> anyhow::Result<(String, String)> {
            let key = KeyPair::generate()?;
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (server_cert_pem, server_key_pem) = leaf("lockstep test server")?;
        let (client_cert_pem, client_key_pem) = leaf("lockstep test client")?;
        let ca_pem = ca_cert.pem();

        let write = |name: &str, text: &str| -> anyhow::Result<()> {
            let path = dir.path().join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write("ca.crt", &ca_pem)?;
        write("server.crt", &server_cert_pem)?;
        write("server.key", &server_key_pem)?;
        write("client.crt", &client_cert_pem)?;
        write("client.key", &client_key_pem)?;
        Ok(TlsMaterial {
            dir,
            ca_pem,
            client_cert_pem,
            client_key_pem,
        })
    }

    /// The folder holding `ca.crt`, `server.crt`, `server.key`, `client.crt`, `client.key`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// redis.conf lines for a TLS-only server whose replication and cluster bus are TLS
    /// too; client certificates are optional so password-only clients work.
    pub(crate) fn server_config_lines(&self) -> Vec<(String, String)> {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            ("tls-cert-file".into(), path("server.crt")),
            ("tls-key-file".into(), path("server.key")),
            ("tls-client-cert-file".into(), path("client.crt")),
            ("tls-client-key-file".into(), path("client.key")),
            ("tls-ca-cert-file".into(), path("ca.crt")),
            ("tls-auth-clients".into(), "optional".into()),
            ("tls-replication".into(), "yes".into()),
            ("tls-cluster".into(), "yes".into()),
        ]
    }

    /// A redis-rs client for `url` (`rediss://...`) that trusts this CA and presents
    /// the client certificate.
    pub fn redis_client(&self, url: &str) -> anyhow::Result<redis::Client> {
        if !url.starts_with("rediss://") {
            bail!("TLS client asked for a non-TLS URL {url}");
        }
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: self.client_cert_pem.clone().into_bytes(),
                    client_key: self.client_key_pem.clone().into_bytes(),
                }),
                root_cert: Some(self.ca_pem.clone().into_bytes()),
            },
        )
        .with_context(|| format!("building a TLS client for {url}"))
    }
}
