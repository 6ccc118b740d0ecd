//! An AOF as the source (issue 18, part 3: `--source aof:///DIR`, `--until`,
//! `--truncated-tail`), between real servers. The oracle is always a real server
//! that loaded the same files itself: cut at the instant by Redis's own
//! `redis-check-aof --truncate-to-timestamp`, or cut mid-command and loaded with
//! `aof-load-truncated yes`; verify compares it with what lockstep wrote. The
//! source server writes its AOF under a churn workload of every type (MULTI/EXEC,
//! expiries, several databases, scripts and functions) over a base snapshot, plus
//! binary keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{Mode, SyncOptions};
use lockstep_sync::source::aof::AofSpec;
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::harness::{verify_urls, SyncTask};
use lockstep_testkit::server::Persistence;
use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};
use lockstep_verify::CompareOptions;

/// The options of a replay of `spec` into `target`, as `lockstep sync --source
/// aof://...` sets them; the source endpoint names nothing reachable.
fn from_aof(spec: AofSpec, target: &RedisServer, dir: &Path) -> anyhow::Result<SyncOptions> {
    let nowhere = Endpoint::parse("redis://aof-file.invalid:6379")?;
    let mut o = lockstep_testkit::harness::options(
        &nowhere.to_string(),
        &target.url(),
        dir,
        Duration::from_secs(5),
    )?;
    o.mode = Mode::Full;
    o.source_aof = Some(spec);
    o.load.ttl_guard = Duration::ZERO;
    o.load.drop_expired = true;
    o.heartbeat = false;
    Ok(o)
}

fn spec(path: &Path, until: Option<i64>, truncated_tail_ok: bool) -> AofSpec {
    AofSpec {
        path: path.to_path_buf(),
        until,
        truncated_tail_ok,
    }
}

/// Replays `spec` into `target` (emptied first) and waits for the task's end.
async fn replay(spec: AofSpec, target: &RedisServer) -> anyhow::Result<()> {
    let mut c = target.client().await?;
    let _: () = c.run("FLUSHALL").await?;
    let dir = tempfile::tempdir()?;
    let task = SyncTask::spawn(from_aof(spec, target, dir.path())?);
    let ended = tokio::time::timeout(Duration::from_secs(120), task.handle).await??;
    ended?;
    Ok(())
}

/// A server of `version` writing a stamped AOF (`appendfsync always`).
async fn aof_server(version: RedisVersion, stamped: bool) -> anyhow::Result<RedisServer> {
    let mut config = ServerConfig::new(version).persistence(Persistence::Aof);
    if stamped {
        config = config.set("aof-timestamp-enabled", "yes");
    }
    RedisServer::start(config).await
}

/// Waits until no AOF rewrite runs or is scheduled.
async fn rewrite_done(server: &RedisServer) -> anyhow::Result<()> {
    for _ in 0..300 {
        let info = server.info("persistence").await?;
        let busy = |field: &str| info.get(field).is_some_and(|v| v != "0");
        if !busy("aof_rewrite_in_progress") && !busy("aof_rewrite_scheduled") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the AOF rewrite did not finish")
}

/// The base snapshot (every type, four databases, a rewrite into the base file),
/// then binary keys and a churn of `seconds` over three databases.
async fn write_history(source: &RedisServer, seconds: u64) -> anyhow::Result<()> {
    let client = source.redis_client()?;
    DataSet::write(
        &client,
        &DataSpec::new(7, 60).soon_ttl(Duration::from_secs(600)),
    )
    .await?;
    let mut c = source.client().await?;
    let _: () = c.run("BGREWRITEAOF").await?;
    rewrite_done(source).await?;
    let _: () = c
        .run_args(&["SET", "bin:\u{0}\r\n\u{ff}", "v\r\n\u{0}"])
        .await?;
    let _: () = c
        .run_args(&["HSET", "bin:\u{1}h", "f\u{0}", "\r\n"])
        .await?;
    let spec = ChurnSpec::new(11)
        .multi_db(&[0, 1, 2])
        .rate(800.0)
        .duration(Some(Duration::from_secs(seconds)));
    let report = Churn::run(&client, &spec).await?;
    anyhow::ensure!(report.total_commands() > 1000, "{report:?}");
    Ok(())
}

/// A copy of the server's appendonlydir (its writes are fsynced: `always`).
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(to.to_path_buf())
}

/// The one incr file of a copied appendonlydir.
fn incr_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut incrs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .collect();
    anyhow::ensure!(incrs.len() == 1, "incr files: {incrs:?}");
    Ok(incrs.remove(0))
}

/// The `#TS:` stamps of a file, in order (its lines that are stamps: the churn
/// writes no value that holds one).
fn stamps(file: &Path) -> anyhow::Result<Vec<i64>> {
    let bytes = std::fs::read(file)?;
    let mut found = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        if let Some(rest) = line.strip_prefix(b"#TS:") {
            let digits = rest.strip_suffix(b"\r").unwrap_or(rest);
            found.push(std::str::from_utf8(digits)?.parse()?);
        }
    }
    Ok(found)
}

/// A server of `version` started on a copy of appendonlydir `dir` (it loads it as a
/// primary; `aof-load-truncated` is Redis's default, yes).
async fn oracle_on(version: RedisVersion, dir: &Path) -> anyhow::Result<RedisServer> {
    let mut oracle = aof_server(version, false).await?;
    oracle.stop().await?;
    let own = oracle.dir().join("appendonlydir");
    std::fs::remove_dir_all(&own)?;
    copy_dir(dir, &own)?;
    oracle.start_again().await.map_err(|e| {
        anyhow::anyhow!(
            "{version} loading {}: {e}: {}",
            dir.display(),
            oracle.log_tail(8)
        )
    })?;
    Ok(oracle)
}

/// Redis's own cut at an instant: `redis-check-aof --truncate-to-timestamp` of the
/// server binary of `version` (redis-check-aof is the same program, named so).
fn redis_truncate_to(version: RedisVersion, dir: &Path, until: i64) -> anyhow::Result<()> {
    let bin = tempfile::tempdir()?;
    let checker = bin.path().join("redis-check-aof");
    std::os::unix::fs::symlink(version.server_binary()?, &checker)?;
    let manifest = dir.join("appendonly.aof.manifest");
    let out = std::process::Command::new(&checker)
        .arg("--truncate-to-timestamp")
        .arg(until.to_string())
        .arg(&manifest)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "redis-check-aof: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Verify (both directions, every database) finds `a` and `b` equal.
async fn assert_same(a: &RedisServer, b: &RedisServer, what: &str) -> anyhow::Result<u64> {
    let report = verify_urls(&a.url(), &b.url(), &CompareOptions::default()).await?;
    anyhow::ensure!(
        report.is_consistent(),
        "{what}: {report}; {:?}",
        report.differences
    );
    Ok(report.keys_compared)
}

async fn differs(a: &RedisServer, b: &RedisServer) -> anyhow::Result<bool> {
    let report = verify_urls(&a.url(), &b.url(), &CompareOptions::default()).await?;
    Ok(!report.is_consistent())
}

/// `--until T` at a stamp in the middle of the churn: the target equals a server
/// that loaded the AOF cut there by redis-check-aof; the whole replay equals the
/// source; and the cut is a real one (the oracle differs from the source, so a
/// replay that ignored --until would fail this test).
async fn until_matches_redis_cut(
    source_version: RedisVersion,
    target_version: RedisVersion,
) -> anyhow::Result<()> {
    let source = aof_server(source_version, true).await?;
    let target = RedisServer::start(ServerConfig::new(target_version)).await?;
    write_history(&source, 4).await?;
    let work = tempfile::tempdir()?;
    let files = copy_dir(
        &source.dir().join("appendonlydir"),
        &work.path().join("aof"),
    )?;
    let found = stamps(&incr_file(&files)?)?;
    anyhow::ensure!(found.len() >= 3, "too few stamps: {found:?}");
    let until = found[found.len() / 2];

    let cut = copy_dir(&files, &work.path().join("cut"))?;
    redis_truncate_to(source_version, &cut, until)?;
    let oracle = oracle_on(source_version, &cut).await?;
    anyhow::ensure!(
        differs(&oracle, &source).await?,
        "the cut at {until} changes nothing: the test could not tell --until from no --until"
    );
    replay(spec(&files, Some(until), false), &target).await?;
    let keys = assert_same(&oracle, &target, &format!("--until {until}")).await?;
    assert!(keys > 500, "only {keys} keys compared");

    replay(spec(&files, None, false), &target).await?;
    assert_same(&source, &target, "the whole replay").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_7_0_into_8_2_equals_the_aof_redis_cut_there() -> anyhow::Result<()> {
    until_matches_redis_cut(RedisVersion::V7_0, RedisVersion::V8_2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_8_2_into_8_2_equals_the_aof_redis_cut_there() -> anyhow::Result<()> {
    until_matches_redis_cut(RedisVersion::V8_2, RedisVersion::V8_2).await
}

/// A last file cut mid-command: an error naming the file and the offset, nothing
/// written; with `--truncated-tail ok`, the target equals a server that loaded the
/// cut files with `aof-load-truncated yes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_tail_is_named_or_cut_as_redis_cuts_it() -> anyhow::Result<()> {
    let source = aof_server(RedisVersion::V7_0, true).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    write_history(&source, 2).await?;
    let work = tempfile::tempdir()?;
    let files = copy_dir(
        &source.dir().join("appendonlydir"),
        &work.path().join("aof"),
    )?;
    let incr = incr_file(&files)?;
    let len = std::fs::metadata(&incr)?.len();
    // Mid-command: 7 bytes short of the end of the last command.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&incr)?
        .set_len(len - 7)?;

    let mut c = target.client().await?;
    let _: () = c.run("SET untouched 1").await?;
    let dir = tempfile::tempdir()?;
    let task = SyncTask::spawn(from_aof(spec(&files, None, false), &target, dir.path())?);
    let ended = tokio::time::timeout(Duration::from_secs(60), task.handle).await??;
    let err = ended.expect_err("a cut file must not replay").to_string();
    let name = incr
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(err.contains(&name), "{err}");
    assert!(err.contains("at byte"), "{err}");
    assert!(err.contains(&format!("of {}", len - 7)), "{err}");
    assert!(err.contains("--truncated-tail ok"), "{err}");
    let size: u64 = c.run("DBSIZE").await?;
    assert_eq!(
        size, 1,
        "nothing is written (nor cleared) after a failed pre-scan"
    );

    let oracle = oracle_on(RedisVersion::V7_0, &files).await?;
    replay(spec(&files, None, true), &target).await?;
    assert_same(&oracle, &target, "--truncated-tail ok").await?;
    Ok(())
}

/// A single AOF file with an RDB preamble (Redis 6.2 writes one file: the
/// preamble after BGREWRITEAOF, the commands appended after it), replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_file_with_a_preamble_replays() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V6_2)
            .persistence(Persistence::Aof)
            .set("aof-use-rdb-preamble", "yes"),
    )
    .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    write_history(&source, 2).await?;
    let work = tempfile::tempdir()?;
    let file = work.path().join("appendonly.aof");
    std::fs::copy(source.dir().join("appendonly.aof"), &file)?;
    assert!(std::fs::read(&file)?.starts_with(b"REDIS"), "no preamble");
    replay(spec(&file, None, false), &target).await?;
    assert_same(&source, &target, "a 6.2 AOF with a preamble").await?;
    // Without stamps, --until is refused before anything is written.
    let err = replay(spec(&file, Some(1), false), &target)
        .await
        .expect_err("no stamps");
    assert!(
        err.to_string().contains("aof-timestamp-enabled yes"),
        "{err}"
    );
    Ok(())
}

/// A 7.0 directory whose base file is commands (`aof-use-rdb-preamble no`: a
/// `.base.aof`, stamped too): the snapshot is empty and the base opens the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_of_commands_replays_before_the_incr_file() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .persistence(Persistence::Aof)
            .set("aof-timestamp-enabled", "yes")
            .set("aof-use-rdb-preamble", "no"),
    )
    .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    write_history(&source, 2).await?;
    let work = tempfile::tempdir()?;
    let files = copy_dir(
        &source.dir().join("appendonlydir"),
        &work.path().join("aof"),
    )?;
    let base = std::fs::read_dir(&files)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".base.aof"));
    anyhow::ensure!(base.is_some(), "no .base.aof in {}", files.display());
    replay(spec(&files, None, false), &target).await?;
    // The oracle is a server loading the files: a rewrite into commands does not
    // keep everything of a stream (see docs/consistency.md).
    let oracle = oracle_on(RedisVersion::V7_0, &files).await?;
    let keys = assert_same(&oracle, &target, "a base of commands").await?;
    assert!(keys > 500, "only {keys} keys compared");
    Ok(())
}
