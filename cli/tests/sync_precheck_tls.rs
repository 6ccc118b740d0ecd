//! `lockstep sync` runs the precheck first (a non-empty target stops it with the item,
//! `--conflict ignore` proceeds), and the per-side TLS options: a CA file and a client
//! certificate for `rediss://`, and hostname verification that fails for a name the
//! certificate does not carry unless `--source-tls-skip-verify-hostname`.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_equal, strings, Lockstep};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig, TlsMaterial};

#[tokio::test]
async fn sync_runs_the_precheck_first_and_conflict_ignore_proceeds() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    source.run::<()>("SET from-source 1").await?;
    target.run::<()>("SET already-there 1").await?;
    let dir = tempfile::tempdir()?;
    let args = |extra: &[&str]| {
        let mut args = strings(&["sync", "--source", &source.url(), "--target", &target.url()]);
        args.extend(strings(&["--mode", "full", "--checkpoint-dir"]));
        args.push(dir.path().join("cp").to_string_lossy().into_owned());
        args.extend(strings(extra));
        args
    };
    let mut refused = Lockstep::start(&args(&[]), &[], &dir.path().join("refused.log"))?;
    let code = refused.exit_code(Duration::from_secs(30)).await?;
    let log = refused.log_text();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("target databases are empty") && log.contains("already-there"),
        "the failing item and an example key are named: {log}"
    );
    assert!(log.contains("--skip-precheck"), "{log}");
    let copied: Option<String> = target.run("GET from-source").await?;
    assert_eq!(copied, None, "nothing is written when the precheck fails");

    let mut proceeds = Lockstep::start(
        &args(&["--conflict", "ignore"]),
        &[],
        &dir.path().join("ignore.log"),
    )?;
    let code = proceeds.exit_code(Duration::from_secs(30)).await?;
    assert_eq!(code, Some(0), "{}", proceeds.log_text());
    let copied: Option<String> = target.run("GET from-source").await?;
    assert_eq!(copied.as_deref(), Some("1"));
    Ok(())
}

#[tokio::test]
async fn tls_options_per_side_and_hostname_verification() -> anyhow::Result<()> {
    let tls = Arc::new(TlsMaterial::generate()?);
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0).tls(tls.clone())).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0).tls(tls.clone())).await?;
    let mut conn = source.client().await?;
    for i in 0..50 {
        conn.run_args::<()>(("SET", format!("k{i}"), i)).await?;
    }
    let ca = tls.ca_path().to_string_lossy().into_owned();
    let cert = tls.dir().join("client.crt").to_string_lossy().into_owned();
    let key = tls.dir().join("client.key").to_string_lossy().into_owned();
    // The certificate names localhost and 127.0.0.1, not the IPv4-mapped IPv6 address.
    let unnamed_source = format!("rediss://[::ffff:127.0.0.1]:{}", source.port());
    let named_target = format!("rediss://localhost:{}", target.port());
    let tls_args = |skip: bool| {
        let mut args = strings(&[
            "--source",
            &unnamed_source,
            "--target",
            &named_target,
            "--source-tls-ca-file",
            &ca,
            "--source-tls-cert-file",
            &cert,
            "--source-tls-key-file",
            &key,
            "--target-tls-ca-file",
            &ca,
        ]);
        if skip {
            args.push("--source-tls-skip-verify-hostname".to_owned());
        }
        args
    };
    let check = |skip: bool| -> anyhow::Result<(Option<i32>, String)> {
        let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
            .arg("check")
            .args(tls_args(skip))
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let (code, text) = check(false)?;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL  source connection") && l.contains("TLS")),
        "the source's name mismatch fails its connection item: {text}"
    );
    assert!(
        !text.contains("FAIL  target connection"),
        "the target's name matches: {text}"
    );
    let (code, text) = check(true)?;
    assert_eq!(code, Some(0), "{text}");

    let dir = tempfile::tempdir()?;
    let mut args = strings(&["sync", "--mode", "full", "--checkpoint-dir"]);
    args.push(dir.path().to_string_lossy().into_owned());
    args.extend(tls_args(true));
    let mut sync = Lockstep::start(&args, &[], &dir.path().join("lockstep.log"))?;
    let code = sync.exit_code(Duration::from_secs(30)).await?;
    assert_eq!(code, Some(0), "{}", sync.log_text());
    assert_equal(&source, &target, "a full copy over TLS").await?;

    // verify reads both sides over TLS with the same options (and the same URL parser).
    let named_source = format!("rediss://localhost:{}", source.port());
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "verify",
            "--source",
            &named_source,
            "--target",
            &named_target,
        ])
        .args(["--source-tls-ca-file", &ca, "--source-tls-cert-file", &cert])
        .args(["--source-tls-key-file", &key, "--target-tls-ca-file", &ca])
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "verify over TLS: {text}");
    Ok(())
}
