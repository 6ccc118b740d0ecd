//! A standalone target: one [`Conn`], the task's checkpoint key in database 0, and
//! the database the stream has selected.
//!
//! A target transaction is MULTI, the stream's commands, `SET <checkpoint key>
//! <replid> <offset> <db>` (database 0, then the stream's database selected back),
//! EXEC: the position is recorded in the same transaction as the data it accounts
//! for, so the key never disagrees with the data. The next transaction is built
//! while the last one executes and held back until its EXEC is answered
//! ([`Conn::hold_until_answered`]): a refused transaction is never followed by one
//! that went through.
//!
//! Never: send a transaction before the previous one is answered; take an error
//! reply to the checkpoint's GET for "no checkpoint".

use crate::checkpoint::Checkpoint;
use crate::conn::{ApplyError, Conn, Position};

/// A standalone target (see the module doc).
pub struct Standalone {
    pub(crate) conn: Conn,
    checkpoint_key: Vec<u8>,
    /// The database selected on the connection by [`Standalone::select`] (0 at
    /// first, as a new connection is).
    selected: u32,
}

impl Standalone {
    pub(crate) fn new(conn: Conn, checkpoint_key: &[u8]) -> Standalone {
        Standalone {
            conn,
            checkpoint_key: checkpoint_key.to_vec(),
            selected: 0,
        }
    }

    /// Opens a target transaction once the last one is answered (held back until
    /// then, while the caller goes on building it).
    pub(crate) async fn begin(&mut self) -> Result<(), ApplyError> {
        self.conn.hold_until_answered().await?;
        self.conn.push(&[b"MULTI".as_slice()], None).await
    }

    pub(crate) async fn select(&mut self, db: u32) -> Result<(), ApplyError> {
        self.conn
            .push(&[b"SELECT".as_slice(), db.to_string().as_bytes()], None)
            .await?;
        self.selected = db;
        Ok(())
    }

    /// EXEC of the open transaction, with `checkpoint` recorded inside; `at` counts
    /// as applied once the EXEC is answered.
    pub(crate) async fn commit(
        &mut self,
        checkpoint: Option<&Checkpoint>,
        at: Position,
    ) -> Result<(), ApplyError> {
        if let Some(checkpoint) = checkpoint {
            let selected = self.selected;
            self.set_checkpoint(checkpoint).await?;
            self.select(selected).await?;
        }
        self.conn.push(&[b"EXEC".as_slice()], Some(at)).await
    }

    pub(crate) async fn discard(&mut self) -> Result<(), ApplyError> {
        self.conn.push(&[b"DISCARD".as_slice()], None).await
    }

    /// Records `checkpoint` outside the stream (after a full copy) and waits for it.
    pub(crate) async fn record_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> Result<(), ApplyError> {
        self.set_checkpoint(checkpoint).await?;
        self.conn.drain().await
    }

    /// `SELECT 0` and the SET of the checkpoint key (database 0 stays selected).
    async fn set_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<(), ApplyError> {
        let value = checkpoint_value(checkpoint);
        self.select(0).await?;
        let set = [b"SET".as_slice(), &self.checkpoint_key, value.as_bytes()];
        self.conn.push(&set, None).await
    }

    /// The checkpoint key's value, if the target holds one; an error reply is an
    /// error, never "no checkpoint" (a LOADING target answers so for a while).
    pub(crate) async fn read_checkpoint(&mut self) -> Result<Option<Vec<u8>>, ApplyError> {
        self.conn.query(&[b"SELECT".as_slice(), b"0"]).await?;
        self.selected = 0;
        let value = self
            .conn
            .query(&[b"GET".as_slice(), &self.checkpoint_key])
            .await?;
        if let crate::resp::Frame::Error(reply) = &value {
            return Err(ApplyError::Rejected {
                endpoint: "target".into(),
                command: "GET".into(),
                key: String::from_utf8_lossy(&self.checkpoint_key).into_owned(),
                reply: String::from_utf8_lossy(reply).into_owned(),
                hint: " (reading lockstep's checkpoint key)",
            });
        }
        Ok(value.as_bytes().map(<[u8]>::to_vec))
    }
}

/// The checkpoint key's value: `<replid> <offset> <db>`.
pub(crate) fn checkpoint_value(checkpoint: &Checkpoint) -> String {
    format!(
        "{} {} {}",
        checkpoint.replid, checkpoint.offset, checkpoint.db
    )
}
