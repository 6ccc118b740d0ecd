//! The invariant of lockstep's TTL race guard, read off a target: once the stream has
//! passed the end of a full copy, no key carries a *guard expiry* (an expiry at or
//! after 3000-01-01, which the full copy writes for keys that expire within the hour
//! and settles afterwards). Every test and chaos scenario that ran a full copy can
//! assert it with [`assert_no_guard_expiry`] (or list the offenders with
//! [`keys_with_guard_expiry`]).
//!
//! The reads are plain SCAN + PTTL + TIME (every version; 6.2 has no PEXPIRETIME),
//! independent of the sync's own code and state: this is an oracle.
//!
//! It must never use lockstep's code or a sync's own state.

use std::time::Duration;

use anyhow::Context;
use redis::aio::MultiplexedConnection;

use crate::info::info;
use crate::topology::wait_until;
use crate::{Cluster, RedisServer};

/// 3000-01-01T00:00:00Z in Unix milliseconds: where lockstep's guard expiries start.
/// A copy of `lockstep_sync::load::GUARD_BASE_MS` (the testkit does not depend on the
/// sync crate, so the oracle does not share its code).
pub const GUARD_BASE_MS: i64 = 32_503_680_000_000;

/// A key found with a guard expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardedKey {
    pub db: u32,
    pub key: String,
    /// Its absolute expiry, Unix ms (>= [`GUARD_BASE_MS`]).
    pub expiry_ms: i64,
}

/// Every key in every database that holds keys (`INFO keyspace`) whose expiry is a
/// guard expiry. Leaves database 0 selected.
pub async fn keys_with_guard_expiry(
    conn: &mut MultiplexedConnection,
) -> anyhow::Result<Vec<GuardedKey>> {
    let keyspace = info(conn, "keyspace").await?;
    let mut dbs: Vec<u32> = keyspace
        .0
        .keys()
        .filter_map(|name| name.strip_prefix("db")?.parse().ok())
        .collect();
    dbs.sort_unstable();
    let mut found = Vec::new();
    for db in dbs {
        redis::cmd("SELECT")
            .arg(db)
            .query_async::<()>(conn)
            .await
            .with_context(|| format!("SELECT {db}"))?;
        found.extend(guarded_in_selected_db(conn, db).await?);
    }
    redis::cmd("SELECT").arg(0).query_async::<()>(conn).await?;
    Ok(found)
}

/// [`keys_with_guard_expiry`] of one server.
pub async fn on_server(server: &RedisServer) -> anyhow::Result<Vec<GuardedKey>> {
    let mut conn = server.client().await?;
    keys_with_guard_expiry(&mut conn).await
}

/// [`keys_with_guard_expiry`] over every primary of a cluster.
pub async fn on_cluster(cluster: &Cluster) -> anyhow::Result<Vec<GuardedKey>> {
    let mut found = Vec::new();
    for node in cluster.primaries().await? {
        found.extend(on_server(node).await?);
    }
    Ok(found)
}

/// [`keys_with_guard_expiry`] of the server at `url`, or of every primary of the
/// cluster it is a node of (`CLUSTER NODES`; the other primaries are reached as
/// `redis://<ip>:<port>`, without the seed's credentials: for the tests' plain
/// clusters).
pub async fn on_url(url: &str) -> anyhow::Result<Vec<GuardedKey>> {
    let client = redis::Client::open(url).with_context(|| format!("opening {url}"))?;
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&crate::server::client_config())
        .await?;
    if info(&mut conn, "cluster").await?.get("cluster_enabled") != Some("1") {
        return keys_with_guard_expiry(&mut conn).await;
    }
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    let mut found = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        let addr = addr.split('@').next().unwrap_or(addr);
        let node = redis::Client::open(format!("redis://{addr}"))?;
        let mut node = node
            .get_multiplexed_async_connection_with_config(&crate::server::client_config())
            .await?;
        found.extend(keys_with_guard_expiry(&mut node).await?);
    }
    Ok(found)
}

/// [`assert_no_guard_expiry`] of the server or cluster at `url` ([`on_url`]).
pub async fn assert_no_guard_expiry_at(url: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_until("no guard expiry left on the target", timeout, || async {
        Ok(describe(on_url(url).await?))
    })
    .await
}

/// Waits (up to `timeout`: the settle runs on the sync's next checkpoint tick after
/// the stream passed the copy's end) until `server` holds no key with a guard expiry;
/// the error lists the first offenders.
pub async fn assert_no_guard_expiry(server: &RedisServer, timeout: Duration) -> anyhow::Result<()> {
    wait_until("no guard expiry left on the target", timeout, || async {
        Ok(describe(on_server(server).await?))
    })
    .await
}

/// [`assert_no_guard_expiry`] over every primary of a cluster.
pub async fn assert_no_guard_expiry_in_cluster(
    cluster: &Cluster,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait_until(
        "no guard expiry left on the target cluster",
        timeout,
        || async { Ok(describe(on_cluster(cluster).await?)) },
    )
    .await
}

fn describe(found: Vec<GuardedKey>) -> Result<(), String> {
    if found.is_empty() {
        return Ok(());
    }
    let first: Vec<String> = found
        .iter()
        .take(5)
        .map(|k| {
            format!(
                "db{} {:?} expires at {} (guard + {} ms)",
                k.db,
                k.key,
                k.expiry_ms,
                k.expiry_ms - GUARD_BASE_MS
            )
        })
        .collect();
    Err(format!(
        "{} key(s) with a guard expiry, e.g. {}",
        found.len(),
        first.join("; ")
    ))
}

/// The guarded keys of the selected database: SCAN, then one pipelined PTTL per batch.
async fn guarded_in_selected_db(
    conn: &mut MultiplexedConnection,
    db: u32,
) -> anyhow::Result<Vec<GuardedKey>> {
    let mut found = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .with_context(|| format!("SCAN of db {db}"))?;
        if !keys.is_empty() {
            let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("PTTL").arg(key);
            }
            let pttls: Vec<i64> = pipe.query_async(conn).await?;
            let now_ms = secs * 1000 + micros / 1000;
            for (key, pttl) in keys.iter().zip(pttls) {
                if pttl >= 0 && now_ms + pttl >= GUARD_BASE_MS {
                    found.push(GuardedKey {
                        db,
                        key: String::from_utf8_lossy(key).into_owned(),
                        expiry_ms: now_ms + pttl,
                    });
                }
            }
        }
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}
