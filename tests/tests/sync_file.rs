//! An RDB file as the source (issue 18, `--source file:///path`), between real
//! servers: the oracle is a real server that loaded the same file itself (as a
//! primary: keys already expired are dropped), and verify compares it with what
//! lockstep wrote from the file. Every loadable fixture of `fixtures/rdb`, a big
//! snapshot SAVEd by each version (2 MB strings, 50k-element collections, expiries),
//! the same gzip-compressed, a truncated file (a named error, nothing retried) and a
//! missing one. Redis Enterprise's extra records (skipped), `--keep-expired` (the file
//! restored as of its save) and `--then-follow` (PSYNC from the file's position, and
//! the clear stop, or the full copy, when the backlog no longer holds it).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{Mode, SyncOptions, ThenFollow};
use lockstep_testkit::harness::{verify_urls, wait_consistent, SyncTask};
use lockstep_testkit::topology::ReplicaSet;
use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};
use lockstep_verify::CompareOptions;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/rdb");

/// The options of a copy from `file` into `target`, as `lockstep sync --source
/// file://...` sets them; the source endpoint names nothing reachable, so the task
/// cannot read anything but the file.
fn from_file(file: &Path, target: &RedisServer, dir: &Path) -> anyhow::Result<SyncOptions> {
    let nowhere = Endpoint::parse("redis://rdb-file.invalid:6379")?;
    let mut o = lockstep_testkit::harness::options(
        &nowhere.to_string(),
        &target.url(),
        dir,
        Duration::from_secs(5),
    )?;
    o.mode = Mode::Full;
    o.source_file = Some(file.to_path_buf());
    o.load.ttl_guard = Duration::ZERO;
    o.load.drop_expired = true;
    o.heartbeat = false;
    Ok(o)
}

/// Copies `file` into `target` and waits for the task's end.
async fn restore(file: &Path, target: &RedisServer) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let task = SyncTask::spawn(from_file(file, target, dir.path())?);
    let ended = tokio::time::timeout(Duration::from_secs(120), task.handle).await??;
    ended?;
    Ok(())
}

/// `server` restarted on a copy of `file` (so it loads it, as a primary).
async fn load_into(server: &mut RedisServer, file: &Path) -> anyhow::Result<()> {
    server.stop().await?;
    std::fs::copy(file, server.dir().join("dump.rdb"))?;
    server.start_again().await.map_err(|e| {
        anyhow::anyhow!(
            "{} loading {}: {e}: {}",
            server.version(),
            file.display(),
            server.log_tail(5)
        )
    })?;
    Ok(())
}

async fn flushall(server: &RedisServer) -> anyhow::Result<()> {
    let mut c = server.client().await?;
    let _: () = c.run("FLUSHALL").await?;
    Ok(())
}

/// Verify (both directions, every database) finds the target equal to the oracle.
async fn assert_same(
    oracle: &RedisServer,
    target: &RedisServer,
    what: &str,
) -> anyhow::Result<u64> {
    let report = verify_urls(&oracle.url(), &target.url(), &CompareOptions::default()).await?;
    anyhow::ensure!(
        report.is_consistent(),
        "{what}: {report}; {:?}",
        report.differences
    );
    Ok(report.keys_compared)
}

fn fixtures() -> anyhow::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for sub in ["rdbtools-dumps", "redis-tests-assets"] {
        for entry in std::fs::read_dir(Path::new(FIXTURES).join(sub))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            // Module values need the module; the corrupt ones are the parser's tests.
            if name.ends_with(".rdb") && !name.contains("module") && !name.starts_with("corrupt") {
                paths.push(path);
            }
        }
    }
    paths.sort();
    Ok(paths)
}

fn gzip(file: &Path, into: &Path) -> anyhow::Result<()> {
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(into)?, flate2::Compression::default());
    encoder.write_all(&std::fs::read(file)?)?;
    encoder.finish()?;
    Ok(())
}

/// Every loadable fixture (RDB versions 1 to 9, every old encoding), each also
/// gzip-compressed, equals what a real 7.0 loads from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_restores_as_a_server_loads_it() -> anyhow::Result<()> {
    let mut oracle = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let mut restored = 0;
    for path in fixtures()? {
        let name = path.display().to_string();
        load_into(&mut oracle, &path).await?;
        flushall(&target).await?;
        restore(&path, &target)
            .await
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        assert_same(&oracle, &target, &name).await?;
        let gz = dir.path().join("fixture.rdb.gz");
        gzip(&path, &gz)?;
        flushall(&target).await?;
        restore(&gz, &target)
            .await
            .map_err(|e| anyhow::anyhow!("{name}.gz: {e}"))?;
        assert_same(&oracle, &target, &format!("{name}.gz")).await?;
        restored += 1;
    }
    assert!(restored >= 25, "only {restored} fixtures restored");
    Ok(())
}

/// A snapshot SAVEd by each version (big strings and collections, written in pieces;
/// keys expiring later, and keys that expire before the restore, which a server
/// loading the file drops), plain and gzip, restored into a target of the same
/// version and into 8.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_snapshot_of_every_version_restores_plain_and_gzip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for version in RedisVersion::ALL {
        let source = RedisServer::start(ServerConfig::new(version)).await?;
        let mut c = source.client().await?;
        let _: () = c.run("DEBUG POPULATE 20000 k 50").await?;
        let big: String = "x".repeat(2 << 20);
        let _: () = redis::cmd("SET")
            .arg("big:string")
            .arg(&big)
            .query_async(&mut c)
            .await?;
        let mut pipe = redis::pipe();
        for i in 0..50_000 {
            pipe.cmd("RPUSH").arg("big:list").arg(i).ignore();
            pipe.cmd("HSET").arg("big:hash").arg(i).arg(i).ignore();
        }
        for i in 0..200 {
            pipe.cmd("SET")
                .arg(format!("later:{i}"))
                .arg(i)
                .arg("EX")
                .arg(3600)
                .ignore();
            pipe.cmd("SET")
                .arg(format!("soon:{i}"))
                .arg(i)
                .arg("PX")
                .arg(300)
                .ignore();
        }
        pipe.query_async::<()>(&mut c).await?;
        let _: () = c.run("SAVE").await?;
        let file = dir.path().join(format!("{version}.rdb"));
        std::fs::copy(source.rdb_path(), &file)?;
        let gz = dir.path().join(format!("{version}.rdb.gz"));
        gzip(&file, &gz)?;
        tokio::time::sleep(Duration::from_millis(400)).await; // the soon: keys expire
        let mut oracle = RedisServer::start(ServerConfig::new(version)).await?;
        load_into(&mut oracle, &file).await?;
        for into in [version, RedisVersion::V8_2] {
            let target = RedisServer::start(ServerConfig::new(into)).await?;
            for copy in [&file, &gz] {
                flushall(&target).await?;
                restore(copy, &target).await?;
                let what = format!("{version} file {} into {into}", copy.display());
                let compared = assert_same(&oracle, &target, &what).await?;
                assert!(compared >= 20_203, "{what}: {compared} keys compared");
                let mut t = target.client().await?;
                let soon: i64 = t.run("EXISTS soon:1").await?;
                assert_eq!(soon, 0, "{what}: an expired key was written");
            }
        }
    }
    Ok(())
}

/// A truncated file stops the task at once with the file named (a file reads the
/// same again: no retry), and so does a missing one.
#[tokio::test]
async fn a_truncated_or_missing_file_is_a_named_error() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut c = source.client().await?;
    let _: () = c.run("DEBUG POPULATE 5000 k 100").await?;
    let _: () = c.run("SAVE").await?;
    let dir = tempfile::tempdir()?;
    let whole = std::fs::read(source.rdb_path())?;
    let cut = dir.path().join("cut.rdb");
    std::fs::write(&cut, &whole[..whole.len() / 2])?;
    let started = std::time::Instant::now();
    let err = restore(&cut, &target)
        .await
        .expect_err("a cut file must fail");
    let text = err.to_string();
    assert!(
        text.contains("cut.rdb") && text.contains("unreadable"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "retried: {text}"
    );
    let missing = restore(&dir.path().join("nope.rdb"), &target)
        .await
        .expect_err("a missing file must fail");
    assert!(missing.to_string().contains("nope.rdb"), "{missing}");
    Ok(())
}

/// Copies `file` with `options` changed by `change` into `target`, to its end.
async fn restore_with(
    file: &Path,
    target: &RedisServer,
    change: impl FnOnce(&mut SyncOptions),
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut options = from_file(file, target, dir.path())?;
    change(&mut options);
    let task = SyncTask::spawn(options);
    tokio::time::timeout(Duration::from_secs(120), task.handle).await???;
    Ok(())
}

async fn get(server: &RedisServer, key: &str) -> anyhow::Result<Option<String>> {
    let mut c = server.client().await?;
    Ok(redis::cmd("GET").arg(key).query_async(&mut c).await?)
}

/// Redis Enterprise files carry records Redis cannot load (RAM_LRU 0x6b before each
/// key, SLOT_NUM 0x79): librdb's own dump of Enterprise 7.4.2 (fixtures/rdb/
/// librdb-dumps) and a file crafted here restore with those records skipped.
#[tokio::test]
async fn a_redis_enterprise_file_restores_with_its_extra_records_skipped() -> anyhow::Result<()> {
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let librdb = Path::new(FIXTURES).join("librdb-dumps/redis_ent_opcode_ram_lru.rdb");
    restore(&librdb, &target).await?;
    for (key, value) in [("a", "b"), ("e", "f"), ("c", "d")] {
        assert_eq!(get(&target, key).await?.as_deref(), Some(value), "{key}");
    }
    // RDB 11, checksum 0 (disabled): SELECTDB 0; RAM_LRU (0x6b, length 0x4043) then
    // string x = 1; SLOT_NUM (0x79, length 7); RAM_LRU (length 2) then string y = 2; EOF.
    let mut rdb = b"REDIS0011\xfe\x00".to_vec();
    rdb.extend_from_slice(b"\x6b\x40\x43\x00\x01x\x011");
    rdb.extend_from_slice(b"\x79\x07\x6b\x02\x00\x01y\x012");
    rdb.extend_from_slice(&[0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    let dir = tempfile::tempdir()?;
    let crafted = dir.path().join("enterprise.rdb");
    std::fs::write(&crafted, &rdb)?;
    restore(&crafted, &target).await?;
    assert_eq!(get(&target, "x").await?.as_deref(), Some("1"));
    assert_eq!(get(&target, "y").await?.as_deref(), Some("2"));
    // An opcode of unknown length stops the copy, naming the byte.
    rdb[19] = 0x65; // where SLOT_NUM was
    std::fs::write(&crafted, &rdb)?;
    let err = restore(&crafted, &target)
        .await
        .expect_err("0x65 cannot be skipped");
    let text = err.to_string();
    assert!(text.contains("0x65 at byte offset 19"), "{text}");
    Ok(())
}

/// `--keep-expired`: the file as of its save. A key with 4 s left at the save, loaded
/// 5 s later (its expiry passed), is written with about 4 s to live from the load;
/// a key with an hour left keeps about an hour (not an hour minus the delay).
/// Without the flag the first is dropped, as a server loading the file drops it.
#[tokio::test]
async fn keep_expired_restores_each_key_with_the_lifetime_it_had_at_the_save() -> anyhow::Result<()>
{
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut c = source.client().await?;
    let _: () = c.run("SET short 1 PX 4000").await?;
    let _: () = c.run("SET long 2 EX 3600").await?;
    let _: () = c.run("SET forever 3").await?;
    let _: () = c.run("SAVE").await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("yesterday.rdb");
    std::fs::copy(source.rdb_path(), &file)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    restore(&file, &target).await?;
    assert_eq!(
        get(&target, "short").await?,
        None,
        "dropped without the flag"
    );
    restore_with(&file, &target, |o| {
        o.load.drop_expired = false;
        o.load.expiries_from_save = true;
    })
    .await?;
    let mut t = target.client().await?;
    let short: i64 = t.run("PTTL short").await?;
    // ctime is in whole seconds: the lifetime may be up to 1 s longer.
    assert!((1..=5000).contains(&short), "short: PTTL {short}");
    let long: i64 = t.run("TTL long").await?;
    assert!((3599..=3601).contains(&long), "long: TTL {long}");
    let forever: i64 = t.run("TTL forever").await?;
    assert_eq!(forever, -1);
    Ok(())
}

/// A file saved by a primary with a replica attached (so it carries `repl-id` and
/// `repl-offset`), `source` its primary; then writes in two databases.
async fn saved_with_position(set: &ReplicaSet, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut c = set.primary().client().await?;
    let _: () = c.run("DEBUG POPULATE 2000 before 20").await?;
    let _: () = c.run("SELECT 2").await?;
    let _: () = c.run("SET db2:before x").await?;
    let _: () = c.run("SAVE").await?;
    let file = dir.join("saved.rdb");
    std::fs::copy(set.primary().rdb_path(), &file)?;
    Ok(file)
}

/// Writes after the save, starting in the database the stream had selected (2).
async fn writes_after_the_save(source: &RedisServer, n: usize) -> anyhow::Result<()> {
    let mut c = source.client().await?;
    let mut pipe = redis::pipe();
    pipe.cmd("SELECT").arg(2).ignore();
    pipe.cmd("SET").arg("db2:after").arg("y").ignore();
    pipe.cmd("SELECT").arg(0).ignore();
    for i in 0..n {
        pipe.cmd("SET")
            .arg(format!("after:{i}"))
            .arg("v".repeat(100))
            .ignore();
    }
    pipe.cmd("DEL").arg("before:1").ignore();
    pipe.cmd("INCR").arg("counter").ignore();
    pipe.query_async::<()>(&mut c).await?;
    Ok(())
}

fn then_follow(
    file: &Path,
    source: &RedisServer,
    target: &RedisServer,
    dir: &Path,
    full_copy_if_lost: bool,
) -> anyhow::Result<SyncOptions> {
    let mut o = lockstep_testkit::harness::options(
        &source.url(),
        &target.url(),
        dir,
        Duration::from_secs(5),
    )?;
    o.mode = Mode::Full;
    o.source_file = Some(file.to_path_buf());
    o.then_follow = Some(ThenFollow {
        full_copy_if_lost,
        from: None,
    });
    Ok(o)
}

/// `--then-follow`: the file is loaded, then the source is followed by PSYNC from
/// the file's position (+CONTINUE): the writes made after the save reach the target
/// (in the right database), which ends equal to the source, without a full copy.
/// Run again, the task follows from where it got to, without loading the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn then_follow_continues_from_the_files_position() -> anyhow::Result<()> {
    let set = ReplicaSet::start(ServerConfig::new(RedisVersion::V7_0), 1).await?;
    let source = set.primary();
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let file = saved_with_position(&set, dir.path()).await?;
    writes_after_the_save(source, 300).await?;
    let cp = dir.path().join("cp");
    let mut task = SyncTask::spawn(then_follow(&file, source, &target, &cp, false)?);
    task.caught_up(source).await?;
    let options = CompareOptions::default();
    let timeout = Duration::from_secs(30);
    wait_consistent(
        &source.url(),
        &target.url(),
        std::slice::from_mut(&mut task),
        &options,
        timeout,
    )
    .await?;
    let p = task.now();
    assert_eq!((p.full_syncs, p.partial_syncs), (1, 1), "{p:?}");
    assert_eq!(
        get(&target, "before:1").await?,
        None,
        "the DEL after the save"
    );
    task.finish().await?;
    writes_after_the_save(source, 10).await?;
    let mut again = SyncTask::spawn(then_follow(&file, source, &target, &cp, false)?);
    again.caught_up(source).await?;
    wait_consistent(
        &source.url(),
        &target.url(),
        std::slice::from_mut(&mut again),
        &options,
        timeout,
    )
    .await?;
    let p = again.now();
    assert_eq!(p.full_syncs, 0, "the file was loaded again: {p:?}");
    again.finish().await?;
    Ok(())
}

/// A source that cannot continue from the file (its 16 kB backlog overrun by 100 kB
/// of writes): the task stops saying so, with the file loaded and nothing after it;
/// with the full-copy fallback it copies the source and ends equal to it. A file
/// without a position is refused before anything is loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn then_follow_past_the_backlog_stops_clearly_or_copies_in_full() -> anyhow::Result<()> {
    let small = ServerConfig::new(RedisVersion::V7_0).set("repl-backlog-size", "16kb");
    let set = ReplicaSet::start(small, 1).await?;
    let source = set.primary();
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let file = saved_with_position(&set, dir.path()).await?;
    writes_after_the_save(source, 1000).await?;
    let task = SyncTask::spawn(then_follow(
        &file,
        source,
        &target,
        &dir.path().join("a"),
        false,
    )?);
    let ended = tokio::time::timeout(Duration::from_secs(60), task.handle).await??;
    let err = ended.expect_err("the backlog no longer holds the file's position");
    let text = err.to_string();
    assert!(text.contains("no longer in its backlog"), "{text}");
    assert!(text.contains("--then-follow-fallback full-copy"), "{text}");
    assert_eq!(
        get(&target, "before:2").await?.as_deref().map(str::len),
        Some(20)
    );
    assert_eq!(
        get(&target, "after:1").await?,
        None,
        "nothing after the file"
    );

    let mut task = SyncTask::spawn(then_follow(
        &file,
        source,
        &target,
        &dir.path().join("b"),
        true,
    )?);
    let options = CompareOptions::default();
    wait_consistent(
        &source.url(),
        &target.url(),
        std::slice::from_mut(&mut task),
        &options,
        Duration::from_secs(60),
    )
    .await?;
    task.finish().await?;

    let plain = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut c = plain.client().await?;
    let _: () = c.run("SET k v").await?;
    let _: () = c.run("SAVE").await?;
    let empty = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let task = SyncTask::spawn(then_follow(
        &plain.rdb_path(),
        &plain,
        &empty,
        &dir.path().join("c"),
        false,
    )?);
    let ended = tokio::time::timeout(Duration::from_secs(30), task.handle).await??;
    let text = ended.expect_err("no position").to_string();
    assert!(text.contains("no repl-id and repl-offset"), "{text}");
    let mut e = empty.client().await?;
    let size: i64 = e.run("DBSIZE").await?;
    assert_eq!(size, 0, "nothing loaded");
    Ok(())
}

/// The progress of a file's copy is in bytes of the file, plain or gzip: at the end,
/// bytes copied = bytes total = the file's size on disk (compressed for gzip).
#[tokio::test]
async fn progress_counts_bytes_of_the_file_plain_or_gzip() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut c = source.client().await?;
    let _: () = c.run("DEBUG POPULATE 30000 k 100").await?;
    let _: () = c.run("SAVE").await?;
    let dir = tempfile::tempdir()?;
    let plain = dir.path().join("dump.rdb");
    std::fs::copy(source.rdb_path(), &plain)?;
    let gz = dir.path().join("dump.rdb.gz");
    gzip(&plain, &gz)?;
    for file in [&plain, &gz] {
        let size = std::fs::metadata(file)?.len();
        let cp = tempfile::tempdir()?;
        let task = SyncTask::spawn(from_file(file, &target, cp.path())?);
        let summary = tokio::time::timeout(Duration::from_secs(60), task.handle).await???;
        let p = summary.progress;
        assert_eq!(
            (p.bytes_copied, p.bytes_total),
            (size, Some(size)),
            "{}",
            file.display()
        );
    }
    Ok(())
}

/// A target flushed while the file's source is followed (it lost the file's keys and
/// the task's checkpoint key): the next session (the link cut by CLIENT KILL) stops
/// saying the target lost data, rather than follow the source over a target missing
/// the file. Fails if the follow is an incremental-only task, which would resume from
/// the checkpoint file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn then_follow_stops_when_the_target_loses_the_file() -> anyhow::Result<()> {
    let set = ReplicaSet::start(ServerConfig::new(RedisVersion::V7_0), 1).await?;
    let source = set.primary();
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let dir = tempfile::tempdir()?;
    let file = saved_with_position(&set, dir.path()).await?;
    writes_after_the_save(source, 10).await?;
    let mut options = then_follow(&file, source, &target, &dir.path().join("cp"), false)?;
    // No heartbeat: nothing is applied (and no checkpoint key written again) between
    // the flush and the cut.
    options.heartbeat = false;
    let mut task = SyncTask::spawn(options);
    task.caught_up(source).await?;
    flushall(&target).await?;
    let mut c = source.client().await?;
    let _: () = c.run("CLIENT KILL TYPE replica").await?;
    let ended = tokio::time::timeout(Duration::from_secs(60), task.handle).await??;
    let text = ended.expect_err("the target lost the file").to_string();
    assert!(
        text.contains("lost data since the RDB file was loaded"),
        "{text}"
    );
    Ok(())
}
