//! `lockstep sync --source aof:///DIR` (issue 18, part 3) as a user runs it: a
//! stamped appendonlydir of a real 7.0 server replayed to an RFC 3339 instant, to
//! its end, then to an earlier instant again over the same target and checkpoint
//! directory (what the earlier run wrote after the instant is removed, not kept); a
//! truncated file named with its offset; the misuses refused naming the fix.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lockstep_testkit::server::Persistence;
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

/// The keys `k1`.. of db 0 that the target holds, in order.
async fn keys_on(target: &RedisServer) -> anyhow::Result<Vec<String>> {
    let mut c = target.client().await?;
    let mut keys: Vec<String> = c.run("KEYS k*").await?;
    keys.sort();
    Ok(keys)
}

/// The `#TS:` stamps of the directory's incr file.
fn stamps(dir: &Path) -> anyhow::Result<Vec<i64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".incr.aof") {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(stamp) = line.strip_prefix("#TS:") {
                found.push(stamp.trim().parse()?);
            }
        }
    }
    Ok(found)
}

fn rfc3339(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aof_replays_to_an_instant_and_to_its_end() -> anyhow::Result<()> {
    let source = RedisServer::start(
        ServerConfig::new(RedisVersion::V7_0)
            .persistence(Persistence::Aof)
            .set("aof-timestamp-enabled", "yes"),
    )
    .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut c = source.client().await?;
    for i in 1..=3 {
        let _: () = c.run(&format!("SET k{i} v{i}")).await?;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let work = tempfile::tempdir()?;
    let dir = work.path().join("appendonlydir");
    std::fs::create_dir(&dir)?;
    for entry in std::fs::read_dir(source.dir().join("appendonlydir"))? {
        let path = entry?.path();
        if let Some(name) = path.file_name() {
            std::fs::copy(&path, dir.join(name))?;
        }
    }
    let found = stamps(&dir)?;
    assert_eq!(found.len(), 3, "one stamp per second of writes: {found:?}");
    let url = format!("aof://{}", dir.display());
    let checkpoints = work.path().join("cp");
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
    let second = rfc3339(found[1]);
    let (code, _, err) = lockstep(&[&common[..], &["--until", &second]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("mode full"), "{err}");
    assert_eq!(keys_on(&target).await?, ["k1", "k2"]);
    let (code, _, err) = lockstep(&common);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(keys_on(&target).await?, ["k1", "k2", "k3"]);
    // Back to the first second: what the last run wrote after it goes.
    let first = found[0].to_string();
    let (code, _, err) = lockstep(&[&common[..], &["--until", &first]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(keys_on(&target).await?, ["k1"]);

    // A cut last file: named with its offset, exit 1, the fix given.
    let incr = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".incr.aof"))
        .ok_or_else(|| anyhow::anyhow!("no incr file"))?;
    let len = std::fs::metadata(&incr)?.len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&incr)?
        .set_len(len - 3)?;
    let (code, _, err) = lockstep(&common);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(".incr.aof ends inside a command at byte"),
        "{err}"
    );
    assert!(err.contains("--truncated-tail ok"), "{err}");
    let (code, _, err) = lockstep(&[&common[..], &["--truncated-tail", "ok"]].concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("bytes ignored"), "{err}");
    assert_eq!(keys_on(&target).await?, ["k1", "k2"]);
    Ok(())
}

#[test]
fn misuses_are_refused_with_the_fix() {
    let base = [
        "sync",
        "--target",
        "redis://127.0.0.1:1",
        "--checkpoint-dir",
        "x",
    ];
    let refused = |extra: &[&str], expected: &str| {
        let (code, _, err) = lockstep(&[&base[..], extra].concat());
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains(expected), "{extra:?}: {err}");
    };
    refused(
        &["--source", "redis://127.0.0.1:1", "--until", "5"],
        "--source aof:///",
    );
    refused(
        &["--source", "file:///x.rdb", "--truncated-tail", "ok"],
        "options of an AOF source",
    );
    refused(&["--source", "aof://appendonlydir"], "aof:///ABSOLUTE/PATH");
    refused(
        &[
            "--source",
            "aof:///data/appendonlydir",
            "--mode",
            "incremental",
        ],
        "--mode full",
    );
    refused(
        &[
            "--source",
            "aof:///data/appendonlydir",
            "--until",
            "yesterday",
        ],
        "2026-12-03T18:00:00Z",
    );
}
