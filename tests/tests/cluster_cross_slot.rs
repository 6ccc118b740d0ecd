//! Commands whose keys fall in different hash slots, from a standalone source into
//! a cluster target, where they cannot run as they are: lockstep copies their keys
//! from the source with a skip window (see `sync/src/cross_slot.rs`). Checked by
//! verify and plain reads of the cluster, never by the sync's own state; and across
//! a killed task, for the skip entries written with the copies.

mod common;

use std::time::Duration;

use common::cluster::{into_cluster, seed_url, wait_consistent, Primaries};
use common::{caught_up, SyncTask};
use lockstep_sync::engine::SyncOptions;
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::topology::{key_slot, Cluster, ClusterSpec};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;

/// Two key names in different slots.
fn apart(a: &str, b: &str) -> (String, String) {
    assert_ne!(
        key_slot(a.as_bytes()),
        key_slot(b.as_bytes()),
        "{a} and {b} share a slot"
    );
    (a.to_owned(), b.to_owned())
}

/// One round of cross-slot commands of every kind, each followed at once by writes
/// to the keys it wrote (those land in the copy's skip window when lockstep lags).
async fn cross_slot_round(conn: &mut MultiplexedConnection, round: usize) -> anyhow::Result<()> {
    let (a, b) = apart("rename:a", "rename:b");
    let (s1, s2) = apart("set:one", "set:two");
    let (l1, l2) = apart("list:one", "list:two");
    let (z1, z2) = apart("zset:one", "zset:two");
    let mut pipe = redis::pipe();
    pipe.cmd("RENAME").arg(&a).arg(&b).ignore();
    pipe.cmd("INCR").arg(&b).ignore();
    pipe.cmd("RENAME").arg(&b).arg(&a).ignore();
    pipe.cmd("INCR").arg(&a).ignore();
    pipe.cmd("SADD").arg(&s1).arg(format!("m{round}")).ignore();
    pipe.cmd("SMOVE")
        .arg(&s1)
        .arg(&s2)
        .arg(format!("m{round}"))
        .ignore();
    pipe.cmd("SADD")
        .arg(&s2)
        .arg(format!("after{round}"))
        .ignore();
    pipe.cmd("SUNIONSTORE")
        .arg("union:{x}")
        .arg(&s1)
        .arg(&s2)
        .ignore();
    pipe.cmd("SADD").arg("union:{x}").arg(round).ignore();
    pipe.cmd("RPUSH")
        .arg(&l1)
        .arg(round)
        .arg(round + 1)
        .ignore();
    pipe.cmd("LMOVE")
        .arg(&l1)
        .arg(&l2)
        .arg("LEFT")
        .arg("RIGHT")
        .ignore();
    pipe.cmd("RPUSH").arg(&l2).arg("tail").ignore();
    pipe.cmd("ZADD")
        .arg(&z1)
        .arg(round)
        .arg(format!("m{round}"))
        .ignore();
    pipe.cmd("ZUNIONSTORE")
        .arg(&z2)
        .arg(2)
        .arg(&z1)
        .arg(&z2)
        .ignore();
    pipe.cmd("ZINCRBY")
        .arg(&z2)
        .arg(1)
        .arg(format!("m{round}"))
        .ignore();
    pipe.cmd("COPY")
        .arg(&z2)
        .arg("zset:copy")
        .arg("REPLACE")
        .ignore();
    pipe.cmd("EXPIRE").arg("zset:copy").arg(3600).ignore();
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

async fn start_keys(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    conn.run::<()>("SET rename:a 0").await?;
    Ok(())
}

/// RENAME, SMOVE, SUNIONSTORE, LMOVE, ZUNIONSTORE and COPY across slots, each
/// followed by writes to its keys, 8.2 into 6.2 (payloads re-encoded) and 7.0 into
/// 7.0: verify finds the cluster equal, the task never stopped, and the counter
/// carried by RENAME back and forth is exact.
#[tokio::test]
async fn cross_slot_commands_are_copied_from_the_source() -> anyhow::Result<()> {
    for (from, to) in [
        (RedisVersion::V8_2, RedisVersion::V6_2),
        (RedisVersion::V7_0, RedisVersion::V7_0),
    ] {
        let source = RedisServer::start(ServerConfig::new(from)).await?;
        let cluster = Cluster::start(ClusterSpec::new(ServerConfig::new(to), 3, 0)).await?;
        let mut conn = source.client().await?;
        start_keys(&mut conn).await?;
        let dir = tempfile::tempdir()?;
        let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
        caught_up(&mut task, &source).await?;
        for round in 0..300 {
            cross_slot_round(&mut conn, round).await?;
        }
        caught_up(&mut task, &source).await?;
        let report = wait_consistent(
            &source.url(),
            &seed_url(&cluster),
            std::slice::from_mut(&mut task),
            Duration::from_secs(30),
        )
        .await?;
        assert!(report.keys_compared >= 8, "{from}->{to}: {report}");
        let mut primaries = Primaries::of(&cluster).await?;
        let counter = primaries.int("rename:a").await?;
        assert_eq!(counter, 600, "{from}->{to}: an INCR applied twice or lost");
        let now = task.now();
        assert_eq!(
            (now.full_syncs, now.partial_syncs),
            (1, 0),
            "{from}->{to}: {now:?}"
        );
        task.finish().await?;
    }
    Ok(())
}

/// The churn workload without hash tags (its multi-key commands: RENAME, SMOVE,
/// LMOVE, SUNIONSTORE, ZUNIONSTORE, BITOP, PFMERGE, COPY... over any slots, and
/// FLUSHDB now and then) from a standalone source into clusters of 6.2, 7.0 and
/// 8.2: the task never stops and verify finds every cluster equal.
#[tokio::test]
async fn the_untagged_churn_goes_into_clusters_of_every_version() -> anyhow::Result<()> {
    for version in [RedisVersion::V6_2, RedisVersion::V7_0, RedisVersion::V8_2] {
        let source = RedisServer::start(ServerConfig::new(version)).await?;
        let cluster = Cluster::start(ClusterSpec::new(ServerConfig::new(version), 3, 0)).await?;
        let client = source.redis_client()?;
        let before = ChurnSpec::new(11)
            .rate(2000.0)
            .duration(Some(Duration::from_secs(1)));
        Churn::run(&client, &before).await?;
        let dir = tempfile::tempdir()?;
        let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
        caught_up(&mut task, &source).await?;
        let during = ChurnSpec::new(12)
            .rate(1500.0)
            .duration(Some(Duration::from_secs(3)))
            .flushdb(true);
        let report = Churn::run(&client, &during).await?;
        caught_up(&mut task, &source).await?;
        let verified = wait_consistent(
            &source.url(),
            &seed_url(&cluster),
            std::slice::from_mut(&mut task),
            Duration::from_secs(30),
        )
        .await?;
        let now = task.now();
        assert_eq!(
            (now.full_syncs, now.partial_syncs),
            (1, 0),
            "{version}: the session ended: {now:?}"
        );
        eprintln!("{version}: {} churn ops, {verified}", report.ops);
        task.finish().await?;
    }
    Ok(())
}

/// Skip entries on the cluster still ahead of their slot's checkpoint: copies whose
/// window a restart must honour.
async fn open_windows(cluster: &Cluster) -> anyhow::Result<usize> {
    let mut open = 0;
    for node in cluster.primaries().await? {
        let mut conn = node.client().await?;
        let hashes: Vec<String> = conn.run("KEYS LOCKSTEP_SKIP*").await?;
        for hash in hashes {
            let entries: Vec<(String, i64)> = conn.run_args(("HGETALL", &hash)).await?;
            let checkpoint: String = conn
                .run_args(("GET", hash.replace("LOCKSTEP_SKIP", "LOCKSTEP_CHECKPOINT")))
                .await?;
            let at: i64 = checkpoint
                .split_whitespace()
                .nth(1)
                .and_then(|o| o.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("checkpoint {checkpoint:?}"))?;
            open += entries.iter().filter(|(_, through)| *through > at).count();
        }
    }
    Ok(open)
}

/// The task is killed again and again while cross-slot commands and the writes
/// after them stream in, throttled so that it lags and the copies' windows stay
/// open across the kills: each restart resumes from the slots' checkpoints with the
/// skip entries written alongside the copies, so nothing is applied twice or
/// skipped (the counters stay exact) and verify finds the cluster equal.
#[tokio::test]
async fn a_killed_task_keeps_cross_slot_copies_exact() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let source = RedisServer::start(ServerConfig::new(version)).await?;
    let cluster = Cluster::start(ClusterSpec::new(ServerConfig::new(version), 3, 0)).await?;
    let mut conn = source.client().await?;
    start_keys(&mut conn).await?;
    let dir = tempfile::tempdir()?;
    let throttled = || -> anyhow::Result<SyncOptions> {
        let mut options = into_cluster(&source, &cluster, dir.path())?;
        options.throttle.incremental_commands_per_sec = Some(2000);
        Ok(options)
    };
    let mut task = SyncTask::spawn(throttled()?);
    caught_up(&mut task, &source).await?;
    let (rounds_per_kill, fillers) = (20, 100);
    let mut round = 0;
    let mut windows_at_kills = 0;
    for kill in 0..4 {
        // A key copied once and never again: only the skip entry written with its
        // copy keeps a restart from applying the INCRs in its window twice.
        let (base, moved) = apart(&format!("base:{kill}"), &format!("moved:{kill}"));
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&base).arg(0).ignore();
        pipe.cmd("RENAME").arg(&base).arg(&moved).ignore();
        for _ in 0..200 {
            pipe.cmd("INCR").arg(&moved).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        for _ in 0..rounds_per_kill {
            cross_slot_round(&mut conn, round).await?;
            let mut pipe = redis::pipe();
            for j in 0..fillers {
                pipe.cmd("INCR").arg(format!("filler:{}", j % 50)).ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
            round += 1;
        }
        // The task needs seconds for what was just written.
        tokio::time::sleep(Duration::from_millis(300 + 150 * kill)).await;
        task.handle.abort();
        let _ = (&mut task.handle).await;
        windows_at_kills += open_windows(&cluster).await?;
        task = SyncTask::spawn(throttled()?);
    }
    caught_up(&mut task, &source).await?;
    assert!(
        windows_at_kills > 0,
        "no kill landed inside a copy's window: the test proved nothing"
    );
    wait_consistent(
        &source.url(),
        &seed_url(&cluster),
        std::slice::from_mut(&mut task),
        Duration::from_secs(30),
    )
    .await?;
    let mut primaries = Primaries::of(&cluster).await?;
    let counter = primaries.int("rename:a").await?;
    assert_eq!(counter, 2 * round as i64, "an INCR applied twice or lost");
    for j in 0..50 {
        let key = format!("filler:{j}");
        let filler = primaries.int(&key).await?;
        assert_eq!(filler, (round * fillers / 50) as i64, "{key}");
    }
    let now = task.now();
    assert_eq!(
        now.full_syncs, 0,
        "a restart copied everything again: {now:?}"
    );
    task.finish().await?;
    Ok(())
}
