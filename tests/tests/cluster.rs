//! End to end with Redis Clusters (testkit clusters of 3 primaries x 1 replica): a
//! standalone source into a cluster target, and a cluster source into a standalone or
//! a cluster target. Two checkers, both independent of the sync: plain reads (every
//! source key's whole value, by verify's canonical reader, and TTL against the
//! primary serving its slot, and the key counts), and verify itself, which reads a
//! cluster side through its primaries.

mod common;

use std::time::Duration;

use common::cluster::{
    churn_every_shard, into_cluster, seed_url, spawn_shard_tasks, user_keys, verify,
    wait_consistent, Primaries,
};
use common::{caught_up, SyncTask};
use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::slots::key_slot;
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::topology::{tag_for_slot, Cluster, ClusterSpec, FailoverMode, SlotMigration};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::canonical;
use redis::aio::MultiplexedConnection;

/// How long verify may take to find a target equal to a cluster source.
const CONVERGE: Duration = Duration::from_secs(60);

async fn cluster(version: RedisVersion) -> anyhow::Result<Cluster> {
    Cluster::start(ClusterSpec::new(ServerConfig::new(version), 3, 1)).await
}

/// Every source key (db 0) has the same value and TTL (2 s tolerance) on the
/// primary serving its slot, and the cluster holds no other key but lockstep's.
/// Returns the number of keys compared.
async fn assert_cluster_equal(source: &RedisServer, cluster: &Cluster) -> anyhow::Result<usize> {
    // The full copy's TTL guards are settled (waited for: the next checkpoint tick).
    lockstep_testkit::guard::assert_no_guard_expiry_in_cluster(cluster, Duration::from_secs(30))
        .await?;
    let mut src = source.client().await?;
    let mut primaries = Primaries::of(cluster).await?;
    let keys: Vec<Vec<u8>> = src.run("KEYS *").await?;
    let keys: Vec<Vec<u8>> = keys
        .into_iter()
        .filter(|k| !k.starts_with(b"LOCKSTEP_"))
        .collect();
    let mut differences = Vec::new();
    for key in &keys {
        let dst = primaries.conn(key);
        let (a, b) = (
            canonical::read(&mut src, key).await?,
            canonical::read(dst, key).await?,
        );
        let ttl_a: i64 = src.run_args(("PTTL", key)).await?;
        let ttl_b: i64 = dst.run_args(("PTTL", key)).await?;
        let ttl_equal = (ttl_a < 0 && ttl_a == ttl_b)
            || (ttl_a >= 0 && ttl_b >= 0 && (ttl_a - ttl_b).abs() <= 2000);
        if a != b || !ttl_equal {
            differences.push(format!(
                "{}: {a:?} ttl {ttl_a} vs {b:?} ttl {ttl_b}",
                String::from_utf8_lossy(key)
            ));
        }
    }
    let on_cluster = user_keys(cluster).await?;
    assert!(
        differences.is_empty(),
        "{} differing keys, first: {:?}",
        differences.len(),
        &differences[..differences.len().min(5)]
    );
    assert_eq!(
        on_cluster,
        keys.len() as u64,
        "the cluster holds keys the source does not"
    );
    assert!(!keys.is_empty(), "nothing was compared");
    Ok(keys.len())
}

#[tokio::test]
async fn hash_slots_agree_with_cluster_keyslot() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec::new(
        ServerConfig::new(RedisVersion::V7_0),
        3,
        0,
    ))
    .await?;
    let mut conn = cluster.nodes[0].client().await?;
    let keys: Vec<Vec<u8>> = [
        "",
        "foo",
        "{user1000}.following",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "a{b}c{d}",
        "{}",
        "}{x}",
        "\u{e9}t\u{e9}",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .chain((0..200u32).map(|i| format!("key:{i}:{{tag{}}}", i % 7).into_bytes()))
    .chain((0..50u8).map(|i| vec![i, 255 - i, b'{', i, b'}']))
    .collect();
    for key in keys {
        let slot: u16 = conn.run_args(("CLUSTER", "KEYSLOT", &key)).await?;
        assert_eq!(key_slot(&key), slot, "{key:?}");
    }
    Ok(())
}

/// The full data set and three tagged churns into a 7.0 cluster, then a primary of
/// the target fails over while the churns go on: the sync continues and the
/// cluster ends equal to the source.
#[tokio::test]
async fn standalone_into_a_cluster_through_a_target_failover() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let source = RedisServer::start(ServerConfig::new(version)).await?;
    let cluster = cluster(version).await?;
    DataSet::write(&source.redis_client()?, &DataSpec::new(7, 20).dbs(&[0])).await?;
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    // Writes during the copy and the stream, and multi-key writes over many slots
    // (split by slot on the target).
    let ops = churn_every_shard(&cluster, Some(&source), 21, 300.0, Duration::from_secs(2)).await?;
    assert!(ops > 300, "{ops}");
    let mut conn = source.client().await?;
    let pairs: Vec<String> = (0..40)
        .flat_map(|i| [format!("mset:{i}"), i.to_string()])
        .collect();
    conn.run_args::<()>(("MSET", &pairs)).await?;
    let some: Vec<String> = (0..40).step_by(3).map(|i| format!("mset:{i}")).collect();
    conn.run_args::<()>(("DEL", &some)).await?;
    caught_up(&mut task, &source).await?;
    let compared = assert_cluster_equal(&source, &cluster).await?;
    assert!(compared > 100, "{compared}");

    // Node 3 is the replica of node 0: a coordinated failover while writes go on.
    let writes = churn_every_shard(&cluster, Some(&source), 31, 300.0, Duration::from_secs(2));
    let failover = cluster.failover(3, FailoverMode::Coordinated);
    let (ops, failed_over) = tokio::join!(writes, failover);
    ops?;
    failed_over?;
    for i in 0..200 {
        conn.run_args::<()>(("INCR", format!("after-failover:{}", i % 20)))
            .await?;
    }
    caught_up(&mut task, &source).await?;
    assert_cluster_equal(&source, &cluster).await?;
    let report = verify(&source.url(), &seed_url(&cluster), &[0]).await?;
    assert!(
        report.is_consistent(),
        "verify, standalone -> cluster: {report}"
    );
    let progress = task.now();
    assert_eq!(
        progress.full_syncs, 1,
        "the failover must not force a full resync: {progress:?}"
    );
    // The old primary answered MOVED/READONLY or closed: the task read the slot map
    // again and went on from the slots' checkpoints.
    assert!(progress.partial_syncs >= 1, "no reconnection: {progress:?}");
    task.finish().await?;
    Ok(())
}

/// A task killed mid-stream (no goodbye) and started again resumes from the shards'
/// checkpoints: counters spread over every shard end exact.
#[tokio::test]
async fn a_killed_task_resumes_exactly_into_a_cluster() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let source = RedisServer::start(ServerConfig::new(version)).await?;
    let cluster = cluster(version).await?;
    let mut conn = source.client().await?;
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    let round = |conn: &mut MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            for i in 0..600 {
                let mut pipe = redis::pipe();
                pipe.cmd("INCR").arg(format!("counter:{}", i % 30)).ignore();
                pipe.cmd("RPUSH")
                    .arg(format!("list:{}", i % 30))
                    .arg(i)
                    .ignore();
                pipe.query_async::<()>(&mut conn).await?;
            }
            anyhow::Ok(())
        }
    };
    round(&mut conn).await?;
    caught_up(&mut task, &source).await?;
    // Killed while it applies a burst: some shards' transactions land, others not.
    let burst = round(&mut conn);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        task.handle.abort();
    };
    let (burst, ()) = tokio::join!(burst, kill);
    burst?;
    round(&mut conn).await?;
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    caught_up(&mut task, &source).await?;
    let progress = task.now();
    assert_eq!(
        (progress.full_syncs, progress.partial_syncs),
        (0, 1),
        "{progress:?}"
    );
    let mut primaries = Primaries::of(&cluster).await?;
    for i in 0..30 {
        let key = format!("counter:{i}");
        let counter = primaries.int(&key).await?;
        let list = format!("list:{i}");
        let len: i64 = primaries
            .conn(list.as_bytes())
            .run_args(("LLEN", &list))
            .await?;
        assert_eq!(
            (counter, len),
            (60, 60),
            "{key}: replayed or skipped commands"
        );
    }
    assert_cluster_equal(&source, &cluster).await?;
    task.finish().await?;
    Ok(())
}

/// Moves `slot` to another primary, slowly, so that the sync writes into it while
/// it moves. Returns how many keys moved.
async fn migrate_slot(cluster: &Cluster, slot: u16) -> anyhow::Result<usize> {
    SlotMigration::begin(cluster, slot)
        .await?
        .finish(Duration::from_millis(20))
        .await
}

/// A slot of the target moves to another primary while the stream writes into it
/// (ASK during the move, MOVED after): the sync goes on in the same session, the
/// counters in that slot end exact and the cluster equal to the source.
#[tokio::test]
async fn a_slot_migrating_on_the_target_does_not_stop_the_sync() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let source = RedisServer::start(ServerConfig::new(version)).await?;
    let cluster = cluster(version).await?;
    let mut conn = source.client().await?;
    let slot = key_slot(b"moving");
    for i in 0..100 {
        conn.run_args::<()>(("SET", format!("{{moving}}:{i}"), i))
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    caught_up(&mut task, &source).await?;
    let writes = {
        let mut conn = conn.clone();
        async move {
            for i in 0..1500 {
                conn.run_args::<()>(("INCR", format!("{{moving}}:counter:{}", i % 10)))
                    .await?;
                if i % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            anyhow::Ok(())
        }
    };
    let (written, moved) = tokio::join!(writes, migrate_slot(&cluster, slot));
    written?;
    let moved = moved?;
    assert!(moved >= 100, "{moved} keys moved");
    // After the move the old owner answers MOVED: the task reads the map again.
    for i in 0..100 {
        conn.run_args::<()>(("INCR", format!("{{moving}}:counter:{}", i % 10)))
            .await?;
    }
    caught_up(&mut task, &source).await?;
    // ASK was followed with ASKING, TRYAGAIN waited out, MOVED read the map again:
    // all within the one session.
    assert_eq!(
        task.now().partial_syncs,
        0,
        "the session ended: {:?}",
        task.now()
    );
    let mut primaries = Primaries::of(&cluster).await?;
    for i in 0..10 {
        let key = format!("{{moving}}:counter:{i}");
        let counter = primaries.int(&key).await?;
        assert_eq!(counter, 160, "{key}");
    }
    assert_cluster_equal(&source, &cluster).await?;
    assert_eq!(task.now().full_syncs, 1, "{:?}", task.now());
    task.finish().await?;
    Ok(())
}

/// A target slot mid-migration when the task starts: the full copy follows ASK
/// (RESTORE after ASKING on the importing node; an MSET split by TRYAGAIN), and a
/// resumed task reads the checkpoint of a slot whose checkpoint key has already
/// moved, then waits out TRYAGAIN until the move ends. No session ends, counters
/// stay exact, and the cluster equals the source.
#[tokio::test]
async fn a_task_started_during_a_target_slot_migration_follows_ask() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let source = RedisServer::start(ServerConfig::new(version)).await?;
    let cluster = cluster(version).await?;
    let mut conn = source.client().await?;
    let slot = key_slot(b"moving");
    for i in 0..200 {
        // Strings without expiry are copied by MSET, the others by RESTORE.
        conn.run_args::<()>(("SET", format!("{{moving}}:s:{i}"), i))
            .await?;
        conn.run_args::<()>(("RPUSH", format!("{{moving}}:l:{i}"), i))
            .await?;
    }
    let moving = SlotMigration::begin(&cluster, slot).await?;
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    caught_up(&mut task, &source).await?;
    assert_eq!(task.now().partial_syncs, 0, "{:?}", task.now());
    moving.finish(Duration::ZERO).await?;
    task.finish().await?;

    // Moving the slot back: its checkpoint key goes first, alone.
    let mut back = SlotMigration::begin(&cluster, slot).await?;
    let checkpoint: Vec<Vec<u8>> = back
        .keys_left(1000)
        .await?
        .into_iter()
        .filter(|k| k.starts_with(b"LOCKSTEP_CHECKPOINT"))
        .collect();
    assert_eq!(checkpoint.len(), 1, "the slot's checkpoint key");
    back.migrate(&checkpoint).await?;
    for i in 0..300 {
        conn.run_args::<()>(("INCR", format!("{{moving}}:counter:{}", i % 10)))
            .await?;
    }
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    back.finish(Duration::from_millis(10)).await?;
    caught_up(&mut task, &source).await?;
    let now = task.now();
    assert_eq!(
        (now.full_syncs, now.partial_syncs),
        (0, 1),
        "one partial resync, no full copy, no session ended: {now:?}"
    );
    let mut primaries = Primaries::of(&cluster).await?;
    for i in 0..10 {
        let key = format!("{{moving}}:counter:{i}");
        let counter = primaries.int(&key).await?;
        assert_eq!(counter, 30, "{key}");
    }
    assert_cluster_equal(&source, &cluster).await?;
    task.finish().await?;
    Ok(())
}

/// A source database not mapped to 0 stops the task at start, naming the fix; mapped
/// to 0 it goes, and a RENAME across slots in it is copied from the source's
/// database 3 (the copy reads the database the stream is in).
#[tokio::test]
async fn a_mapped_database_goes_into_a_cluster_and_cross_slot_copies_read_it() -> anyhow::Result<()>
{
    let version = RedisVersion::V7_0;
    let source = RedisServer::start(ServerConfig::new(version)).await?;
    let cluster = cluster(version).await?;
    let mut conn = source.client().await?;
    conn.run::<()>("SELECT 3").await?;
    conn.run::<()>("SET in-db-3 1").await?;
    conn.run::<()>("SELECT 0").await?;
    let dir = tempfile::tempdir()?;
    let task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    let ended = tokio::time::timeout(Duration::from_secs(30), task.handle).await??;
    let message = ended.expect_err("db 3 into a cluster").to_string();
    assert!(message.contains("--map-db 3:0"), "{message}");

    // Selected and mapped to 0, it goes; a RENAME across slots is copied.
    let mut options = into_cluster(&source, &cluster, dir.path())?;
    options.filter.dbs = vec![3];
    options.filter.db_map = vec![(3, 0)];
    let mut task = SyncTask::spawn(options);
    caught_up(&mut task, &source).await?;
    let mut primaries = Primaries::of(&cluster).await?;
    let copied: Option<i64> = primaries.conn(b"in-db-3").run("GET in-db-3").await?;
    assert_eq!(copied, Some(1));
    conn.run::<()>("SELECT 3").await?;
    conn.run::<()>("SET a 1").await?;
    assert_ne!(key_slot(b"a"), key_slot(b"b"));
    conn.run::<()>("RENAME a b").await?;
    caught_up(&mut task, &source).await?;
    let renamed: (Option<i64>, Option<i64>) = (
        primaries.conn(b"a").run("GET a").await?,
        primaries.conn(b"b").run("GET b").await?,
    );
    assert_eq!(renamed, (None, Some(1)), "RENAME a b across slots");
    task.finish().await?;
    Ok(())
}

/// The data set and tagged churns into 6.2 and 8.2 clusters (CLUSTER SLOTS on both,
/// 8.2's newer types and encodings).
#[tokio::test]
async fn standalone_into_6_2_and_8_2_clusters() -> anyhow::Result<()> {
    for version in [RedisVersion::V6_2, RedisVersion::V8_2] {
        let source = RedisServer::start(ServerConfig::new(version)).await?;
        let cluster = cluster(version).await?;
        DataSet::write(&source.redis_client()?, &DataSpec::new(5, 10).dbs(&[0])).await?;
        let dir = tempfile::tempdir()?;
        let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
        churn_every_shard(&cluster, Some(&source), 41, 300.0, Duration::from_secs(2)).await?;
        caught_up(&mut task, &source).await?;
        assert_cluster_equal(&source, &cluster).await?;
        task.finish().await?;
    }
    Ok(())
}

/// A target primary is killed (kill -9) while the stream writes and its replica takes
/// over by FORCE: the promoted replica may lack the last transactions, and their
/// slots' checkpoints with them, so the task resumes far enough back for them. The
/// counters on every shard end exact.
#[tokio::test]
async fn a_killed_target_primary_and_a_forced_failover_keep_counters_exact() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let source = RedisServer::start(ServerConfig::new(version)).await?;
    let mut cluster = cluster(version).await?;
    let conn = source.client().await?;
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    let round = |conn: &MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            for i in 0..600 {
                let mut pipe = redis::pipe();
                pipe.cmd("INCR").arg(format!("counter:{}", i % 30)).ignore();
                pipe.query_async::<()>(&mut conn).await?;
            }
            anyhow::Ok(())
        }
    };
    round(&conn).await?;
    caught_up(&mut task, &source).await?;
    let burst = round(&conn);
    let kill = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.nodes[0].kill9();
    };
    let (burst, ()) = tokio::join!(burst, kill);
    burst?;
    // Node 3 replicates node 0.
    let mut replica = cluster.nodes[3].client().await?;
    replica.run::<()>("CLUSTER FAILOVER FORCE").await?;
    lockstep_testkit::topology::wait_until(
        "node 3 is a primary",
        Duration::from_secs(30),
        || async {
            let role = cluster.nodes[3].info("replication").await?;
            Ok(if role.get("role") == Some("master") {
                Ok(())
            } else {
                Err(format!("role {:?}", role.get("role")))
            })
        },
    )
    .await?;
    round(&conn).await?;
    caught_up(&mut task, &source).await?;
    let mut primaries = Primaries::of(&cluster).await?;
    assert_eq!(primaries.by_port.len(), 3);
    for i in 0..30 {
        let key = format!("counter:{i}");
        let counter = primaries.int(&key).await?;
        assert_eq!(counter, 60, "{key}: replayed or skipped commands");
    }
    let progress = task.now();
    assert_eq!(
        (progress.full_syncs >= 1, progress.partial_syncs >= 1),
        (true, true),
        "the task must have reconnected after the kill, without a new full copy: {progress:?}"
    );
    assert_eq!(progress.full_syncs, 1, "{progress:?}");
    task.finish().await?;
    Ok(())
}

/// FLUSHALL and FLUSHDB in the stream empty every primary, in order with the writes
/// around them; a restart after them resumes exactly.
#[tokio::test]
async fn flushall_in_the_stream_reaches_every_primary() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let source = RedisServer::start(ServerConfig::new(version)).await?;
    let cluster = cluster(version).await?;
    let mut conn = source.client().await?;
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    caught_up(&mut task, &source).await?;
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("SET").arg(format!("before:{i}")).arg(i).ignore();
    }
    pipe.cmd("FLUSHALL").ignore();
    for i in 0..300 {
        pipe.cmd("INCR").arg(format!("after:{}", i % 50)).ignore();
    }
    pipe.cmd("FLUSHDB").ignore();
    for i in 0..300 {
        pipe.cmd("INCR").arg(format!("last:{}", i % 50)).ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    caught_up(&mut task, &source).await?;
    task.handle.abort();
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    for i in 0..100 {
        conn.run_args::<()>(("INCR", format!("last:{}", i % 50)))
            .await?;
    }
    caught_up(&mut task, &source).await?;
    assert_eq!(assert_cluster_equal(&source, &cluster).await?, 50);
    let mut primaries = Primaries::of(&cluster).await?;
    let counter = primaries.int("last:7").await?;
    assert_eq!(counter, 8);
    task.finish().await?;
    Ok(())
}

// ---- A cluster as the source -------------------------------------------------

/// Writes into the source cluster: strings (some with TTLs), hashes, lists, sets
/// and zsets over every slot range, and counters.
async fn write_cluster(cluster: &Cluster, round: u32) -> anyhow::Result<()> {
    let mut conn = cluster.cluster_client().await?;
    for i in 0..300u32 {
        conn.run_args::<()>(("SET", format!("s:{round}:{i}"), i))
            .await?;
        if i % 5 == 0 {
            conn.run_args::<()>(("SET", format!("ttl:{round}:{i}"), i, "EX", 3600))
                .await?;
        }
        conn.run_args::<()>(("HSET", format!("h:{}", i % 40), format!("f{round}:{i}"), i))
            .await?;
        conn.run_args::<()>(("RPUSH", format!("l:{}", i % 40), i))
            .await?;
        conn.run_args::<()>(("ZADD", format!("z:{}", i % 30), i, format!("m{round}:{i}")))
            .await?;
        conn.run_args::<()>(("INCR", format!("counter:{}", i % 50)))
            .await?;
    }
    Ok(())
}

/// A cluster source into a standalone target: one link per shard, a source failover
/// followed without a full resync (the promoted replica continues the shard's
/// history), and a FLUSHALL of one shard that removes that shard's keys only.
#[tokio::test]
async fn a_cluster_source_into_a_standalone_target_through_a_source_failover() -> anyhow::Result<()>
{
    let version = RedisVersion::V7_0;
    let source = cluster(version).await?;
    let target = RedisServer::start(ServerConfig::new(version)).await?;
    write_cluster(&source, 0).await?;
    let dir = tempfile::tempdir()?;
    let seed = seed_url(&source);
    let mut tasks = spawn_shard_tasks(&source, &target.url(), dir.path(), false).await?;
    assert_eq!(tasks.len(), 3, "one task per primary");
    write_cluster(&source, 1).await?;
    wait_consistent(&seed, &target.url(), &mut tasks, CONVERGE).await?;

    // Node 3 replicates node 0: a coordinated failover while writes go on.
    let writes = write_cluster(&source, 2);
    let failover = source.failover(3, FailoverMode::Coordinated);
    let (writes, failed_over) = tokio::join!(writes, failover);
    writes?;
    failed_over?;
    write_cluster(&source, 3).await?;
    wait_consistent(&seed, &target.url(), &mut tasks, CONVERGE).await?;
    for task in &tasks {
        let progress = task.now();
        assert_eq!(
            progress.full_syncs, 1,
            "the failover must not force a full resync: {progress:?}"
        );
    }
    assert!(
        tasks.iter().any(|t| t.now().partial_syncs >= 1),
        "the failed-over shard did not resume by PSYNC"
    );
    // Its link follows the new primary (node 3: the old primary and lockstep are its
    // replicas), not the old one (now a replica itself, with none of its own).
    let replicas_of = |node: usize| {
        let node = &source.nodes[node];
        async move {
            let info = node.info("replication").await?;
            anyhow::Ok(info.int("connected_slaves")?)
        }
    };
    assert_eq!(
        replicas_of(3).await?,
        2,
        "node 3 should feed node 0 and lockstep"
    );
    assert_eq!(
        replicas_of(0).await?,
        0,
        "lockstep still reads the old primary"
    );

    // A FLUSHALL on one primary empties that shard only; the target follows.
    let primaries = source.primaries().await?;
    let flushed = primaries.last().expect("three primaries");
    flushed.run::<()>("FLUSHALL").await?;
    write_cluster(&source, 4).await?;
    wait_consistent(&seed, &target.url(), &mut tasks, CONVERGE).await?;
    for task in tasks {
        task.finish().await?;
    }

    // verify reads the cluster side through its primaries: consistent, then exactly
    // the differences made on the target.
    let report = verify(&seed, &target.url(), &[0]).await?;
    assert!(report.is_consistent(), "{report}");
    assert!(report.keys_compared > 500, "{report}");
    let mut t = target.client().await?;
    t.run::<()>("SET s:4:7 changed").await?;
    t.run::<()>("DEL s:4:8").await?;
    t.run::<()>("SET only:on:target 1").await?;
    let report = verify(&seed, &target.url(), &[0]).await?;
    let mut found: Vec<(String, String)> = report
        .differences
        .iter()
        .map(|d| {
            (
                String::from_utf8_lossy(&d.key).into_owned(),
                d.kind.as_str().to_owned(),
            )
        })
        .collect();
    found.sort();
    let kinds = |k: lockstep_verify::DifferenceKind| k.as_str().to_owned();
    assert_eq!(
        found,
        vec![
            (
                "only:on:target".to_owned(),
                kinds(lockstep_verify::DifferenceKind::ExtraOnTarget)
            ),
            (
                "s:4:7".to_owned(),
                kinds(lockstep_verify::DifferenceKind::Value)
            ),
            (
                "s:4:8".to_owned(),
                kinds(lockstep_verify::DifferenceKind::MissingOnTarget)
            ),
        ],
        "{report}"
    );
    // A cluster has database 0 only: a key in another database of the standalone
    // side is extra, not skipped.
    let mut db1 = redis::Client::open(format!("{}/1", target.url()))?
        .get_multiplexed_async_connection_with_config(&lockstep_testkit::server::client_config())
        .await?;
    db1.run::<()>("SET in:db1 1").await?;
    let report = verify(&seed, &target.url(), &[1]).await?;
    assert_eq!(report.differences.len(), 1, "{report}");
    assert_eq!(report.differences[0].db, 1);
    assert_eq!(report.differences[0].key, b"in:db1");
    assert_eq!(
        report.differences[0].kind,
        lockstep_verify::DifferenceKind::ExtraOnTarget
    );
    Ok(())
}

/// A cluster into a cluster, on 6.2 and on 8.2: each shard's task routes into the
/// target cluster by slot.
#[tokio::test]
async fn a_cluster_source_into_a_cluster_target() -> anyhow::Result<()> {
    for version in [RedisVersion::V6_2, RedisVersion::V8_2] {
        let source = cluster(version).await?;
        let target = cluster(version).await?;
        write_cluster(&source, 0).await?;
        let dir = tempfile::tempdir()?;
        let (seed, target_url) = (seed_url(&source), target.nodes[0].url());
        let mut tasks = spawn_shard_tasks(&source, &target_url, dir.path(), false).await?;
        assert_eq!(tasks.len(), 3, "one task per primary");
        write_cluster(&source, 1).await?;
        wait_consistent(&seed, &target_url, &mut tasks, CONVERGE)
            .await
            .map_err(|e| e.context(format!("{version:?}")))?;
        for task in tasks {
            task.finish().await?;
        }
        // Both sides clusters for verify too.
        let report = verify(&seed, &target_url, &[0]).await?;
        assert!(report.is_consistent(), "{version:?}: {report}");
    }
    Ok(())
}

/// Read from the shards' replicas (the DTS "use slave node" option): the replicas
/// feed lockstep, the primaries do not, and the target ends equal.
#[tokio::test]
async fn a_cluster_source_read_from_its_replicas() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let source = cluster(version).await?;
    let target = RedisServer::start(ServerConfig::new(version)).await?;
    write_cluster(&source, 0).await?;
    let dir = tempfile::tempdir()?;
    let mut tasks = spawn_shard_tasks(&source, &target.url(), dir.path(), true).await?;
    assert_eq!(tasks.len(), 3, "one task per primary");
    write_cluster(&source, 1).await?;
    wait_consistent(&seed_url(&source), &target.url(), &mut tasks, CONVERGE).await?;
    for replica in source.replicas().await? {
        let info = replica.info("replication").await?;
        assert_eq!(
            info.int("connected_slaves")?,
            1,
            "{}: lockstep reads it",
            replica.addr()
        );
    }
    for primary in source.primaries().await? {
        let info = primary.info("replication").await?;
        assert_eq!(
            info.int("connected_slaves")?,
            1,
            "{}: only its replica",
            primary.addr()
        );
    }
    // The heartbeat reaches the target's view of lag through the replica's stream.
    let mut measured = false;
    for _ in 0..50 {
        measured = tasks.iter().all(|t| t.now().heartbeat_lag_ms.is_some());
        if measured {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(measured, "a shard measured no heartbeat");
    for task in tasks {
        task.finish().await?;
    }
    Ok(())
}

/// What a task removes from a cluster target before copying over stale data (or for a
/// source shard's FLUSHALL) is only its own keys, found on every primary: by prefix,
/// and by the source shard's slots; lockstep's own keys stay.
#[tokio::test]
async fn clearing_a_cluster_target_removes_only_the_tasks_keys() -> anyhow::Result<()> {
    use lockstep_sync::filter::Filter;
    let target = cluster(RedisVersion::V7_0).await?;
    let mut conn = target.cluster_client().await?;
    for i in 0..300 {
        for prefix in ["a", "b"] {
            conn.run_args::<()>(("SET", format!("{prefix}:{i}"), i))
                .await?;
        }
    }
    conn.run::<()>("SET LOCKSTEP_CHECKPOINT:other x").await?;
    let url = seed_url(&target);
    let mut writer = lockstep_sync::target::Target::connect(
        &Endpoint::parse(&url)?,
        lockstep_sync::apply::ApplyOptions::default(),
        b"LOCKSTEP_CHECKPOINT",
    )
    .await?;
    assert!(writer.is_cluster());
    let all_keys = || async {
        let mut keys = Vec::new();
        for node in target.primaries().await? {
            let mut c = node.client().await?;
            let some: Vec<String> = c.run("KEYS *").await?;
            keys.extend(some);
        }
        keys.sort();
        anyhow::Ok(keys)
    };

    let by_prefix = Filter {
        include_prefixes: vec![b"a:".to_vec()],
        ..Filter::default()
    };
    let removed = writer
        .clear(&by_prefix.clear_scope(), |_, k| by_prefix.owns_key(k))
        .await?;
    assert_eq!(removed, 300);
    let left = all_keys().await?;
    assert!(left.iter().all(|k| !k.starts_with("a:")), "a:* left");
    assert_eq!(left.iter().filter(|k| k.starts_with("b:")).count(), 300);

    let shard = Filter {
        source_slots: vec![(0, 8000)],
        ..Filter::default()
    };
    let expected = (0..300)
        .filter(|i| key_slot(format!("b:{i}").as_bytes()) <= 8000)
        .count() as u64;
    let removed = writer
        .clear(&shard.clear_scope(), |_, k| shard.owns_key(k))
        .await?;
    assert_eq!(removed, expected);
    let left = all_keys().await?;
    assert!(left
        .iter()
        .filter(|k| k.starts_with("b:"))
        .all(|k| key_slot(k.as_bytes()) > 8000));
    assert!(left.contains(&"LOCKSTEP_CHECKPOINT:other".to_owned()));
    Ok(())
}

/// A slot of the last shard moves to the first while every shard streams: the two
/// shards concerned stop, naming the fix; started again, the tasks follow the new
/// layout and the target equals the source. The moved slot's keys were deleted
/// from the target meanwhile (the old owner's stream carries MIGRATE's DEL, the new
/// owner's RESTORE was outside that shard's slots): the first shard, whose first
/// slot did not change, must not resume past them but copy its new slots again.
#[tokio::test]
async fn a_source_reshard_stops_the_shards_it_concerns_and_a_restart_loses_nothing(
) -> anyhow::Result<()> {
    let source = cluster(RedisVersion::V7_0).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    write_cluster(&source, 0).await?;
    let slot = 16000;
    let tag = tag_for_slot(slot);
    let mut conn = source.cluster_client().await?;
    for i in 0..50 {
        conn.run_args::<()>(("SET", format!("{{{tag}}}:{i}"), i))
            .await?;
    }
    let dir = tempfile::tempdir()?;
    let mut tasks = spawn_shard_tasks(&source, &target.url(), dir.path(), false).await?;
    assert_eq!(tasks.len(), 3, "one task per primary");
    wait_consistent(&seed_url(&source), &target.url(), &mut tasks, CONVERGE).await?;
    // The last shard's slot goes to the first primary, whose first slot stays 0.
    let moved = migrate_slot(&source, slot).await?;
    assert!(moved >= 50, "{moved} keys moved");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut stopped: Vec<Option<String>> = vec![None; tasks.len()];
    while stopped.iter().flatten().count() < 2 && std::time::Instant::now() < deadline {
        for (task, outcome) in tasks.iter_mut().zip(stopped.iter_mut()) {
            if outcome.is_none() && task.handle.is_finished() {
                *outcome = Some(match (&mut task.handle).await? {
                    Err(err) => err.to_string(),
                    Ok(summary) => format!("ended well: {summary:?}"),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ended: Vec<String> = stopped.iter().flatten().cloned().collect();
    assert_eq!(ended.len(), 2, "the two shards concerned stop: {ended:?}");
    for message in &ended {
        assert!(
            message.contains("resharded") && message.contains("start the task again"),
            "{message}"
        );
    }
    // The shard that did not change goes on; the others start again, as told.
    let mut running: Vec<SyncTask> = tasks
        .into_iter()
        .zip(&stopped)
        .filter(|(_, outcome)| outcome.is_none())
        .map(|(task, _)| task)
        .collect();
    for task in running.drain(..) {
        task.finish().await?;
    }
    write_cluster(&source, 1).await?;
    let mut tasks = spawn_shard_tasks(&source, &target.url(), dir.path(), false).await?;
    assert_eq!(tasks.len(), 3, "one task per primary");
    wait_consistent(&seed_url(&source), &target.url(), &mut tasks, CONVERGE).await?;
    let copied_again: u64 = tasks.iter().map(|t| t.now().full_syncs).sum();
    assert_eq!(
        copied_again, 2,
        "the two shards whose slots changed copy again"
    );
    for task in tasks {
        task.finish().await?;
    }
    Ok(())
}
