//! Routing one command of the stream (or of the full copy) to its hash slot: the
//! database rule, the skip windows of cross-slot copies, one slot (queued in that
//! slot's transaction, or sent at once outside the stream), several slots (split
//! when the command keeps its meaning, else copied from the source), and keyless
//! commands (broadcast to every primary, with every slot's checkpoint after it).
//!
//! Never: guess a slot (a command missing from the key table stops the task);
//! send a command its slot's checkpoint already holds.

use bytes::Bytes;

use crate::conn::ApplyError;
use crate::keys::{key_indices, split_into, splittable, KeysError};
use crate::slots::key_slot;

use super::cross_slot::Judgement;
use super::ClusterTarget;

impl ClusterTarget {
    pub(super) async fn route(&mut self, argv: &[Bytes]) -> Result<(), ApplyError> {
        let name = String::from_utf8_lossy(&argv[0]).to_uppercase();
        let indices = match key_indices(argv) {
            Ok(indices) => indices,
            Err(KeysError::Unknown(_)) => {
                return Err(ApplyError::Cluster(format!(
                    "{name} is not in lockstep's table of commands and their keys, so its hash slot is unknown (fix: --drop-command {name} if it writes nothing the target needs)"
                )))
            }
            Err(err) => return Err(ApplyError::Cluster(err.to_string())),
        };
        if indices.is_empty() {
            return self.keyless(&name, argv).await;
        }
        if self.db != 0 {
            return Err(ApplyError::Cluster(format!(
                "{name} writes to database {} of the target, and a cluster has database 0 only (fix: map the source's databases to 0 with --map-db, or select with --dbs)",
                self.db
            )));
        }
        if name == "MOVE" || (name == "COPY" && argv.iter().any(|a| a.eq_ignore_ascii_case(b"DB")))
        {
            return Err(ApplyError::Cluster(format!(
                "{name} moves a key between databases, and a cluster has database 0 only"
            )));
        }
        if !self.skips.is_empty() {
            let keys = indices.clone().map(|i| &argv[i][..]);
            match self.skips.judge(keys, self.cursor.offset) {
                Judgement::Apply => {}
                Judgement::Drop => return Ok(()), // its effect is in the copies
                Judgement::Copy => return self.copy_from_source(&name, argv).await,
            }
        }
        let mut slots: Vec<u16> = Vec::new();
        for i in indices.clone() {
            let slot = key_slot(&argv[i]);
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
        if let [slot] = slots[..] {
            return self.send(slot, argv.to_vec()).await;
        }
        if splittable(&argv[0]).is_none() {
            return self.copy_from_source(&name, argv).await;
        }
        for (slot, part) in split_into(argv, key_slot).unwrap_or_default() {
            self.send(slot, part).await?;
        }
        Ok(())
    }

    /// Applies `argv` by copying its keys from the source, each into its slot's
    /// transaction with a skip entry (see [`crate::cross_slot`]).
    pub(super) async fn copy_from_source(
        &mut self,
        name: &str,
        argv: &[Bytes],
    ) -> Result<(), ApplyError> {
        let mut keys: Vec<Bytes> = Vec::new();
        for i in key_indices(argv).map_err(|e| ApplyError::Cluster(e.to_string()))? {
            if !keys.contains(&argv[i]) {
                keys.push(argv[i].clone());
            }
        }
        let in_stream = self.cursor.in_stream() && self.open.is_open();
        let Some(copier) = self.copier.as_mut().filter(|_| in_stream) else {
            let keys: Vec<String> = keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            return Err(ApplyError::Cluster(format!(
                "{name} on keys {keys:?}, which fall in different hash slots: a cluster target cannot apply it as the source did, and its keys cannot be copied from the source here (fix: give keys used together a common hash tag, e.g. user:{{42}}:a and user:{{42}}:b, or sync into a standalone target)"
            )));
        };
        let copied = copier.copy(self.cursor.source_db, &keys).await?;
        if copied.offset < self.cursor.offset {
            return Err(ApplyError::Cluster(format!(
                "copying the keys of {name} from the source: its replication offset {} is behind the stream's {} (the source was restarted or replaced); the next session starts again from the checkpoints",
                copied.offset, self.cursor.offset
            )));
        }
        tracing::debug!(
            command = name,
            keys = keys.len(),
            through = copied.offset,
            "a cross-slot command copied from the source"
        );
        for (key, commands) in copied.keys {
            let slot = key_slot(&key);
            if self.positions.holds(slot, self.cursor.offset) {
                continue; // that slot holds this command and its own skip entry
            }
            for command in commands {
                self.send(slot, command).await?;
            }
            let entry = vec![
                Bytes::from_static(b"HSET"),
                self.skip_keys[usize::from(slot)].clone(),
                key.clone(),
                Bytes::from(copied.offset.to_string()),
            ];
            self.send(slot, entry).await?;
            self.skip_entries.record(slot, key.clone(), copied.offset);
            self.skips.insert(key, copied.offset, self.cursor.offset);
        }
        Ok(())
    }

    /// A command for `slot`: queued in the slot's transaction inside the stream's
    /// target transaction, else sent at once (the full copy).
    pub(super) async fn send(&mut self, slot: u16, argv: Vec<Bytes>) -> Result<(), ApplyError> {
        if self.positions.holds(slot, self.cursor.offset) {
            return Ok(()); // this slot applied it before its checkpoint
        }
        if self.open.is_open() {
            self.open.queue(slot, argv);
            return Ok(());
        }
        self.send_unit(Some(slot), vec![argv]).await
    }

    pub(super) async fn keyless(&mut self, name: &str, argv: &[Bytes]) -> Result<(), ApplyError> {
        match name {
            "SWAPDB" => Err(ApplyError::Cluster(
                "SWAPDB swaps databases, and a cluster has database 0 only".to_owned(),
            )),
            // A sharded channel lives in the slot of its name.
            "SPUBLISH" => match argv.get(1) {
                Some(channel) => self.send(key_slot(channel), argv.to_vec()).await,
                None => Ok(()),
            },
            "FLUSHALL" | "FLUSHDB" => {
                self.broadcast(argv).await?;
                // The copies and their skip hashes are gone on both sides.
                self.skips.clear();
                self.skip_entries.clear();
                Ok(())
            }
            "FUNCTION" | "SCRIPT" => self.broadcast(argv).await,
            _ => self.send_unit(None, vec![argv.to_vec()]).await,
        }
    }

    /// A keyless command every primary runs, in stream order with the slots'
    /// transactions, each slot's checkpoint set right after it.
    pub(super) async fn broadcast(&mut self, argv: &[Bytes]) -> Result<(), ApplyError> {
        let in_stream = self.cursor.in_stream();
        if in_stream {
            // What came before it, up to the entry before it.
            let before = self.last_value.as_ref().map(|(replid, db)| {
                let offset = self.cursor.previous;
                (offset, Bytes::from(format!("{replid} {offset} {db}")))
            });
            self.close_slots(before).await?;
            // Nothing of a slot may be sent again after what follows it.
            self.drain().await?;
        }
        for index in 0..self.shards.len() {
            // A primary whose every slot is past this command has run it.
            let done = in_stream
                && self
                    .positions
                    .primary_holds(&self.owners, index, self.cursor.offset);
            if !done {
                let unit = self.new_unit(None, vec![argv.to_vec()]);
                self.send_unit_to(index, unit, false).await?;
            }
        }
        if in_stream {
            let offset = self.cursor.offset;
            self.checkpoint_every_slot(offset, |_| true).await?;
            self.drain().await?;
        }
        Ok(())
    }
}
