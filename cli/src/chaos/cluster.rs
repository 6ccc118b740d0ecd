//! Redis Clusters. As the source: a primary fails over to its replica while every
//! shard streams (DTS documents a full resynchronization on a source failover). As
//! the target: multi-key commands whose keys fall in different hash slots. DTS
//! documents that they fail with CROSSSLOT; lockstep splits the ones whose meaning
//! allows it (MSET, DEL, UNLINK, TOUCH, MSETNX) into one command per slot, and
//! copies the keys of the others (RENAME, SMOVE, SUNIONSTORE, LMOVE...) from the
//! source, skipping the stream's commands on them up to the copy's offset. And a
//! target cluster that changes under the sync: a slot migrating while the stream
//! writes into it (DTS: the task may retry or fail), then a primary failing over
//! (DTS: possible data loss).
//!
//! All are checked with verify, which reads a cluster side through its primaries.
//!
//! It must never judge by the sync's state (verify and plain reads only), and each
//! scenario draws its random parts from the run's seed alone.

use std::time::Duration;

use anyhow::{bail, Context};
use lockstep_sync::slots::key_slot;
use lockstep_testkit::topology::{Cluster, ClusterSpec, FailoverMode, SlotMigration};
use lockstep_testkit::{RedisServer, ServerConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use redis::aio::MultiplexedConnection;

use super::harness::{self, Engine};
use super::{Outcome, Pair, Scenario};
use lockstep_testkit::Run;

const DOCUMENTED: &str = "A Redis cluster allows commands to operate on only a single slot. Multi-key commands across slots fail with CROSSSLOT Keys in request don't hash to the same slot. Run only single-key commands during synchronization.";

const TARGET_CHANGES_DOCUMENTED: &str = "Endpoint changes: If the source or destination is a self-managed instance and its endpoint changes (for example, due to migration or failover) the task may retry, experience latency, or fail. Destination failover: If a failover occurs on the destination, data might be written only to memory without being persisted to the secondary database, which can cause data loss.";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "cluster-source-failover",
            documented: super::network::FULL_RESYNC_DOCUMENTED,
            documented_short: "source failover: full resync",
            promise: "each shard has its own link and checkpoint; the failed-over shard follows its promoted replica by PSYNC (or keeps streaming from the demoted node), never by a full copy; counters over every shard exact, verify consistent",
            run: |pair, seed| Box::pin(cluster_source_failover(pair, seed)),
        },
        Scenario {
            name: "target-cluster-changes",
            documented: TARGET_CHANGES_DOCUMENTED,
            documented_short: "target change: retry, fail, loss",
            promise: "a target slot migrates while the stream writes into it (ASK, TRYAGAIN and MOVED followed in the same session), then a target primary fails over (the next session resumes from the slots' checkpoints): no full copy, counters exact, verify consistent",
            run: |pair, seed| Box::pin(target_cluster_changes(pair, seed)),
        },
        Scenario {
        name: "cross-slot-into-cluster",
        documented: DOCUMENTED,
        documented_short: "cluster target: CROSSSLOT",
        promise: "MSET/DEL/UNLINK across slots are split per slot; RENAME, SMOVE, SUNIONSTORE and LMOVE across slots are copied from the source with writes right after them; the task never stops, a counter moved by RENAME stays exact, verify consistent",
        run: |pair, seed| Box::pin(multi_key_into_cluster(pair, seed)),
    },
    ]
}

/// A 3x1 cluster source into a standalone target, one task per shard; a coordinated
/// failover of a random shard while counters over every shard are incremented.
async fn cluster_source_failover(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let source = Cluster::start(ClusterSpec::new(ServerConfig::new(pair.source), 3, 1)).await?;
    let target = RedisServer::start(ServerConfig::new(pair.target)).await?;
    let mut conn = source.cluster_client().await?;
    for i in 0..600 {
        conn.run_args::<()>(("SET", format!("key:{i}"), i)).await?;
    }
    let dir = tempfile::tempdir()?;
    let seed_node = source.nodes.last().context("no cluster node")?;
    let base = harness::options(&seed_node.url(), &target.url(), dir.path())?;
    let mut engines = lockstep_testkit::harness::spawn_shard_tasks(base, false).await?;
    if engines.len() != 3 {
        bail!("{} shard tasks for 3 primaries", engines.len());
    }
    // Counters on every shard, before, during and after the failover.
    let counters: Vec<String> = (0..30).map(|i| format!("counter:{i}")).collect();
    let mut done = 0u64;
    let mut incr = |conn: &mut redis::cluster_async::ClusterConnection, rounds: u64| {
        done += rounds;
        let conn = conn.clone();
        let counters = counters.clone();
        async move {
            let mut conn = conn;
            for _ in 0..rounds {
                for counter in &counters {
                    conn.run_args::<()>(("INCR", counter)).await?;
                }
            }
            anyhow::Ok(())
        }
    };
    incr(&mut conn, 5).await?;
    // Nodes 3, 4, 5 replicate nodes 0, 1, 2.
    let replica = 3 + rng.random_range(0..3usize);
    let during = incr(&mut conn, 5);
    let failover = source.failover(
        replica,
        lockstep_testkit::topology::FailoverMode::Coordinated,
    );
    let (during, failed_over) = tokio::join!(during, failover);
    during?;
    failed_over?;
    // The cluster client follows the new primary (MOVED).
    incr(&mut conn, 5).await?;
    let report = wait_verified(&seed_node.url(), &target.url(), &mut engines).await?;
    for (i, counter) in counters.iter().enumerate() {
        let mut t = target.client().await?;
        let value: u64 = t.run_args(("GET", counter)).await?;
        if value != done {
            bail!("{counter} (#{i}) is {value} on the target after {done} INCRs");
        }
    }
    let mut partial = 0;
    for engine in &engines {
        let p = engine.now();
        if p.full_syncs != 1 {
            bail!("a shard copied again after the failover: {p:?}");
        }
        partial += p.partial_syncs;
    }
    // A shard resumes by PSYNC on the promoted replica when its link breaks; when
    // it does not (the demoted primary, now a replica, goes on feeding it as a
    // chained replica: seen on 6.2 under load), nothing is lost either, and the
    // counters and verify above are what the promise rests on.
    let followed = if partial == 0 {
        "no link broke: the demoted primary kept feeding its shard".to_owned()
    } else {
        format!("{partial} partial")
    };
    for engine in engines {
        engine.finish().await?;
    }
    Ok(Outcome::new(format!(
        "node {replica} promoted: {followed} / 0 extra full syncs over 3 shards, 30 counters at {done} exact, {} keys verified",
        report.keys_compared
    )))
}

/// Waits (up to 60 s) until verify finds the target equal to the source (either may
/// be a cluster, named by any node); fails at once if a task ends.
async fn wait_verified(
    source_url: &str,
    target_url: &str,
    engines: &mut [Engine],
) -> anyhow::Result<lockstep_verify::Report> {
    let options = lockstep_verify::CompareOptions::default();
    let timeout = Duration::from_secs(60);
    lockstep_testkit::harness::wait_consistent(source_url, target_url, engines, &options, timeout)
        .await
}

/// A standalone source into a 3x1 cluster target. Counters in one slot are
/// incremented while that slot migrates to another primary (slowly: the stream
/// meets ASK, TRYAGAIN and MOVED), then while a random primary fails over to its
/// replica. Other keys are written on every slot throughout.
async fn target_cluster_changes(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let source = RedisServer::start(ServerConfig::new(pair.source)).await?;
    let cluster = Cluster::start(ClusterSpec::new(ServerConfig::new(pair.target), 3, 1)).await?;
    harness::fill(&source, 0, "key:", 300).await?;
    let tag = format!("t{}", rng.random_range(0..1000u32));
    let counters: Vec<String> = (0..10).map(|i| format!("{{{tag}}}:counter:{i}")).collect();
    let mut conn = source.client().await?;
    for counter in &counters {
        conn.run_args::<()>(("SET", counter, 0)).await?;
    }
    let dir = tempfile::tempdir()?;
    let seed_node = cluster.nodes.last().context("no cluster node")?;
    let options = harness::options(&source.url(), &seed_node.url(), dir.path())?;
    let mut engine = Engine::spawn(options);
    engine.caught_up(&source).await?;
    let mut done = 0;
    let spread_seed = rng.random_range(0..1_000_000u32);
    let mut writes = |rounds: i64| {
        let spread = spread_seed + done as u32;
        done += rounds;
        write_counter_rounds(conn.clone(), counters.clone(), spread, rounds)
    };
    let slot = key_slot(tag.as_bytes());
    let migration = async {
        SlotMigration::begin(&cluster, slot)
            .await?
            .finish(Duration::from_millis(10))
            .await
    };
    let (written, moved) = tokio::join!(writes(300), migration);
    written?;
    let moved = moved?;
    let sessions_before_failover = engine.now().partial_syncs;
    // Nodes 3, 4, 5 replicate nodes 0, 1, 2.
    let replica = 3 + rng.random_range(0..3usize);
    let failover = cluster.failover(replica, FailoverMode::Coordinated);
    let (written, failed_over) = tokio::join!(writes(300), failover);
    written?;
    failed_over?;
    writes(50).await?;
    engine.caught_up(&source).await?;
    let report = wait_verified(
        &source.url(),
        &seed_node.url(),
        std::slice::from_mut(&mut engine),
    )
    .await?;
    let mut read = cluster.cluster_client().await?;
    for counter in &counters {
        let value: i64 = read.run_args(("GET", counter)).await?;
        if value != done {
            bail!("{counter} is {value} on the target after {done} INCRs");
        }
    }
    let now = engine.now();
    if now.full_syncs != 1 {
        bail!("the target's changes caused a full copy: {now:?}");
    }
    if sessions_before_failover != 0 {
        bail!("the slot migration ended a session ({sessions_before_failover} partial resyncs)");
    }
    engine.finish().await?;
    Ok(Outcome::new(format!(
        "slot {slot} moved ({moved} keys) within the session, node {replica} promoted: {} partial / 0 extra full syncs, 10 counters at {done} exact, {} keys verified",
        now.partial_syncs, report.keys_compared
    )))
}

/// `rounds` pipelined rounds of one INCR of every counter and a SET of a key spread
/// over every slot (from `spread` on), with a short pause every 20 rounds.
async fn write_counter_rounds(
    mut conn: MultiplexedConnection,
    counters: Vec<String>,
    spread: u32,
    rounds: i64,
) -> anyhow::Result<()> {
    for round in 0..rounds {
        let mut pipe = redis::pipe();
        for counter in &counters {
            pipe.cmd("INCR").arg(counter).ignore();
        }
        pipe.cmd("SET")
            .arg(format!("spread:{}", (spread as i64 + round) % 500))
            .arg(round)
            .ignore();
        pipe.query_async::<()>(&mut conn).await?;
        if round % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

async fn multi_key_into_cluster(pair: Pair, seed: u64) -> anyhow::Result<Outcome> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let source = RedisServer::start(ServerConfig::new(pair.source)).await?;
    let cluster = Cluster::start(ClusterSpec::new(ServerConfig::new(pair.target), 3, 1)).await?;
    harness::fill(&source, 0, "key:", 300).await?;
    let dir = tempfile::tempdir()?;
    // Any node's address will do: the last one is a replica.
    let seed_node = cluster.nodes.last().context("no cluster node")?;
    let options = harness::options(&source.url(), &seed_node.url(), dir.path())?;
    let mut engine = Engine::spawn(options);
    engine.caught_up(&source).await?;

    let mut conn = source.client().await?;
    let split = write_multi_key_rounds(&mut conn, &mut rng).await?;
    engine.caught_up(&source).await?;
    let target_url = seed_node.url();
    let engines = std::slice::from_mut(&mut engine);
    let compared = wait_verified(&source.url(), &target_url, engines)
        .await?
        .keys_compared;

    // Across slots, not splittable: copied from the source. Each is followed at
    // once by writes to its keys, which fall in the copy's skip window when the
    // task lags; the rounds are pipelined so that it does.
    let (from, to) = ("rename:from", "rename:to");
    if key_slot(from.as_bytes()) == key_slot(to.as_bytes()) {
        bail!("the scenario's keys share a slot");
    }
    conn.run_args::<()>(("SET", from, 0)).await?;
    let rounds = rng.random_range(100..200);
    write_cross_slot_rounds(&mut conn, &mut rng, (from, to), rounds).await?;
    engine.caught_up(&source).await?;
    let report = wait_verified(
        &source.url(),
        &target_url,
        std::slice::from_mut(&mut engine),
    )
    .await?;
    let mut cluster_conn = cluster.cluster_client().await?;
    let counter: i64 = cluster_conn.run_args(("GET", from)).await?;
    if counter != 2 * rounds {
        bail!(
            "the counter moved by RENAME is {counter}, not {}: a write applied twice or lost",
            2 * rounds
        );
    }
    if engine.handle.is_finished() {
        bail!("the task stopped");
    }
    Ok(Outcome::new(format!(
        "{split} MSET/DEL/UNLINK over many slots split per slot: {compared} keys equal; {rounds} rounds of RENAME/SMOVE/SUNIONSTORE/LMOVE across slots copied from the source: {} keys equal, counter exact",
        report.keys_compared
    )))
}

/// Multi-key writes over many slots, during the stream: 40 rounds of MSET then DEL
/// or UNLINK of some of its keys, then a RENAME within one hash tag (one slot,
/// applied as it is). Returns how many of the commands span several slots.
async fn write_multi_key_rounds(
    conn: &mut MultiplexedConnection,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<u32> {
    let mut split = 0;
    for round in 0..40 {
        let width = rng.random_range(2..12);
        let pairs: Vec<String> = (0..width)
            .flat_map(|i| [format!("m:{round}:{i}"), rng.random::<u32>().to_string()])
            .collect();
        conn.run_args::<()>(("MSET", &pairs)).await?;
        let gone: Vec<String> = (0..rng.random_range(1..width))
            .map(|i| format!("m:{round}:{i}"))
            .collect();
        let command = if round % 2 == 0 { "DEL" } else { "UNLINK" };
        conn.run_args::<()>((command, &gone)).await?;
        split += 2;
    }
    conn.run::<()>("SET {tag}a moved").await?;
    conn.run::<()>("RENAME {tag}a {tag}b").await?;
    Ok(split)
}

/// `rounds` pipelined rounds of commands across slots that cannot be split (RENAME
/// back and forth between `from` and `to` with an INCR after each, SMOVE,
/// SUNIONSTORE, LMOVE), so that the task lags and the writes after each land in
/// the copy's skip window.
async fn write_cross_slot_rounds(
    conn: &mut MultiplexedConnection,
    rng: &mut ChaCha8Rng,
    (from, to): (&str, &str),
    rounds: i64,
) -> anyhow::Result<()> {
    for round in 0..rounds {
        let mut pipe = redis::pipe();
        pipe.cmd("RENAME").arg(from).arg(to).ignore();
        pipe.cmd("INCR").arg(to).ignore();
        pipe.cmd("RENAME").arg(to).arg(from).ignore();
        pipe.cmd("INCR").arg(from).ignore();
        let member = rng.random_range(0..20);
        pipe.cmd("SADD").arg("set:a").arg(member).ignore();
        pipe.cmd("SMOVE")
            .arg("set:a")
            .arg("set:b")
            .arg(member)
            .ignore();
        pipe.cmd("SUNIONSTORE")
            .arg("set:union")
            .arg("set:a")
            .arg("set:b")
            .ignore();
        pipe.cmd("SADD").arg("set:union").arg(round).ignore();
        pipe.cmd("RPUSH").arg("list:a").arg(round).ignore();
        pipe.cmd("LMOVE")
            .arg("list:a")
            .arg("list:b")
            .arg("LEFT")
            .arg("RIGHT")
            .ignore();
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}
