//! `lockstep sync`: from the arguments to one engine task per target, all running at
//! once, with the precheck before, the status endpoint and the progress display
//! during, and a graceful stop on SIGINT/SIGTERM.
//!
//! Order: build every target's `SyncOptions` (errors in the options stop here); when
//! the source is a Redis Cluster, one task per target and source shard (see
//! `lockstep_sync::cluster_source`), in `<checkpoint-dir>/<task>-<i>/shard<slot ranges>`;
//! run the precheck of each task unless `--skip-precheck` (a failing item stops
//! with its reason and fix; warnings are logged); serve `--status-addr`; start the
//! tasks. Each target has its own checkpoint directory `<checkpoint-dir>/<task>-<i>`.
//! A Redis Cluster source that is resharded ends the shard tasks whose slots changed
//! (`SyncError::Resharded`); the process reads the new layout and, once every
//! replaced shard has ended, starts the new shards (they copy their slots again)
//! while the others stream on ([`Tasks::follow_reshard`]).
//! A failing target does not stop the others; the process exits 1 naming every
//! target that failed, 0 when all ended well (`--mode full` done, or stopped), 2 on
//! bad options or a failed precheck.
//!
//! Signals: the first SIGINT or SIGTERM asks every task to stop reading, drain what
//! is in flight and store its checkpoint; a second one exits at once with code 130
//! (the checkpoints still mark only what the targets acknowledged).
//!
//! Code map: [`run`] (the order above), `check_args`, `expand_targets`,
//! `run_precheck`, `Tasks` (spawn, `supervise` with `record_end` and
//! `follow_reshards`), `Signals` and `stop_on_signals`. It must never run two
//! tasks over the same slots of a target at once (see `follow_reshard`), and
//! never exit 0 when a target failed.

mod aof;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lockstep_sync::checkpoint::CheckpointStore;
use lockstep_sync::endpoint::Endpoint;
use lockstep_sync::engine::{self, Mode, Progress, SourceMode, Summary, SyncError, SyncOptions};
use lockstep_sync::precheck::{precheck, Outcome, PrecheckOptions};
use tokio::sync::watch;

use crate::args::{FollowFallbackArg, ModeArg, SourceModeArg, SyncArgs};
use crate::check::precheck_options;
use crate::connection::Side;
use crate::converge::ConvergenceCell;
use crate::report::Display;
use crate::status::{ScanView, Task, TaskState, TaskView};

/// The precheck item that a resumed task passes by construction: its target holds
/// the keys it copied itself.
const EMPTY_TARGET_ITEM: &str = "target databases are empty";

/// Redis's default `repl-ping-replica-period`: how often an idle source PINGs.
const REPL_PING_PERIOD_SECS: u64 = 10;

pub async fn run(args: SyncArgs, display: Display) -> anyhow::Result<ExitCode> {
    check_args(&args)?;
    let file = source_file(&args)?;
    if file.is_none() {
        check_file_flags(&args)?;
    }
    let aof = aof::source_aof(&args)?;
    let (bases, all_options) = match (&file, &aof) {
        (Some(path), _) => file_targets(&args, path)?,
        (None, Some(spec)) => aof::aof_targets(&args, spec)?,
        (None, None) => {
            let source = args.connection.endpoint(Side::Source, &args.source)?;
            expand_targets(&args, &source).await?
        }
    };
    if file.is_some() && !args.skip_precheck {
        tracing::info!("the source is an RDB file: the precheck (which asks both servers) is not run; the target is checked as the copy writes to it");
    }
    if aof.is_some() && !args.skip_precheck {
        tracing::info!("the source is an AOF: the precheck (which asks both servers) is not run; the files are checked whole before anything is written");
    }
    if !args.skip_precheck && file.is_none() && aof.is_none() {
        // For a cluster source: every primary, each with the same credentials.
        for (index, options) in &all_options {
            run_precheck(&args, *index, options).await?;
        }
    }

    // The handlers are installed before any task starts: a signal that arrived
    // before a spawned task got round to installing them killed the process at once
    // (seen under load in CI: the first TERM ended it, with no drain).
    let signals = Signals::install();
    let (stop_tx, stop_rx) = watch::channel(false);
    let source_text = match (&file, &aof) {
        (Some(path), _) => format!("file://{}", path.display()),
        (None, Some(spec)) => aof::shown(&spec.path),
        (None, None) => bases
            .first()
            .map_or_else(|| args.source.clone(), |b| b.source.to_string()),
    };
    let task = Arc::new(Task {
        name: task_name(&args),
        source: source_text,
        started: Instant::now(),
        targets: std::sync::RwLock::new(Vec::new()),
    });
    let mut tasks = Tasks {
        status: task.clone(),
        stop: stop_rx.clone(),
        states: Arc::default(),
        running: tokio::task::JoinSet::new(),
        live: Vec::new(),
        converge_every: Duration::from_secs(args.converge_every_secs),
    };
    for (index, options) in all_options {
        tasks.spawn(index, options);
    }
    if let Some(addr) = &args.status_addr {
        let bound = crate::status::serve(crate::status::parse_addr(addr)?, task.clone()).await?;
        tracing::info!("status on http://{bound}/status and http://{bound}/metrics");
    }
    tokio::spawn(stop_on_signals(signals, stop_tx, tasks.states.clone()));
    let shown = display.spawn(task.clone());
    let failed = tasks.supervise(&bases, args.read_from_replicas).await;
    shown.abort();
    display.finish();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    tracing::error!(
        "{} of {} target(s) failed: {}",
        failed.len(),
        task.views().len(),
        failed.join("; ")
    );
    Ok(ExitCode::from(1))
}

/// Refuses retry windows in the wrong order; warns of a link timeout an idle
/// source cannot meet.
fn check_args(args: &SyncArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.other_retry_minutes < args.retry_minutes,
        "--other-retry-minutes ({}) must be less than --retry-minutes ({})",
        args.other_retry_minutes,
        args.retry_minutes
    );
    if args.no_heartbeat && args.repl_timeout <= REPL_PING_PERIOD_SECS {
        // Without lockstep's own heartbeat an idle source sends only its PINGs.
        tracing::warn!(
            "--repl-timeout {} s is not above the source's repl-ping-replica-period ({REPL_PING_PERIOD_SECS} s by default) and --no-heartbeat is set: an idle source will look dead and its link be replaced every {} s",
            args.repl_timeout,
            args.repl_timeout
        );
    }
    Ok(())
}

/// Per target, the options a cluster source is expanded from; then (target index,
/// options) of every task.
type Expanded = (Vec<SyncOptions>, Vec<(usize, SyncOptions)>);

/// The RDB file of `--source file:///path` (plain or gzip: `lockstep_sync::source::
/// rdb_file`), or None for a server. A file is read in mode `full` only: it has no
/// command stream.
fn source_file(args: &SyncArgs) -> anyhow::Result<Option<std::path::PathBuf>> {
    let Some(path) = args.source.strip_prefix("file://") else {
        return Ok(None);
    };
    anyhow::ensure!(
        path.starts_with('/'),
        "--source {}: a file source is file:///ABSOLUTE/PATH (three slashes), e.g. file:///backups/dump.rdb",
        args.source
    );
    anyhow::ensure!(
        args.mode != ModeArg::Incremental,
        "--source file://...: an RDB file has no command stream to follow (fix: --mode full, or --then-follow URL to follow a server from the file's position)"
    );
    anyhow::ensure!(
        !(args.keep_expired && args.then_follow.is_some()),
        "--keep-expired with --then-follow: the followed server's stream deletes the keys that expired after the file was saved, so keeping them would make the target differ (fix: one of the two)"
    );
    Ok(Some(std::path::PathBuf::from(path)))
}

/// Refuses the file source's flags without a file source.
fn check_file_flags(args: &SyncArgs) -> anyhow::Result<()> {
    let flag = match () {
        () if args.keep_expired => "--keep-expired",
        () if args.then_follow.is_some() => "--then-follow",
        () => return Ok(()),
    };
    anyhow::bail!("{flag} applies to a file source only (--source file:///PATH)")
}

/// Per target, the options of a copy from RDB file `path`: mode `full`, no TTL
/// guard (no stream follows whose commands could race an expiry), keys already
/// expired dropped as a server loading the file drops them (or, `--keep-expired`,
/// every key alive at the save kept with the lifetime it had left then). With
/// `--then-follow URL`, the load is that of a replica link's snapshot (expired keys
/// kept for the stream to delete, the TTL guard on), and the task then follows URL.
fn file_targets(args: &SyncArgs, path: &std::path::Path) -> anyhow::Result<Expanded> {
    if args.mode == ModeArg::FullAndIncremental && args.then_follow.is_none() {
        tracing::info!("the source is an RDB file, which has no command stream: mode full");
    }
    let source = match &args.then_follow {
        Some(url) => args.connection.endpoint(Side::Source, url)?,
        None => lockstep_sync::endpoint::Endpoint::parse("redis://rdb-file.invalid:6379")
            .map_err(|e| anyhow::anyhow!("internal: the file source's placeholder: {e}"))?,
    };
    let mut all = Vec::new();
    for (index, url) in args.target.iter().enumerate() {
        let target = args.connection.endpoint(Side::Target, url)?;
        let mut options = engine_options(args, source.clone(), target, index)?;
        options.mode = Mode::Full;
        options.source_file = Some(path.to_path_buf());
        if args.then_follow.is_some() {
            options.then_follow = Some(engine::ThenFollow {
                full_copy_if_lost: args.then_follow_fallback == FollowFallbackArg::FullCopy,
                from: None,
            });
        } else {
            options.load.ttl_guard = Duration::ZERO;
            options.load.drop_expired = !args.keep_expired;
            options.load.expiries_from_save = args.keep_expired;
            options.heartbeat = false;
        }
        all.push((index, options));
    }
    let bases = all.iter().map(|(_, o)| o.clone()).collect();
    Ok((bases, all))
}

/// Per target, the options a cluster source is expanded from (again after a
/// reshard); then (target index, options): one per target, or per target and
/// source shard when the source is a cluster.
async fn expand_targets(args: &SyncArgs, source: &Endpoint) -> anyhow::Result<Expanded> {
    let mut bases = Vec::new();
    let mut all_options = Vec::new();
    for (index, url) in args.target.iter().enumerate() {
        let target = args.connection.endpoint(Side::Target, url)?;
        let options = engine_options(args, source.clone(), target, index)?;
        bases.push(options.clone());
        // The precheck is to fail fast on an unreachable source; without it the task
        // waits for the source within its retry window, as its sessions would.
        let window = if args.skip_precheck {
            options.retry_window
        } else {
            Duration::ZERO
        };
        let shards =
            lockstep_sync::cluster_source::expand_within(options, args.read_from_replicas, window)
                .await
                .map_err(|err| {
                    anyhow::anyhow!("cannot learn whether the source {source} is a cluster: {err}")
                })?;
        all_options.extend(shards.into_iter().map(|options| (index, options)));
    }
    Ok((bases, all_options))
}

/// How an engine task ended: (target index, task name, target text, outcome).
type TaskEnd = (usize, String, String, Result<Summary, SyncError>);

/// The running engine tasks of `lockstep sync`, and what the status endpoint, the
/// display and the signal handler see of them.
struct Tasks {
    status: Arc<Task>,
    stop: watch::Receiver<bool>,
    states: Arc<std::sync::Mutex<Vec<Arc<watch::Sender<TaskState>>>>>,
    running: tokio::task::JoinSet<TaskEnd>,
    /// (target index, task name) of the tasks not ended yet.
    live: Vec<(usize, String)>,
    /// How often a scanned task's convergence is proven (zero: never).
    converge_every: Duration,
}

impl Tasks {
    fn spawn(&mut self, index: usize, options: SyncOptions) {
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        let (state_tx, state_rx) = watch::channel(TaskState::Running);
        let target = match &options.source_cluster {
            Some(_) => format!("{} (from source {})", options.target, options.task_name),
            None => options.target.to_string(),
        };
        let scan = self.watch_convergence(&options, &progress_rx);
        self.status.add_view(TaskView {
            index,
            target: target.clone(),
            progress: progress_rx,
            state: state_rx,
            scan,
        });
        let state_tx = Arc::new(state_tx);
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(state_tx.clone());
        let stop = self.stop.clone();
        tracing::info!(
            task = options.task_name,
            target = index,
            checkpoint_dir = %options.checkpoint_dir.display(),
            "syncing {} -> {}",
            match (&options.source_file, &options.source_aof) {
                (Some(path), _) => format!("file://{}", path.display()),
                (None, Some(spec)) => aof::shown(&spec.path),
                (None, None) => options.source.to_string(),
            },
            options.target
        );
        let name = options.task_name.clone();
        self.live.push((index, name.clone()));
        self.running.spawn(async move {
            let outcome = engine::run(options, stop, progress_tx).await;
            state_tx.send_replace(match &outcome {
                Ok(_) | Err(SyncError::Stopped) => TaskState::Done,
                Err(err) => TaskState::Failed(err.to_string()),
            });
            (index, name, target, outcome)
        });
    }

    /// For a task that may scan its source: the view of its scan and, unless
    /// `--converge-every-secs 0`, the proof of convergence running beside it.
    fn watch_convergence(
        &self,
        options: &SyncOptions,
        progress: &watch::Receiver<Progress>,
    ) -> Option<ScanView> {
        let not_a_server = options.source_file.is_some() || options.source_aof.is_some();
        if options.source_mode == SourceMode::Replica || not_a_server {
            return None;
        }
        let view = ScanView {
            stats: options.scan_stats.clone(),
            convergence: ConvergenceCell::default(),
        };
        if !self.converge_every.is_zero() {
            let watcher = crate::converge::watch_task(
                options.clone(),
                progress.clone(),
                self.stop.clone(),
                view.convergence.clone(),
                self.converge_every,
            );
            tokio::spawn(watcher);
        }
        Some(view)
    }

    /// Waits for every task to end, following the reshards of a cluster source
    /// (`bases`: each target's options before expansion); the failures, one line
    /// per failed target.
    async fn supervise(&mut self, bases: &[SyncOptions], from_replicas: bool) -> Vec<String> {
        let mut failed = Vec::new();
        // Targets whose cluster source was resharded, since when: their new shards start
        // once every shard task the new layout replaces has ended.
        let mut resharded: Vec<(usize, Instant)> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while !self.live.is_empty() || !resharded.is_empty() {
            tokio::select! {
                joined = self.running.join_next(), if !self.live.is_empty() => {
                    let Some(joined) = joined else { continue };
                    self.record_end(joined, &mut failed, &mut resharded);
                }
                _ = tick.tick(), if !resharded.is_empty() => {}
            }
            if *self.stop.borrow() {
                resharded.clear();
            }
            resharded = self
                .follow_reshards(resharded, bases, from_replicas, &mut failed)
                .await;
        }
        failed
    }

    /// Logs how one task ended: a failure goes to `failed`, a reshard (unless
    /// stopping) to `resharded`.
    fn record_end(
        &mut self,
        joined: Result<TaskEnd, tokio::task::JoinError>,
        failed: &mut Vec<String>,
        resharded: &mut Vec<(usize, Instant)>,
    ) {
        let (index, name, target, outcome) = match joined {
            Ok(ended) => ended,
            Err(err) => {
                failed.push(format!("a task ended: {err}"));
                return;
            }
        };
        self.live.retain(|live| *live != (index, name.clone()));
        match outcome {
            Ok(summary) => {
                let p = &summary.progress;
                tracing::info!(
                    target = index,
                    full_syncs = p.full_syncs,
                    partial_syncs = p.partial_syncs,
                    applied_offset = p.applied_offset,
                    "sync of {target} finished"
                );
            }
            Err(SyncError::Stopped) => tracing::info!(
                target = index,
                "sync of {target} stopped during the full copy; the next start copies again"
            ),
            Err(SyncError::Resharded(message)) if !*self.stop.borrow() => {
                tracing::warn!(target = index, "{target}: {message}");
                if !resharded.iter().any(|(i, _)| *i == index) {
                    resharded.push((index, Instant::now()));
                }
            }
            Err(err) => failed.push(format!("target {index} ({target}): {err}")),
        }
    }

    /// Tries [`Tasks::follow_reshard`] for each resharded target; gives back those
    /// still waiting within their retry window, and adds the others that failed
    /// to `failed`.
    async fn follow_reshards(
        &mut self,
        resharded: Vec<(usize, Instant)>,
        bases: &[SyncOptions],
        from_replicas: bool,
        failed: &mut Vec<String>,
    ) -> Vec<(usize, Instant)> {
        let mut waiting = Vec::new();
        for (index, since) in resharded {
            let window = bases[index].retry_window;
            match self.follow_reshard(&bases[index], index, from_replicas).await {
                Ok(true) => {}
                Ok(false) if since.elapsed() < window => waiting.push((index, since)),
                Ok(false) => failed.push(format!(
                    "target {index}: the source cluster's new layout never settled within {window:?}"
                )),
                Err(err) if since.elapsed() < window => {
                    tracing::warn!(target = index, "reading the new layout: {err}; retrying");
                    waiting.push((index, since));
                }
                Err(err) => failed.push(format!("target {index}: {err}")),
            }
        }
        waiting
    }

    /// Reads the source cluster's layout for target `index` again and starts the
    /// shards it does not run yet, once no task of a replaced shard is running (two
    /// tasks writing the same slots could apply an older value over a newer copy).
    /// The shards whose slots changed have new names: they copy their slots again.
    /// `Ok(false)`: not yet (a replaced shard still runs).
    async fn follow_reshard(
        &mut self,
        base: &SyncOptions,
        index: usize,
        from_replicas: bool,
    ) -> anyhow::Result<bool> {
        let shards = lockstep_sync::cluster_source::expand(base.clone(), from_replicas).await?;
        let running: Vec<&String> = self
            .live
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, name)| name)
            .collect();
        let replaced_still_runs = running
            .iter()
            .any(|name| !shards.iter().any(|s| &&s.task_name == name));
        if replaced_still_runs {
            return Ok(false);
        }
        let new: Vec<SyncOptions> = shards
            .into_iter()
            .filter(|s| !running.iter().any(|name| **name == s.task_name))
            .collect();
        tracing::info!(
            target = index,
            shards = new.len(),
            "following the source cluster's new layout: starting the shards whose slots changed (each copies its slots again)"
        );
        for options in new {
            self.spawn(index, options);
        }
        Ok(true)
    }
}

/// The engine's options for target `index`.
fn engine_options(
    args: &SyncArgs,
    source: Endpoint,
    target: Endpoint,
    index: usize,
) -> anyhow::Result<SyncOptions> {
    let mut options = SyncOptions::new(source, target, &args.checkpoint_dir);
    options.mode = match args.mode {
        ModeArg::Full => Mode::Full,
        ModeArg::Incremental => Mode::Incremental,
        ModeArg::FullAndIncremental => Mode::FullAndIncremental,
    };
    options.source_mode = match args.source_mode {
        SourceModeArg::Auto => SourceMode::Auto,
        SourceModeArg::Replica => SourceMode::Replica,
        SourceModeArg::Scan => SourceMode::Scan,
    };
    options.retry_window = Duration::from_secs(args.retry_minutes * 60);
    options.other_retry_window = Duration::from_secs(args.other_retry_minutes * 60);
    args.task.apply_to(&mut options)?;
    options.heartbeat = !args.no_heartbeat;
    options.heartbeat_interval = Duration::from_secs(args.heartbeat_interval_secs);
    options.link.read_timeout = Duration::from_secs(args.repl_timeout);
    options.apply.reply_timeout = Duration::from_secs(args.target_timeout);
    options.link.tls = args.connection.tls(Side::Source);
    options.apply.tls = args.connection.tls(Side::Target);
    options.checkpoint_dir = args
        .checkpoint_dir
        .join(format!("{}-{index}", options.task_name));
    Ok(options)
}

fn task_name(args: &SyncArgs) -> String {
    args.task.task_name.clone()
}

/// The precheck of one target: fails with the first failing item's reason and fix.
async fn run_precheck(args: &SyncArgs, index: usize, options: &SyncOptions) -> anyhow::Result<()> {
    // A task that resumes (or applies only the stream) writes into a target that
    // holds keys already: its own.
    let store = CheckpointStore::open(&options.checkpoint_dir)?;
    let resuming = store.last().is_some() || store.full_copy_interrupted();
    let expects_keys = resuming || options.mode == Mode::Incremental;
    // The target databases the task writes (its routes' included); none listed:
    // the precheck's default, 0 to 15.
    let dbs = match options.filter.dbs.is_empty() {
        true => Vec::new(),
        false => options.filter.written_target_dbs(),
    };
    let check = PrecheckOptions {
        filter: Some(options.filter.clone()),
        source_mode: options.source_mode,
        follows_changes: options.mode != Mode::Full,
        ..precheck_options(
            options.source.clone(),
            options.target.clone(),
            &args.connection,
            dbs,
            args.conflict,
        )
    };
    let items = precheck(&check).await;
    let target = &options.target;
    let mut failures = Vec::new();
    for item in items {
        if expects_keys && item.name == EMPTY_TARGET_ITEM {
            tracing::debug!(
                target = index,
                "precheck: {}: skipped (resuming)",
                item.name
            );
            continue;
        }
        let fix = item
            .fix
            .as_ref()
            .map(|fix| format!("; fix: {fix}"))
            .unwrap_or_default();
        match item.outcome {
            Outcome::Pass => {
                tracing::debug!(target = index, "precheck: {}: {}", item.name, item.detail)
            }
            Outcome::Info => {
                tracing::info!(target = index, "precheck: {}: {}", item.name, item.detail)
            }
            Outcome::Warn => {
                tracing::warn!(
                    target = index,
                    "precheck: {}: {}{fix}",
                    item.name,
                    item.detail
                )
            }
            Outcome::Fail => failures.push(format!("{}: {}{fix}", item.name, item.detail)),
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "the precheck failed for target {index} ({target}): {} (run `lockstep check` for every item, or pass --skip-precheck to start anyway)",
        failures.join("; ")
    );
    Ok(())
}

/// SIGINT and SIGTERM, listened for from the moment they are installed.
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(interrupt), Ok(terminate)) => Signals(Some((interrupt, terminate))),
            _ => {
                tracing::warn!(
                    "cannot listen for SIGINT/SIGTERM: a signal ends the process at once"
                );
                Signals(None)
            }
        }
    }

    /// The next SIGINT or SIGTERM (never, when they could not be installed).
    async fn next(&mut self) {
        match self.0.as_mut() {
            Some((interrupt, terminate)) => tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            },
            None => std::future::pending().await,
        }
    }
}

/// First SIGINT/SIGTERM: stop gracefully; second: exit 130 at once.
async fn stop_on_signals(
    mut signals: Signals,
    stop: watch::Sender<bool>,
    states: Arc<std::sync::Mutex<Vec<Arc<watch::Sender<TaskState>>>>>,
) {
    signals.next().await;
    tracing::info!(
        "stopping: draining the targets and storing the checkpoints (a second signal exits at once)"
    );
    let states = states
        .lock()
        .map(|states| states.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone());
    for state in &states {
        state.send_if_modified(|s| {
            let running = *s == TaskState::Running;
            if running {
                *s = TaskState::Stopping;
            }
            running
        });
    }
    let _ = stop.send(true);
    signals.next().await;
    tracing::warn!(
        "second signal: exiting now; the checkpoints mark only what the targets acknowledged"
    );
    std::process::exit(130);
}
