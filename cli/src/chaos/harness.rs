//! What the chaos scenarios share: the testkit's sync harness ([`Engine`], an engine
//! task run in-process, and its verdicts) with the catalog's 30 s retry window, plus
//! pipelined writes, a slow snapshot, and the verdicts (verify finds nothing, or
//! exactly the expected keys). The checker is always verify or plain reads of the
//! servers, never the sync's state.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use lockstep_sync::engine::SyncOptions;
use lockstep_testkit::harness;
use lockstep_testkit::info::config_set;
use lockstep_testkit::{RedisServer, ServerConfig};
use lockstep_verify::Report;

use super::Pair;
use lockstep_testkit::Run;

/// A running engine task (the testkit's shared harness).
pub use lockstep_testkit::harness::SyncTask as Engine;

/// A source and a target of `pair`, each from its config.
pub async fn start_pair(
    pair: Pair,
    source: impl FnOnce(ServerConfig) -> ServerConfig,
    target: impl FnOnce(ServerConfig) -> ServerConfig,
) -> anyhow::Result<(RedisServer, RedisServer)> {
    let s = RedisServer::start(source(ServerConfig::new(pair.source)))
        .await
        .context("starting the source")?;
    let t = RedisServer::start(target(ServerConfig::new(pair.target)))
        .await
        .context("starting the target")?;
    Ok((s, t))
}

/// Options of a task from `source` to `target` (URLs) with a 30 s retry window.
pub fn options(source: &str, target: &str, dir: &Path) -> anyhow::Result<SyncOptions> {
    harness::options(source, target, dir, Duration::from_secs(30))
}

/// Writes `count` string keys `<prefix><i>` (value `v<i>`) into db `db`, pipelined.
pub async fn fill(server: &RedisServer, db: u32, prefix: &str, count: u64) -> anyhow::Result<()> {
    let mut conn = server.client().await?;
    for start in (0..count).step_by(500) {
        let mut pipe = redis::pipe();
        pipe.cmd("SELECT").arg(db).ignore();
        for i in start..(start + 500).min(count) {
            pipe.cmd("SET")
                .arg(format!("{prefix}{i}"))
                .arg(format!("v{i}"))
                .ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("writing {prefix}* into db {db}"))?;
    }
    Ok(())
}

/// Makes the source's snapshot take `micros_per_key` per key (`rdb-key-save-delay`), so
/// a fault can land while the full copy runs.
/// The transfer is diskless on every version (6.2 defaults to a disk-based one, which
/// saves first and then sends the file in a blink).
pub async fn slow_snapshot(source: &RedisServer, micros_per_key: u64) -> anyhow::Result<()> {
    let mut conn = source.client().await?;
    config_set(&mut conn, "repl-diskless-sync", "yes").await?;
    config_set(&mut conn, "repl-diskless-sync-delay", "0").await?;
    config_set(&mut conn, "rdb-key-save-delay", &micros_per_key.to_string()).await
}

/// `INCR <key>` `times` times, one round trip each (the order the stream carries).
pub async fn incr(server: &RedisServer, key: &str, times: u64) -> anyhow::Result<()> {
    let mut conn = server.client().await?;
    for _ in 0..times {
        conn.run_args::<()>(("INCR", key)).await?;
    }
    Ok(())
}

/// The integer at `key` on `server` (0 when absent).
pub async fn read_int(server: &RedisServer, key: &str) -> anyhow::Result<i64> {
    let mut conn = server.client().await?;
    let value: Option<i64> = conn.run_args(("GET", key)).await?;
    Ok(value.unwrap_or(0))
}

/// Every key of db `db` matching `pattern` (KEYS: the scenarios' key spaces are small).
pub async fn keys(
    server: &RedisServer,
    db: u32,
    pattern: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let mut conn = server.client().await?;
    let (_, keys): ((), Vec<String>) = redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await?;
    Ok(keys.into_iter().collect())
}

/// Runs verify between the two servers, after [`no_guard_left`] on the target.
pub async fn verify(source: &RedisServer, target: &RedisServer) -> anyhow::Result<Report> {
    harness::verify_settled(source, target).await
}

/// The TTL guard invariant, judged after every scenario: once the stream has passed
/// the end of a full copy, no key of the target (a server or a cluster, by URL) keeps
/// a guard expiry (the year 3000). Waits up to 30 s: the sync settles the guards on
/// its next checkpoint tick after the stream passed the copy's end.
pub async fn no_guard_left(target_url: &str) -> anyhow::Result<()> {
    harness::no_guard_left(target_url, harness::GUARD_SETTLE_TIMEOUT).await
}

/// Verify finds no difference (and compared at least `min_keys` keys); returns the
/// report for the outcome line.
pub async fn consistent(
    source: &RedisServer,
    target: &RedisServer,
    min_keys: u64,
) -> anyhow::Result<Report> {
    let report = verify(source, target).await?;
    if !report.is_consistent() {
        bail!("verify found differences: {report}");
    }
    if report.verdict() != lockstep_verify::Verdict::Consistent {
        bail!("verify did not cover everything: {report}");
    }
    if report.keys_compared < min_keys {
        bail!(
            "verify compared {} keys, expected at least {min_keys}: {report}",
            report.keys_compared
        );
    }
    Ok(report)
}
