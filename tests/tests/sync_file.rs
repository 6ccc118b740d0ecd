//! An RDB file as the source (issue 18, `--source file:///path`), between real
//! servers: the oracle is a real server that loaded the same file itself (as a
//! primary: keys already expired are dropped), and verify compares it with what
//! lockstep wrote from the file. Every loadable fixture of `fixtures/rdb`, a big
//! snapshot SAVEd by each version (2 MB strings, 50k-element collections, expiries),
//! the same gzip-compressed, a truncated file (a named error, nothing retried) and a
//! missing one.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{Mode, SyncOptions};
use lockstep_testkit::harness::{verify_urls, SyncTask};
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
