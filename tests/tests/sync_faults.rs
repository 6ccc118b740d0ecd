//! The sync engine under the conditions its issue names: the TTL race, big keys,
//! the heartbeat, and the errors a user can cause. Checked with plain reads and the
//! verify crate, never with the sync's own state.

mod common;

use std::time::{Duration, Instant};

use anyhow::Context;

use common::{assert_equal, caught_up, options, SyncTask};
use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{Mode, Phase, SyncOptions};
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::Run;
use lockstep_testkit::{Auth, RedisServer, RedisVersion, ReplicaSet, ServerConfig};

#[tokio::test]
async fn keys_extended_during_a_slow_full_copy_survive_and_the_others_expire() -> anyhow::Result<()>
{
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let mut conn = source.client().await?;
    for i in 0..20 {
        conn.run_args::<()>(("SET", format!("short:{i}"), i, "PX", 2500))
            .await?;
    }
    for i in 0..3000 {
        conn.run_args::<()>(("SET", format!("filler:{i}"), i))
            .await?;
    }
    // 1 ms per key: the snapshot takes about 3 s, longer than the short TTLs.
    conn.run::<()>("CONFIG SET rdb-key-save-delay 1000").await?;
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut task = SyncTask::spawn(options(&source, &target, dir.path())?);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in (0..20).step_by(2) {
        conn.run_args::<()>(("PEXPIRE", format!("short:{i}"), 120_000))
            .await?;
    }
    caught_up(&mut task, &source).await?;
    assert!(
        started.elapsed() > Duration::from_millis(2500),
        "the copy was not slow enough to test the race"
    );
    // Let the guards settle (read off the target: a guarded key the source expired
    // meanwhile leaves nothing to settle) and the unextended keys expire on both sides.
    lockstep_testkit::guard::assert_no_guard_expiry(&target, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut t = target.client().await?;
    for i in 0..20 {
        let pttl: i64 = t.run_args(("PTTL", format!("short:{i}"))).await?;
        if i % 2 == 0 {
            assert!(
                (100_000..=120_000).contains(&pttl),
                "extended key short:{i} has PTTL {pttl} on the target"
            );
        } else {
            assert_eq!(
                pttl, -2,
                "key short:{i} expired on the source but not on the target"
            );
        }
    }
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn big_keys_are_written_in_batches_and_end_equal() -> anyhow::Result<()> {
    for (from, to) in [
        (RedisVersion::V7_0, RedisVersion::V7_0),
        (RedisVersion::V8_2, RedisVersion::V6_2),
    ] {
        let source = RedisServer::start(ServerConfig::new(from)).await?;
        let target = RedisServer::start(ServerConfig::new(to)).await?;
        let mut conn = source.client().await?;
        for chunk in 0..20 {
            let mut pipe = redis::pipe();
            for i in chunk * 1000..(chunk + 1) * 1000 {
                pipe.cmd("RPUSH")
                    .arg("big:list")
                    .arg(format!("element-{i}"))
                    .ignore();
                pipe.cmd("HSET")
                    .arg("big:hash")
                    .arg(format!("f{i}"))
                    .arg(format!("value-{i}"))
                    .ignore();
                pipe.cmd("SADD")
                    .arg("big:set")
                    .arg(format!("m{i}"))
                    .ignore();
                pipe.cmd("ZADD")
                    .arg("big:zset")
                    .arg(i as f64 / 7.0)
                    .arg(format!("z{i}"))
                    .ignore();
            }
            pipe.query_async::<()>(&mut conn).await?;
        }
        conn.run::<()>("EXPIRE big:list 7200").await?;
        // Big strings, written in pieces: two longer than a parser batch (they come
        // in pieces), one with an expiry, one without; one shorter (it comes whole).
        let big_string: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        conn.run_args::<()>(("SET", "big:string", &big_string, "EX", 7200))
            .await?;
        conn.run_args::<()>(("SET", "big:string2", &big_string[..1_500_000]))
            .await?;
        conn.run_args::<()>(("SET", "big:string3", &big_string[..500_000]))
            .await?;
        // A stale copy on the target must be replaced, not appended to.
        let mut t = target.client().await?;
        t.run::<()>("RPUSH big:list stale").await?;
        t.run::<()>("SET big:string stale").await?;
        let dir = tempfile::tempdir()?;
        let mut options = options(&source, &target, dir.path())?;
        options.mode = Mode::Full;
        options.load.big_key_bytes = 64 << 10;
        let task = SyncTask::spawn(options);
        task.handle.await??;
        let len: i64 = t.run("LLEN big:list").await?;
        assert_eq!(
            len, 20_000,
            "{from} -> {to}: list elements duplicated or lost"
        );
        let copied: Vec<u8> = t.run("GET big:string").await?;
        assert!(copied == big_string, "{from} -> {to}: big string differs");
        let ttl: i64 = t.run("TTL big:string").await?;
        assert!((7000..=7200).contains(&ttl), "{from} -> {to}: TTL {ttl}");
        assert_equal(&source, &target).await?;
    }
    Ok(())
}

#[tokio::test]
async fn the_heartbeat_measures_latency_and_never_reaches_the_target() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let task = SyncTask::spawn(options(&source, &target, dir.path())?);
    wait_until(
        "a heartbeat came through",
        Duration::from_secs(10),
        || async {
            let p = task.progress.borrow().clone();
            Ok(if p.heartbeat_lag_ms.is_some() {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            })
        },
    )
    .await?;
    let lag = task.progress.borrow().heartbeat_lag_ms.unwrap_or(i64::MAX);
    assert!(
        (0..1000).contains(&lag),
        "heartbeat lag {lag} ms on loopback"
    );
    let mut s = source.client().await?;
    let on_source: Vec<String> = s.run("KEYS LOCKSTEP_HEARTBEAT*").await?;
    assert_eq!(on_source.len(), 1, "{on_source:?}");
    let mut t = target.client().await?;
    let on_target: Vec<String> = t.run("KEYS *").await?;
    // Only the sync's own checkpoint key is there.
    assert!(
        on_target == vec!["LOCKSTEP_CHECKPOINT".to_owned()],
        "the heartbeat reached the target: {on_target:?}"
    );
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_wrong_source_password_fails_at_once_and_writes_nothing() -> anyhow::Result<()> {
    let source =
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0).auth(Auth::password())).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    s.run::<()>("SET k v").await?;
    let dir = tempfile::tempdir()?;
    let url = format!("redis://:not-the-password@127.0.0.1:{}", source.port());
    let options = SyncOptions::new(
        Endpoint::parse(&url)?,
        Endpoint::parse(&target.url())?,
        dir.path(),
    );
    let task = SyncTask::spawn(options);
    let result = tokio::time::timeout(Duration::from_secs(10), task.handle).await??;
    let err = result.expect_err("a wrong password must stop the task");
    assert!(err.to_string().contains("password"), "{err}");
    assert!(
        !err.to_string().contains("not-the-password"),
        "the password leaked: {err}"
    );
    let mut t = target.client().await?;
    assert_eq!(t.run::<i64>("DBSIZE").await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_read_only_target_is_a_clear_error_naming_the_fix() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    s.run::<()>("SET k v").await?;
    let set = ReplicaSet::start(ServerConfig::new(RedisVersion::V7_0), 1).await?;
    let replica = set.replicas().next().expect("replica");
    let dir = tempfile::tempdir()?;
    let task = SyncTask::spawn(options(&source, replica, dir.path())?);
    let result = tokio::time::timeout(Duration::from_secs(10), task.handle).await??;
    let err = result.expect_err("a replica target must stop the task");
    let text = err.to_string();
    assert!(
        text.contains("READONLY") && text.contains("primary"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cut_longer_than_the_backlog_forces_a_full_resync_that_drops_deleted_keys(
) -> anyhow::Result<()> {
    use lockstep_testkit::proxy::FaultProxy;
    let source =
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0).set("repl-backlog-size", "16kb"))
            .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let mut conn = source.client().await?;
    for i in 0..100 {
        conn.run_args::<()>(("SET", format!("doomed:{i}"), i))
            .await?;
    }
    let proxy = FaultProxy::start(source.addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.source = Endpoint::parse(&proxy.url_for(&source))?;
    options.heartbeat = false;
    let mut task = SyncTask::spawn(options);
    caught_up(&mut task, &source).await?;
    // Cut the link and keep it down while the source deletes keys and writes more
    // than its backlog holds.
    proxy.refuse_new(true);
    proxy.cut_all();
    for i in 0..100 {
        conn.run_args::<()>(("DEL", format!("doomed:{i}"))).await?;
    }
    let filler = vec![b'x'; 1024];
    for i in 0..200 {
        conn.run_args::<()>(("SET", format!("after:{i}"), &filler))
            .await?;
    }
    proxy.refuse_new(false);
    wait_until("a second full sync", Duration::from_secs(60), || async {
        let p = task.progress.borrow().clone();
        Ok(if p.full_syncs >= 2 {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        })
    })
    .await?;
    caught_up(&mut task, &source).await?;
    let mut t = target.client().await?;
    let doomed: Vec<String> = t.run("KEYS doomed:*").await?;
    assert!(
        doomed.is_empty(),
        "keys deleted on the source survived the full resync: {}",
        doomed.len()
    );
    assert_equal(&source, &target).await?;
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_short_cut_resumes_partially_without_replaying() -> anyhow::Result<()> {
    use lockstep_testkit::proxy::FaultProxy;
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V6_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let proxy = FaultProxy::start(source.addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.source = Endpoint::parse(&proxy.url_for(&source))?;
    let mut task = SyncTask::spawn(options);
    let mut conn = source.client().await?;
    caught_up(&mut task, &source).await?;
    for round in 1..=5u64 {
        for _ in 0..200 {
            conn.run::<()>("INCR counter").await?;
        }
        proxy.cut_all();
        wait_until(
            "a partial resync after the cut",
            Duration::from_secs(20),
            || async {
                let p = task.progress.borrow().clone();
                Ok(if p.partial_syncs >= round {
                    Ok(())
                } else {
                    Err(format!("{p:?}"))
                })
            },
        )
        .await?;
    }
    caught_up(&mut task, &source).await?;
    let p = task.progress.borrow().clone();
    assert_eq!((p.full_syncs, p.partial_syncs), (1, 5), "{p:?}");
    let mut t = target.client().await?;
    let counter: i64 = t.run("GET counter").await?;
    assert_eq!(counter, 1000, "INCRs replayed or lost across cuts");
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_source_is_retried_within_the_window_then_given_up() -> anyhow::Result<()> {
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let mut options = SyncOptions::new(
        Endpoint::parse(&format!("redis://127.0.0.1:{port}"))?,
        Endpoint::parse(&target.url())?,
        dir.path(),
    );
    options.retry_window = Duration::from_millis(1500);
    let started = Instant::now();
    let task = SyncTask::spawn(options);
    let err = tokio::time::timeout(Duration::from_secs(20), task.handle)
        .await??
        .expect_err("nothing listens there");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "gave up before the window ended"
    );
    let text = err.to_string();
    assert!(
        text.contains("gave up") && text.contains(&port.to_string()),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn mode_incremental_copies_only_what_is_written_after_it_starts() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let mut conn = source.client().await?;
    conn.run::<()>("SET old 1").await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.mode = Mode::Incremental;
    let mut task = SyncTask::spawn(options);
    wait_until(
        "the stream is being applied",
        Duration::from_secs(10),
        || async {
            let p = task.progress.borrow().clone();
            Ok(if p.phase == Phase::Incremental {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            })
        },
    )
    .await?;
    conn.run::<()>("SET new 2").await?;
    caught_up(&mut task, &source).await?;
    let mut t = target.client().await?;
    let (old, new): (Option<i64>, Option<i64>) = redis::pipe()
        .cmd("GET")
        .arg("old")
        .cmd("GET")
        .arg("new")
        .query_async(&mut t)
        .await?;
    assert_eq!((old, new), (None, Some(2)));
    assert_eq!(task.progress.borrow().full_syncs, 0);
    task.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_target_out_of_memory_stops_the_task_without_advancing_the_checkpoint(
) -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0).set("maxmemory-policy", "noeviction"),
    )
    .await?;
    let mut t = target.client().await?;
    let used = target.info("memory").await?.int("used_memory")?;
    t.run_args::<()>(("CONFIG", "SET", "maxmemory", used + (256 << 10)))
        .await?;
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(options(&source, &target, dir.path())?);
    caught_up(&mut task, &source).await?;
    let before = std::fs::read_to_string(dir.path().join("checkpoint.json"))?;
    let mut conn = source.client().await?;
    let value = vec![b'v'; 64 << 10];
    for i in 0..64 {
        conn.run_args::<()>(("SET", format!("big:{i}"), &value))
            .await?;
    }
    let ended = tokio::time::timeout(Duration::from_secs(20), task.handle).await??;
    let err = ended.expect_err("an OOM target must stop the task");
    let text = err.to_string();
    assert!(text.contains("OOM") && text.contains("maxmemory"), "{text}");
    // The checkpoint stands at or before the refused command: nothing after it counts.
    let after: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("checkpoint.json"),
    )?)?;
    let before: serde_json::Value = serde_json::from_str(&before)?;
    let source_offset = source
        .info("replication")
        .await?
        .int("master_repl_offset")?;
    assert!(
        after["offset"].as_i64() < Some(source_offset),
        "checkpoint {after} passed the refused writes (source at {source_offset})"
    );
    assert!(after["offset"].as_i64() >= before["offset"].as_i64());
    Ok(())
}

/// How many SYNC commands `source` has served (its own `INFO commandstats`).
async fn syncs_served(source: &RedisServer) -> anyhow::Result<i64> {
    let stats = source.info("commandstats").await?;
    let Some(line) = stats.get("cmdstat_sync") else {
        return Ok(0);
    };
    let calls = line
        .split(',')
        .find_map(|field| field.strip_prefix("calls="))
        .unwrap_or("0");
    Ok(calls.parse()?)
}

/// Waits until `source` has served `count` SYNC commands (a session of the task
/// copied again), failing with the task's outcome if it ends.
async fn wait_for_syncs(
    task: &mut SyncTask,
    source: &RedisServer,
    count: i64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        task.fail_if_ended("a new SYNC session").await?;
        let served = syncs_served(source).await?;
        if served >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the source served SYNC {served} times, not {count}, within 45 s; log: {}",
            source.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (30 s at most) until verify finds `target` equal to `source`; fails with
/// the last report, or with the task's outcome if it ends.
async fn equal_to_source(
    source: &RedisServer,
    target: &RedisServer,
    task: &mut SyncTask,
) -> anyhow::Result<lockstep_verify::Report> {
    let options = lockstep_verify::CompareOptions::default();
    let timeout = Duration::from_secs(30);
    let tasks = std::slice::from_mut(task);
    lockstep_testkit::harness::wait_consistent(
        &source.url(),
        &target.url(),
        tasks,
        &options,
        timeout,
    )
    .await
}

/// Found by reading (session 7): a source that refuses PSYNC but serves SYNC makes
/// every session a full copy with no position, and that copy cleared nothing: keys
/// the source deleted while the link was down (or lockstep stopped) stayed on the
/// target, a superset of the source. Failed before the fix: verify kept finding
/// the deleted keys on the target only.
#[tokio::test]
async fn a_sync_only_source_is_copied_again_without_the_keys_it_deleted() -> anyhow::Result<()> {
    for version in [RedisVersion::V6_2, RedisVersion::V7_0, RedisVersion::V8_2] {
        sync_only_source_copied_again(version)
            .await
            .with_context(|| format!("a source of Redis {version}"))?;
    }
    Ok(())
}

/// The scenario above with a source of `version` (the target is 7.0).
async fn sync_only_source_copied_again(version: RedisVersion) -> anyhow::Result<()> {
    use lockstep_testkit::proxy::FaultProxy;
    // `rename-command PSYNC ""` (the directive's name carries its first word: the
    // testkit quotes a value as one word). 6.2, 7.0 and 8.2 all accept it.
    let source =
        RedisServer::start(ServerConfig::new(version).set("rename-command PSYNC", "")).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut conn = source.client().await?;
    for db in 0..2 {
        conn.run_args::<()>(("SELECT", db)).await?;
        for i in 0..50 {
            conn.run_args::<()>(("SET", format!("doomed:{db}:{i}"), i))
                .await?;
            conn.run_args::<()>(("SET", format!("kept:{db}:{i}"), i))
                .await?;
        }
    }
    let proxy = FaultProxy::start(source.addr()).await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.source = Endpoint::parse(&proxy.url_for(&source))?;
    let mut task = SyncTask::spawn(options.clone());
    wait_for_syncs(&mut task, &source, 1).await?;
    equal_to_source(&source, &target, &mut task).await?;
    // A copy by SYNC is a full sync in what the task reports, too.
    assert!(
        task.progress.borrow().full_syncs >= 1,
        "a SYNC copy was not counted: {:?}",
        *task.progress.borrow()
    );

    // The link is cut and kept down while the source deletes keys in both databases
    // and writes new ones; the next session must copy again.
    proxy.refuse_new(true);
    proxy.cut_all();
    for db in 0..2 {
        conn.run_args::<()>(("SELECT", db)).await?;
        for i in 0..25 {
            conn.run_args::<()>(("DEL", format!("doomed:{db}:{i}")))
                .await?;
            conn.run_args::<()>(("SET", format!("new:{db}:{i}"), i))
                .await?;
        }
    }
    proxy.refuse_new(false);
    wait_for_syncs(&mut task, &source, 2).await?;
    equal_to_source(&source, &target, &mut task).await?;

    // lockstep is stopped, the source deletes more, and a new run copies again.
    task.finish().await?;
    for db in 0..2 {
        conn.run_args::<()>(("SELECT", db)).await?;
        for i in 25..50 {
            conn.run_args::<()>(("DEL", format!("doomed:{db}:{i}")))
                .await?;
        }
    }
    let mut task = SyncTask::spawn(options);
    wait_for_syncs(&mut task, &source, 3).await?;
    let report = equal_to_source(&source, &target, &mut task).await?;
    assert!(report.keys_compared > 0, "nothing was compared");
    task.finish().await?;
    Ok(())
}
