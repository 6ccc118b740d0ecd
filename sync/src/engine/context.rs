//! What a session holds once the target is connected ([`Session`]: the task's
//! options, its checkpoint file, its progress, the target, the TTL guards to
//! settle) and where its command stream starts ([`StreamStart`]). Plain data shared
//! by `session` (which builds it and decides the start) and `stream` (which
//! applies the stream with it); it does no I/O, and imports neither of them.

use tokio::sync::watch;

use crate::checkpoint::CheckpointStore;
use crate::target::Target;
use crate::ttl_guard::{PendingSettle, Settler};

use super::options::SyncOptions;
use super::progress::Progress;

/// What a session works with once the target is connected: the task's options,
/// its checkpoint file, its progress, the target, and the TTL guards to settle.
pub(super) struct Session<'a> {
    pub(super) options: &'a SyncOptions,
    pub(super) store: &'a mut CheckpointStore,
    pub(super) progress: &'a watch::Sender<Progress>,
    pub(super) writer: Target,
    pub(super) settler: Settler<'a>,
    /// The TTL guards of a full copy, not settled yet.
    pub(super) settle: Option<PendingSettle>,
    pub(super) target_rdb_version: u16,
}

/// Where the command stream starts: the replication id followed (none after SYNC),
/// the offset of its next byte, the source database selected there.
pub(super) struct StreamStart {
    pub(super) replid: Option<String>,
    pub(super) offset: i64,
    pub(super) db: u32,
}
