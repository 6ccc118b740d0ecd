//! Each fault of `lockstep_testkit::faults` shown to do what it says, measured on
//! real servers.

use lockstep_testkit::faults::{self, cut_replica_during_burst, set_backlog_size};
use lockstep_testkit::{RedisServer, RedisVersion, ReplicaSet, ServerConfig};

async fn dbsize(server: &RedisServer, db: u32) -> anyhow::Result<i64> {
    let mut conn = server.client().await?;
    let (_, n): ((), i64) = redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .cmd("DBSIZE")
        .query_async(&mut conn)
        .await?;
    Ok(n)
}

#[tokio::test]
async fn flushdb_empties_one_database_and_flushall_every_one_on_replicas_too() -> anyhow::Result<()>
{
    let set = ReplicaSet::start(ServerConfig::new(RedisVersion::V7_0), 1).await?;
    let mut conn = set.primary().client().await?;
    for db in [0u32, 3] {
        redis::pipe()
            .cmd("SELECT")
            .arg(db)
            .ignore()
            .cmd("SET")
            .arg("a")
            .arg(1)
            .ignore()
            .cmd("SET")
            .arg("b")
            .arg(2)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
    }
    faults::flushdb(set.primary(), 3).await?;
    set.wait_in_sync().await?;
    let replica = set.replicas().next().expect("one replica");
    assert_eq!(
        (
            dbsize(set.primary(), 0).await?,
            dbsize(set.primary(), 3).await?
        ),
        (2, 0)
    );
    assert_eq!(
        (dbsize(replica, 0).await?, dbsize(replica, 3).await?),
        (2, 0)
    );
    faults::flushall(set.primary()).await?;
    set.wait_in_sync().await?;
    assert_eq!(dbsize(replica, 0).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_tiny_maxmemory_evicts_keys_on_every_version() -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        let report =
            faults::force_evictions(&server, 2 << 20, "allkeys-lru", 1024, 100, 100_000).await?;
        assert!(report.evicted_keys >= 100, "{version}: {report:?}");
        assert!(
            (report.keys_left as u64) < report.keys_written,
            "{version}: {report:?}"
        );
        let volatile = RedisServer::start(ServerConfig::new(version)).await?;
        let report =
            faults::force_evictions(&volatile, 2 << 20, "volatile-ttl", 1024, 100, 100_000).await?;
        assert!(
            report.evicted_keys >= 100,
            "{version} volatile-ttl: {report:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_burst_beyond_the_backlog_forces_a_full_resync_and_one_within_it_does_not(
) -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let set = ReplicaSet::start(ServerConfig::new(version), 1).await?;
        // Within the backlog: the replica continues where it was.
        set_backlog_size(set.primary(), 8 << 20).await?;
        let report = cut_replica_during_burst(&set, 1, 256 << 10).await?;
        assert_eq!(
            (report.full_syncs, report.partial_ok),
            (0, 1),
            "{version} small burst: {report:?}"
        );
        // Beyond it: the primary refuses the partial resync and sends everything again.
        set_backlog_size(set.primary(), 16 << 10).await?;
        let report = cut_replica_during_burst(&set, 1, 1 << 20).await?;
        assert_eq!(report.full_syncs, 1, "{version} big burst: {report:?}");
        assert_eq!(report.partial_err, 1, "{version} big burst: {report:?}");
        let keys_primary = dbsize(set.primary(), 0).await?;
        assert_eq!(dbsize(&set.servers[1], 0).await?, keys_primary);
    }
    Ok(())
}
