//! One source, several targets: `--target` twice (here from a `--config` TOML file)
//! runs one task per target at once, each with its own checkpoint directory, and both
//! targets end equal to the source; a cascade A -> B -> C (the second process's source
//! is the first's target) ends with C equal to A; a failing target makes the process
//! exit 1 naming it (and `--log-format json` writes only JSON lines).

mod common;

use std::time::Duration;

use common::{assert_equal, strings, sync_args, wait_counter, Lockstep, Writer};
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::Run;
use lockstep_testkit::{Auth, RedisServer, RedisVersion, ServerConfig};

#[tokio::test]
async fn two_targets_and_a_cascade_end_equal_to_the_source() -> anyhow::Result<()> {
    let a = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let b = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let c = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let d = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    DataSet::write(&a.redis_client()?, &DataSpec::new(7, 30).dbs(&[0, 2])).await?;
    let dir = tempfile::tempdir()?;
    let writer = Writer::start(&a)?;
    // A -> B and A -> D in one process, configured by a TOML file; B -> C in a second
    // one (a cascade).
    let config = dir.path().join("first.toml");
    std::fs::write(
        &config,
        format!(
            "source = \"{}\"\ntarget = [\"{}\", \"{}\"]\ncheckpoint_dir = \"{}\"\n",
            a.url(),
            b.url(),
            d.url(),
            dir.path().join("first").display()
        ),
    )?;
    let first = Lockstep::start(
        &strings(&["sync", "--config", &config.to_string_lossy()]),
        &[],
        &dir.path().join("first.log"),
    )?;
    let second = Lockstep::start(
        &sync_args(
            &b.url(),
            &[&c.url()],
            &dir.path().join("second"),
            &["--task-name", "cascade", "--conflict", "ignore"],
        ),
        &[],
        &dir.path().join("second.log"),
    )?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = writer.stop().await?;
    for (name, server) in [("B", &b), ("D", &d), ("C", &c)] {
        if let Err(err) = wait_counter(server, sent, Duration::from_secs(60)).await {
            panic!(
                "{name}: {err:#}\nfirst log:\n{}\nsecond log:\n{}",
                first.log_text(),
                second.log_text()
            );
        }
    }
    assert_equal(&a, &b, "A -> B").await?;
    assert_equal(&a, &d, "A -> D").await?;
    assert_equal(&a, &c, "A -> B -> C").await?;
    for sub in ["first/default-0", "first/default-1", "second/cascade-0"] {
        assert!(
            dir.path().join(sub).is_dir(),
            "no checkpoint directory {sub}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_failing_target_is_named_and_the_exit_code_is_not_zero() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let good = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let locked =
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0).auth(Auth::password())).await?;
    let mut conn = source.client().await?;
    conn.run::<()>("SET k v").await?;
    let dir = tempfile::tempdir()?;
    // No password for the locked target: its task fails, the other one finishes.
    let unauthenticated = format!("redis://127.0.0.1:{}", locked.port());
    let mut run = Lockstep::start(
        &sync_args(
            &source.url(),
            &[&good.url(), &unauthenticated],
            dir.path(),
            &["--mode", "full", "--skip-precheck", "--log-format", "json"],
        ),
        &[],
        &dir.path().join("lockstep.log"),
    )?;
    let code = run.exit_code(Duration::from_secs(30)).await?;
    let log = run.log_text();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("1 of 2 target(s) failed: target 1"), "{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "--log-format json wrote a line that is not JSON: {line}"
        );
    }
    let value: Option<String> = good.run("GET k").await?;
    assert_eq!(
        value.as_deref(),
        Some("v"),
        "the good target was not copied"
    );
    Ok(())
}
