//! The explorer's faults: what can happen to an episode's processes and links, and
//! when (chosen by the schedule, in ms from the sync's start: the first one often
//! lands in the full copy, which the copy throttle stretches over seconds). Pure: a
//! seeded draw, no I/O; how each fault is done to the real thing is `inject`'s job,
//! and this file must never reach a server or a process.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of lockstep, started again after `down_ms`.
    KillSync { down_ms: u64 },
    /// Every connection to the source closed (lockstep reconnects).
    CutSourceLink,
    /// Every connection to the target closed.
    CutTargetLink,
    /// The source link swallows bytes for `ms`, then its connections are reset (a
    /// firewall that lost the flow's state). Never "then passes again" on the same
    /// connection: TCP cannot lose bytes in the middle of a connection that goes on,
    /// and a proxy that does so made the explorer report impossible corruptions
    /// (seed 2 episodes 0 and 1, before this was changed).
    FreezeSourceLink { ms: u64 },
    /// The source link holds bytes for `ms`, then delivers them.
    StallSourceLink { ms: u64 },
    /// The target link swallows bytes for `ms`, then its connections are reset (as
    /// for the source link).
    FreezeTargetLink { ms: u64 },
    /// The open source connections die silently for good, as when a NAT drops the
    /// flow; only a new connection gets through. Never lifted.
    DropSourceFlows,
    /// The source restarts (SIGTERM: with RDB persistence it saves and reloads; without
    /// it comes back empty).
    RestartSource,
    /// The target restarts (with AOF it keeps every acknowledged write; without it
    /// comes back empty and lockstep must copy again).
    RestartTarget,
    /// FLUSHALL on the source.
    FlushAllSource,
    /// The source's replica is promoted (writes paused meanwhile, so none is lost);
    /// the source's address (its proxy) moves to it, as a virtual IP would.
    FailoverSource,
}

/// A fault and when it happens, in ms from the sync's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedFault {
    pub at_ms: u64,
    pub fault: Fault,
}

fn one(rng: &mut ChaCha8Rng) -> Fault {
    match rng.random_range(0..100) {
        0..=19 => Fault::KillSync {
            down_ms: rng.random_range(200..3000),
        },
        20..=29 => Fault::CutSourceLink,
        30..=34 => Fault::CutTargetLink,
        35..=44 => Fault::FreezeSourceLink {
            ms: rng.random_range(1000..5000),
        },
        45..=49 => Fault::StallSourceLink {
            ms: rng.random_range(1000..5000),
        },
        50..=54 => Fault::FreezeTargetLink {
            ms: rng.random_range(1000..4000),
        },
        55..=66 => Fault::DropSourceFlows,
        67..=77 => Fault::RestartSource,
        78..=88 => Fault::RestartTarget,
        89..=94 => Fault::FailoverSource,
        _ => Fault::FlushAllSource,
    }
}

/// One to three faults at sorted instants within the load: the first in the full
/// copy half of the time.
pub fn choose(rng: &mut ChaCha8Rng, load_ms: u64) -> Vec<TimedFault> {
    let mut faults = Vec::new();
    for i in 0..rng.random_range(1..=3) {
        let at_ms = if i == 0 && rng.random_bool(0.5) {
            rng.random_range(300..2500)
        } else {
            rng.random_range(2500..load_ms.saturating_sub(3000).max(2501))
        };
        faults.push(TimedFault {
            at_ms,
            fault: one(rng),
        });
    }
    faults.sort_by_key(|f| f.at_ms);
    faults
}
