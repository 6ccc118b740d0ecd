//! kill -9 of the `lockstep sync` process at seeded random points, in the full copy
//! and in the incremental phase, while the source is being written to; after the last
//! restart the target equals the source (verify), INCR counters and list lengths are
//! exact, and the source served partial resyncs. Replay a failure with
//! LOCKSTEP_CHAOS_SEED=<seed printed on failure>.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, CompareOptions};
use rand::{Rng, SeedableRng};

fn start_sync(
    source: &RedisServer,
    target: &RedisServer,
    dir: &std::path::Path,
    log: &std::path::Path,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args([
            "sync",
            "--source",
            &source.url(),
            "--target",
            &target.url(),
            "--checkpoint-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "lockstep_sync=info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

#[tokio::test]
async fn kill_9_at_random_points_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let seed: u64 = std::env::var("LOCKSTEP_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill -9 chaos seed: {seed} (replay with LOCKSTEP_CHAOS_SEED={seed})");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Slow snapshots (0.2 ms per key) so that some kills land inside the full copy.
    let source =
        RedisServer::start(ServerConfig::new(RedisVersion::V7_0).set("repl-backlog-size", "64mb"))
            .await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    DataSet::write(
        &source.redis_client()?,
        &DataSpec::new(seed, 100).dbs(&[0, 3]),
    )
    .await?;
    let mut conn = source.client().await?;
    conn.run::<()>("CONFIG SET rdb-key-save-delay 200").await?;

    // The writer: INCR and RPUSH, counted.
    let writer_client = source.redis_client()?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut conn =
            writer_client
                .get_multiplexed_async_connection_with_config(
                    &lockstep_testkit::server::client_config(),
                )
                .await?;
        let mut sent = 0u64;
        while !*stop_rx.borrow_and_update() {
            let mut pipe = redis::pipe();
            for _ in 0..10 {
                pipe.cmd("INCR")
                    .arg("counter")
                    .ignore()
                    .cmd("RPUSH")
                    .arg("events")
                    .arg(sent)
                    .ignore();
                sent += 1;
            }
            pipe.query_async::<()>(&mut conn).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::Ok(sent)
    });

    let dir = tempfile::tempdir()?;
    let log = dir.path().join("lockstep.log");
    let checkpoints = dir.path().join("checkpoint");
    let mut t = target.client().await?;
    for round in 0..5 {
        let mut child = start_sync(&source, &target, &checkpoints, &log)?;
        if round >= 2 {
            // The later kills land in the incremental phase: once the copy is done
            // (the target holds the sync's checkpoint key), at a random point after.
            let t = t.clone();
            wait_until("the full copy is done", Duration::from_secs(60), || {
                let mut t = t.clone();
                async move {
                    let done: bool = t.run("EXISTS LOCKSTEP_CHECKPOINT").await?;
                    Ok(if done {
                        Ok(())
                    } else {
                        Err("copying".to_owned())
                    })
                }
            })
            .await?;
        }
        let delay = rng.random_range(100..1500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        assert!(
            child.try_wait()?.is_none(),
            "seed {seed}: lockstep exited on its own in round {round}; log:\n{}",
            std::fs::read_to_string(&log)?
        );
        child.kill()?; // SIGKILL
        child.wait()?;
    }
    let mut last = start_sync(&source, &target, &checkpoints, &log)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true)?;
    let sent = writer.await??;

    let result = wait_until(
        "the target caught up with the writer",
        Duration::from_secs(90),
        || {
            let mut t = t.clone();
            async move {
                let counter: Option<u64> = t.run("GET counter").await?;
                Ok(if counter == Some(sent) {
                    Ok(())
                } else {
                    Err(format!("counter {counter:?} of {sent}"))
                })
            }
        },
    )
    .await;
    let log_text = std::fs::read_to_string(&log)?;
    if let Err(err) = result {
        let _ = last.kill();
        panic!("seed {seed}: {err:#}\nlockstep log:\n{log_text}");
    }
    let len: u64 = t.run("LLEN events").await?;
    assert_eq!(len, sent, "seed {seed}: list elements duplicated or lost");
    let report = compare(
        &source.redis_client()?,
        &target.redis_client()?,
        &CompareOptions::default(),
    )
    .await?;
    assert!(
        report.is_consistent(),
        "seed {seed}: {report}\nlockstep log:\n{log_text}"
    );
    let partial = source.info("stats").await?.int("sync_partial_ok")?;
    assert!(
        partial >= 1,
        "seed {seed}: no restart resumed partially; log:\n{log_text}"
    );
    last.kill()?;
    last.wait()?;
    Ok(())
}
