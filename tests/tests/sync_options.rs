//! The task's options end to end, between real servers: database selection and
//! mapping, key prefix filters (with the split of mixed-key commands and the refusal
//! of what cannot be split), PUBLISH dropped or kept, TTL extension, lockstep's own
//! keys in a cascade A -> B -> C with task names, and the throttles. The oracle is
//! plain reads of the target (and verify where whole databases must be equal).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{assert_equal, caught_up, options, SyncTask};
use lockstep_sync::engine::SyncError;
use lockstep_sync::filter::Filter;
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs one command written as words.
async fn run(conn: &mut MultiplexedConnection, line: &str) -> anyhow::Result<redis::Value> {
    conn.run(line).await
}

/// A connection to database `db` of `server`.
async fn db_conn(server: &RedisServer, db: u32) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(format!("{}/{db}", server.url()))?;
    Ok(client
        .get_multiplexed_async_connection_with_config(&lockstep_testkit::server::client_config())
        .await?)
}

/// The key names of database `db`.
async fn keys(server: &RedisServer, db: u32) -> anyhow::Result<BTreeSet<String>> {
    let mut conn = db_conn(server, db).await?;
    let keys: Vec<String> = conn.run("KEYS *").await?;
    Ok(keys.into_iter().collect())
}

/// The key names of database `db` without lockstep's own (the source's heartbeat).
async fn user_keys(server: &RedisServer, db: u32) -> anyhow::Result<BTreeSet<String>> {
    let mut all = keys(server, db).await?;
    all.retain(|k| !k.starts_with("LOCKSTEP_"));
    Ok(all)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Waits for the task to end and returns its error.
async fn ended_with_error(task: SyncTask) -> anyhow::Result<SyncError> {
    let ended = tokio::time::timeout(Duration::from_secs(20), task.handle).await??;
    match ended {
        Ok(summary) => anyhow::bail!("the task did not fail: {summary:?}"),
        Err(err) => Ok(err),
    }
}

#[tokio::test]
async fn selected_databases_go_to_their_mapped_numbers_in_copy_and_stream() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    for (db, prefix) in [(0, "a"), (1, "b"), (2, "c")] {
        let mut conn = db_conn(&source, db).await?;
        for i in 0..50 {
            run(&mut conn, &format!("SET {prefix}:{i} v{i}")).await?;
        }
    }
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.filter = Filter {
        dbs: vec![0, 2],
        db_map: vec![(0, 5)],
        ..Filter::default()
    };
    let mut task = SyncTask::spawn(options);
    caught_up(&mut task, &source).await?;
    let mut db0 = db_conn(&source, 0).await?;
    let mut db1 = db_conn(&source, 1).await?;
    let mut db2 = db_conn(&source, 2).await?;
    run(&mut db0, "SET a:new 1").await?;
    run(&mut db0, "MOVE a:1 2").await?; // into a synced db: target MOVE a:1 2 from db 5
    run(&mut db1, "SET b:new 1").await?; // not synced
    run(&mut db2, "SET c:new 1").await?;
    run(&mut db2, "COPY c:2 c:copy DB 0").await?; // target: COPY ... DB 5
    run(&mut db2, "MOVE c:3 1").await?; // leaves the synced dbs: target DEL c:3
    run(&mut db1, "MOVE b:1 3").await?; // between unsynced dbs: nothing
    caught_up(&mut task, &source).await?;
    let source_db0 = user_keys(&source, 0).await?;
    assert_eq!(keys(&target, 5).await?, source_db0);
    assert_eq!(keys(&target, 2).await?, user_keys(&source, 2).await?);
    assert!(keys(&target, 2).await?.contains("a:1"));
    assert!(!keys(&target, 2).await?.contains("c:3"));
    assert!(keys(&target, 5).await?.contains("c:copy"));
    assert!(keys(&target, 1).await?.is_empty());
    assert!(keys(&target, 3).await?.is_empty());
    assert_eq!(keys(&target, 0).await?, set(&["LOCKSTEP_CHECKPOINT"]));
    let mut t5 = db_conn(&target, 5).await?;
    let value: String = t5.run("GET a:7").await?;
    assert_eq!(value, "v7");

    // SWAPDB of two synced databases swaps their mapped numbers on the target.
    run(&mut db0, "SWAPDB 0 2").await?;
    run(&mut db0, "SET after:swap 1").await?; // the connection's db 0 is the old db 2
    caught_up(&mut task, &source).await?;
    let source_db0 = user_keys(&source, 0).await?;
    assert!(source_db0.contains("c:new") && source_db0.contains("after:swap"));
    assert_eq!(keys(&target, 5).await?, source_db0);
    assert_eq!(keys(&target, 2).await?, user_keys(&source, 2).await?);

    // A key brought into a synced db from an unsynced one cannot be known: the task
    // stops and says so.
    run(&mut db1, "MOVE b:2 0").await?;
    let err = ended_with_error(task).await?;
    let message = err.to_string();
    assert!(
        message.contains("MOVE") && message.contains("b:2"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn key_prefixes_filter_copy_and_stream_and_split_mixed_commands() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    for i in 0..20 {
        run(&mut s, &format!("SET in:{i} {i}")).await?;
        run(&mut s, &format!("SET out:{i} {i}")).await?;
        run(&mut s, &format!("RPUSH in:skip{i} {i}")).await?;
    }
    run(&mut s, "HSET in:hash f v").await?;
    let dir = tempfile::tempdir()?;
    let mut options = options(&source, &target, dir.path())?;
    options.filter = Filter {
        include_prefixes: vec![b"in:".to_vec()],
        exclude_prefixes: vec![b"in:skip".to_vec()],
        ..Filter::default()
    };
    let mut task = SyncTask::spawn(options);
    caught_up(&mut task, &source).await?;
    for line in [
        "SET in:s1 1",
        "SET out:s1 1",
        "SET in:skip:s1 1",
        "DEL in:1 out:1 in:2",
        "MSET in:m1 1 out:m1 2 in:m2 3",
        "RENAME in:3 out:renamed",
        "SADD in:set a b",
        "SADD out:set x",
        "SUNIONSTORE out:union out:set",
    ] {
        run(&mut s, line).await?;
    }
    caught_up(&mut task, &source).await?;
    let wanted: BTreeSet<String> = keys(&source, 0)
        .await?
        .into_iter()
        .filter(|k| k.starts_with("in:") && !k.starts_with("in:skip"))
        .chain(["LOCKSTEP_CHECKPOINT".to_owned()])
        .collect();
    let on_target = keys(&target, 0).await?;
    assert_eq!(on_target, wanted);
    for gone in ["in:1", "in:2", "in:3"] {
        assert!(!on_target.contains(gone), "{gone} is still on the target");
    }
    let mut t = target.client().await?;
    let m2: String = t.run("GET in:m2").await?;
    assert_eq!(m2, "3");

    // A rename into the kept keys from a filtered key: the value is unknown.
    run(&mut s, "RENAME out:5 in:renamed").await?;
    let err = ended_with_error(task).await?;
    let message = err.to_string();
    assert!(
        message.contains("RENAME") && message.contains("out:5") && message.contains("in:renamed"),
        "{message}"
    );
    assert!(!keys(&target, 0).await?.contains("in:renamed"));
    Ok(())
}

/// Subscribes to `channel` on `server` with a raw connection.
async fn subscribe(server: &RedisServer, channel: &str) -> anyhow::Result<tokio::net::TcpStream> {
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await?;
    stream
        .write_all(format!("SUBSCRIBE {channel}\r\n").as_bytes())
        .await?;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await??;
    anyhow::ensure!(
        String::from_utf8_lossy(&buf[..n]).contains("subscribe"),
        "no subscribe confirmation"
    );
    Ok(stream)
}

/// What arrives on a subscribed connection within `wait` (empty: nothing).
async fn received(stream: &mut tokio::net::TcpStream, wait: Duration) -> String {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn publish_is_dropped_by_default_and_kept_on_request() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    let dir = tempfile::tempdir()?;
    let mut task = SyncTask::spawn(options(&source, &target, dir.path())?);
    caught_up(&mut task, &source).await?;
    let mut subscriber = subscribe(&target, "news").await?;
    run(&mut s, "PUBLISH news dropped-message").await?;
    run(&mut s, "SET marker 1").await?;
    caught_up(&mut task, &source).await?;
    let got = received(&mut subscriber, Duration::from_millis(500)).await;
    assert!(got.is_empty(), "PUBLISH reached the target: {got:?}");
    task.finish().await?;

    let mut options = options(&source, &target, dir.path())?;
    options.filter.keep_publish = true;
    let mut task = SyncTask::spawn(options);
    caught_up(&mut task, &source).await?;
    run(&mut s, "PUBLISH news kept-message").await?;
    let got = received(&mut subscriber, Duration::from_secs(5)).await;
    assert!(got.contains("kept-message"), "got {got:?}");
    task.finish().await?;
    Ok(())
}

/// Source PTTL and target PTTL of `key`, read back to back.
async fn pttls(
    s: &mut MultiplexedConnection,
    t: &mut MultiplexedConnection,
    key: &str,
) -> anyhow::Result<(i64, i64)> {
    let on_source: i64 = s.run_args(("PTTL", key)).await?;
    let on_target: i64 = t.run_args(("PTTL", key)).await?;
    Ok((on_source, on_target))
}

#[tokio::test]
async fn ttls_are_extended_in_the_copy_and_in_every_stream_form() -> anyhow::Result<()> {
    const EXTEND_S: i64 = 1000;
    // 6.2 carries EXPIRE/PEXPIRE/SET PX as sent; 7.0+ rewrites them to absolute times.
    for version in [RedisVersion::V6_2, RedisVersion::V7_0, RedisVersion::V8_2] {
        let source = RedisServer::start(ServerConfig::new(version)).await?;
        let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
        let mut s = source.client().await?;
        // Under the TTL guard (expires within the hour) and over it.
        run(&mut s, "SET snap:short v PX 100000").await?;
        run(&mut s, "SET snap:long v EX 7200").await?;
        run(&mut s, "SET snap:none v").await?;
        let dir = tempfile::tempdir()?;
        let mut options = options(&source, &target, dir.path())?;
        options.filter.extend_ttl = Duration::from_secs(EXTEND_S as u64);
        let mut task = SyncTask::spawn(options);
        caught_up(&mut task, &source).await?;
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        for line in [
            "SET e v".to_owned(),
            "EXPIRE e 100".to_owned(),
            "SET pe v".to_owned(),
            "PEXPIRE pe 100000".to_owned(),
            "SET ea v".to_owned(),
            format!("EXPIREAT ea {}", now_s + 100),
            "SET pea v".to_owned(),
            format!("PEXPIREAT pea {}", (now_s + 100) * 1000),
            "SET sex v EX 100".to_owned(),
            "SET spx v PX 100000".to_owned(),
            "SETEX setex 100 v".to_owned(),
            "PSETEX psetex 100000 v".to_owned(),
            "SET gx v".to_owned(),
            "GETEX gx EX 100".to_owned(),
        ] {
            run(&mut s, &line).await?;
        }
        caught_up(&mut task, &source).await?;
        wait_until("guards settled", Duration::from_secs(10), || async {
            let p = task.progress.borrow().clone();
            Ok(if p.ttls_settled > 0 {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            })
        })
        .await?;
        let mut t = target.client().await?;
        for key in [
            "snap:short",
            "snap:long",
            "e",
            "pe",
            "ea",
            "pea",
            "sex",
            "spx",
            "setex",
            "psetex",
            "gx",
        ] {
            let (on_source, on_target) = pttls(&mut s, &mut t, key).await?;
            assert!(
                on_source > 0,
                "{version}: {key} has PTTL {on_source} on the source"
            );
            let wanted = on_source + EXTEND_S * 1000;
            assert!(
                (on_target - wanted).abs() < 2000,
                "{version}: {key}: PTTL {on_target} on the target, wanted {wanted} (source {on_source} + {EXTEND_S} s)"
            );
        }
        let (_, none) = pttls(&mut s, &mut t, "snap:none").await?;
        assert_eq!(none, -1, "{version}: a key without TTL got one");
        task.finish().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_cascade_never_carries_lockstep_keys_and_named_tasks_keep_their_own_checkpoint(
) -> anyhow::Result<()> {
    let a = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let b = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let c = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let mut conn = a.client().await?;
    for i in 0..100 {
        run(&mut conn, &format!("SET k:{i} {i}")).await?;
    }
    // A key of lockstep's prefix in the snapshot (as on a target of another task).
    run(&mut conn, "SET LOCKSTEP_CHECKPOINT:elsewhere x").await?;
    let dir_ab = tempfile::tempdir()?;
    let dir_bc = tempfile::tempdir()?;
    let mut first = SyncTask::spawn(options(&a, &b, dir_ab.path())?);
    caught_up(&mut first, &a).await?;
    let mut second_options = options(&b, &c, dir_bc.path())?;
    second_options.task_name = "cascade".into();
    let mut second = SyncTask::spawn(second_options);
    caught_up(&mut second, &b).await?;
    for i in 0..50 {
        run(&mut conn, &format!("INCR k:{i}")).await?;
    }
    run(&mut conn, "SET LOCKSTEP_user x").await?;
    run(&mut conn, "DEL k:99 LOCKSTEP_user").await?;
    caught_up(&mut first, &a).await?;
    caught_up(&mut second, &b).await?;
    let on_b: Vec<String> = keys(&b, 0)
        .await?
        .into_iter()
        .filter(|k| k.starts_with("LOCKSTEP_") && !k.starts_with("LOCKSTEP_HEARTBEAT:cascade:"))
        .collect();
    assert_eq!(on_b, ["LOCKSTEP_CHECKPOINT"], "B holds other lockstep keys");
    let on_c: Vec<String> = keys(&c, 0)
        .await?
        .into_iter()
        .filter(|k| k.starts_with("LOCKSTEP_"))
        .collect();
    assert_eq!(
        on_c,
        ["LOCKSTEP_CHECKPOINT:cascade"],
        "C holds lockstep keys of B or A"
    );
    assert_equal(&a, &c).await?;
    let mut t = c.client().await?;
    let value: i64 = t.run("GET k:7").await?;
    assert_eq!(value, 8);

    // The named task resumes from its own key.
    second.finish().await?;
    let mut second_options = options(&b, &c, dir_bc.path())?;
    second_options.task_name = "cascade".into();
    std::fs::remove_dir_all(dir_bc.path())?;
    let mut second = SyncTask::spawn(second_options);
    run(&mut conn, "INCR k:7").await?;
    caught_up(&mut first, &a).await?;
    caught_up(&mut second, &b).await?;
    let p = second.now();
    assert_eq!(
        (p.full_syncs, p.partial_syncs),
        (0, 1),
        "the named task did not resume from its checkpoint key"
    );
    let value: i64 = t.run("GET k:7").await?;
    assert_eq!(value, 9);
    first.finish().await?;
    second.finish().await?;
    Ok(())
}

/// The rate at which keys appear in database 1 of `target`, measured between the
/// moments its DBSIZE passes `from` and `to` (the middle of a run, away from the
/// start's burst and the end), in keys per second.
async fn keys_per_second(target: &RedisServer, from: i64, to: i64) -> anyhow::Result<f64> {
    let mut conn = db_conn(target, 1).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut start: Option<(Instant, i64)> = None;
    loop {
        let size: i64 = conn.run("DBSIZE").await?;
        let now = Instant::now();
        if start.is_none() && size >= from {
            start = Some((now, size));
        }
        if let Some((at, first)) = start {
            if size >= to {
                return Ok((size - first) as f64 / now.duration_since(at).as_secs_f64());
            }
        }
        anyhow::ensure!(now < deadline, "only {size} keys after 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The throttle holds: never more than 10 percent over the limit (the hard side).
/// Under it, only a wide soft bound (25 percent): a loaded machine may not reach the
/// limit at all (CI once measured 868/s against 1000/s with four tests at once).
fn assert_throttled(what: &str, measured: f64, wanted: f64) {
    eprintln!("{what}: {measured:.1}/s measured at the target, limit {wanted:.1}/s");
    assert!(
        measured < wanted * 1.10,
        "{what}: {measured:.1}/s measured at the target, over the limit {wanted}/s"
    );
    assert!(
        measured > wanted * 0.75,
        "{what}: {measured:.1}/s measured at the target, far under the limit {wanted}/s"
    );
}

/// Writes `count` string keys of `value_bytes` bytes into database 1 of `source`;
/// the values are pseudo-random letters, so the RDB cannot compress them.
async fn fill(source: &RedisServer, count: usize, value_bytes: usize) -> anyhow::Result<()> {
    let mut conn = db_conn(source, 1).await?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut letter = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        b'a' + (state % 26) as u8
    };
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            let value: Vec<u8> = (0..value_bytes).map(|_| letter()).collect();
            pipe.cmd("SET").arg(format!("k:{i}")).arg(value).ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
    }
    Ok(())
}

#[tokio::test]
async fn full_copy_throttles_hold_keys_and_bytes_per_second() -> anyhow::Result<()> {
    // keys/s: 4000 keys at 1500/s; MB/s: 300 keys of 10 kB at 1 MB/s (~100 keys/s).
    for (count, value_bytes, keys_per_sec, mb_per_sec) in
        [(4000, 10, Some(1500), None), (300, 10_000, None, Some(1.0))]
    {
        let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        fill(&source, count, value_bytes).await?;
        let dir = tempfile::tempdir()?;
        let mut options = options(&source, &target, dir.path())?;
        options.mode = lockstep_sync::engine::Mode::Full;
        options.throttle.full_keys_per_sec = keys_per_sec;
        options.throttle.full_bytes_per_sec = mb_per_sec.map(|mb: f64| (mb * 1e6) as u64);
        let task = SyncTask::spawn(options);
        let n = count as i64;
        let measured = keys_per_second(&target, n / 6, n * 5 / 6).await?;
        let wanted = match (keys_per_sec, mb_per_sec) {
            (Some(k), _) => k as f64,
            // RESTORE payload of a 10 kB string: the value plus 11 bytes of header
            // and trailer, plus the key.
            (_, Some(mb)) => mb * 1e6 / (value_bytes + 11 + 5) as f64,
            _ => unreachable!(),
        };
        assert_throttled("full copy", measured, wanted);
        task.handle.await??;
        assert_eq!(keys(&target, 1).await?.len(), count);
    }
    Ok(())
}

#[tokio::test]
async fn incremental_throttles_hold_commands_and_bytes_per_second() -> anyhow::Result<()> {
    // commands/s: 3000 SETs at 1000/s; MB/s: 250 SETs of 10 kB at 1 MB/s.
    for (keys, value_bytes, commands_per_sec, mb_per_sec) in
        [(3000, 10, Some(1000), None), (250, 10_000, None, Some(1.0))]
    {
        let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let dir = tempfile::tempdir()?;
        let mut options = options(&source, &target, dir.path())?;
        options.heartbeat = false;
        options.throttle.incremental_commands_per_sec = commands_per_sec;
        options.throttle.incremental_bytes_per_sec = mb_per_sec.map(|mb: f64| (mb * 1e6) as u64);
        let mut task = SyncTask::spawn(options);
        caught_up(&mut task, &source).await?;
        fill(&source, keys, value_bytes).await?;
        let n = keys as i64;
        let measured = keys_per_second(&target, n / 6, n * 5 / 6).await?;
        let wanted = match (commands_per_sec, mb_per_sec) {
            (Some(c), _) => c as f64,
            // The wire bytes of `SET k:<i> <value>`: the value and ~33 bytes.
            (_, Some(mb)) => mb * 1e6 / (value_bytes + 33) as f64,
            _ => unreachable!(),
        };
        assert_throttled("incremental", measured, wanted);
        // The link stayed up while throttled: no second full sync.
        caught_up(&mut task, &source).await?;
        assert_eq!(task.now().full_syncs, 1);
        task.finish().await?;
    }
    Ok(())
}

/// Makes a task's next start a full resync over stale data: its checkpoint names a
/// history the source does not have.
async fn spoil_checkpoint(
    target: &RedisServer,
    key: &str,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let mut conn = target.client().await?;
    conn.run_args::<()>(("SET", key, format!("{} 1000 0", "0".repeat(40))))
        .await?;
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[tokio::test]
async fn tasks_sharing_a_target_keep_their_checkpoints_and_a_resync_clears_only_their_keys(
) -> anyhow::Result<()> {
    let east = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let west = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    for (server, prefix) in [(&east, "e"), (&west, "w")] {
        let mut conn = server.client().await?;
        for i in 0..30 {
            run(&mut conn, &format!("SET {prefix}:{i} {i}")).await?;
        }
    }
    // Fan-in by database: east's db 0 into 1, west's db 0 into 2.
    let task_options = |source: &RedisServer, name: &str, to: u32, dir: &std::path::Path| {
        let mut o = options(source, &target, dir)?;
        o.task_name = name.into();
        o.filter = Filter {
            dbs: vec![0],
            db_map: vec![(0, to)],
            ..Filter::default()
        };
        anyhow::Ok(o)
    };
    let (east_dir, west_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let mut east_task = SyncTask::spawn(task_options(&east, "east", 1, east_dir.path())?);
    let mut west_task = SyncTask::spawn(task_options(&west, "west", 2, west_dir.path())?);
    caught_up(&mut east_task, &east).await?;
    caught_up(&mut west_task, &west).await?;
    assert_eq!(
        keys(&target, 0).await?,
        set(&["LOCKSTEP_CHECKPOINT:east", "LOCKSTEP_CHECKPOINT:west"])
    );
    assert_eq!(keys(&target, 1).await?.len(), 30);
    assert_eq!(keys(&target, 2).await?.len(), 30);

    // East starts over from a history its source does not have: a full resync that
    // must drop east's stale keys and leave west's alone.
    east_task.finish().await?;
    let mut e = east.client().await?;
    run(&mut e, "DEL e:0").await?;
    spoil_checkpoint(&target, "LOCKSTEP_CHECKPOINT:east", east_dir.path()).await?;
    let mut east_task = SyncTask::spawn(task_options(&east, "east", 1, east_dir.path())?);
    caught_up(&mut east_task, &east).await?;
    run(&mut db_conn(&west, 0).await?, "SET w:new 1").await?;
    caught_up(&mut west_task, &west).await?;
    assert_eq!(east_task.now().full_syncs, 1);
    let east_keys = keys(&target, 1).await?;
    assert_eq!(east_keys.len(), 29, "stale key left behind: {east_keys:?}");
    assert!(!east_keys.contains("e:0"));
    assert_eq!(
        keys(&target, 2).await?.len(),
        31,
        "west's keys were touched"
    );
    assert!(keys(&target, 0).await?.contains("LOCKSTEP_CHECKPOINT:west"));

    // East's FLUSHALL empties east's database of the target, nothing else.
    run(&mut e, "FLUSHALL").await?;
    run(&mut e, "SET e:after 1").await?;
    caught_up(&mut east_task, &east).await?;
    assert_eq!(keys(&target, 1).await?, set(&["e:after"]));
    assert_eq!(
        keys(&target, 2).await?.len(),
        31,
        "west's keys were flushed"
    );
    assert_eq!(
        keys(&target, 0).await?,
        set(&["LOCKSTEP_CHECKPOINT:east", "LOCKSTEP_CHECKPOINT:west"])
    );
    east_task.finish().await?;
    west_task.finish().await?;

    // Fan-in by prefix into one database: a resync unlinks only the task's keys.
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = source.client().await?;
    for i in 0..30 {
        run(&mut s, &format!("SET p:{i} {i}")).await?;
        run(&mut s, &format!("SET x:{i} {i}")).await?;
    }
    let dir = tempfile::tempdir()?;
    let prefix_options = || {
        let mut o = options(&source, &target, dir.path())?;
        o.task_name = "prefixed".into();
        o.filter.include_prefixes = vec![b"p:".to_vec()];
        anyhow::Ok(o)
    };
    let mut task = SyncTask::spawn(prefix_options()?);
    caught_up(&mut task, &source).await?;
    run(&mut db_conn(&target, 0).await?, "SET q:other 1").await?;
    task.finish().await?;
    run(&mut s, "DEL p:0").await?;
    spoil_checkpoint(&target, "LOCKSTEP_CHECKPOINT:prefixed", dir.path()).await?;
    let mut task = SyncTask::spawn(prefix_options()?);
    caught_up(&mut task, &source).await?;
    let on_target = keys(&target, 0).await?;
    let p_keys = on_target.iter().filter(|k| k.starts_with("p:")).count();
    assert_eq!(p_keys, 29, "{on_target:?}");
    assert!(
        on_target.contains("q:other"),
        "a key of no task was removed"
    );
    assert!(on_target.contains("LOCKSTEP_CHECKPOINT:east"));
    assert!(!on_target.iter().any(|k| k.starts_with("x:")));
    task.finish().await?;
    Ok(())
}

/// Every command the churn workload makes a source of each version put in its
/// stream goes through the key table when prefix rules are on: a command missing
/// from the table would stop the task; one with wrong key positions would drop or
/// keep the wrong keys and verify would see it.
#[tokio::test]
async fn the_key_table_covers_every_command_of_real_streams() -> anyhow::Result<()> {
    use lockstep_testkit::churn::{Churn, ChurnSpec};
    use lockstep_testkit::data::{DataSet, DataSpec};
    for version in RedisVersion::ALL {
        let source = RedisServer::start(ServerConfig::new(version)).await?;
        let target = RedisServer::start(ServerConfig::new(version)).await?;
        DataSet::write(&source.redis_client()?, &DataSpec::new(5, 10)).await?;
        let dir = tempfile::tempdir()?;
        let mut options = options(&source, &target, dir.path())?;
        // Keeps every key of the workload, but makes every command's keys be found.
        options.filter.exclude_prefixes = vec![b"no-such-prefix:".to_vec()];
        let mut task = SyncTask::spawn(options);
        let spec = ChurnSpec::new(17)
            .rate(500.0)
            .duration(Some(Duration::from_millis(1500)))
            .multi_db(&[0, 1, 2])
            .flushdb(true);
        let report = Churn::run(&source.redis_client()?, &spec).await?;
        assert!(report.ops > 100, "{report:?}");
        caught_up(&mut task, &source).await?;
        assert_equal(&source, &target).await?;
        task.finish().await?;
    }
    Ok(())
}

#[tokio::test]
async fn inconsistent_options_stop_the_task_before_it_connects() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let unused = lockstep_sync::endpoint::Endpoint::parse("redis://127.0.0.1:1")?;
    let mut options = lockstep_sync::engine::SyncOptions::new(unused.clone(), unused, dir.path());
    options.filter = Filter {
        dbs: vec![0],
        db_map: vec![(1, 2)],
        ..Filter::default()
    };
    let err = ended_with_error(SyncTask::spawn(options.clone())).await?;
    assert!(
        matches!(err, SyncError::Options(_)) && err.to_string().contains("database 1"),
        "{err}"
    );
    options.filter = Filter::default();
    options.task_name = "two words".into();
    let err = ended_with_error(SyncTask::spawn(options)).await?;
    assert!(err.to_string().contains("task name"), "{err}");
    Ok(())
}
