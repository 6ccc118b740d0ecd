//! One episode of the explorer: start the servers of its plan (`databases 64`, each
//! behind a FaultProxy), write the preload, start `lockstep sync` as a child process
//! of this binary (so kill -9 is real), run the timed load and faults while samplers
//! watch the checkpoint and the lag, then quiesce (bounded) and judge: the checker,
//! `lockstep verify` (the binary), and the invariants. Every disagreement is a
//! finding, named by the check that made it. An episode whose rules the sync must
//! refuse is judged by [`refusal`] instead (no load, no faults).
//!
//! It is the top of the explorer (only `mod.rs` imports it); it must never make a
//! decision the schedule should make (a replay must run the same plan), and a failure
//! of its own is a finding, never a panic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::checker::{self, Snapshot};
use super::inject;
use super::invariants::{self, Findings};
use super::refusal;
use super::schedule::EpisodePlan;
use super::verify;
use super::workload;
use super::world::World;

/// How long the target may take to equal the source once the load has stopped.
/// Longer than a 60 s silence timeout, so a sync that detects a dead link in time
/// passes.
const QUIESCE: Duration = Duration::from_secs(90);

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
        match inject::apply(world, &timed.fault).await {
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
    if let Some(expected) = &plan.options.rules.refusal {
        workload::write_preload(&world.source().redis_client()?, &plan.preload).await?;
        let (findings, summary) = refusal::judge(plan, &mut world, expected).await?;
        return Ok(Verdict { findings, summary });
    }
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
    let ttl = checker::TtlCheck {
        rule: plan.options.rules.ttl.clone(),
        since_ms: world.sync_started_ms,
    };
    loop {
        let expected = checker::predict(&checker::snapshot(&source).await?, &plan.options);
        let actual = checker::snapshot(&target).await?;
        let differences = checker::compare(&expected, &actual, &ttl);
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
    let ports = verify::Ports {
        source: world.source().port(),
        target: world.target.port(),
    };
    let verify = verify::run(plan, ports, &source_keys, differences.is_empty()).await;
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
