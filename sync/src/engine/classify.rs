//! What the session does with one command of the stream ([`Action`]): apply it,
//! track SELECT and MULTI/EXEC, answer GETACK, measure a heartbeat, skip it, or
//! apply the filter's rewrite.
//!
//! Pure: a decision from the command, the options and the current database. It
//! never touches a connection; the session acts on the answer.

use bytes::Bytes;

use crate::filter::{FilterError, Verdict};
use crate::resp::Command;

use super::heartbeat::HEARTBEAT_PREFIX;
use super::options::SyncOptions;

/// What the engine does with one command of the stream.
pub(super) enum Action {
    Apply,
    Select(u32),
    Multi,
    Exec,
    GetAck,
    /// lockstep's own heartbeat key: measured, not sent.
    Heartbeat,
    /// Counted in the offset, not sent: PING, REPLCONF, filtered commands.
    Skip,
    /// The filter's replacement (split keys, mapped databases, extended TTLs).
    Rewrite(Vec<Vec<Bytes>>),
    /// FLUSHALL / FLUSHDB of one shard of a cluster source: remove that shard's keys
    /// from the target, and only those.
    ClearOwnKeys,
}

/// What to do with `command`, applied in source database `db`.
pub(super) fn classify(
    command: &Command,
    options: &SyncOptions,
    db: u32,
) -> Result<Action, FilterError> {
    let name = command.name();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if is("SELECT") {
        let db = command
            .args()
            .first()
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse().ok());
        return Ok(db.map_or(Action::Apply, Action::Select));
    }
    if is("MULTI") {
        return Ok(Action::Multi);
    }
    if is("EXEC") {
        return Ok(Action::Exec);
    }
    if is("PING") {
        return Ok(Action::Skip);
    }
    if is("REPLCONF") {
        let getack = command
            .args()
            .first()
            .is_some_and(|a| a.eq_ignore_ascii_case(b"GETACK"));
        return Ok(if getack { Action::GetAck } else { Action::Skip });
    }
    if command
        .args()
        .first()
        .is_some_and(|key| key.starts_with(HEARTBEAT_PREFIX))
    {
        return Ok(Action::Heartbeat);
    }
    Ok(match options.filter.command(&command.argv, db)? {
        Verdict::Keep => Action::Apply,
        Verdict::Drop => Action::Skip,
        Verdict::Rewrite(commands) => Action::Rewrite(commands),
        Verdict::ClearOwnKeys => Action::ClearOwnKeys,
    })
}
