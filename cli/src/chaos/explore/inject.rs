//! How each of the explorer's faults ([`Fault`]) is done to the real thing, the
//! episode's [`World`]: kill -9 of the `lockstep sync` child, FaultProxy cuts, black
//! holes, stalls and dropped flows, server restarts, a source failover, FLUSHALL on
//! the source. What happens and when is the schedule's; this only carries it out,
//! and it must never draw anything at random (a replay makes the same faults).

use std::time::Duration;

use lockstep_testkit::Run;

use super::faults::Fault;
use super::world::World;

/// Does `fault` to the episode's world; returns a line for the episode's log.
pub async fn apply(world: &mut World, fault: &Fault) -> anyhow::Result<String> {
    match fault {
        Fault::KillSync { down_ms } => {
            let phase = world.sync_phase().await;
            world.kill_sync();
            tokio::time::sleep(Duration::from_millis(*down_ms)).await;
            world.start_sync()?;
            return Ok(format!(
                "killed lockstep -9 (phase {phase}), started it again"
            ));
        }
        Fault::CutSourceLink => world.source_proxy.cut_all(),
        Fault::CutTargetLink => world.target_proxy.cut_all(),
        Fault::FreezeSourceLink { ms } => {
            world.source_proxy.black_hole();
            reset_later(world.source_proxy.handle(), *ms);
        }
        Fault::StallSourceLink { ms } => {
            world.source_proxy.stall();
            restore_later(world.source_proxy.handle(), *ms);
        }
        Fault::FreezeTargetLink { ms } => {
            world.target_proxy.black_hole();
            reset_later(world.target_proxy.handle(), *ms);
        }
        Fault::DropSourceFlows => {
            world.source_proxy.drop_open_flows();
            world.flows_dropped_at = Some(std::time::Instant::now());
        }
        Fault::RestartSource => {
            world.source_mut().restart().await?;
        }
        Fault::RestartTarget => {
            world.target.restart().await?;
        }
        Fault::FailoverSource => failover(world).await?,
        Fault::FlushAllSource => {
            let mut conn = world.source().client().await?;
            conn.run::<()>("FLUSHALL").await?;
        }
    }
    Ok(format!("{fault:?}"))
}

fn restore_later(proxy: lockstep_testkit::proxy::ProxyHandle, ms: u64) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        proxy.restore();
    });
}

/// After `ms`, closes the connections a black hole swallowed bytes of, then lets
/// new ones pass.
fn reset_later(proxy: lockstep_testkit::proxy::ProxyHandle, ms: u64) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        proxy.cut_all();
        // The pumps see the cut before anything passes again.
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.restore();
    });
}

/// Promotes the other server of the source's replica set with the load held (so
/// no write is lost in the switch), then points both proxies at it.
async fn failover(world: &mut World) -> anyhow::Result<()> {
    world.load_proxy.stall();
    let next = 1 - world.sources.primary_index().min(1);
    let result = async {
        world.sources.wait_in_sync().await?;
        world.sources.failover_to(next).await
    }
    .await;
    let primary = world.source().addr();
    world.source_proxy.move_upstream(primary);
    world.load_proxy.move_upstream(primary);
    world.load_proxy.restore();
    result
}
