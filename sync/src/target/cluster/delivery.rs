//! Units on the wire: a unit (one command, or one slot's transaction) pushed onto
//! its primary's connection and kept until answered ([`super::units`]), the
//! redirected ones sent again as [`super::replay`] plans, and the drain that waits
//! until every primary has answered everything.
//!
//! Never: count a unit answered before every one of its commands is; send a
//! slot's unit again out of the order first made.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::conn::ApplyError;

use super::replay::{Destination, RedirectWait, Replay, ReplayPlan, MIGRATION_WAIT_MAX};
use super::units::{Unit, UnitKind};
use super::{ClusterTarget, FAILED_UNITS_MAX, UNANSWERED_BYTES_MAX};

impl ClusterTarget {
    /// Sends a new unit to the primary serving its slot (the first one for a
    /// keyless unit).
    pub(super) async fn send_unit(
        &mut self,
        slot: Option<u16>,
        commands: Vec<Vec<Bytes>>,
    ) -> Result<(), ApplyError> {
        let shard = self.owner_of(slot);
        let unit = self.new_unit(slot, commands);
        self.send_unit_to(shard, unit, false).await
    }

    /// The primary serving `slot` (the first one for keyless units).
    pub(super) fn owner_of(&self, slot: Option<u16>) -> usize {
        slot.map_or(0, |s| usize::from(self.owners[usize::from(s)]))
    }

    /// A unit made now, with the next id; a slot's transaction counts towards the
    /// slot's one transaction between drains.
    pub(super) fn new_unit(&mut self, slot: Option<u16>, commands: Vec<Vec<Bytes>>) -> Unit {
        let unit = Unit::new(self.next_unit, slot, commands);
        self.next_unit += 1;
        if let (Some(slot), UnitKind::Transaction) = (slot, unit.kind) {
            self.epoch.transaction(slot);
        }
        unit
    }

    /// Sends a unit to `shard` (after ASKING when `asking`), keeps it until it is
    /// answered, and sends again what was redirected once too much waits.
    pub(super) async fn send_unit_to(
        &mut self,
        shard: usize,
        unit: Unit,
        asking: bool,
    ) -> Result<(), ApplyError> {
        let primary = &mut self.shards[shard];
        let first = primary.writer.commands_pushed();
        for (i, argv) in unit.commands.iter().enumerate() {
            if asking && unit.asking_before(i) {
                primary.writer.push(&[b"ASKING"], None).await?;
            }
            primary.writer.push(argv, None).await?;
        }
        let end = primary.writer.commands_pushed();
        debug_assert_eq!(end - first, unit.wire_len(asking));
        primary.unanswered.sent(unit, first, end);
        while self.shards[shard].unanswered.bytes() > UNANSWERED_BYTES_MAX {
            self.shards[shard].writer.answer_one().await?;
            self.collect_answered(shard)?;
        }
        self.collect_answered(shard)?;
        if self.failed.len() > FAILED_UNITS_MAX {
            // Boxed: draining sends failed units again through here.
            Box::pin(self.drain()).await?;
        }
        Ok(())
    }

    /// Forgets the units `shard` has wholly answered, and keeps those it
    /// redirected for sending again.
    pub(super) fn collect_answered(&mut self, shard: usize) -> Result<(), ApplyError> {
        let primary = &mut self.shards[shard];
        let redirections = primary.writer.take_redirections();
        let answered = primary.writer.commands_answered();
        match primary.unanswered.collect(redirections, answered) {
            Ok(failed) => {
                self.failed.extend(failed);
                Ok(())
            }
            // A redirection of what the router did not send (a SCAN+UNLINK on the
            // primaries): nothing can send it again here.
            Err(stray) => Err(ApplyError::Redirected {
                endpoint: format!("target cluster node {}:{}", primary.host, primary.port),
                command: "a command sent outside the router".to_owned(),
                reply: stray.reply,
            }),
        }
    }

    /// Sends the redirected units again where their replies say (see
    /// [`ReplayPlan`]): to the node an ASK names (after ASKING), to the slot's
    /// owner in a slot map read again after MOVED, or (TRYAGAIN, CLUSTERDOWN)
    /// after a pause to the same place.
    pub(super) async fn send_failed_again(&mut self, pause: Duration) -> Result<(), ApplyError> {
        let plan = ReplayPlan::of(std::mem::take(&mut self.failed));
        if plan.pause {
            tokio::time::sleep(pause).await;
        }
        if let Some(because) = &plan.reload_because {
            self.reload_slot_map(because).await?;
        }
        for step in plan.steps {
            match step {
                Replay::Unroutable { command, reply } => {
                    return Err(ApplyError::Redirected {
                        endpoint: "target cluster".to_owned(),
                        command,
                        reply,
                    })
                }
                Replay::Send {
                    unit,
                    to: Destination::Asked { host, port },
                } => {
                    let shard = self.shard_at(&host, port).await?;
                    self.send_unit_to(shard, unit, true).await?;
                }
                Replay::Send {
                    unit,
                    to: Destination::Owner,
                } => {
                    let shard = self.owner_of(unit.slot);
                    self.send_unit_to(shard, unit, false).await?;
                }
            }
        }
        Ok(())
    }

    /// Waits until every primary has answered everything, sending redirected units
    /// again (ASKING, a new slot map, a pause for TRYAGAIN) until none is left or a
    /// migration has held a unit back for [`MIGRATION_WAIT_MAX`].
    pub(crate) async fn drain(&mut self) -> Result<(), ApplyError> {
        let started = Instant::now();
        let mut wait = RedirectWait::default();
        loop {
            self.flush().await?;
            for index in 0..self.shards.len() {
                self.shards[index].writer.drain().await?;
                self.collect_answered(index)?;
            }
            let Some(first) = self.failed.first() else {
                for primary in &mut self.shards {
                    primary.writer.redirections_resolved();
                }
                self.epoch.drained();
                return Ok(());
            };
            let Some(pause) = wait.next(started.elapsed()) else {
                return Err(ApplyError::Redirected {
                    endpoint: "target cluster".to_owned(),
                    command: format!("a unit of slot {:?}", first.unit.slot),
                    reply: format!("{} for {MIGRATION_WAIT_MAX:?}", first.reply),
                });
            };
            tracing::debug!(units = self.failed.len(), reply = %first.reply, "sending redirected units again");
            self.send_failed_again(pause).await?;
        }
    }

    pub(crate) async fn poll_replies(&mut self) -> Result<(), ApplyError> {
        for index in 0..self.shards.len() {
            self.shards[index].writer.poll_replies().await?;
            self.collect_answered(index)?;
        }
        if !self.failed.is_empty() {
            // Not left for the next transaction, which may not come for a while.
            self.drain().await?;
        }
        Ok(())
    }
}
