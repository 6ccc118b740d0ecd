//! From the connection arguments (`ConnectionArgs`, shared by `sync` and `check`) to
//! the engine's endpoints and TLS settings: a password from a file or the environment
//! fills a URL that has none, so a password never has to be on the command line.
//! Nothing here puts a password into a message.
//!
//! How it fits: `sync.rs`, `check.rs` and `verify.rs` build their endpoints
//! through it. It must never log, print or put a password in an error.

use std::path::Path;

use anyhow::Context;
use lockstep_sync::endpoint::{Endpoint, TlsOptions};

use crate::args::ConnectionArgs;

/// Which side an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

impl ConnectionArgs {
    /// Parses a URL of `side` and fills its password when the URL has none.
    pub fn endpoint(&self, side: Side, url: &str) -> anyhow::Result<Endpoint> {
        let mut endpoint =
            Endpoint::parse(url).with_context(|| format!("the {} URL", side.name()))?;
        if endpoint.password.is_none() {
            endpoint.password = self.password(side)?;
        }
        Ok(endpoint)
    }

    fn password(&self, side: Side) -> anyhow::Result<Option<String>> {
        let (given, file, flag) = match side {
            Side::Source => (
                &self.source_password,
                &self.source_password_file,
                "--source-password-file",
            ),
            Side::Target => (
                &self.target_password,
                &self.target_password_file,
                "--target-password-file",
            ),
        };
        if let Some(password) = given {
            return Ok(Some(password.clone()));
        }
        file.as_deref()
            .map(|path| read_password(path, flag))
            .transpose()
    }

    /// The TLS settings of `side` (used for `rediss://` URLs only).
    pub fn tls(&self, side: Side) -> TlsOptions {
        match side {
            Side::Source => TlsOptions {
                ca_file: self.source_tls_ca_file.clone(),
                client_cert_file: self.source_tls_cert_file.clone(),
                client_key_file: self.source_tls_key_file.clone(),
                skip_verify_hostname: self.source_tls_skip_verify_hostname,
            },
            Side::Target => TlsOptions {
                ca_file: self.target_tls_ca_file.clone(),
                client_cert_file: self.target_tls_cert_file.clone(),
                client_key_file: self.target_tls_key_file.clone(),
                skip_verify_hostname: self.target_tls_skip_verify_hostname,
            },
        }
    }
}

/// A redis-rs client for `endpoint` (verify's connections), built from the endpoint
/// this module parsed, so every subcommand reads URLs with one parser and says the
/// same things about them. `Endpoint::connect` first: an unreachable side gets the
/// sync's message ("cannot connect to redis://host:port: ...").
pub async fn redis_client(
    side: Side,
    endpoint: &Endpoint,
    tls: &TlsOptions,
) -> anyhow::Result<redis::Client> {
    endpoint
        .connect(tls, std::time::Duration::from_secs(10))
        .await
        .with_context(|| format!("the {}", side.name()))?;
    let mut settings =
        redis::RedisConnectionInfo::default().set_db(endpoint.db.unwrap_or(0).into());
    if let Some(user) = &endpoint.user {
        settings = settings.set_username(user);
    }
    if let Some(password) = &endpoint.password {
        settings = settings.set_password(password);
    }
    // redis-rs's rustls has no "any host name, but a verified chain" mode: its
    // `insecure` would accept any certificate at all, which the option never meant.
    anyhow::ensure!(
        !(endpoint.tls && tls.skip_verify_hostname),
        "the {side} {endpoint}: verify cannot skip the host name check yet (it would \
         have to skip the certificate check too); connect by a name the certificate \
         carries",
        side = side.name()
    );
    let addr = if endpoint.tls {
        redis::ConnectionAddr::TcpTls {
            host: endpoint.host.clone(),
            port: endpoint.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        redis::ConnectionAddr::Tcp(endpoint.host.clone(), endpoint.port)
    };
    let info = redis::IntoConnectionInfo::into_connection_info(addr)
        .map_err(|e| anyhow::anyhow!("the {} {endpoint}: {e}", side.name()))?
        .set_redis_settings(settings);
    let client = if endpoint.tls {
        redis::Client::build_with_tls(info, tls_certificates(tls)?)
    } else {
        redis::Client::open(info)
    };
    client.map_err(|e| anyhow::anyhow!("the {} {endpoint}: {e}", side.name()))
}

/// The CA and client certificate files of `tls`, read for redis-rs.
fn tls_certificates(tls: &TlsOptions) -> anyhow::Result<redis::TlsCertificates> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let client_tls = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (None, None) => None,
        _ => anyhow::bail!("a TLS client certificate needs both its cert and its key file"),
    };
    let root_cert = tls.ca_file.as_deref().map(read).transpose()?;
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert,
    })
}

/// The first line of a password file, without its line ending.
fn read_password(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {} ({flag})", path.display()))?;
    let password = text.lines().next().unwrap_or_default();
    anyhow::ensure!(
        !password.is_empty(),
        "the password file {} ({flag}) is empty",
        path.display()
    );
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_fills_a_url_without_one_and_never_overrides_the_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        let args = ConnectionArgs {
            target_password_file: Some(file),
            ..ConnectionArgs::default()
        };
        let filled = args
            .endpoint(Side::Target, "redis://h:1")
            .expect("endpoint");
        assert_eq!(filled.password.as_deref(), Some("s3cret"));
        let kept = args
            .endpoint(Side::Target, "redis://:inurl@h:1")
            .expect("endpoint");
        assert_eq!(kept.password.as_deref(), Some("inurl"));
        let source = args
            .endpoint(Side::Source, "redis://h:1")
            .expect("endpoint");
        assert_eq!(
            source.password, None,
            "the target's file is not the source's"
        );
    }

    #[test]
    fn a_missing_password_file_is_named_without_a_password() {
        let args = ConnectionArgs {
            source_password_file: Some("/nonexistent/pw".into()),
            ..ConnectionArgs::default()
        };
        let err = format!(
            "{:#}",
            args.endpoint(Side::Source, "redis://h:1")
                .expect_err("missing")
        );
        assert!(
            err.contains("/nonexistent/pw") && err.contains("--source-password-file"),
            "{err}"
        );
    }
}
