//! `lockstep demo`: the main job on an embedded default, for a first run on a fresh
//! machine. Starts a throwaway source and target with the testkit, fills the source
//! with the testkit's data set (every type, every encoding, several databases, TTLs),
//! runs a sync (full copy, then the stream) while a churn workload writes to the
//! source, waits until the target has caught up, verifies, and prints a report.
//!
//! How it fits: `main` runs it for `lockstep demo`; it uses the same engine and
//! verify calls as `sync` and `verify`. It must never touch a server it did not
//! start itself, and prints CONSISTENT only from verify's verdict.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{self, Phase, Progress, SyncOptions};
use lockstep_testkit::churn::{Churn, ChurnSpec};
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::topology::wait_until;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, CompareOptions};
use tokio::sync::watch;

use crate::args::DemoArgs;

/// Runs the demo; exit code 0 when the target ends equal to the source.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let (source, target) = start_servers(&args).await?;
    let data = DataSet::write(
        &source.redis_client()?,
        &DataSpec::new(args.seed, args.scale),
    )
    .await
    .context("filling the source")?;
    println!("1. filled the source: {data}");

    let checkpoint_dir = tempfile::tempdir().context("a temporary checkpoint directory")?;
    let options = SyncOptions::new(
        Endpoint::parse(&source.url())?,
        Endpoint::parse(&target.url())?,
        checkpoint_dir.path(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let (progress_tx, progress) = watch::channel(Progress::default());
    let started = Instant::now();
    let task = tokio::spawn(engine::run(options, stop_rx, progress_tx));
    println!(
        "2. sync started (full copy, then the command stream); checkpoint in {}",
        checkpoint_dir.path().display()
    );

    churn_source(&source, &args).await?;
    wait_caught_up(&source, &task, &progress).await?;
    let p = progress.borrow().clone();
    println!(
        "4. the target caught up at offset {} after {:.2?} ({} keys in the full copy)",
        p.applied_offset,
        started.elapsed(),
        p.keys_copied
    );

    let report = compare(
        &source.redis_client()?,
        &target.redis_client()?,
        &CompareOptions::default(),
    )
    .await?;
    println!("5. verify (independent reads of both sides): {report}");
    let _ = stop_tx.send(true);
    let summary = task.await.context("the sync task")??;
    println!(
        "6. sync stopped cleanly; checkpoint {:?}",
        summary.checkpoint
    );
    Ok(verdict(&report))
}

/// The throwaway source and target, of the versions asked for.
async fn start_servers(args: &DemoArgs) -> anyhow::Result<(RedisServer, RedisServer)> {
    let source_version = RedisVersion::parse(&args.source_version)?;
    let target_version = RedisVersion::parse(&args.target_version)?;

    println!("lockstep demo: starting a throwaway source (Redis {source_version}) and target (Redis {target_version})");
    let source = RedisServer::start(ServerConfig::new(source_version))
        .await
        .context("starting the source")?;
    let target = RedisServer::start(ServerConfig::new(target_version))
        .await
        .context("starting the target")?;
    println!(
        "  source {}  (dir {})",
        source.url(),
        source.dir().display()
    );
    println!(
        "  target {}  (dir {})",
        target.url(),
        target.dir().display()
    );
    Ok((source, target))
}

/// The churn workload on the source while the sync runs.
async fn churn_source(source: &RedisServer, args: &DemoArgs) -> anyhow::Result<()> {
    let spec = ChurnSpec::new(args.seed)
        .rate(500.0)
        .duration(Some(Duration::from_secs(args.churn_seconds)));
    let churn = Churn::run(&source.redis_client()?, &spec)
        .await
        .context("writing to the source during the sync")?;
    println!(
        "3. wrote to the source during the sync: {} operations of {} kinds at {:.0}/s",
        churn.ops,
        churn.ops_by_kind.len(),
        churn.ops as f64 / churn.elapsed.as_secs_f64().max(0.001)
    );
    Ok(())
}

/// Waits until the sync streams and its target acknowledged the source's
/// current replication offset.
async fn wait_caught_up<T>(
    source: &RedisServer,
    task: &tokio::task::JoinHandle<T>,
    progress: &watch::Receiver<Progress>,
) -> anyhow::Result<()> {
    let wanted = source
        .info("replication")
        .await?
        .int("master_repl_offset")?;
    wait_until(
        "the target caught up with the source",
        Duration::from_secs(120),
        || async {
            if task.is_finished() {
                anyhow::bail!("the sync task stopped");
            }
            let p = progress.borrow().clone();
            Ok(
                if p.phase == Phase::Incremental && p.applied_offset >= wanted {
                    Ok(())
                } else {
                    Err(format!("{p:?}"))
                },
            )
        },
    )
    .await?;
    Ok(())
}

/// Prints the verdict; exit code 0 only when the target equals the source.
fn verdict(report: &lockstep_verify::Report) -> ExitCode {
    if report.verdict() == lockstep_verify::Verdict::Consistent {
        println!("report: CONSISTENT: the target equals the source");
        ExitCode::SUCCESS
    } else {
        println!(
            "report: INCONSISTENT or not all compared: {} differences; {}",
            report.differences.len(),
            report.coverage.gaps().join("; ")
        );
        ExitCode::from(1)
    }
}
