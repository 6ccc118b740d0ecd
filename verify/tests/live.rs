//! Verify while a live sync applies a churn workload: with rounds it reports
//! consistent; after one key is corrupted on the target it reports exactly that key.

use std::time::{Duration, Instant};

use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{self, Phase, Progress, SyncOptions};
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, CompareOptions, DifferenceKind};
use tokio::sync::watch;

#[tokio::test]
async fn rounds_under_churn_through_a_live_sync() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    DataSet::write(&source.redis_client()?, &DataSpec::new(3, 50).dbs(&[0, 2])).await?;
    redis::cmd("SET")
        .arg("verify:corrupt-me")
        .arg("original")
        .query_async::<()>(&mut source.client().await?)
        .await?;

    let dir = tempfile::tempdir()?;
    let mut options = SyncOptions::new(
        Endpoint::parse(&source.url())?,
        Endpoint::parse(&target.url())?,
        dir.path(),
    );
    options.retry_window = Duration::from_secs(20);
    let (stop, stop_rx) = watch::channel(false);
    let (progress_tx, mut progress) = watch::channel(Progress::default());
    let task = tokio::spawn(engine::run(options, stop_rx, progress_tx));
    let deadline = Instant::now() + Duration::from_secs(60);
    while progress.borrow_and_update().phase != Phase::Incremental {
        assert!(
            Instant::now() < deadline,
            "the sync did not reach the stream"
        );
        assert!(!task.is_finished(), "the sync ended early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Longer than the checks can take on a loaded machine; stopped once they are done.
    let spec = ChurnSpec::new(5)
        .rate(400.0)
        .duration(Some(Duration::from_secs(60)));
    let churn_client = source.redis_client()?;
    let churn = tokio::spawn(async move { Churn::run(&churn_client, &spec).await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let verify = CompareOptions {
        dbs: vec![0, 2],
        rounds: 6,
        round_pause: Duration::from_millis(300),
        ..CompareOptions::default()
    };
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let report = compare(&src, &dst, &verify).await?;
    assert!(report.is_consistent(), "{report}");
    assert!(report.keys_compared > 300, "{report}");

    redis::cmd("SET")
        .arg("verify:corrupt-me")
        .arg("corrupted")
        .query_async::<()>(&mut target.client().await?)
        .await?;
    let report = compare(&src, &dst, &verify).await?;
    let found: Vec<(u32, &[u8], DifferenceKind)> = report
        .differences
        .iter()
        .map(|d| (d.db, d.key.as_slice(), d.kind))
        .collect();
    assert_eq!(
        found,
        vec![(0, &b"verify:corrupt-me"[..], DifferenceKind::Value)],
        "{report}"
    );
    assert!(
        !churn.is_finished(),
        "the churn ended before the checks did: {:?}",
        churn.await
    );
    churn.abort();
    stop.send(true)?;
    task.await??;
    Ok(())
}
