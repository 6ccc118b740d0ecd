//! `lockstep sync` from a Redis Cluster source follows a reshard by itself: the two
//! shards whose slots changed end, the process reads the new layout, starts them
//! again under their new slots (each copies its slots afresh) while the unchanged
//! shard streams on, and verify finds the target equal, moved keys included.

mod common;

use std::time::Duration;

use common::{sync_args, Lockstep};
use lockstep_testkit::topology::{tag_for_slot, wait_until, Cluster, ClusterSpec, SlotMigration};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

async fn consistent(source: &str, target: &RedisServer) -> anyhow::Result<Result<(), String>> {
    let report = lockstep_verify::compare(
        &redis::Client::open(source)?,
        &target.redis_client()?,
        &lockstep_verify::CompareOptions::default(),
    )
    .await?;
    Ok(match report.is_consistent() && report.keys_compared > 0 {
        true => Ok(()),
        false => Err(report.to_string()),
    })
}

#[tokio::test]
async fn sync_follows_a_source_reshard_by_itself() -> anyhow::Result<()> {
    let node = ServerConfig::new(RedisVersion::V7_0)
        .set("repl-timeout", "600")
        .set("repl-backlog-size", "64mb");
    let source = Cluster::start(ClusterSpec::new(node, 3, 0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let slot = 16000;
    let tag = tag_for_slot(slot);
    let mut conn = source.cluster_client().await?;
    let write = |round: u32| {
        let mut conn = conn.clone();
        let tag = tag.clone();
        async move {
            for i in 0..200 {
                conn.run_args::<()>(("SET", format!("key:{round}:{i}"), i))
                    .await?;
                conn.run_args::<()>(("INCR", format!("{{{tag}}}:counter:{}", i % 10)))
                    .await?;
            }
            anyhow::Ok(())
        }
    };
    write(0).await?;
    let seed = source.nodes[2].url();
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("lockstep.log");
    let mut lockstep = Lockstep::start(
        &sync_args(&seed, &[&target.url()], dir.path(), &[]),
        &[],
        &log,
    )?;
    let verified = || async { consistent(&seed, &target).await };
    wait_until("the first copy is equal", Duration::from_secs(60), verified).await?;

    // The last shard's slot moves to the first primary while writes go on.
    let (written, moved) = tokio::join!(write(1), async {
        SlotMigration::begin(&source, slot)
            .await?
            .finish(Duration::from_millis(10))
            .await
    });
    written?;
    assert!(moved? >= 10, "the slot's keys moved");
    lockstep
        .wait_log(
            "following the source cluster's new layout",
            Duration::from_secs(60),
        )
        .await?;
    write(2).await?;
    conn.run::<()>("SET after 1").await?;
    wait_until("equal after the reshard", Duration::from_secs(60), verified).await?;
    assert!(
        lockstep.child.try_wait()?.is_none(),
        "lockstep exited: {}",
        lockstep.log_text()
    );
    let mut t = target.client().await?;
    let counter: i64 = t.run_args(("GET", format!("{{{tag}}}:counter:0"))).await?;
    assert_eq!(counter, 60, "a counter of the moved slot");
    lockstep.signal("INT")?;
    assert_eq!(lockstep.exit_code(Duration::from_secs(30)).await?, Some(0));
    let text = lockstep.log_text();
    assert_eq!(
        text.matches("the source cluster was resharded").count(),
        2,
        "the two shards concerned ended: {text}"
    );
    Ok(())
}
