//! `lockstep sync`: builds the engine's options from the arguments, runs the task
//! until it is done or Ctrl-C, and reports progress on stderr.

use std::process::ExitCode;
use std::time::Duration;

use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{self, Mode, Progress, SyncOptions};
use tokio::sync::watch;

use crate::args::{ModeArg, SyncArgs};

pub async fn run(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let mut options = SyncOptions::new(
        Endpoint::parse(&args.source)?,
        Endpoint::parse(&args.target[0])?,
        &args.checkpoint_dir,
    );
    options.mode = match args.mode {
        ModeArg::Full => Mode::Full,
        ModeArg::Incremental => Mode::Incremental,
        ModeArg::FullAndIncremental => Mode::FullAndIncremental,
    };
    options.retry_window = Duration::from_secs(args.retry_minutes * 60);
    options.other_retry_window = Duration::from_secs(args.other_retry_minutes * 60);
    args.task.apply_to(&mut options)?;
    options.heartbeat = !args.no_heartbeat;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (progress_tx, mut progress_rx) = watch::channel(Progress::default());
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("lockstep: stopping: draining the target and storing the checkpoint");
            let _ = stop_tx.send(true);
        }
    });
    let reporter = tokio::spawn(async move {
        let mut last = Progress::default();
        while progress_rx.changed().await.is_ok() {
            let now = progress_rx.borrow().clone();
            if now.phase != last.phase {
                eprintln!(
                    "lockstep: phase {:?} (keys copied {}, applied offset {})",
                    now.phase, now.keys_copied, now.applied_offset
                );
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let summary = engine::run(options, stop_rx, progress_tx).await?;
    reporter.abort();
    let p = &summary.progress;
    println!(
        "sync finished: {} full sync(s), {} partial resync(s), applied offset {}; checkpoint {:?}",
        p.full_syncs, p.partial_syncs, p.applied_offset, summary.checkpoint
    );
    Ok(ExitCode::SUCCESS)
}
