//! The checkpoint keys per slot: each slot's key name, the checkpoint closing
//! each slot's transaction, the refresh of slots that lag, every slot's key after
//! a full copy or a broadcast, and reading them all back (with the skip entries)
//! when a session starts.
//!
//! Never: take a value that is not a checkpoint for "missing" (that would clear
//! the target and copy again); resume when some slots have a checkpoint and others
//! none.

use std::time::Instant;

use bytes::Bytes;

use crate::checkpoint::Checkpoint;
use crate::conn::ApplyError;
use crate::resp::Frame;
use crate::slots::SLOTS;

use super::primary::redirected;
use super::replay::ask_address;
use super::skips::skip_pairs;
use super::{ClusterTarget, REFRESH_INTERVAL};

impl ClusterTarget {
    /// A checkpoint from the engine: inside the stream it closes every slot's
    /// transaction with it; outside (after a full copy) every slot starts from it.
    pub(super) async fn write_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> Result<(), ApplyError> {
        let value = crate::target::standalone::checkpoint_value(checkpoint);
        let offset = checkpoint.offset;
        self.last_value = Some((checkpoint.replid.clone(), checkpoint.db.to_string()));
        if !self.cursor.in_stream() {
            self.positions.start_copy();
            self.skips.clear();
            self.skip_entries.clear();
            return self.checkpoint_every_slot(offset, |_| true).await;
        }
        self.close_slots(Some((offset, Bytes::from(value)))).await?;
        if self.last_refresh.elapsed() >= REFRESH_INTERVAL {
            self.last_refresh = Instant::now();
            if let Some(answered) = self.applied() {
                self.checkpoint_lagging_slots(answered.offset).await?;
            }
        }
        Ok(())
    }

    /// Sends each written slot's transaction: MULTI, its commands, its checkpoint
    /// (when given), EXEC.
    pub(super) async fn close_slots(
        &mut self,
        checkpoint: Option<(i64, Bytes)>,
    ) -> Result<(), ApplyError> {
        for (slot, commands) in self.open.take() {
            let mut transaction = Vec::with_capacity(commands.len() + 3);
            transaction.push(vec![Bytes::from_static(b"MULTI")]);
            transaction.extend(commands);
            if let Some((offset, value)) = &checkpoint {
                transaction.extend(self.passed_skip_entries(slot, *offset));
                transaction.push(vec![
                    Bytes::from_static(b"SET"),
                    self.slot_keys[usize::from(slot)].clone(),
                    value.clone(),
                ]);
                self.positions.wrote(slot, *offset);
            }
            transaction.push(vec![Bytes::from_static(b"EXEC")]);
            self.send_unit(Some(slot), transaction).await?;
        }
        Ok(())
    }

    /// Plain SETs of the checkpoint at `offset` into every slot `which` says yes to.
    pub(super) async fn checkpoint_every_slot(
        &mut self,
        offset: i64,
        which: impl Fn(u16) -> bool,
    ) -> Result<(), ApplyError> {
        let Some((replid, db)) = &self.last_value else {
            return Ok(());
        };
        let value = Bytes::from(format!("{replid} {offset} {db}"));
        for slot in 0..SLOTS as u16 {
            if !which(slot) || self.positions.holds(slot, offset) {
                continue;
            }
            let set = vec![
                Bytes::from_static(b"SET"),
                self.slot_keys[usize::from(slot)].clone(),
                value.clone(),
            ];
            let unit = if !self.cursor.in_stream() && !self.skip_keys.is_empty() {
                // A new copy: no skip entry of an earlier one means anything.
                let del = vec![
                    Bytes::from_static(b"DEL"),
                    self.skip_keys[usize::from(slot)].clone(),
                ];
                vec![set, del]
            } else {
                match self.passed_skip_entries(slot, offset) {
                    // Removed only together with the checkpoint that passes them.
                    Some(hdel) => vec![
                        vec![Bytes::from_static(b"MULTI")],
                        set,
                        hdel,
                        vec![Bytes::from_static(b"EXEC")],
                    ],
                    None => vec![set],
                }
            };
            self.send_unit(Some(slot), unit).await?;
            self.positions.wrote(slot, offset);
        }
        Ok(())
    }

    /// The checkpoint at `answered` (every primary has answered up to it) into
    /// every slot whose last checkpoint is behind it.
    pub(super) async fn checkpoint_lagging_slots(
        &mut self,
        answered: i64,
    ) -> Result<(), ApplyError> {
        let lagging: Vec<bool> = (0..SLOTS as u16)
            .map(|slot| self.positions.lags(slot, answered))
            .collect();
        self.checkpoint_every_slot(answered, |slot| lagging[usize::from(slot)])
            .await
    }

    /// An HDEL of `slot`'s skip entries that a checkpoint at `offset` passes.
    pub(super) fn passed_skip_entries(&mut self, slot: u16, offset: i64) -> Option<Vec<Bytes>> {
        let passed = self.skip_entries.passed(slot, offset);
        if passed.is_empty() {
            return None;
        }
        let mut hdel = vec![
            Bytes::from_static(b"HDEL"),
            self.skip_keys[usize::from(slot)].clone(),
        ];
        hdel.extend(passed);
        Some(hdel)
    }

    /// Reads every slot's checkpoint and skip entries: remembers each slot's offset
    /// (what it will skip) and the entries past it, and answers the lowest
    /// checkpoint, where the stream must resume.
    pub(super) async fn read_checkpoints(&mut self) -> Result<Frame, ApplyError> {
        let mut lowest: Option<(i64, Bytes)> = None;
        let mut missing = 0usize;
        let with_skips = !self.skip_keys.is_empty();
        self.skips.clear();
        self.skip_entries.clear();
        for index in 0..self.shards.len() {
            let slots: Vec<usize> = (0..SLOTS)
                .filter(|&s| usize::from(self.owners[s]) == index)
                .collect();
            let reads = self.slot_reads(&slots, with_skips);
            let replies = self.shards[index]
                .writer
                .query_pipelined(&reads)
                .await
                .map_err(redirected)?;
            let mut replies = replies.into_iter().zip(reads);
            for slot in slots {
                let (checkpoint, _) = self.read_reply(slot, replies.next()).await?;
                let entries = match with_skips {
                    true => self.read_reply(slot, replies.next()).await?.0,
                    false => Frame::NullArray,
                };
                match self.load_slot_checkpoint(slot, &checkpoint)? {
                    Some((offset, value)) => {
                        if lowest.as_ref().is_none_or(|(l, _)| offset < *l) {
                            lowest = Some((offset, value));
                        }
                    }
                    None => missing += 1,
                }
                self.load_skip_entries(slot as u16, entries);
            }
        }
        self.resume_point(lowest, missing)
    }

    /// The reads of `slots`' checkpoint keys (and skip hashes), in slot order.
    fn slot_reads(&self, slots: &[usize], with_skips: bool) -> Vec<Vec<Bytes>> {
        let mut reads = Vec::with_capacity(slots.len() * 2);
        for &slot in slots {
            reads.push(vec![
                Bytes::from_static(b"GET"),
                self.slot_keys[slot].clone(),
            ]);
            if with_skips {
                reads.push(vec![
                    Bytes::from_static(b"HGETALL"),
                    self.skip_keys[slot].clone(),
                ]);
            }
        }
        reads
    }

    /// Takes `slot`'s checkpoint key as read: its offset and value, or none when
    /// the slot has no checkpoint. A value that is not a checkpoint is an error,
    /// never "missing": that would clear the target and copy again.
    fn load_slot_checkpoint(
        &mut self,
        slot: usize,
        checkpoint: &Frame,
    ) -> Result<Option<(i64, Bytes)>, ApplyError> {
        let value = checkpoint.as_bytes().map(Bytes::copy_from_slice);
        if let Some(value) = &value {
            Checkpoint::parse_target_value(&self.slot_keys[slot], value)
                .map_err(|e| ApplyError::Cluster(e.to_string()))?;
        }
        let loaded = value.and_then(|v| checkpoint_offset(&v).map(|o| (o, v)));
        self.positions
            .loaded(slot as u16, loaded.as_ref().map(|(offset, _)| *offset));
        Ok(loaded)
    }

    /// Where the stream resumes: the lowest slot checkpoint; none when no slot has
    /// one; an error when only some have one (the exact position is unknown).
    fn resume_point(
        &mut self,
        lowest: Option<(i64, Bytes)>,
        missing: usize,
    ) -> Result<Frame, ApplyError> {
        match lowest {
            None => Ok(Frame::NullBulk),
            Some(_) if missing > 0 => Err(ApplyError::Cluster(format!(
                "{missing} slots of the target cluster have no LOCKSTEP_CHECKPOINT key while the others have one: the exact position is unknown (fix: remove the LOCKSTEP_CHECKPOINT keys and the checkpoint directory to copy again)"
            ))),
            Some((_, value)) => {
                let text = String::from_utf8_lossy(&value).into_owned();
                let mut words = text.split_whitespace();
                if let (Some(replid), Some(db)) = (words.next(), words.nth(1)) {
                    self.last_value = Some((replid.to_owned(), db.to_owned()));
                }
                Ok(Frame::Bulk(value))
            }
        }
    }

    /// The reply to one read of `slot`'s own keys; when the slot is migrating and
    /// the key has moved (ASK), the same read asked of its new node.
    pub(super) async fn read_reply(
        &mut self,
        slot: usize,
        answered: Option<(Frame, Vec<Bytes>)>,
    ) -> Result<(Frame, Vec<Bytes>), ApplyError> {
        let Some((mut reply, read)) = answered else {
            return Err(ApplyError::Cluster(format!(
                "reading slot {slot}'s checkpoint: a reply is missing"
            )));
        };
        let asked = match &reply {
            Frame::Error(message) => ask_address(&String::from_utf8_lossy(message)),
            _ => None,
        };
        if let Some((host, port)) = asked {
            let node = self.shard_at(&host, port).await?;
            let asking = vec![Bytes::from_static(b"ASKING")];
            let replies = self.shards[node]
                .writer
                .query_pipelined(&[asking, read.clone()])
                .await
                .map_err(redirected)?;
            reply = replies.into_iter().nth(1).unwrap_or(Frame::NullBulk);
        }
        if let Frame::Error(message) = &reply {
            // MOVED while the map changes, TRYAGAIN, CLUSTERDOWN: not now.
            return Err(redirected(ApplyError::Rejected {
                endpoint: format!("target cluster (slot {slot})"),
                command: String::from_utf8_lossy(&read[0]).into_owned(),
                key: String::from_utf8_lossy(&read[1]).into_owned(),
                reply: String::from_utf8_lossy(message).into_owned(),
                hint: "",
            }));
        }
        Ok((reply, read))
    }

    /// Keeps a slot's skip entries (an HGETALL reply): those past the slot's
    /// checkpoint skip their key's commands; all are removed as checkpoints pass.
    pub(super) fn load_skip_entries(&mut self, slot: u16, entries: Frame) {
        let Frame::Array(items) = entries else {
            return;
        };
        let held = self.positions.holds_through(slot);
        for (key, through) in skip_pairs(&items) {
            if through > held {
                self.skips.insert(key.clone(), through, held);
            }
            self.skip_entries.record(slot, key, through);
        }
    }
}

/// The offset in a checkpoint value `<replid> <offset> <db>`.
fn checkpoint_offset(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
