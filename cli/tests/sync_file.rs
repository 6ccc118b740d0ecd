//! `lockstep sync --source file:///path` (issue 18): a gzip-compressed RDB file,
//! with a rule, restored into a real server and verified against the server that
//! wrote it; the mode defaults to `full` for a file (there is no stream), and the
//! misuses are refused naming the fix.

use std::io::Write;
use std::process::Command;

use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};

fn lockstep(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(args)
        .output()
        .expect("lockstep runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_gzip_backup_restores_with_rules_and_verifies() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let mut c = source.client().await?;
    let _: () = c.run("DEBUG POPULATE 3000 user: 20").await?;
    let _: () = c.run("SELECT 3").await?;
    let _: () = c.run("DEBUG POPULATE 500 cache: 20").await?;
    let _: () = c.run("SAVE").await?;
    let dir = tempfile::tempdir()?;
    let gz = dir.path().join("backup.rdb.gz");
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(&gz)?, flate2::Compression::default());
    encoder.write_all(&std::fs::read(source.rdb_path())?)?;
    encoder.finish()?;
    let url = format!("file://{}", gz.display());
    let checkpoints = dir.path().join("cp");
    let target_url = target.url();
    let common = [
        "sync",
        "--source",
        url.as_str(),
        "--target",
        target_url.as_str(),
        "--checkpoint-dir",
        checkpoints.to_str().unwrap_or_default(),
    ];
    let (code, _, err) = lockstep(&[&common[..], &["--rename-prefix", "user:=u:"]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("mode full"), "{err}");
    let (code, out, err) = lockstep(&[
        "verify",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--rename-prefix",
        "user:=u:",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("CONSISTENT"), "{out}");
    // Restoring the same file again converges to the same (a file continues nothing).
    let (code, _, err) = lockstep(&[&common[..], &["--rename-prefix", "user:=u:"]].concat());
    assert_eq!(code, Some(0), "{err}");

    let (code, _, err) = lockstep(&[&common[..], &["--mode", "incremental"]].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--mode full"), "{err}");
    let relative = [
        "sync",
        "--source",
        "file://backup.rdb",
        "--target",
        target_url.as_str(),
        "--checkpoint-dir",
        "x",
    ];
    let (code, _, err) = lockstep(&relative);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("file:///ABSOLUTE/PATH"), "{err}");
    // The file source's flags: refused with a server source, and together.
    let source_url = source.url();
    let server = [
        "sync",
        "--source",
        source_url.as_str(),
        "--target",
        target_url.as_str(),
        "--checkpoint-dir",
        "x",
        "--keep-expired",
    ];
    let (code, _, err) = lockstep(&server);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--keep-expired applies to a file source only"),
        "{err}"
    );
    let both = [
        &common[..],
        &["--keep-expired", "--then-follow", source_url.as_str()],
    ]
    .concat();
    let (code, _, err) = lockstep(&both);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--keep-expired with --then-follow"), "{err}");
    // The gzip file has no replication position (its server had no replica): refused
    // before anything is loaded.
    let follow = [&common[..], &["--then-follow", source_url.as_str()]].concat();
    let (code, _, err) = lockstep(&follow);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("no repl-id and repl-offset"), "{err}");
    Ok(())
}

/// `--then-follow` through the CLI, against a server whose 16 kB backlog was overrun
/// since the file was saved: the file is loaded, then the task stops (exit 1) saying
/// the file's position is no longer in the backlog and naming the fallback.
#[tokio::test]
async fn then_follow_past_the_backlog_exits_with_the_reason() -> anyhow::Result<()> {
    let small = ServerConfig::new(RedisVersion::V7_0).set("repl-backlog-size", "16kb");
    let set = lockstep_testkit::ReplicaSet::start(small, 1).await?;
    let source = set.primary();
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut c = source.client().await?;
    let _: () = c.run("DEBUG POPULATE 1000 saved 20").await?;
    let _: () = c.run("SAVE").await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("saved.rdb");
    std::fs::copy(source.rdb_path(), &file)?;
    let _: () = c.run("DEBUG POPULATE 2000 after 100").await?;
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("SET")
            .arg(format!("later:{i}"))
            .arg("v".repeat(100))
            .ignore();
    }
    pipe.query_async::<()>(&mut c).await?;
    let url = format!("file://{}", file.display());
    let checkpoints = dir.path().join("cp");
    let (code, _, err) = lockstep(&[
        "sync",
        "--source",
        url.as_str(),
        "--then-follow",
        source.url().as_str(),
        "--target",
        target.url().as_str(),
        "--checkpoint-dir",
        checkpoints.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no longer in its backlog"), "{err}");
    assert!(err.contains("--then-follow-fallback full-copy"), "{err}");
    let mut t = target.client().await?;
    let saved: i64 = t.run("EXISTS saved:1").await?;
    let later: i64 = t.run("EXISTS later:1").await?;
    assert_eq!((saved, later), (1, 0), "the file loaded, nothing after it");
    Ok(())
}
