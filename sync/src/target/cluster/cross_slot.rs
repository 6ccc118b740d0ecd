//! Cross-slot commands into a cluster target: what cannot be split by slot is
//! copied from the source instead.
//!
//! A Redis Cluster refuses a command whose keys fall in different hash slots
//! (CROSSSLOT). The router ([`crate::cluster`]) splits what keeps its meaning when
//! split (DEL, UNLINK, TOUCH, MSET, MSETNX). Any other such command (RENAME, SMOVE,
//! SUNIONSTORE, LMOVE, COPY, a BITOP or ZUNIONSTORE over several slots...) is applied
//! by **copying its keys from the source**:
//!
//! 1. [`SourceCopier::copy`] reads, in one MULTI/EXEC on a plain connection to the
//!    source, `DUMP` and `PTTL` of every key of the command and `INFO replication`:
//!    each key's value and TTL exactly as of the source's replication offset `p`
//!    that the same transaction reports. `p` is at or past the command's own offset
//!    `o` (the source has executed what it sent).
//! 2. Each key is written into its slot's target transaction as `RESTORE ... REPLACE`
//!    (the payload re-encoded when the target reads an older RDB version) or `DEL`
//!    when the source no longer has it, together with a **skip entry** `HSET
//!    LOCKSTEP_SKIP[:task]:{n} <key> <p>` in the same slot.
//! 3. The copy holds every effect up to `p`, so stream commands on these keys at
//!    offsets in `(o, p]` are skipped ([`Skips`]). A command in that window that
//!    touches a skipped key and a key that is not is copied the same way, at a newer
//!    offset. From `p` on, commands apply as usual.
//!
//! Crash safety: the skip entry is written in the same MULTI/EXEC as the copy and
//! the slot's checkpoint, and is read back with the checkpoints when a session
//! starts, so a restart from any slot checkpoint neither applies a window command
//! twice nor misses one. Entries at or below their slot's checkpoint mean nothing
//! and are removed with the next checkpoint of that slot. A FLUSHALL or FLUSHDB in
//! the stream removes the copies and their entries on the target (and on the
//! source), so every skip ends there: the commands after it build the keys again.
//!
//! Cost: one round trip to the source per such command, and its keys' whole values
//! in memory once (a DUMP of a big key is big).

use bytes::Bytes;

use crate::clock::unix_ms;
use crate::conn::{ApplyError, Conn};
use crate::filter::Filter;
use crate::rdb::dump::{decode_dump, DumpOptions};
use crate::rdb::encode_dump;
use crate::rdb::{Kind, Value};
use crate::resp::Frame;
use crate::rules::ttl::TtlRewrite;

pub use super::skips::{Judgement, Skips};

/// Reads keys from the source for a cluster target (see the module doc).
pub struct SourceCopier {
    source: Conn,
    target_rdb_version: u16,
    /// The task's filter: its renames (the command's keys are target names, read on
    /// the source under their source names), TTL extension and rules, type rules and
    /// hash field drops, applied to each value copied as to the stream's.
    filter: Filter,
}

/// Keys read from the source as of its replication offset `offset`: per key, the
/// commands that make the target's copy equal.
pub struct Copied {
    pub offset: i64,
    pub keys: Vec<(Bytes, Vec<Vec<Bytes>>)>,
}

impl SourceCopier {
    /// `source` is a plain connection to the source the stream comes from; values
    /// are written for a target of `target_rdb_version`, under the task's `filter`
    /// (the keys given to [`SourceCopier::copy`] are target names).
    pub fn new(source: Conn, target_rdb_version: u16, filter: Filter) -> SourceCopier {
        SourceCopier {
            source,
            target_rdb_version,
            filter,
        }
    }

    /// The source name of target key `key` (the stream's commands reach the target
    /// renamed; every renamed key has one).
    fn source_name(&self, key: &Bytes) -> Result<Bytes, ApplyError> {
        match self.filter.renames.source_key(key) {
            Some(std::borrow::Cow::Borrowed(_)) => Ok(key.clone()),
            Some(std::borrow::Cow::Owned(name)) => Ok(Bytes::from(name)),
            None => Err(ApplyError::Cluster(format!(
                "copying {} from the source for a cross-slot command: no source key is renamed to it",
                String::from_utf8_lossy(key)
            ))),
        }
    }

    /// Reads `keys` of source database `db` in one transaction.
    pub async fn copy(&mut self, db: u32, keys: &[Bytes]) -> Result<Copied, ApplyError> {
        let mut commands: Vec<Vec<Bytes>> = Vec::with_capacity(keys.len() * 2 + 4);
        commands.push(vec![
            Bytes::from_static(b"SELECT"),
            Bytes::from(db.to_string()),
        ]);
        commands.push(vec![Bytes::from_static(b"MULTI")]);
        for key in keys {
            let name = self.source_name(key)?;
            commands.push(vec![Bytes::from_static(b"DUMP"), name.clone()]);
            commands.push(vec![Bytes::from_static(b"PTTL"), name]);
        }
        commands.push(vec![
            Bytes::from_static(b"INFO"),
            Bytes::from_static(b"replication"),
        ]);
        commands.push(vec![Bytes::from_static(b"EXEC")]);
        let mut replies = self.source.query_pipelined(&commands).await?;
        let refused = |what: &str, reply: &Frame| {
            ApplyError::Cluster(format!(
            "copying {} from the source for a cross-slot command: the source answered {reply:?} to {what} (fix: the source user needs DUMP, PTTL and INFO)",
            keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>().join(", ")
        ))
        };
        if let Some(error) = replies.iter().find(|r| matches!(r, Frame::Error(_))) {
            return Err(refused("the transaction", error));
        }
        let exec = replies.pop().unwrap_or(Frame::NullBulk);
        let Frame::Array(results) = &exec else {
            return Err(refused("EXEC", &exec));
        };
        if results.len() != keys.len() * 2 + 1 {
            return Err(refused("EXEC", &exec));
        }
        let info = results[keys.len() * 2]
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let offset = replication_offset(&info).ok_or_else(|| refused("INFO replication", &exec))?;
        let mut copied = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let dump = results[2 * i].as_bytes().map(Bytes::copy_from_slice);
            let pttl = match &results[2 * i + 1] {
                Frame::Integer(ms) => *ms,
                other => return Err(refused("PTTL", other)),
            };
            let name = self.source_name(key)?;
            let commands = self.restore_commands(key, &name, dump, pttl)?;
            copied.push((key.clone(), commands));
        }
        Ok(Copied {
            offset,
            keys: copied,
        })
    }

    /// What makes the target's `key` equal to a source value `dump` (none: the key
    /// does not exist) with `pttl` milliseconds left (negative: no expiry).
    /// `source_name`: the key's name on the source (the rules judge it).
    fn restore_commands(
        &self,
        key: &Bytes,
        source_name: &[u8],
        dump: Option<Bytes>,
        pttl: i64,
    ) -> Result<Vec<Vec<Bytes>>, ApplyError> {
        let delete = || Ok(vec![vec![Bytes::from_static(b"DEL"), key.clone()]]);
        let Some(payload) = dump else {
            return delete();
        };
        let kind = crate::rdb::dump::payload_kind(&payload);
        if kind.is_some_and(|kind| !self.filter.types.keeps(kind)) {
            return delete(); // of a type the task drops: absent on the target
        }
        let payload = if kind == Some(Kind::Hash) && self.filter.hash_fields.applies_to(source_name)
        {
            match self.without_dropped_fields(key, source_name, &payload)? {
                Some(payload) => payload,
                None => return delete(),
            }
        } else {
            self.readable_payload(key, payload)?
        };
        let ttl = if pttl > 0 {
            pttl.saturating_add(self.filter.extend_ttl_ms())
        } else {
            0
        };
        let restore = vec![
            Bytes::from_static(b"RESTORE"),
            key.clone(),
            Bytes::from(ttl.to_string()),
            payload,
            Bytes::from_static(b"REPLACE"),
        ];
        Ok(match self.filter.ttl_rule.rewrite(&restore, unix_ms()) {
            TtlRewrite::Into(commands) => commands,
            TtlRewrite::Unchanged | TtlRewrite::Drop => vec![restore],
        })
    }

    /// A hash payload without the fields `--drop-hash-field` drops, for the target's
    /// version (`None`: no field is left, the hash does not exist).
    fn without_dropped_fields(
        &self,
        key: &Bytes,
        source_name: &[u8],
        payload: &[u8],
    ) -> Result<Option<Bytes>, ApplyError> {
        let unwritable = |detail: String| {
            ApplyError::Cluster(format!(
                "copying {:?} from the source for a cross-slot command: {detail}",
                String::from_utf8_lossy(key)
            ))
        };
        let mut dump = decode_dump(payload, &DumpOptions::default())
            .map_err(|e| unwritable(format!("its DUMP payload does not decode: {e}")))?;
        if let Value::Hash(fields) = &mut dump.value {
            fields.retain(|f| !self.filter.hash_fields.drops(source_name, &f.field));
            if fields.is_empty() {
                return Ok(None);
            }
        }
        let encoded = encode_dump(&dump.value, self.target_rdb_version).map_err(|e| {
            unwritable(format!(
                "the target (RDB version {}) cannot hold it: {e}",
                self.target_rdb_version
            ))
        })?;
        Ok(Some(Bytes::from(encoded)))
    }

    /// The payload as is when the target reads its RDB version, else re-encoded.
    fn readable_payload(&self, key: &Bytes, payload: Bytes) -> Result<Bytes, ApplyError> {
        match crate::rdb::dump::readable_by(&payload, self.target_rdb_version) {
            Ok(None) => Ok(payload),
            Ok(Some(encoded)) => Ok(Bytes::from(encoded)),
            Err(e) => Err(ApplyError::Cluster(format!(
                "copying {:?} from the source for a cross-slot command: the target (RDB version {}) cannot restore its DUMP payload: {e}",
                String::from_utf8_lossy(key),
                self.target_rdb_version
            ))),
        }
    }
}

/// `master_repl_offset` in an `INFO replication` text.
fn replication_offset(info: &str) -> Option<i64> {
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_comes_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nmaster_repl_offset:12345\r\n";
        assert_eq!(replication_offset(info), Some(12345));
        assert_eq!(replication_offset("role:master\r\n"), None);
    }
}
