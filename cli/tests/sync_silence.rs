//! `lockstep sync` while its source link is frozen (a [`FaultProxy`] stall: the
//! connection stays open, nothing arrives): `/status` must say so, the lag growing
//! past the freeze and `source_silent_seconds` counting, instead of the last
//! heartbeat's transit; after the freeze the lag falls back and the target ends
//! equal to the source.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{assert_equal, free_port, sync_args, wait_counter, Lockstep, Writer};
use lockstep_testkit::proxy::FaultProxy;
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

/// `lockstep status <port> --json`, parsed (null when it does not answer).
fn status(port: u16) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["status", &port.to_string(), "--json"])
        .output();
    out.ok()
        .and_then(|out| serde_json::from_slice(&out.stdout).ok())
        .unwrap_or_default()
}

async fn wait_status(
    port: u16,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let mut last = serde_json::Value::Null;
    wait_until(what, Duration::from_secs(40), || {
        let doc = status(port);
        let good = ok(&doc["targets"][0]);
        let text = doc.to_string();
        last = doc;
        async move { Ok(if good { Ok(()) } else { Err(text) }) }
    })
    .await?;
    Ok(last)
}

fn number(target: &serde_json::Value, field: &str) -> Option<f64> {
    target[field].as_f64()
}

#[tokio::test]
async fn a_frozen_source_shows_in_the_lag_and_the_silence() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let proxy = FaultProxy::start(source.addr()).await?;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let args = sync_args(
        &proxy.url_for(&source),
        &[&target.url()],
        &dir.path().join("checkpoints"),
        // Long enough that the session is not replaced while the test looks.
        &[
            "--status-addr",
            &port.to_string(),
            "--repl-timeout",
            "60",
            "--skip-precheck",
        ],
    );
    let writer = Writer::start(&source)?;
    let _sync = Lockstep::start(&args, &[], &dir.path().join("lockstep.log"))?;
    wait_status(port, "a heartbeat in the stream", |t| {
        t["phase"] == "incremental" && number(t, "lag_ms").is_some()
    })
    .await?;

    let frozen = Instant::now();
    proxy.stall();
    let doc = wait_status(port, "the lag and the silence past 4 s", |t| {
        number(t, "lag_ms").is_some_and(|ms| ms > 4000.0)
            && number(t, "source_silent_seconds").is_some_and(|s| s > 4.0)
            && number(t, "heartbeat_age_seconds").is_some_and(|s| s > 4.0)
    })
    .await?;
    let t = &doc["targets"][0];
    let lag_s = number(t, "lag_ms").unwrap_or_default() / 1000.0;
    assert!(
        lag_s <= frozen.elapsed().as_secs_f64() + 3.0,
        "the lag {lag_s} s exceeds the freeze of {:?} by more than a heartbeat and the transit: {doc}",
        frozen.elapsed()
    );
    let metrics = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
        .call()?
        .body_mut()
        .read_to_string()?;
    assert!(
        metrics.contains("lockstep_source_silent_seconds{task=\"default\",target=\"0\"} "),
        "{metrics}"
    );

    proxy.restore();
    wait_status(port, "the lag back under 3 s", |t| {
        number(t, "lag_ms").is_some_and(|ms| ms < 3000.0)
            && number(t, "source_silent_seconds").is_some_and(|s| s < 3.0)
    })
    .await?;
    let written = writer.stop().await?;
    wait_counter(&target, written, Duration::from_secs(30)).await?;
    assert_equal(&source, &target, "after the freeze").await?;
    Ok(())
}
