//! A link that goes silent without closing (a flow dropped by a NAT or a firewall, a
//! frozen host): a [`FaultProxy`] black-holes the path, the connection stays open and
//! nothing arrives. The session must end within the configured silence
//! (`link.read_timeout`, `--repl-timeout`; `apply.reply_timeout`, `--target-timeout`),
//! and the next one resume exactly: by PSYNC in the stream (the source's own INFO
//! counts the full and partial resyncs), by a new copy during a full copy. Checked
//! with plain reads and the verify crate.

mod common;

use std::time::{Duration, Instant};

use common::{assert_equal, caught_up, options, SyncTask};
use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::Phase;
use lockstep_testkit::proxy::FaultProxy;
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;

/// The silence after which a side counts as dead in these tests.
const SILENCE: Duration = Duration::from_secs(3);

/// `sync_full` and `sync_partial_ok` from the source's INFO stats.
async fn resyncs(source: &RedisServer) -> anyhow::Result<(i64, i64)> {
    let stats = source.info("stats").await?;
    Ok((stats.int("sync_full")?, stats.int("sync_partial_ok")?))
}

async fn incr(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    conn.run::<()>("INCR counter").await?;
    Ok(())
}

/// How a silent session ended: after how long, with which error, how many INCRs
/// were written meanwhile.
struct Ended {
    took: Duration,
    error: String,
    written: u64,
}

/// Writes to the source until the task reports a session ended by an error that
/// contains `needle`; fails on another error first (its message says which).
async fn write_until_session_ends(
    task: &SyncTask,
    conn: &mut MultiplexedConnection,
    needle: &str,
) -> anyhow::Result<Ended> {
    let started = Instant::now();
    let mut written = 0u64;
    loop {
        incr(conn).await?;
        written += 1;
        if let Some(error) = task.now().last_error {
            anyhow::ensure!(
                error.contains(needle),
                "the session ended otherwise: {error}"
            );
            let took = started.elapsed();
            eprintln!("the session ended after {took:?}: {error}");
            return Ok(Ended {
                took,
                error,
                written,
            });
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(15),
            "the session did not end within 15 s of silence (wanted an error with {needle:?}); progress: {:?}",
            task.now()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn counter_on(server: &RedisServer) -> anyhow::Result<u64> {
    let mut conn = server.client().await?;
    Ok(conn.run::<Option<u64>>("GET counter").await?.unwrap_or(0))
}

#[tokio::test]
async fn a_silent_source_stream_is_dropped_and_resumed_by_psync() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let proxy = FaultProxy::start(source.addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.source = Endpoint::parse(&proxy.url_for(&source))?;
    options.link.read_timeout = SILENCE;
    let mut task = SyncTask::spawn(options);
    let mut conn = source.client().await?;
    for _ in 0..100 {
        incr(&mut conn).await?;
    }
    caught_up(&mut task, &source).await?;
    let before = resyncs(&source).await?;

    proxy.black_hole();
    let ended = write_until_session_ends(&task, &mut conn, "sent nothing for").await?;
    let took = ended.took;
    assert!(
        took >= SILENCE - Duration::from_millis(500) && took <= SILENCE * 2,
        "the silent stream ended after {took:?}, wanted about {SILENCE:?}"
    );
    assert!(
        ended.error.contains("in the command stream"),
        "{}",
        ended.error
    );
    let written = ended.written;
    proxy.restore();
    for _ in 0..50 {
        incr(&mut conn).await?;
    }
    wait_until("a partial resync", Duration::from_secs(30), || async {
        let p = task.now();
        Ok(if p.partial_syncs >= 1 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        })
    })
    .await?;
    caught_up(&mut task, &source).await?;
    let after = resyncs(&source).await?;
    assert_eq!(after.0, before.0, "the source served a full copy again");
    assert!(
        after.1 > before.1,
        "no partial resync on the source: {before:?} -> {after:?}"
    );
    assert_eq!(counter_on(&target).await?, 100 + written + 50);
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_silent_rdb_transfer_is_dropped_and_copied_again() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = source.client().await?;
    let value = vec![b'v'; 1024];
    for chunk in 0..40 {
        let mut pipe = redis::pipe();
        for i in 0..100 {
            pipe.cmd("SET")
                .arg(format!("key:{chunk}:{i}"))
                .arg(&value)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    let proxy = FaultProxy::start(source.addr()).await?;
    // About 4 MB at 1 MB/s: the transfer is under way for seconds.
    proxy.set_bandwidth(Some(1 << 20));
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.source = Endpoint::parse(&proxy.url_for(&source))?;
    options.link.read_timeout = SILENCE;
    let mut task = SyncTask::spawn(options);
    wait_until(
        "the RDB transfer under way",
        Duration::from_secs(30),
        || async {
            let p = task.now();
            Ok(if p.phase == Phase::FullCopy && p.bytes_copied > 0 {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            })
        },
    )
    .await?;
    proxy.black_hole();
    let ended = write_until_session_ends(&task, &mut conn, "sent nothing for").await?;
    assert!(
        ended.took <= SILENCE * 2,
        "the silent transfer ended after {:?}",
        ended.took
    );
    assert!(ended.error.contains("RDB transfer"), "{}", ended.error);
    proxy.set_bandwidth(None);
    proxy.restore();
    caught_up(&mut task, &source).await?;
    assert_eq!(task.now().full_syncs, 1, "one copy completed");
    assert_eq!(counter_on(&target).await?, counter_on(&source).await?);
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_silent_target_ends_the_session_and_the_next_resumes_exactly() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let proxy = FaultProxy::start(target.addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.target = Endpoint::parse(&proxy.url_for(&target))?;
    options.apply.reply_timeout = SILENCE;
    let mut task = SyncTask::spawn(options);
    let mut conn = source.client().await?;
    for _ in 0..100 {
        incr(&mut conn).await?;
    }
    caught_up(&mut task, &source).await?;
    let before = resyncs(&source).await?;

    proxy.black_hole();
    let ended = write_until_session_ends(&task, &mut conn, "did not answer").await?;
    assert!(
        ended.took <= SILENCE * 2,
        "the silent target ended the session after {:?}",
        ended.took
    );
    let written = ended.written;
    proxy.restore();
    for _ in 0..50 {
        incr(&mut conn).await?;
    }
    wait_until("a partial resync", Duration::from_secs(30), || async {
        let p = task.now();
        Ok(if p.partial_syncs >= 1 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        })
    })
    .await?;
    caught_up(&mut task, &source).await?;
    assert_eq!(
        resyncs(&source).await?.0,
        before.0,
        "the source served a full copy again"
    );
    // Exact: nothing swallowed by the black hole counted as applied, nothing twice.
    assert_eq!(counter_on(&target).await?, 100 + written + 50);
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_stalled_target_that_comes_back_late_applies_nothing_twice() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let proxy = FaultProxy::start(target.addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.target = Endpoint::parse(&proxy.url_for(&target))?;
    options.apply.reply_timeout = SILENCE;
    let mut task = SyncTask::spawn(options);
    let mut conn = source.client().await?;
    for _ in 0..100 {
        incr(&mut conn).await?;
    }
    caught_up(&mut task, &source).await?;

    // The stalled bytes (commands the old session sent and gave up on) are
    // delivered when the path recovers, after the session was replaced.
    proxy.stall();
    let ended = write_until_session_ends(&task, &mut conn, "did not answer").await?;
    let written = ended.written;
    proxy.restore();
    for _ in 0..50 {
        incr(&mut conn).await?;
    }
    wait_until("a partial resync", Duration::from_secs(30), || async {
        let p = task.now();
        Ok(if p.partial_syncs >= 1 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        })
    })
    .await?;
    caught_up(&mut task, &source).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counter_on(&target).await?, 100 + written + 50);
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_source_that_prepares_its_snapshot_longer_than_the_timeout_is_alive() -> anyhow::Result<()>
{
    // A diskless source waits this long for more replicas before it starts the
    // transfer, sending a newline every second meanwhile: slow, not silent.
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .set("repl-diskless-sync", "yes")
            .set("repl-diskless-sync-delay", "6"),
    )
    .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = source.client().await?;
    for _ in 0..10 {
        incr(&mut conn).await?;
    }
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.link.read_timeout = SILENCE;
    let mut task = SyncTask::spawn(options);
    caught_up(&mut task, &source).await?;
    let p = task.now();
    assert_eq!(
        (p.full_syncs, p.last_error.as_deref()),
        (1, None),
        "the keepalives were not taken for life: {p:?}"
    );
    assert_eq!(resyncs(&source).await?.0, 1, "one full copy on the source");
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn commands_of_an_abandoned_target_connection_arriving_late_apply_nothing_twice(
) -> anyhow::Result<()> {
    use lockstep_testkit::proxy::Direction;
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    // lockstep -> front -> late -> target: `late` holds the old connection's bytes
    // while `front` sends the new session straight to the target.
    let late = FaultProxy::start(target.addr()).await?;
    let front = FaultProxy::start(late.local_addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.target = Endpoint::parse(&front.url_for(&target))?;
    options.apply.reply_timeout = SILENCE;
    let mut task = SyncTask::spawn(options);
    let mut conn = source.client().await?;
    for _ in 0..100 {
        incr(&mut conn).await?;
    }
    caught_up(&mut task, &source).await?;

    late.stall();
    let mut written = 0u64;
    let held = late.wait_for_stats(Duration::from_secs(10), |s| {
        s.bytes_held(Direction::ClientToServer) > 0
    });
    tokio::pin!(held);
    loop {
        incr(&mut conn).await?;
        written += 1;
        tokio::select! {
            stats = &mut held => {
                stats.map_err(|s| anyhow::anyhow!("nothing held: {s:?}"))?;
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    // The path of the old connection is gone; new ones reach the target directly.
    front.move_upstream(target.addr());
    for _ in 0..50 {
        incr(&mut conn).await?;
    }
    wait_until("a partial resync", Duration::from_secs(30), || async {
        let p = task.now();
        Ok(if p.partial_syncs >= 1 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        })
    })
    .await?;
    caught_up(&mut task, &source).await?;
    // The old path recovers: what it held reaches the target now, late.
    late.restore();
    late.wait_for_stats(Duration::from_secs(10), |s| {
        s.bytes_held(Direction::ClientToServer) == 0
    })
    .await
    .map_err(|s| anyhow::anyhow!("still held: {s:?}"))?;
    for _ in 0..10 {
        incr(&mut conn).await?;
    }
    caught_up(&mut task, &source).await?;
    assert_eq!(
        counter_on(&target).await?,
        100 + written + 50 + 10,
        "the late transactions of the abandoned connection were applied again"
    );
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}
