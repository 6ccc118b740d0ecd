//! The full copy's TTL race guard must never outlive the copy (issue 14, section 2):
//! keys that expire within the hour are written with a guard expiry in the year 3000,
//! and once the stream has passed the copy's end none may be left, whatever the
//! stream did to the keys meanwhile (RENAME, RENAMENX, MOVE, COPY with and without
//! DB, SWAPDB) and whether or not lockstep was killed between the copy and the
//! settle. Judged by plain reads of both servers (the testkit's guard oracle, PTTL),
//! never by the sync's state.

mod common;

use std::time::Duration;

use common::cluster::{into_cluster, seed_url, wait_consistent, Primaries};
use common::{assert_equal, caught_up, options, SyncTask};
use lockstep_sync::engine::Phase;
use lockstep_testkit::guard::{
    assert_no_guard_expiry, assert_no_guard_expiry_in_cluster, on_server,
};
use lockstep_testkit::info::config_set;
use lockstep_testkit::topology::{key_slot, wait_until, Cluster, ClusterSpec};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;

/// Keys per kind of move.
const KEYS: usize = 20;
/// Plain keys that make the snapshot slow (2 ms each: 5 s).
const FILLER: usize = 2500;

/// `(db, key)` of every short-TTL key after the moves, as the source holds them.
fn moved_keys() -> Vec<(u32, String)> {
    let mut keys = Vec::new();
    for i in 0..KEYS {
        keys.push((0, format!("ren2:{i}")));
        keys.push((0, format!("rnx2:{i}")));
        keys.push((1, format!("mov:{i}")));
        keys.push((0, format!("cp:{i}")));
        keys.push((0, format!("cp2:{i}")));
        keys.push((0, format!("cpdb:{i}")));
        keys.push((2, format!("cpdb:{i}")));
        keys.push((4, format!("swap:{i}")));
    }
    keys
}

/// The short-TTL keys (60 to 300 s) under their first names, the filler, and a slow
/// diskless snapshot.
async fn seed(source: &RedisServer) -> anyhow::Result<()> {
    let mut conn = source.client().await?;
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        let ttl_ms = 60_000 + (i as u64 * 12_000);
        for name in ["ren", "rnx", "mov", "cp", "cpdb"] {
            pipe.cmd("SET")
                .arg(format!("{name}:{i}"))
                .arg(i)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
    }
    pipe.cmd("SELECT").arg(3).ignore();
    for i in 0..KEYS {
        pipe.cmd("SET")
            .arg(format!("swap:{i}"))
            .arg(i)
            .arg("PX")
            .arg(90_000 + i as u64 * 5_000)
            .ignore();
    }
    pipe.cmd("SELECT").arg(0).ignore();
    for i in 0..FILLER {
        pipe.cmd("SET").arg(format!("filler:{i}")).arg(i).ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    config_set(&mut conn, "repl-diskless-sync", "yes").await?;
    config_set(&mut conn, "repl-diskless-sync-delay", "0").await?;
    config_set(&mut conn, "rdb-key-save-delay", "2000").await
}

/// Renames, moves, copies and swaps every short-TTL key on the source (while the
/// snapshot, which holds them under their first names, is being copied).
async fn move_everything(conn: &mut MultiplexedConnection) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        pipe.cmd("RENAME")
            .arg(format!("ren:{i}"))
            .arg(format!("ren2:{i}"))
            .ignore();
        pipe.cmd("RENAMENX")
            .arg(format!("rnx:{i}"))
            .arg(format!("rnx2:{i}"))
            .ignore();
        pipe.cmd("MOVE").arg(format!("mov:{i}")).arg(1).ignore();
        pipe.cmd("COPY")
            .arg(format!("cp:{i}"))
            .arg(format!("cp2:{i}"))
            .ignore();
        pipe.cmd("COPY")
            .arg(format!("cpdb:{i}"))
            .arg(format!("cpdb:{i}"))
            .arg("DB")
            .arg(2)
            .ignore();
    }
    pipe.cmd("SWAPDB").arg(3).arg(4).ignore();
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

/// The moves must arrive while the copy runs, or there is nothing to test.
fn still_copying(task: &SyncTask) {
    let p = task.now();
    assert_eq!(
        p.phase,
        Phase::FullCopy,
        "the full copy ended before the keys were moved: {p:?}"
    );
}

/// Waits until the full copy has written keys (the snapshot has been taken).
async fn copying(task: &SyncTask) -> anyhow::Result<()> {
    wait_until(
        "the full copy under way",
        Duration::from_secs(30),
        || async {
            anyhow::ensure!(!task.handle.is_finished(), "the sync task ended");
            let p = task.now();
            Ok(match p.phase == Phase::FullCopy && p.keys_copied > 0 {
                true => Ok(()),
                false => Err(format!("{p:?}")),
            })
        },
    )
    .await
}

/// Each moved key's expiry on the target equals the source's, within 2 s.
async fn same_expiries(source: &RedisServer, target: &RedisServer) -> anyhow::Result<()> {
    let mut s = source.client().await?;
    let mut t = target.client().await?;
    for (db, key) in moved_keys() {
        let read = |conn: &mut MultiplexedConnection| {
            let mut pipe = redis::pipe();
            pipe.cmd("SELECT").arg(db).ignore().cmd("PTTL").arg(&key);
            let mut conn = conn.clone();
            async move { pipe.query_async::<(i64,)>(&mut conn).await }
        };
        let (on_source,) = read(&mut s).await?;
        let (on_target,) = read(&mut t).await?;
        assert!(
            on_source > 0,
            "db{db} {key}: PTTL {on_source} on the source"
        );
        assert!(
            (on_target - on_source).abs() <= 2_000,
            "db{db} {key}: PTTL {on_target} ms on the target, {on_source} ms on the source"
        );
    }
    Ok(())
}

#[tokio::test]
async fn keys_moved_during_the_copy_lose_their_guard_expiry() -> anyhow::Result<()> {
    for (from, to) in [
        (RedisVersion::V6_2, RedisVersion::V7_0),
        (RedisVersion::V8_2, RedisVersion::V6_2),
    ] {
        let source = RedisServer::start(ServerConfig::new(from)).await?;
        let target = RedisServer::start(ServerConfig::new(to)).await?;
        seed(&source).await?;
        let dir = tempfile::tempdir()?;
        let mut task = SyncTask::spawn(options(&source, &target, dir.path())?);
        copying(&task).await?;
        move_everything(&mut source.client().await?).await?;
        still_copying(&task);
        caught_up(&mut task, &source).await?;
        assert_no_guard_expiry(&target, Duration::from_secs(30)).await?;
        same_expiries(&source, &target).await?;
        assert_equal(&source, &target).await?;
        task.finish().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_task_killed_between_the_copy_and_the_settle_settles_after_a_restart(
) -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V6_2)).await?;
    seed(&source).await?;
    let dir = tempfile::tempdir()?;
    // The stream applied at 5 commands/s: the moves (101 commands) take 20 s to pass
    // the copy's end, so the kill comes after the first of them and before the settle.
    let mut slow = options(&source, &target, dir.path())?;
    slow.throttle.incremental_commands_per_sec = Some(5);
    let task = SyncTask::spawn(slow);
    copying(&task).await?;
    move_everything(&mut source.client().await?).await?;
    still_copying(&task);
    let t = target.client().await?;
    let task_ref = &task;
    wait_until("the renames applied", Duration::from_secs(60), || {
        let mut t = t.clone();
        async move {
            let exists: i64 = t.run("EXISTS ren2:0").await?;
            Ok(if exists == 1 {
                Ok(())
            } else {
                Err(format!("{:?}", task_ref.now()))
            })
        }
    })
    .await?;
    assert!(
        !on_server(&target).await?.is_empty(),
        "the scenario needs guard expiries on the target when the task is killed: {:?}",
        task.now()
    );
    task.handle.abort();
    let _ = task.handle.await;

    let mut task = SyncTask::spawn(options(&source, &target, dir.path())?);
    caught_up(&mut task, &source).await?;
    assert_eq!(task.now().full_syncs, 0, "the restart copied again");
    assert_no_guard_expiry(&target, Duration::from_secs(30)).await?;
    same_expiries(&source, &target).await?;
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}

/// Into a cluster target (6.2: no PEXPIRETIME): a RENAME across slots (applied by
/// copying the key from the source), a RENAME and a COPY within one slot (applied
/// as they are, carrying the guard to another name) during the copy; afterwards no
/// primary holds a guard expiry and every key expires when the source's does.
#[tokio::test]
async fn into_a_cluster_target_no_guard_survives_renames_within_and_across_slots(
) -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let cluster = Cluster::start(ClusterSpec::new(
        ServerConfig::new(RedisVersion::V6_2),
        3,
        0,
    ))
    .await?;
    let mut conn = source.client().await?;
    let mut pipe = redis::pipe();
    let mut moves = redis::pipe();
    let mut after = Vec::new();
    for i in 0..KEYS {
        let ttl_ms = 60_000 + i as u64 * 10_000;
        let (from, to) = (format!("xs:{i}"), format!("xs-renamed:{i}"));
        if key_slot(from.as_bytes()) != key_slot(to.as_bytes()) {
            pipe.cmd("SET")
                .arg(&from)
                .arg(i)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            moves.cmd("RENAME").arg(&from).arg(&to).ignore();
            after.push(to);
        }
        let tag = format!("{{t{i}}}");
        pipe.cmd("SET")
            .arg(format!("{tag}a"))
            .arg(i)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        pipe.cmd("SET")
            .arg(format!("{tag}c"))
            .arg(i)
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        moves
            .cmd("RENAME")
            .arg(format!("{tag}a"))
            .arg(format!("{tag}b"))
            .ignore();
        moves
            .cmd("COPY")
            .arg(format!("{tag}c"))
            .arg(format!("{tag}d"))
            .ignore();
        after.extend([format!("{tag}b"), format!("{tag}c"), format!("{tag}d")]);
    }
    for i in 0..FILLER {
        pipe.cmd("SET").arg(format!("filler:{i}")).arg(i).ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    config_set(&mut conn, "repl-diskless-sync", "yes").await?;
    config_set(&mut conn, "repl-diskless-sync-delay", "0").await?;
    config_set(&mut conn, "rdb-key-save-delay", "2000").await?;
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(into_cluster(&source, &cluster, dir.path())?);
    copying(&task).await?;
    moves.query_async::<()>(&mut conn).await?;
    still_copying(&task);
    caught_up(&mut task, &source).await?;
    assert_no_guard_expiry_in_cluster(&cluster, Duration::from_secs(30)).await?;
    let mut primaries = Primaries::of(&cluster).await?;
    for key in &after {
        let on_source: i64 = conn.run_args(("PTTL", key)).await?;
        let on_target: i64 = primaries
            .conn(key.as_bytes())
            .run_args(("PTTL", key))
            .await?;
        assert!(on_source > 0, "{key}: PTTL {on_source} on the source");
        assert!(
            (on_target - on_source).abs() <= 2_000,
            "{key}: PTTL {on_target} ms on the target, {on_source} ms on the source"
        );
    }
    wait_consistent(
        &source.url(),
        &seed_url(&cluster),
        std::slice::from_mut(&mut task),
        Duration::from_secs(30),
    )
    .await?;
    task.finish().await?;
    Ok(())
}

/// A full resync that clears the target and copies again, while the first copy's
/// guards were still unsettled (the task killed) and with keys renamed during the
/// second copy too: no guard survives either copy.
#[tokio::test]
async fn a_full_resync_over_unsettled_guards_leaves_none() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    seed(&source).await?;
    let mut conn = source.client().await?;
    let dir = tempfile::tempdir()?;
    let mut slow = options(&source, &target, dir.path())?;
    slow.throttle.incremental_commands_per_sec = Some(5);
    let task = SyncTask::spawn(slow);
    copying(&task).await?;
    move_everything(&mut conn).await?;
    still_copying(&task);
    wait_until("the copy ended", Duration::from_secs(60), || async {
        Ok(match task.now().phase {
            Phase::Incremental => Ok(()),
            other => Err(format!("{other:?}")),
        })
    })
    .await?;
    task.handle.abort();
    let _ = task.handle.await;
    // Overrun the source's backlog: the next PSYNC cannot continue.
    config_set(&mut conn, "repl-backlog-size", "16384").await?;
    let big = "x".repeat(8192);
    for i in 0..100 {
        conn.run_args::<()>(("SET", format!("overrun:{i}"), &big))
            .await?;
    }
    let mut task = SyncTask::spawn(options(&source, &target, dir.path())?);
    copying(&task).await?;
    let mut pipe = redis::pipe();
    for i in 0..KEYS {
        pipe.cmd("RENAME")
            .arg(format!("ren2:{i}"))
            .arg(format!("ren3:{i}"))
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    still_copying(&task);
    caught_up(&mut task, &source).await?;
    assert_eq!(task.now().full_syncs, 1, "the restart did not copy again");
    assert_no_guard_expiry(&target, Duration::from_secs(30)).await?;
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}
