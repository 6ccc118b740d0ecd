//! Target transactions of the command stream and the checkpoint-key protocol: the
//! stream's commands are grouped into MULTI/EXEC blocks that end by recording, in
//! the target's checkpoint key, the position they bring the target to; and the same
//! key is read back ([`target_checkpoint`]) and written after a full copy
//! ([`record_start`]).
//!
//! Because the position is written in the same transaction as the data it accounts
//! for, the target's key never disagrees with the target's data. This module must
//! never send a transaction before the previous one is answered (standalone) or
//! drained (cluster), and never take an error reply for "no checkpoint".

use bytes::Bytes;

use crate::apply::{ApplyError, Position, TargetWriter};
use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::filter::Filter;
use crate::resp::Frame;

use super::error::SyncError;
use super::options::SyncOptions;

/// Most source commands in one target transaction.
pub(super) const BATCH_COMMANDS_MAX: usize = 1000;

/// Groups the stream's commands into target transactions that end by recording the
/// position they bring the target to.
pub(super) struct TargetBatch {
    replid: Option<String>,
    /// For the target database to select back after the checkpoint.
    filter: Filter,
    checkpoint_key: Vec<u8>,
    pub(super) open: bool,
    pub(super) commands: usize,
}

impl TargetBatch {
    pub(super) fn new(replid: Option<String>, options: &SyncOptions) -> TargetBatch {
        TargetBatch {
            replid,
            filter: options.filter.clone(),
            checkpoint_key: options.checkpoint_key(),
            open: false,
            commands: 0,
        }
    }

    pub(super) async fn add(
        &mut self,
        writer: &mut TargetWriter,
        argv: &[Bytes],
    ) -> Result<(), ApplyError> {
        if !self.open {
            // The previous transaction must have succeeded before this one is sent:
            // if the target refused it (say -OOM at queue time, then EXECABORT) and
            // this one, pipelined behind it, went through, the target would hold this
            // one's data and checkpoint without the other's (found by the chaos
            // catalog: 86 keys missing after an OOM stop). This one is built while
            // the last executes and held back until its EXEC is answered (waiting
            // before building cost a round trip per transaction). A cluster target
            // drains instead: its transactions are per shard.
            if writer.is_cluster() {
                writer.drain().await?;
            } else {
                writer.hold_until_answered().await?;
            }
            writer.push(&[b"MULTI".as_slice()], None).await?;
            self.open = true;
        }
        writer.push(argv, None).await?;
        self.commands += 1;
        Ok(())
    }

    /// EXEC, with the position recorded inside; or, with nothing open, just mark the
    /// position (entries that apply nothing: PING, heartbeats, blanks).
    pub(super) async fn close(
        &mut self,
        writer: &mut TargetWriter,
        here: Position,
    ) -> Result<(), ApplyError> {
        if !self.open {
            writer.mark_position(here);
            return Ok(());
        }
        if let Some(replid) = &self.replid {
            let value = format!("{replid} {} {}", here.offset, here.db);
            writer.push(&[b"SELECT".as_slice(), b"0"], None).await?;
            writer
                .push(
                    &[b"SET".as_slice(), &self.checkpoint_key, value.as_bytes()],
                    None,
                )
                .await?;
            let target_db = self.filter.selectable_db(here.db);
            writer
                .push(
                    &[b"SELECT".as_slice(), target_db.to_string().as_bytes()],
                    None,
                )
                .await?;
        }
        writer.push(&[b"EXEC".as_slice()], Some(here)).await?;
        self.open = false;
        self.commands = 0;
        Ok(())
    }

    /// At the end of a session: EXEC what is complete, DISCARD a source transaction
    /// that did not arrive whole (its commands must not run without the rest).
    pub(super) async fn abandon_or_close(
        &mut self,
        writer: &mut TargetWriter,
        here: Position,
        in_multi: bool,
    ) -> Result<(), ApplyError> {
        if self.open && in_multi {
            writer.push(&[b"DISCARD".as_slice()], None).await?;
            self.open = false;
            self.commands = 0;
            return Ok(());
        }
        self.close(writer, here).await
    }
}

/// Reads the target's own checkpoint key, if any.
pub(super) async fn target_checkpoint(
    writer: &mut TargetWriter,
    key: &[u8],
) -> Result<Option<Checkpoint>, SyncError> {
    writer.query(&[b"SELECT".as_slice(), b"0"]).await?;
    let value = writer.query(&[b"GET".as_slice(), key]).await?;
    if let Frame::Error(reply) = &value {
        // Not "no checkpoint": taken for one, it would clear the target and copy
        // everything again (a LOADING target, for one, answers so for a while).
        return Err(ApplyError::Rejected {
            endpoint: "target".into(),
            command: "GET".into(),
            key: String::from_utf8_lossy(key).into_owned(),
            reply: String::from_utf8_lossy(reply).into_owned(),
            hint: " (reading lockstep's checkpoint key)",
        }
        .into());
    }
    match value.as_bytes() {
        None => Ok(None),
        Some(bytes) => Ok(Some(Checkpoint::parse_target_value(key, bytes)?)),
    }
}

/// Records where the stream starts after a full resync (copied or skipped), on the
/// target and in the file.
pub(super) async fn record_start(
    writer: &mut TargetWriter,
    store: &mut CheckpointStore,
    key: &[u8],
    replid: &str,
    offset: i64,
) -> Result<(), SyncError> {
    let start = Checkpoint {
        replid: replid.to_owned(),
        offset,
        db: 0,
    };
    store_target_checkpoint(writer, key, &start).await?;
    store.store(start)?;
    Ok(())
}

/// Records `checkpoint` in the target's checkpoint key (outside the stream, after a
/// full copy).
async fn store_target_checkpoint(
    writer: &mut TargetWriter,
    key: &[u8],
    checkpoint: &Checkpoint,
) -> Result<(), ApplyError> {
    let value = format!(
        "{} {} {}",
        checkpoint.replid, checkpoint.offset, checkpoint.db
    );
    writer.push(&[b"SELECT".as_slice(), b"0"], None).await?;
    writer
        .push(&[b"SET".as_slice(), key, value.as_bytes()], None)
        .await?;
    writer.drain().await
}
