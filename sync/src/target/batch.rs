//! Target transactions of the command stream and the checkpoint-key protocol: the
//! stream's commands are grouped into target transactions that end by recording,
//! in the target's checkpoint key, the position they bring the target to
//! ([`Target::commit`]); and the same key is written after a full copy
//! ([`record_start`]) and read back when a session starts
//! ([`Target::read_checkpoint`]).
//!
//! Because the position is written in the same transaction as the data it accounts
//! for, the target's key never disagrees with the target's data. This module must
//! never leave a transaction open across a session's end without EXEC or DISCARD,
//! and never commit inside a source MULTI/EXEC block (the caller decides when; a
//! block whose end did not arrive is discarded).

use bytes::Bytes;

use crate::checkpoint::{Checkpoint, CheckpointStore};
use crate::conn::{ApplyError, Position};

use super::Target;

/// Most source commands in one target transaction.
pub const BATCH_COMMANDS_MAX: usize = 1000;

/// Groups the stream's commands into target transactions that end by recording the
/// position they bring the target to.
pub struct TargetBatch {
    /// The stream's replication id: no checkpoint is recorded without one (SYNC).
    replid: Option<String>,
    pub open: bool,
    pub commands: usize,
}

impl TargetBatch {
    pub fn new(replid: Option<String>) -> TargetBatch {
        TargetBatch {
            replid,
            open: false,
            commands: 0,
        }
    }

    /// Adds one command to the open transaction, opening one first if needed. A
    /// `SELECT <n>` (the filter's rewrite of FLUSHALL ends with one) becomes the
    /// target's explicit [`Target::select`].
    pub async fn add(&mut self, writer: &mut Target, argv: &[Bytes]) -> Result<(), ApplyError> {
        self.open(writer).await?;
        match select_of(argv) {
            Some(db) => writer.select(db).await?,
            None => writer.write(argv).await?,
        }
        self.commands += 1;
        Ok(())
    }

    /// Selects target database `db` inside the transaction (the stream's SELECT).
    pub async fn select(&mut self, writer: &mut Target, db: u32) -> Result<(), ApplyError> {
        self.open(writer).await?;
        writer.select(db).await?;
        self.commands += 1;
        Ok(())
    }

    async fn open(&mut self, writer: &mut Target) -> Result<(), ApplyError> {
        if !self.open {
            // The previous transaction must have succeeded before this one is sent
            // (found by the chaos catalog: 86 keys missing after an OOM stop): how
            // is the target's policy ([`Target::begin`]).
            writer.begin().await?;
            self.open = true;
        }
        Ok(())
    }

    /// Commits with the position recorded inside; or, with nothing open, just marks
    /// the position (entries that apply nothing: PING, heartbeats, blanks).
    pub async fn close(&mut self, writer: &mut Target, here: Position) -> Result<(), ApplyError> {
        if !self.open {
            writer.mark_position(here);
            return Ok(());
        }
        let checkpoint = self.replid.as_ref().map(|replid| Checkpoint {
            replid: replid.clone(),
            offset: here.offset,
            db: here.db,
        });
        writer.commit(checkpoint.as_ref(), here).await?;
        self.open = false;
        self.commands = 0;
        Ok(())
    }

    /// At the end of a session: commit what is complete, discard a source
    /// transaction that did not arrive whole (its commands must not run without the
    /// rest).
    pub async fn abandon_or_close(
        &mut self,
        writer: &mut Target,
        here: Position,
        in_multi: bool,
    ) -> Result<(), ApplyError> {
        if self.open && in_multi {
            writer.discard().await?;
            self.open = false;
            self.commands = 0;
            return Ok(());
        }
        self.close(writer, here).await
    }
}

/// The database a `SELECT <n>` command selects.
fn select_of(argv: &[Bytes]) -> Option<u32> {
    match argv {
        [name, db] if name.eq_ignore_ascii_case(b"SELECT") => {
            std::str::from_utf8(db).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// Records where the stream starts after a full resync (copied or skipped), on the
/// target and in the file.
pub async fn record_start(
    writer: &mut Target,
    store: &mut CheckpointStore,
    replid: &str,
    offset: i64,
) -> Result<(), ApplyError> {
    let start = Checkpoint {
        replid: replid.to_owned(),
        offset,
        db: 0,
    };
    writer.record_checkpoint(&start).await?;
    store.store(start)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_numbered_select_is_a_select() {
        let argv = |words: &[&'static str]| -> Vec<Bytes> {
            words
                .iter()
                .map(|w| Bytes::from_static(w.as_bytes()))
                .collect()
        };
        assert_eq!(select_of(&argv(&["select", "3"])), Some(3));
        assert_eq!(select_of(&argv(&["SELECT", "x"])), None);
        assert_eq!(select_of(&argv(&["SET", "3"])), None);
        assert_eq!(select_of(&argv(&["SELECT"])), None);
    }
}
