//! Settling the full copy's TTL race guard (see [`crate::load`], "The TTL race"):
//! once the target has applied the stream past the source offset taken after the
//! copy, every key of the task that still carries a *guard expiry*
//! (`GUARD_BASE_MS + t`) gets its real expiry `t` back.
//!
//! # Found by what is on the target, not by a list
//! The stream moves expiries between names and databases: RENAME / RENAMENX carry
//! it to the new name, MOVE and COPY ... DB to another database, COPY to a second
//! key, SWAPDB swaps whole databases, a slot migration of a cluster target moves
//! keys between primaries, a restart of lockstep forgets whatever it held in
//! memory. A list of the names the copy guarded misses all of these (issue 14: 300
//! of 300 renamed keys kept an expiry in the year 3000). The guard encodes the real
//! expiry, so the settle needs no list: it SCANs the task's scope on the target
//! and sets every key it finds in the guard range back to `expiry - GUARD_BASE_MS`.
//!
//! - **Scope**: the target databases that hold keys and that the task writes
//!   (`Filter::owned_target_dbs` of `Target::keyspace_dbs`), the SCAN patterns of its key prefixes, and
//!   `Filter::owns_key` (prefix rules, lockstep's own keys, a cluster source
//!   shard's slots) for every key found: keys of other tasks sharing the target are
//!   never touched. On a cluster target every primary is scanned (database 0).
//! - **The guard range**: `GUARD_BASE_MS ..= GUARD_BASE_MS + guard_until`, where
//!   `guard_until` is the copy's end plus `ttl_guard` (no guard encodes a later
//!   real expiry): a user key expiring after the year 3056 is left alone. (One that
//!   expires between 3000 and then is indistinguishable from a guard.) The TTL
//!   extension is inside `t` already: the copy guarded the extended expiry.
//! - **Atomic with the stream**: the whole pass runs between two target
//!   transactions of the stream and nothing of the stream is sent meanwhile, so a
//!   key cannot be renamed under the SCAN by lockstep. One Lua script per SCAN
//!   batch (`SCAN` + `PEXPIRETIME` on 7.0+, `PTTL` + `TIME` on 6.2) returns only the
//!   guarded keys; each owned one gets `PEXPIREAT`, pipelined.
//! - **A cluster target that is migrating slots** (a node's own line in `CLUSTER
//!   NODES` shows `[slot->-id]` or `[slot-<-id]`, before or after the pass) may
//!   have moved a key past the SCAN: the pass is not trusted, the marker stays and
//!   the settle is tried again [`RETRY_AFTER`] later.
//! - **Persisted**: right after a copy that guarded keys, the target gets a marker
//!   key `LOCKSTEP_TTL_GUARDS[:<task>]` = `<offset after the copy> <guard_until>`
//!   (database 0, written through the same writer, so it is lost exactly when the
//!   copy's data is); the settle deletes it last. Every session reads it first, so
//!   a restart of lockstep (or a stop) between the copy and the settle still
//!   settles, after a partial resync as after a new full copy (whose own marker
//!   replaces it; a full resync that clears the target clears the old guards too).
//!
//! Cost: one script per 1000 keys of the scope, once per full copy that guarded a
//! key. Measured (release build, `sync/tests/ttl_guard_settle.rs`, ignored test):
//! 500k keys of which 10% guarded, one pass 1.4 s on a 7.0 target, 2.0 s on 6.2,
//! 0.85 s of the target's CPU; the stream waits meanwhile.

use std::time::{Duration, Instant};

use crate::clock::unix_ms;

use bytes::Bytes;

use crate::conn::{is_redirection, ApplyError, Conn};
use crate::filter::Filter;
use crate::load::GUARD_BASE_MS;
use crate::resp::Frame;
use crate::target::Target;

/// Name of the marker key (a named task appends `:<task name>`), in database 0.
pub const TTL_GUARD_KEY: &[u8] = b"LOCKSTEP_TTL_GUARDS";

/// Keys per SCAN step (one script call).
const SCAN_COUNT: &str = "1000";

/// How long an untrusted pass (a cluster target migrating slots) waits to retry.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// One SCAN step; returns `{next cursor, {key, expiry, key, expiry, ...}, keys
/// scanned}`, the keys being those whose expiry is in ARGV[4]..=ARGV[5]. ARGV[6] = '1': PEXPIRETIME (7.0+),
/// else PTTL + TIME. `%.0f` prints the expiry whole (Lua's tostring would round it).
const FIND_SCRIPT: &str = "local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3]) \
local low, high, exact = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6] == '1' \
local now = 0 \
if not exact then local t = redis.call('TIME') now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end \
local found = {} \
for _, k in ipairs(r[2]) do \
  local at = -1 \
  if exact then at = redis.call('PEXPIRETIME', k) \
  else local p = redis.call('PTTL', k) if p >= 0 then at = now + p end end \
  if at >= low and at <= high then found[#found + 1] = k found[#found + 1] = string.format('%.0f', at) end \
end \
return {r[1], found, #r[2]}";

/// The next SCAN cursor, the guarded keys found with their expiries, keys scanned.
type FindReply = (Vec<u8>, Vec<(Bytes, i64)>, u64);

/// A settle the target still owes: after which source offset, for which guards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingSettle {
    /// The source offset the target must have applied first.
    pub after_offset: i64,
    /// No guard encodes a real expiry (unix ms) later than this.
    pub guard_until_ms: i64,
    /// An untrusted pass waits until then to try again.
    not_before: Option<Instant>,
}

impl PendingSettle {
    /// The settle of a copy that just ended, after source offset `after_offset`.
    pub fn after_copy(after_offset: i64, ttl_guard: Duration) -> PendingSettle {
        PendingSettle {
            after_offset,
            guard_until_ms: unix_ms().saturating_add(ttl_guard.as_millis() as i64),
            not_before: None,
        }
    }

    /// Whether the settle may run now that the target has applied `applied`.
    pub fn is_due(&self, applied: i64) -> bool {
        applied >= self.after_offset && self.not_before.is_none_or(|at| Instant::now() >= at)
    }
}

/// What one settle pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Keys of the task found with a guard expiry and given their real one.
    pub keys: u64,
    /// Keys of the task's scope the pass looked at (every key SCAN returned).
    pub scanned: u64,
}

/// Settles one task's guards on its target.
pub struct Settler<'a> {
    pub filter: &'a Filter,
    /// The marker key (see the module doc).
    pub marker_key: Vec<u8>,
    /// The target answers PEXPIRETIME (7.0+).
    pub pexpiretime: bool,
}

impl Settler<'_> {
    /// Reads the marker a copy left (none: nothing to settle). A value that does not
    /// parse is settled at once, with the widest guard range a copy could have left.
    pub async fn read_marker(
        &self,
        writer: &mut Target,
        ttl_guard: Duration,
    ) -> Result<Option<PendingSettle>, ApplyError> {
        let Some(text) = self.marker_value(writer).await? else {
            return Ok(None);
        };
        let mut words = text.split_whitespace().map(str::parse::<i64>);
        Ok(Some(match (words.next(), words.next()) {
            (Some(Ok(after_offset)), Some(Ok(guard_until_ms))) => PendingSettle {
                after_offset,
                guard_until_ms,
                not_before: None,
            },
            _ => {
                tracing::warn!(
                    "the target's {} key does not hold `<offset> <ms>` but {text:?}: settling the TTL guards now",
                    lossy(&self.marker_key)
                );
                PendingSettle::after_copy(0, ttl_guard)
            }
        }))
    }

    /// The marker's text, if the target holds one. On a cluster target every primary
    /// is asked (the one owning the key's slot answers; the others redirect).
    async fn marker_value(&self, writer: &mut Target) -> Result<Option<String>, ApplyError> {
        let get: [&[u8]; 2] = [b"GET", &self.marker_key];
        // Database 0 on a standalone target; every primary of a cluster.
        writer.select(0).await?;
        writer.drain().await?;
        let mut replies = Vec::new();
        for node in writer.nodes_mut() {
            replies.push(node.query(&get).await?);
        }
        let mut value = None;
        for reply in replies {
            match reply.as_error() {
                Some(text) if is_redirection(&lossy(text)) => {}
                Some(text) => return Err(self.rejected("GET", text)),
                None => {
                    value = value.or(reply.as_bytes().map(lossy));
                }
            }
        }
        Ok(value)
    }

    /// Writes the marker for `pending` (database 0 selected afterwards).
    pub async fn write_marker(
        &self,
        writer: &mut Target,
        pending: &PendingSettle,
    ) -> Result<(), ApplyError> {
        let value = format!("{} {}", pending.after_offset, pending.guard_until_ms);
        writer.select(0).await?;
        writer
            .write(&[b"SET".as_slice(), &self.marker_key, value.as_bytes()])
            .await?;
        writer.drain().await
    }

    /// One settle pass (see the module doc); leaves `current_db` selected. `None`
    /// when the pass cannot be trusted (a cluster target migrating slots): `pending`
    /// then waits [`RETRY_AFTER`] and the marker stays.
    pub async fn settle(
        &self,
        writer: &mut Target,
        pending: &mut PendingSettle,
        current_db: u32,
    ) -> Result<Option<Settled>, ApplyError> {
        let range = (
            GUARD_BASE_MS,
            GUARD_BASE_MS.saturating_add(pending.guard_until_ms.max(0)),
        );
        let settled = if writer.is_cluster() {
            self.settle_cluster(writer, range).await?
        } else {
            Some(self.settle_standalone(writer, range).await?)
        };
        if settled.is_none() {
            pending.not_before = Some(Instant::now() + RETRY_AFTER);
            tracing::info!(
                "the target cluster is migrating slots: the TTL guards are settled once it is not"
            );
        }
        writer.select(0).await?;
        if settled.is_some() {
            writer.write(&[b"DEL".as_slice(), &self.marker_key]).await?;
        }
        writer.select(current_db).await?;
        writer.drain().await?;
        Ok(settled)
    }

    async fn settle_standalone(
        &self,
        writer: &mut Target,
        range: (i64, i64),
    ) -> Result<Settled, ApplyError> {
        let mut total = Settled::default();
        let holding_keys = writer.keyspace_dbs().await?;
        for db in self.filter.owned_target_dbs(holding_keys) {
            writer.select(db).await?;
            for pattern in self.filter.scan_patterns() {
                for node in writer.nodes_mut() {
                    total = add(total, self.settle_scan(node, db, &pattern, range).await?);
                }
            }
        }
        Ok(total)
    }

    async fn settle_cluster(
        &self,
        writer: &mut Target,
        range: (i64, i64),
    ) -> Result<Option<Settled>, ApplyError> {
        writer.drain().await?;
        let mut total = Settled::default();
        for node in writer.nodes_mut() {
            if is_migrating(node).await? {
                return Ok(None);
            }
            for pattern in self.filter.scan_patterns() {
                total = add(total, self.settle_scan(node, 0, &pattern, range).await?);
            }
            node.drain().await?;
            if is_migrating(node).await? {
                return Ok(None);
            }
        }
        Ok(Some(total))
    }

    /// SCANs the selected database of `node` (a standalone writer or one primary's)
    /// (database `db`) for `pattern` and gives each owned guarded key its real expiry.
    async fn settle_scan(
        &self,
        node: &mut Conn,
        db: u32,
        pattern: &[u8],
        (low, high): (i64, i64),
    ) -> Result<Settled, ApplyError> {
        let (low, high) = (low.to_string(), high.to_string());
        let exact: &[u8] = if self.pexpiretime { b"1" } else { b"0" };
        let mut settled = Settled::default();
        let mut cursor = b"0".to_vec();
        loop {
            let argv: [&[u8]; 9] = [
                b"EVAL",
                FIND_SCRIPT.as_bytes(),
                b"0",
                &cursor,
                pattern,
                SCAN_COUNT.as_bytes(),
                low.as_bytes(),
                high.as_bytes(),
                exact,
            ];
            let reply = node.query(&argv).await?;
            let (next, found, scanned) = self.find_reply(reply)?;
            settled.scanned += scanned;
            for (key, expiry) in found {
                if !self.filter.owns_key_in(db, &key) {
                    continue;
                }
                let real = (expiry - GUARD_BASE_MS).to_string();
                node.push(&[b"PEXPIREAT".as_slice(), &key, real.as_bytes()], None)
                    .await?;
                settled.keys += 1;
            }
            if next == b"0" {
                return Ok(settled);
            }
            cursor = next;
        }
    }

    /// The find script's reply: the next cursor, and the guarded keys with expiries.
    /// A reply of another shape is an error: a parse failure settles nothing.
    fn find_reply(&self, reply: Frame) -> Result<FindReply, ApplyError> {
        if let Some(text) = reply.as_error() {
            return Err(self.rejected("EVAL", text));
        }
        let malformed = || {
            self.rejected(
                "EVAL",
                b"an answer that is not {cursor, {key, expiry...}, count}",
            )
        };
        let Frame::Array(mut parts) = reply else {
            return Err(malformed());
        };
        let (Some(Frame::Integer(scanned)), Some(Frame::Array(pairs)), Some(cursor)) =
            (parts.pop(), parts.pop(), parts.pop())
        else {
            return Err(malformed());
        };
        let cursor = cursor.as_bytes().ok_or_else(malformed)?.to_vec();
        let mut found = Vec::with_capacity(pairs.len() / 2);
        for pair in pairs.chunks(2) {
            let key = pair.first().and_then(Frame::as_bytes);
            let expiry = pair
                .get(1)
                .and_then(Frame::as_bytes)
                .and_then(|b| std::str::from_utf8(b).ok()?.parse::<i64>().ok());
            match (key, expiry) {
                (Some(key), Some(expiry)) => found.push((Bytes::copy_from_slice(key), expiry)),
                _ => return Err(malformed()),
            }
        }
        Ok((cursor, found, scanned.max(0) as u64))
    }

    fn rejected(&self, command: &str, reply: &[u8]) -> ApplyError {
        ApplyError::Rejected {
            endpoint: "target".into(),
            command: command.into(),
            key: lossy(&self.marker_key),
            reply: lossy(reply),
            hint: " (settling the full copy's TTL guards)",
        }
    }
}

/// Does this primary's own line of `CLUSTER NODES` show a slot migrating or importing?
async fn is_migrating(node: &mut Conn) -> Result<bool, ApplyError> {
    let reply = node.query(&[b"CLUSTER".as_slice(), b"NODES"]).await?;
    let text = reply.as_bytes().map(lossy).unwrap_or_default();
    Ok(text
        .lines()
        .filter(|line| line.contains("myself"))
        .any(|line| line.contains("->-") || line.contains("-<-")))
}

fn add(a: Settled, b: Settled) -> Settled {
    Settled {
        keys: a.keys + b.keys,
        scanned: a.scanned + b.scanned,
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(text.as_bytes()))
    }

    fn settler(filter: &Filter) -> Settler<'_> {
        Settler {
            filter,
            marker_key: TTL_GUARD_KEY.to_vec(),
            pexpiretime: true,
        }
    }

    #[test]
    fn the_find_reply_is_read_or_refused_whole() {
        let filter = Filter::default();
        let settler = settler(&filter);
        let good = Frame::Array(vec![
            bulk("17"),
            Frame::Array(vec![bulk("a"), bulk("32503690000000")]),
            Frame::Integer(1000),
        ]);
        let (cursor, found, scanned) = settler.find_reply(good).expect("well formed");
        assert_eq!(cursor, b"17");
        assert_eq!(found, vec![(Bytes::from_static(b"a"), 32_503_690_000_000)]);
        assert_eq!(scanned, 1000);
        // Anything else settles nothing: an expiry that is not a number, a key
        // without its expiry, an error, another shape.
        for bad in [
            Frame::Array(vec![
                bulk("0"),
                Frame::Array(vec![bulk("a"), bulk("3.25e13")]),
                Frame::Integer(1),
            ]),
            Frame::Array(vec![
                bulk("0"),
                Frame::Array(vec![bulk("a")]),
                Frame::Integer(1),
            ]),
            Frame::Error(Bytes::from_static(b"ERR unknown command 'PEXPIRETIME'")),
            Frame::Array(vec![bulk("0"), Frame::Array(vec![])]),
            bulk("0"),
        ] {
            assert!(
                settler.find_reply(bad.clone()).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn a_settle_is_due_once_the_copys_end_is_applied() {
        let pending = PendingSettle::after_copy(1000, Duration::from_secs(3600));
        assert!(!pending.is_due(999));
        assert!(pending.is_due(1000));
        let mut deferred = pending.clone();
        deferred.not_before = Some(Instant::now() + Duration::from_secs(60));
        assert!(
            !deferred.is_due(2000),
            "an untrusted pass waits before retrying"
        );
        let until = pending.guard_until_ms - unix_ms();
        assert!((3_590_000..=3_600_000).contains(&until), "{until}");
    }
}
