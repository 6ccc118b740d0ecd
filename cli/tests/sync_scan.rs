//! `lockstep sync` against a source that refuses to replicate, as a user meets one
//! (a managed service with PSYNC and SYNC renamed away): the sync says why it reads
//! the source key by key, proves convergence in its log and in /status and
//! /metrics, and the counted writer's final count is on the target (read there).

mod common;

use std::time::Duration;

use common::{free_port, sync_args, wait_counter, Lockstep, Writer};
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

fn status_json(port: u16) -> anyhow::Result<serde_json::Value> {
    let text = ureq::get(format!("http://127.0.0.1:{port}/status"))
        .call()?
        .body_mut()
        .read_to_string()?;
    Ok(serde_json::from_str(&text)?)
}

#[tokio::test]
async fn a_refusing_source_is_scanned_and_its_convergence_proven() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .set("rename-command", "PSYNC \"\"")
            .set("rename-command", "SYNC \"\"")
            .set("notify-keyspace-events", "KA"),
    )
    .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let args = sync_args(
        &source.url(),
        &[&target.url()],
        dir.path(),
        &["--status-addr", &addr, "--converge-every-secs", "1"],
    );
    let lockstep = Lockstep::start(&args, &[], &dir.path().join("lockstep.log"))?;
    let writer = Writer::start(&source)?;
    lockstep
        .wait_log("switching to --source-mode scan", Duration::from_secs(30))
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = writer.stop().await?;
    wait_counter(&target, written, Duration::from_secs(30)).await?;
    lockstep
        .wait_log("converged at", Duration::from_secs(30))
        .await?;
    let log = lockstep.log_text();
    assert!(log.contains("0 differ"), "{log}");
    wait_until("a proof in /status", Duration::from_secs(20), || async {
        let doc = status_json(port)?;
        let scan = &doc["targets"][0]["scan"];
        Ok(
            match (
                scan["differences"].as_u64(),
                scan["converged_unix_ms"].as_i64(),
            ) {
                (Some(0), Some(at)) if at > 0 && scan["keys_reverified"].as_u64() > Some(0) => {
                    Ok(())
                }
                _ => Err(doc.to_string()),
            },
        )
    })
    .await?;
    let metrics = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
        .call()?
        .body_mut()
        .read_to_string()?;
    assert!(
        metrics.contains("lockstep_scans_total{task=\"default\",target=\"0\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lockstep_scan_differences{task=\"default\",target=\"0\"} 0"),
        "{metrics}"
    );
    Ok(())
}

/// `--source-mode replica` keeps today's refusal, with its fix.
#[tokio::test]
async fn replica_mode_stops_on_a_refusing_source() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .set("rename-command", "PSYNC \"\"")
            .set("rename-command", "SYNC \"\""),
    )
    .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let args = sync_args(
        &source.url(),
        &[&target.url()],
        dir.path(),
        &["--source-mode", "replica"],
    );
    let mut lockstep = Lockstep::start(&args, &[], &dir.path().join("lockstep.log"))?;
    // The precheck refuses it before any connection as a replica.
    assert_eq!(lockstep.exit_code(Duration::from_secs(30)).await?, Some(2));
    let log = lockstep.log_text();
    assert!(
        log.contains("PSYNC and SYNC are renamed or disabled"),
        "{log}"
    );
    assert!(log.contains("--source-mode scan"), "{log}");
    assert!(!log.contains("switching to --source-mode scan"), "{log}");
    // Past the precheck, the replica link's refusal names the way out too.
    let dir = tempfile::tempdir()?;
    let mut args = sync_args(
        &source.url(),
        &[&target.url()],
        dir.path(),
        &["--source-mode", "replica", "--skip-precheck"],
    );
    args.retain(|a| !a.is_empty());
    let mut lockstep = Lockstep::start(&args, &[], &dir.path().join("lockstep.log"))?;
    assert_eq!(lockstep.exit_code(Duration::from_secs(30)).await?, Some(1));
    let log = lockstep.log_text();
    assert!(log.contains("refused to replicate to us"), "{log}");
    assert!(
        log.contains("--source-mode scan reads the source key by key"),
        "{log}"
    );
    assert!(!log.contains("switching to --source-mode scan"), "{log}");
    Ok(())
}
