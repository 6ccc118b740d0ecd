//! What the session does with one command of the stream ([`Action`]): apply it,
//! track SELECT and MULTI/EXEC, answer GETACK, measure a heartbeat, skip it, or
//! apply the filter's rewrite, then the script's (`--script`, [`crate::script`]).
//!
//! A decision from the command, the options and the current database. It never
//! touches a connection; the session acts on the answer, inside the target
//! transaction that records the command's offset, so the script's output is applied
//! exactly once (a restart replays the command, and the script, from the checkpoint).

use bytes::Bytes;

use crate::filter::Verdict;
use crate::resp::Command;
use crate::script::{Script, ScriptError, Transformed};

use super::error::SyncError;
use super::heartbeat::HEARTBEAT_PREFIX;
use super::options::SyncOptions;

/// What the engine does with one command of the stream.
#[derive(Debug, PartialEq, Eq)]
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
    /// FLUSHALL / FLUSHDB of one shard of a cluster source, or under renames: remove
    /// the task's keys from the target (of target database `db`; None: of all), and
    /// only those.
    ClearOwnKeys {
        db: Option<u32>,
    },
}

/// What to do with `command`, applied in source database `db`.
pub(super) fn classify(
    command: &mut Command,
    options: &SyncOptions,
    db: u32,
) -> Result<Action, SyncError> {
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
    let action = match options.filter.command_in_place(&mut command.argv, db)? {
        Verdict::Keep => Action::Apply,
        Verdict::Drop => Action::Skip,
        Verdict::Rewrite(commands) => Action::Rewrite(commands),
        Verdict::ClearOwnKeys { db } => Action::ClearOwnKeys { db },
    };
    match &options.script {
        Some(script) => Ok(scripted(script, action, &command.argv, db)?),
        None => Ok(action),
    }
}

/// What the filter kept, through the script: the command (or each command of the
/// filter's rewrite) whose keys the script takes is replaced by what it returns.
/// Commands without a key (SELECT, FLUSHALL, FUNCTION...) never reach it.
fn scripted(
    script: &Script,
    action: Action,
    argv: &[Bytes],
    db: u32,
) -> Result<Action, ScriptError> {
    Ok(match action {
        Action::Apply => match transform(script, argv, db)? {
            Transformed::Unchanged => Action::Apply,
            Transformed::Commands(out) if out.is_empty() => Action::Skip,
            Transformed::Commands(out) => Action::Rewrite(out),
        },
        Action::Rewrite(commands) => {
            let mut out = Vec::with_capacity(commands.len());
            for command in commands {
                match transform(script, &command, db)? {
                    Transformed::Unchanged => out.push(command),
                    Transformed::Commands(more) => out.extend(more),
                }
            }
            Action::Rewrite(out)
        }
        other => other,
    })
}

/// One command through the script, when it has a key the script takes.
fn transform(script: &Script, argv: &[Bytes], db: u32) -> Result<Transformed, ScriptError> {
    script.stream_command(u64::from(db), argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;

    fn command(words: &[&str]) -> Command {
        let argv: Vec<Bytes> = words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        Command {
            wire_bytes: argv.iter().map(|a| a.len() + 8).sum(),
            argv,
            inline: false,
        }
    }

    fn options() -> SyncOptions {
        let endpoint = Endpoint::parse("redis://127.0.0.1:1").expect("an endpoint");
        SyncOptions::new(endpoint.clone(), endpoint, "unused")
    }

    fn action(options: &SyncOptions, words: &[&str]) -> Action {
        classify(&mut command(words), options, 0).expect("classified")
    }

    #[test]
    fn the_stream_protocol_is_consumed_and_the_data_applied() {
        let options = options();
        assert_eq!(action(&options, &["select", "7"]), Action::Select(7));
        // A SELECT that names no database is the target's to refuse, as sent.
        assert_eq!(action(&options, &["SELECT", "x"]), Action::Apply);
        assert_eq!(action(&options, &["multi"]), Action::Multi);
        assert_eq!(action(&options, &["EXEC"]), Action::Exec);
        assert_eq!(action(&options, &["PING"]), Action::Skip);
        assert_eq!(
            action(&options, &["REPLCONF", "getack", "*"]),
            Action::GetAck
        );
        assert_eq!(action(&options, &["REPLCONF", "ACK", "5"]), Action::Skip);
        assert_eq!(action(&options, &["SET", "k", "v"]), Action::Apply);
        assert_eq!(action(&options, &["FLUSHALL"]), Action::Apply);
    }

    #[test]
    fn the_heartbeat_key_is_measured_never_applied() {
        let options = options();
        let key = format!("{}:task", String::from_utf8_lossy(HEARTBEAT_PREFIX));
        assert_eq!(
            action(&options, &["SETEX", &key, "3", "1700000000000"]),
            Action::Heartbeat
        );
        assert_eq!(
            action(&options, &["SET", &key, "1700000000000", "PXAT", "1"]),
            Action::Heartbeat
        );
    }

    #[test]
    fn the_filter_decides_for_data_commands() {
        let mut options = options();
        options.filter.exclude_prefixes = vec![b"skip:".to_vec()];
        assert_eq!(action(&options, &["SET", "skip:a", "v"]), Action::Skip);
        assert_eq!(action(&options, &["SET", "keep:a", "v"]), Action::Apply);
        // A shard of a cluster source: its FLUSHALL clears its own keys only.
        options.filter.source_slots = vec![(0, 100)];
        assert_eq!(
            action(&options, &["FLUSHALL"]),
            Action::ClearOwnKeys { db: None }
        );
        assert_eq!(
            action(&options, &["flushdb"]),
            Action::ClearOwnKeys { db: Some(0) }
        );
    }
}
