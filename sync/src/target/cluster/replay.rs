//! Where redirected units go again, as a plain decision without I/O: from the
//! units a drain collected ([`super::units::Failed`]) to a [`ReplayPlan`] (pause
//! first? read the slot map again? then each unit to which node, with or without
//! ASKING), and how long a drain keeps trying ([`RedirectWait`]).
//!
//! The rules (see the router's module doc for why they are exact):
//! - **ASK** `<slot> <host>:<port>`: to that node after ASKING.
//! - **MOVED**: to the slot's owner in a slot map read again.
//! - **TRYAGAIN**, **CLUSTERDOWN**: after a pause, to the owner in a slot map read
//!   again; a TRYAGAIN of a single multi-key command outside a transaction (the
//!   full copy's MSET) is split into one command per key: nothing asks for it to
//!   be atomic.
//! - a keyless unit (FLUSHALL...) redirected cannot be routed anew: the session
//!   ends.
//!
//! Units go again in the order they were first made (their ids), so no later unit
//! of a slot passes an earlier one. Never: do I/O; change a unit's commands other
//! than by that split.

use std::time::Duration;

use crate::keys::split_into;

use super::units::{Failed, Unit};

/// Where a unit goes again.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    /// The node an ASK named, after ASKING.
    Asked { host: String, port: u16 },
    /// The slot's owner in the (maybe new) slot map.
    Owner,
}

/// One step of a replay, in order.
#[derive(Debug)]
pub(crate) enum Replay {
    Send {
        unit: Unit,
        to: Destination,
    },
    /// A keyless unit was redirected: the session ends with this reply.
    Unroutable {
        command: String,
        reply: String,
    },
}

/// What to do with the units a drain collected.
#[derive(Debug)]
pub(crate) struct ReplayPlan {
    /// Wait before sending (TRYAGAIN, CLUSTERDOWN: the cluster is busy moving).
    pub pause: bool,
    /// Read the slot map again first (anything but ASK), naming this reply.
    pub reload_because: Option<String>,
    pub steps: Vec<Replay>,
}

impl ReplayPlan {
    pub fn of(mut failed: Vec<Failed>) -> ReplayPlan {
        failed.sort_by_key(|f| f.unit.id);
        let pause = failed
            .iter()
            .any(|f| f.reply.starts_with("TRYAGAIN") || f.reply.starts_with("CLUSTERDOWN"));
        let reload_because = failed
            .iter()
            .any(|f| !f.reply.starts_with("ASK "))
            .then(|| failed[0].reply.clone());
        let mut steps = Vec::with_capacity(failed.len());
        for Failed { unit, reply } in failed {
            steps.extend(replay_one(unit, reply));
        }
        ReplayPlan {
            pause,
            reload_because,
            steps,
        }
    }
}

fn replay_one(unit: Unit, reply: String) -> Vec<Replay> {
    if unit.slot.is_none() {
        let command = unit
            .commands
            .first()
            .and_then(|c| c.first())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .unwrap_or_default();
        return vec![Replay::Unroutable { command, reply }];
    }
    if reply.starts_with("TRYAGAIN") && unit.commands.len() == 1 {
        if let Some(parts) = split_per_key(&unit) {
            return parts;
        }
    }
    let to = match ask_address(&reply) {
        Some((host, port)) => Destination::Asked { host, port },
        None => Destination::Owner,
    };
    vec![Replay::Send { unit, to }]
}

/// A single multi-key command as one command per key (same id and slot), when it
/// splits into more than one.
fn split_per_key(unit: &Unit) -> Option<Vec<Replay>> {
    let next = std::cell::Cell::new(0u32);
    let parts = split_into(&unit.commands[0], |_| {
        next.set(next.get() + 1);
        next.get()
    })?;
    if parts.len() < 2 {
        return None;
    }
    let sends = parts
        .into_iter()
        .map(|(_, part)| Replay::Send {
            unit: Unit::new(unit.id, unit.slot, vec![part]),
            to: Destination::Owner,
        })
        .collect();
    Some(sends)
}

/// The node an `ASK <slot> <host>:<port>` reply names.
pub(crate) fn ask_address(reply: &str) -> Option<(String, u16)> {
    let address = reply.strip_prefix("ASK ")?.split_whitespace().nth(1)?;
    let (host, port) = address.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// How long a session waits for a slot migration to let a unit through
/// (TRYAGAIN: a multi-key transaction while its keys are split between the two
/// nodes) before it ends and the next one starts from the slots' checkpoints.
pub const MIGRATION_WAIT_MAX: Duration = Duration::from_secs(30);

/// The pauses of one drain between rounds of sending again: 5 ms doubling to
/// 100 ms, for [`MIGRATION_WAIT_MAX`] at most.
pub(crate) struct RedirectWait {
    pause: Duration,
}

impl Default for RedirectWait {
    fn default() -> RedirectWait {
        RedirectWait {
            pause: Duration::from_millis(5),
        }
    }
}

impl RedirectWait {
    /// The pause before the next round, or `None` once the drain has waited
    /// `elapsed` of [`MIGRATION_WAIT_MAX`].
    pub fn next(&mut self, elapsed: Duration) -> Option<Duration> {
        if elapsed >= MIGRATION_WAIT_MAX {
            return None;
        }
        let pause = self.pause;
        self.pause = (pause * 2).min(Duration::from_millis(100));
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn failed(id: u64, slot: Option<u16>, argv: &[&'static str], reply: &str) -> Failed {
        let command = argv
            .iter()
            .map(|w| Bytes::from_static(w.as_bytes()))
            .collect();
        Failed {
            unit: Unit::new(id, slot, vec![command]),
            reply: reply.to_owned(),
        }
    }

    #[test]
    fn asked_units_go_to_the_named_node_in_the_order_first_made() {
        let plan = ReplayPlan::of(vec![
            failed(9, Some(1), &["SET", "b", "1"], "ASK 1 10.0.0.2:7001"),
            failed(3, Some(1), &["SET", "a", "1"], "ASK 1 10.0.0.2:7001"),
        ]);
        assert!(!plan.pause);
        assert_eq!(plan.reload_because, None);
        let ids: Vec<u64> = plan
            .steps
            .iter()
            .map(|s| match s {
                Replay::Send { unit, to } => {
                    let asked = Destination::Asked {
                        host: "10.0.0.2".to_owned(),
                        port: 7001,
                    };
                    assert_eq!(*to, asked);
                    unit.id
                }
                Replay::Unroutable { .. } => panic!("routable"),
            })
            .collect();
        assert_eq!(ids, vec![3, 9]);
    }

    #[test]
    fn tryagain_pauses_reloads_and_splits_a_lone_mset() {
        let plan = ReplayPlan::of(vec![failed(
            4,
            Some(2),
            &["MSET", "a", "1", "b", "2"],
            "TRYAGAIN Multiple keys request during rehashing of slot",
        )]);
        assert!(plan.pause);
        assert!(plan.reload_because.is_some());
        assert_eq!(plan.steps.len(), 2);
        for step in &plan.steps {
            let Replay::Send { unit, to } = step else {
                panic!("routable");
            };
            assert_eq!((unit.id, unit.slot, to), (4, Some(2), &Destination::Owner));
            assert_eq!(unit.commands[0].len(), 3);
        }
    }

    #[test]
    fn moved_reloads_the_map_and_a_keyless_unit_cannot_be_replayed() {
        let plan = ReplayPlan::of(vec![
            failed(1, Some(5), &["SET", "a", "1"], "MOVED 5 h:2"),
            failed(2, None, &["FLUSHALL"], "MOVED 0 h:2"),
        ]);
        assert!(!plan.pause);
        assert_eq!(plan.reload_because.as_deref(), Some("MOVED 5 h:2"));
        assert!(matches!(
            &plan.steps[0],
            Replay::Send {
                to: Destination::Owner,
                ..
            }
        ));
        assert!(
            matches!(&plan.steps[1], Replay::Unroutable { command, .. } if command == "FLUSHALL")
        );
    }

    #[test]
    fn the_wait_doubles_to_a_ceiling_and_ends() {
        let mut wait = RedirectWait::default();
        let pauses: Vec<u64> = (0..7)
            .map(|_| {
                wait.next(Duration::ZERO)
                    .map_or(0, |p| p.as_millis() as u64)
            })
            .collect();
        assert_eq!(pauses, vec![5, 10, 20, 40, 80, 100, 100]);
        assert_eq!(wait.next(MIGRATION_WAIT_MAX), None);
        assert_eq!(
            ask_address("ASK 12 [::1]:7000"),
            Some(("[::1]".to_owned(), 7000))
        );
        assert_eq!(ask_address("MOVED 12 h:7000"), None);
    }
}
