//! The checkpoint file, written from the stream's loop: [`BackgroundSaver`] off the
//! hot path on each checkpoint tick, [`save`] once at the end of a session.
//!
//! The file only ever holds a position the target has answered for; the target's
//! own checkpoint key stays the exact one, and the file may lag it by a tick or two.
//! Never two writers of one file at a time.

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore};
use crate::target::Target;

use super::error::SyncError;

pub(super) fn save(
    store: &mut CheckpointStore,
    replid: &Option<String>,
    writer: &Target,
) -> Result<(), SyncError> {
    if let (Some(replid), Some(applied)) = (replid, writer.applied()) {
        store.store(Checkpoint {
            replid: replid.clone(),
            offset: applied.offset,
            db: applied.db,
        })?;
    }
    Ok(())
}

/// Writes the checkpoint file off the command stream's task: a tick hands the write
/// to a blocking thread and goes on; the next tick takes its result (a failure ends the
/// session) and starts the next write, or skips a turn while one is still running. The
/// target's own checkpoint key, written with the data, is the exact position; the file
/// may lag it by a tick or two.
#[derive(Default)]
pub(super) struct BackgroundSaver {
    in_flight: Option<tokio::task::JoinHandle<Result<(), CheckpointError>>>,
}

impl BackgroundSaver {
    pub(super) async fn save_in_background(
        &mut self,
        store: &mut CheckpointStore,
        replid: &Option<String>,
        writer: &Target,
    ) -> Result<(), SyncError> {
        if self.in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(()); // the disk is slow: this tick's position waits for the next
        }
        self.finish().await?;
        if let (Some(replid), Some(applied)) = (replid, writer.applied()) {
            let accepted = store.accept(Checkpoint {
                replid: replid.clone(),
                offset: applied.offset,
                db: applied.db,
            })?;
            if let Some(write) = accepted {
                self.in_flight = Some(tokio::task::spawn_blocking(move || write.write()));
            }
        }
        Ok(())
    }

    /// Waits for the write in flight, if any, and returns its result.
    pub(super) async fn finish(&mut self) -> Result<(), SyncError> {
        if let Some(handle) = self.in_flight.take() {
            handle.await.map_err(|e| {
                SyncError::Internal(format!("the checkpoint writer thread failed: {e}"))
            })??;
        }
        Ok(())
    }
}
