//! One episode of the explorer: start the servers of its plan (`databases 64`, each
//! behind a FaultProxy), write the preload, start `lockstep sync` as a child process
//! of this binary (so kill -9 is real), run the timed load and faults while samplers
//! watch the checkpoint and the lag, then quiesce (bounded) and judge: the checker,
//! `lockstep verify` (the binary), and the invariants. Every disagreement is a
//! finding, named by the check that made it.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use lockstep_testkit::{Auth, FaultProxy, RedisServer, ReplicaSet, ServerConfig};
use tokio::sync::watch;

use super::checker::{self, Snapshot};
use super::faults;
use super::invariants::{self, Findings};
use super::schedule::{EpisodePlan, DATABASES};
use super::workload;

/// How long the target may take to equal the source once the load has stopped.
/// Longer than a 60 s silence timeout, so a sync that detects a dead link in time
/// passes.
const QUIESCE: Duration = Duration::from_secs(90);

/// The processes and links of one episode.
pub struct World {
    /// The source: a primary, and a replica when the plan fails over.
    pub sources: ReplicaSet,
    /// In front of the source for the workload and the clock (never faulted, moved
    /// to the new primary by a failover, as a virtual IP would).
    pub load_proxy: FaultProxy,
    pub target: RedisServer,
    pub source_proxy: FaultProxy,
    pub target_proxy: FaultProxy,
    pub flows_dropped_at: Option<Instant>,
    sync: Option<Child>,
    sync_args: Vec<String>,
    source_password: Option<String>,
    pub status_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(plan: &EpisodePlan) -> anyhow::Result<World> {
        let databases = DATABASES.to_string();
        let mut source_config = ServerConfig::new(plan.pair.source)
            .persistence(plan.source_persistence)
            .set("databases", &databases)
            .set("repl-diskless-sync", "yes")
            .set("repl-diskless-sync-delay", "0");
        if let Some(password) = &plan.source_password {
            source_config = source_config.auth(Auth::Password(password.clone()));
        }
        let target_config = ServerConfig::new(plan.pair.target)
            .persistence(plan.target_persistence)
            .set("databases", &databases);
        let sources = ReplicaSet::start(source_config, plan.source_replicas)
            .await
            .context("starting the source")?;
        let target = RedisServer::start(target_config)
            .await
            .context("starting the target")?;
        let source_proxy = FaultProxy::start(sources.primary().addr()).await?;
        let load_proxy = FaultProxy::start(sources.primary().addr()).await?;
        let target_proxy = FaultProxy::start(target.addr()).await?;
        let dir = tempfile::tempdir()?;
        let status_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut sync_args: Vec<String> = ["sync", "--skip-precheck", "--retry-minutes=30"]
            .map(str::to_owned)
            .to_vec();
        sync_args.push(format!(
            "--source=redis://127.0.0.1:{}",
            source_proxy.port()
        ));
        sync_args.push(format!(
            "--target=redis://127.0.0.1:{}",
            target_proxy.port()
        ));
        sync_args.push(format!(
            "--checkpoint-dir={}",
            dir.path().join("cp").display()
        ));
        sync_args.push(format!("--status-addr=127.0.0.1:{status_port}"));
        sync_args.push(format!("--full-keys-per-sec={}", plan.copy_keys_per_sec));
        sync_args.extend(plan.options.flags(true));
        Ok(World {
            sources,
            load_proxy,
            target,
            source_proxy,
            target_proxy,
            flows_dropped_at: None,
            sync: None,
            sync_args,
            source_password: plan.source_password.clone(),
            status_port,
            log: dir.path().join("lockstep.log"),
            _dir: dir,
        })
    }

    /// The source's primary now.
    pub fn source(&self) -> &RedisServer {
        self.sources.primary()
    }

    pub fn source_mut(&mut self) -> &mut RedisServer {
        let primary = self.sources.primary_index();
        &mut self.sources.servers[primary]
    }

    /// A client of the source through the load proxy (it follows a failover).
    pub fn load_client(&self) -> anyhow::Result<redis::Client> {
        Ok(redis::Client::open(self.load_proxy.url_for(self.source()))?)
    }

    /// Starts `lockstep sync` (this binary), its output appended to the log.
    pub fn start_sync(&mut self) -> anyhow::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(&self.sync_args)
            .env("RUST_LOG", "lockstep=info,lockstep_sync=info,warn")
            .env_remove("LOCKSTEP_SOURCE_PASSWORD")
            .env_remove("LOCKSTEP_TARGET_PASSWORD")
            .stdout(file.try_clone()?)
            .stderr(file);
        if let Some(password) = &self.source_password {
            command.env("LOCKSTEP_SOURCE_PASSWORD", password);
        }
        self.sync = Some(command.spawn().context("starting lockstep sync")?);
        Ok(())
    }

    /// kill -9 of the sync.
    pub fn kill_sync(&mut self) {
        if let Some(mut child) = self.sync.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn sync_phase(&self) -> String {
        invariants::phase(self.status_port).await
    }

    /// The sync's exit code if it has ended on its own.
    fn sync_exited(&mut self) -> Option<String> {
        let child = self.sync.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n    ")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_sync();
    }
}

/// The outcome of an episode: findings as `check: line` (empty when all held).
pub struct Verdict {
    pub findings: Vec<String>,
    pub summary: String,
}

/// The instruments that run until the judge is done: the clock key, the
/// checkpoint sampler and the lag sampler (so a stuck target shows in the lag).
struct Instruments {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    findings: Findings,
}

impl Instruments {
    fn start(plan: &EpisodePlan, world: &World) -> anyhow::Result<Instruments> {
        let (stop, stopped) = watch::channel(false);
        let findings: Findings = Arc::new(Mutex::new(Vec::new()));
        let tasks = vec![
            tokio::spawn(workload::run_clock(world.load_client()?, stopped.clone())),
            tokio::spawn(invariants::sample_checkpoints(
                world.target.redis_client()?,
                findings.clone(),
                stopped.clone(),
            )),
            tokio::spawn(invariants::sample_lag(
                world.load_client()?,
                world.target.redis_client()?,
                plan.options.target_db(0),
                world.status_port,
                findings.clone(),
                stopped,
            )),
        ];
        Ok(Instruments {
            stop,
            tasks,
            findings,
        })
    }

    async fn finish(self) -> Vec<String> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.findings.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// The load and the faults at their instants; returns the load's report and a line
/// per fault.
async fn drive(
    plan: &EpisodePlan,
    world: &mut World,
    start: Instant,
) -> anyhow::Result<(workload::LoadReport, Vec<String>)> {
    let (stop, stopped) = watch::channel(false);
    let load = tokio::spawn(workload::run_load(
        world.load_client()?,
        plan.load.clone(),
        start,
        stopped,
    ));
    let mut fault_log = Vec::new();
    for timed in &plan.faults {
        tokio::time::sleep_until((start + Duration::from_millis(timed.at_ms)).into()).await;
        match faults::apply(world, &timed.fault).await {
            Ok(line) => fault_log.push(format!("{:.1}s {line}", start.elapsed().as_secs_f64())),
            Err(err) => fault_log.push(format!("{:?} failed: {err:#}", timed.fault)),
        }
    }
    tokio::time::sleep_until((start + Duration::from_millis(plan.load_ms)).into()).await;
    let _ = stop.send(true);
    Ok((load.await.unwrap_or_default(), fault_log))
}

/// Runs episode `plan` on real servers and judges it.
pub async fn run(plan: &EpisodePlan) -> anyhow::Result<Verdict> {
    let mut world = World::start(plan).await?;
    workload::write_preload(&world.source().redis_client()?, &plan.preload).await?;
    let instruments = Instruments::start(plan, &world)?;
    world.start_sync()?;
    let (load, fault_log) = drive(plan, &mut world, Instant::now()).await?;
    // Faults that can be lifted are; a dropped flow stays dead (nothing lifts a NAT's
    // drop), only a new connection gets through.
    world.source_proxy.restore();
    world.target_proxy.restore();
    let mut verdict = judge(plan, &mut world).await?;
    verdict.findings.extend(instruments.finish().await);
    if let Some(line) = invariants::password_in(&world.log_text(), plan.source_password.as_deref())
    {
        verdict.findings.push(line);
    }
    verdict.summary = format!(
        "{} ops sent ({} refused, {} lost), faults: [{}]; {}",
        load.sent,
        load.refused,
        load.lost,
        fault_log.join("; "),
        verdict.summary
    );
    if !verdict.findings.is_empty() {
        verdict.summary.push_str(&format!(
            "\n  lockstep log tail:\n    {}",
            world.log_tail(log_lines())
        ));
    }
    Ok(verdict)
}

/// Waits (bounded) until the target equals the prediction from the source; returns
/// the last snapshots and differences.
async fn quiesce(
    plan: &EpisodePlan,
    world: &mut World,
) -> anyhow::Result<(Snapshot, Vec<String>, Duration)> {
    let started = Instant::now();
    let source = world.source().redis_client()?;
    let target = world.target.redis_client()?;
    loop {
        let expected = checker::predict(&checker::snapshot(&source).await?, &plan.options);
        let actual = checker::snapshot(&target).await?;
        let differences = checker::compare(&expected, &actual);
        let phase = world.sync_phase().await;
        if (differences.is_empty() && phase == "incremental")
            || started.elapsed() > QUIESCE
            || world.sync_exited().is_some()
        {
            return Ok((actual, differences, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Quiesce, then every check; each finding starts with the check's name.
async fn judge(plan: &EpisodePlan, world: &mut World) -> anyhow::Result<Verdict> {
    let (target, differences, waited) = quiesce(plan, world).await?;
    let mut findings = Vec::new();
    if let Some(status) = world.sync_exited() {
        findings.push(format!(
            "sync: lockstep sync exited ({status}) during the episode"
        ));
    }
    if !differences.is_empty() {
        let dropped = world
            .flows_dropped_at
            .map(|at| {
                format!(
                    " (the source flows were dropped {:.0} s before)",
                    at.elapsed().as_secs_f64()
                )
            })
            .unwrap_or_default();
        findings.push(format!(
            "quiesce: after {:.0} s without load the target still differs from the source in {} keys{dropped}; lockstep phase {}",
            waited.as_secs_f64(),
            differences.len(),
            world.sync_phase().await
        ));
        for line in differences.iter().take(5) {
            findings.push(format!("checker: {line}"));
        }
    }
    for line in invariants::guard_expiries(&target).into_iter().take(5) {
        findings.push(format!("guard-expiry: {line}"));
    }
    let source_keys = checker::predict(
        &checker::snapshot(&world.source().redis_client()?).await?,
        &plan.options,
    );
    let verify = super::verify::run(plan, world, &source_keys, differences.is_empty()).await;
    let summary = format!(
        "quiesced in {:.0} s, {} keys; verify: {}",
        waited.as_secs_f64(),
        source_keys.len(),
        verify.line
    );
    findings.extend(verify.findings);
    Ok(Verdict { findings, summary })
}

/// Lines of lockstep's log shown with a failed episode: 8, or
/// `LOCKSTEP_EXPLORE_LOG_LINES` (a replay that wants the whole story).
fn log_lines() -> usize {
    std::env::var("LOCKSTEP_EXPLORE_LOG_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(8)
}
