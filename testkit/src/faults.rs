//! Faults that a sync's consistency is judged by, done to real servers: FLUSHALL /
//! FLUSHDB, eviction under a tiny `maxmemory`, and replication backlog overflow.
//!
//! Process faults (kill -9, SIGSTOP/SIGCONT, restart) are methods of
//! [`RedisServer`]; failovers are methods of the topologies; network faults live in
//! [`crate::proxy`]. Each fault here returns what the servers measured, so a test can
//! show that the fault happened rather than assume it.
//!
//! It must never read the sync's state: a fault is done and measured on the servers
//! alone.

use std::time::Duration;

use anyhow::{bail, Context};

use crate::info::{self, config_set};
use crate::server::RedisServer;
use crate::topology::ReplicaSet;

/// `FLUSHALL` on a node (it propagates to that node's replicas).
pub async fn flushall(server: &RedisServer) -> anyhow::Result<()> {
    let mut conn = server.client().await?;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .context("FLUSHALL")
}

/// `FLUSHDB` of database `db` on a node.
pub async fn flushdb(server: &RedisServer, db: u32) -> anyhow::Result<()> {
    let mut conn = server.client().await?;
    redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .ignore()
        .cmd("FLUSHDB")
        .ignore()
        .query_async::<()>(&mut conn)
        .await
        .with_context(|| format!("FLUSHDB of db {db}"))
}

/// What [`force_evictions`] did, read off the server's INFO.
#[derive(Clone, Debug)]
pub struct EvictionReport {
    pub keys_written: u64,
    /// `evicted_keys` grew by this much during the writes.
    pub evicted_keys: i64,
    /// Keys left in db 0 afterwards.
    pub keys_left: i64,
}

/// Sets `maxmemory` to `maxmemory_bytes` above the server's current use and the
/// eviction `policy` (e.g. "allkeys-lru", "volatile-ttl"), then writes keys of
/// `value_bytes` (with a TTL when the policy is a `volatile-*` one) until the server
/// has evicted at least `evictions_min` keys, or `keys_max` were written.
pub async fn force_evictions(
    server: &RedisServer,
    maxmemory_bytes: u64,
    policy: &str,
    value_bytes: usize,
    evictions_min: i64,
    keys_max: u64,
) -> anyhow::Result<EvictionReport> {
    let mut conn = server.client().await?;
    let before = info::info(&mut conn, "").await?;
    let used = before.int("used_memory")? as u64;
    config_set(&mut conn, "maxmemory-policy", policy).await?;
    config_set(
        &mut conn,
        "maxmemory",
        &(used + maxmemory_bytes).to_string(),
    )
    .await?;
    let evicted_before = before.int("evicted_keys")?;
    let volatile = policy.starts_with("volatile");
    let value = vec![b'x'; value_bytes];
    let mut written = 0u64;
    let mut evicted = 0;
    while written < keys_max && evicted < evictions_min {
        let mut pipe = redis::pipe();
        for _ in 0..100 {
            let key = format!("evict:{written}");
            if volatile {
                pipe.cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("EX")
                    .arg(3600)
                    .ignore();
            } else {
                pipe.cmd("SET").arg(&key).arg(&value).ignore();
            }
            written += 1;
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .context("writing keys to force evictions")?;
        evicted = info::info(&mut conn, "stats").await?.int("evicted_keys")? - evicted_before;
    }
    if evicted < evictions_min {
        bail!("{written} keys written but only {evicted} evicted (wanted {evictions_min}) under {policy}");
    }
    let keys_left = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    Ok(EvictionReport {
        keys_written: written,
        evicted_keys: evicted,
        keys_left,
    })
}

/// What a cut replica link plus a write burst did to replication, from the primary's
/// INFO stats: how the replica came back.
#[derive(Clone, Debug)]
pub struct ResyncReport {
    pub burst_bytes: u64,
    /// Full resynchronizations the primary served (`sync_full` delta).
    pub full_syncs: i64,
    /// Partial resynchronizations accepted (`sync_partial_ok` delta).
    pub partial_ok: i64,
    /// Partial resynchronizations refused (`sync_partial_err` delta).
    pub partial_err: i64,
}

/// Cuts the link of replica `servers[replica]` (SIGSTOP so it cannot reconnect, then
/// CLIENT KILL of exactly its connection on the primary), writes `burst_bytes` to the
/// primary, lets the replica go and waits until it is in sync again. With a
/// repl-backlog-size smaller than the burst this forces a full resync; with a larger
/// one the replica continues partially. Set the backlog with
/// [`set_backlog_size`] first.
pub async fn cut_replica_during_burst(
    set: &ReplicaSet,
    replica: usize,
    burst_bytes: u64,
) -> anyhow::Result<ResyncReport> {
    if replica == set.primary_index() || replica >= set.servers.len() {
        bail!("server {replica} is not a replica of this set");
    }
    let replica_server = &set.servers[replica];
    let primary = set.primary();
    let link = replica_link_address(replica_server).await?;
    let mut conn = primary.client().await?;
    let stats = info::info(&mut conn, "stats").await?;

    replica_server.pause();
    let outcome = async {
        let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ADDR").arg(&link).arg("SKIPME").arg("yes").query_async(&mut conn).await?;
        if killed != 1 {
            bail!("CLIENT KILL ADDR {link} killed {killed} connections, expected the one replica link");
        }
        let chunk = vec![b'b'; 4096];
        let mut sent = 0u64;
        let mut i = 0u64;
        while sent < burst_bytes {
            let mut pipe = redis::pipe();
            for _ in 0..64 {
                pipe.cmd("SET").arg(format!("burst:{i}")).arg(&chunk).ignore();
                sent += chunk.len() as u64;
                i += 1;
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        anyhow::Ok(sent)
    }
    .await;
    replica_server.resume();
    let sent = outcome?;
    set.wait_in_sync().await?;
    let after = info::info(&mut conn, "stats").await?;
    let delta = |field: &str| -> anyhow::Result<i64> { Ok(after.int(field)? - stats.int(field)?) };
    Ok(ResyncReport {
        burst_bytes: sent,
        full_syncs: delta("sync_full")?,
        partial_ok: delta("sync_partial_ok")?,
        partial_err: delta("sync_partial_err")?,
    })
}

/// Sets the primary's `repl-backlog-size` (Redis's minimum is 16 KiB).
pub async fn set_backlog_size(server: &RedisServer, bytes: u64) -> anyhow::Result<()> {
    config_set(
        &mut server.client().await?,
        "repl-backlog-size",
        &bytes.to_string(),
    )
    .await
}

/// The replica's end of its link to the primary, as the primary's CLIENT LIST shows
/// it (`ip:port`), read from the replica's own CLIENT LIST (`flags=M`, `laddr`).
async fn replica_link_address(replica: &RedisServer) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = replica.client().await?;
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await?;
        for line in list.lines() {
            let field = |name: &str| line.split(' ').find_map(|kv| kv.strip_prefix(name));
            if field("flags=") == Some("M") {
                return field("laddr=")
                    .map(str::to_owned)
                    .context("the replica's CLIENT LIST has no laddr for its master link");
            }
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "replica {} has no link to a primary (no flags=M client) after 10 s",
                replica.addr()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
