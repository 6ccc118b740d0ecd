//! Removing what a task owns from the target before a full resync over stale data
//! (and for a cluster source shard's FLUSHALL): the filter decides the scope
//! ([`crate::filter::ClearScope`]), the target acts on it here.
//!
//! With key rules every key is found by SCAN and asked of the filter's
//! `owns_key`, so tasks sharing a target (fan-in by database or by prefix) never
//! remove each other's keys. On a cluster target every primary is scanned
//! (database 0: a cluster has no other) and its keys unlinked one per command (a
//! multi-key command must stay in one slot).
//!
//! Never: remove a key the filter does not own; flush more than the scope says.

use bytes::Bytes;

use crate::conn::{ApplyError, Conn};
use crate::filter::ClearScope;
use crate::resp::Frame;
use crate::target::Target;

impl Target {
    /// Removes what `scope` covers; `owns_key(db, key)` says which keys found by SCAN
    /// in a database are the task's. Returns how many keys were unlinked one by one (0 after a flush).
    /// Leaves database 0 selected.
    pub async fn clear(
        &mut self,
        scope: &ClearScope,
        owns_key: impl Fn(u32, &[u8]) -> bool,
    ) -> Result<u64, ApplyError> {
        match scope {
            ClearScope::Everything => {
                self.write(&[b"FLUSHALL".as_slice()]).await?;
                self.drain().await?;
                Ok(0)
            }
            ClearScope::Databases(dbs) => {
                for db in dbs {
                    self.select(*db).await?;
                    self.write(&[b"FLUSHDB".as_slice()]).await?;
                }
                self.select(0).await?;
                self.drain().await?;
                Ok(0)
            }
            ClearScope::Keys {
                dbs,
                patterns,
                types,
            } => {
                let scans = scans(patterns, types.as_deref());
                match self {
                    Target::Standalone(_) => {
                        self.clear_keys_standalone(dbs.as_deref(), &scans, &owns_key)
                            .await
                    }
                    Target::Cluster(_) => self.clear_keys_cluster(&scans, &owns_key).await,
                }
            }
        }
    }

    async fn clear_keys_cluster(
        &mut self,
        patterns: &[Scan<'_>],
        owns_key: &impl Fn(u32, &[u8]) -> bool,
    ) -> Result<u64, ApplyError> {
        // Everything the router holds goes first: it may touch the same keys.
        self.drain().await?;
        let mut unlinked = 0;
        for node in self.nodes_mut() {
            for pattern in patterns {
                unlinked += unlink_owned(node, 0, pattern, true, owns_key).await?;
            }
            node.drain().await?;
        }
        if let Target::Cluster(cluster) = self {
            cluster.forget_copies().await?;
        }
        self.drain().await?;
        Ok(unlinked)
    }

    async fn clear_keys_standalone(
        &mut self,
        dbs: Option<&[u32]>,
        patterns: &[Scan<'_>],
        owns_key: &impl Fn(u32, &[u8]) -> bool,
    ) -> Result<u64, ApplyError> {
        let dbs = match dbs {
            Some(dbs) => dbs.to_vec(),
            None => self.keyspace_dbs().await?,
        };
        let mut unlinked = 0;
        for db in dbs {
            self.select(db).await?;
            for node in self.nodes_mut() {
                for pattern in patterns {
                    unlinked += unlink_owned(node, db, pattern, false, owns_key).await?;
                }
            }
        }
        self.select(0).await?;
        self.drain().await?;
        Ok(unlinked)
    }

    /// The databases of the target that hold keys (`INFO keyspace`).
    pub(crate) async fn keyspace_dbs(&mut self) -> Result<Vec<u32>, ApplyError> {
        let info = self.query(&[b"INFO".as_slice(), b"keyspace"]).await?;
        Ok(keyspace_dbs_of(&info))
    }
}

/// The databases an `INFO keyspace` reply lists.
fn keyspace_dbs_of(info: &Frame) -> Vec<u32> {
    let text = info
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect()
}

/// One SCAN of the clear: a MATCH pattern and, with type rules, a TYPE.
struct Scan<'a> {
    pattern: &'a [u8],
    kind: Option<&'static str>,
}

/// Every pattern, once per kept type (once without type rules).
fn scans<'a>(patterns: &'a [Vec<u8>], types: Option<&[&'static str]>) -> Vec<Scan<'a>> {
    let kinds: Vec<Option<&'static str>> = match types {
        Some(types) => types.iter().map(|t| Some(*t)).collect(),
        None => vec![None],
    };
    patterns
        .iter()
        .flat_map(|p| {
            kinds.iter().map(move |kind| Scan {
                pattern: p,
                kind: *kind,
            })
        })
        .collect()
}

/// SCANs `node`'s selected database for `scan` and UNLINKs the keys the task
/// owns: in one command per SCAN batch, or one per key on a cluster node.
/// Returns how many.
async fn unlink_owned(
    node: &mut Conn,
    db: u32,
    scan: &Scan<'_>,
    one_per_command: bool,
    owns_key: &impl Fn(u32, &[u8]) -> bool,
) -> Result<u64, ApplyError> {
    let mut unlinked = 0;
    let mut cursor = b"0".to_vec();
    loop {
        let mut argv: Vec<&[u8]> =
            vec![b"SCAN", &cursor, b"MATCH", scan.pattern, b"COUNT", b"1000"];
        if let Some(kind) = scan.kind {
            argv.extend([b"TYPE".as_slice(), kind.as_bytes()]);
        }
        let reply = node.query(&argv).await?;
        let (next, keys) = scan_reply(reply);
        let owned: Vec<Bytes> = keys.into_iter().filter(|k| owns_key(db, k)).collect();
        unlinked += owned.len() as u64;
        if one_per_command {
            for key in &owned {
                node.push(&[b"UNLINK".as_slice(), key], None).await?;
            }
        } else if !owned.is_empty() {
            let mut argv: Vec<Bytes> = vec![Bytes::from_static(b"UNLINK")];
            argv.extend(owned);
            node.push(&argv, None).await?;
        }
        match next {
            Some(next) if next != b"0" => cursor = next,
            _ => return Ok(unlinked),
        }
    }
}

/// A SCAN reply: the next cursor (none when the reply is not one) and the keys.
pub(crate) fn scan_reply(reply: Frame) -> (Option<Vec<u8>>, Vec<Bytes>) {
    let Frame::Array(mut parts) = reply else {
        return (None, Vec::new());
    };
    let keys = match parts.pop() {
        Some(Frame::Array(keys)) => keys
            .into_iter()
            .filter_map(|k| k.as_bytes().map(Bytes::copy_from_slice))
            .collect(),
        _ => Vec::new(),
    };
    let cursor = parts.pop().and_then(|c| c.as_bytes().map(<[u8]>::to_vec));
    (cursor, keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyspace_and_scan_replies_are_read() {
        let info = Frame::Bulk(Bytes::from_static(
            b"# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb7:keys=1,expires=0,avg_ttl=0\r\n",
        ));
        assert_eq!(keyspace_dbs_of(&info), vec![0, 7]);
        let reply = Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"17")),
            Frame::Array(vec![Frame::Bulk(Bytes::from_static(b"a"))]),
        ]);
        assert_eq!(
            scan_reply(reply),
            (Some(b"17".to_vec()), vec![Bytes::from_static(b"a")])
        );
        assert_eq!(scan_reply(Frame::NullBulk), (None, Vec::new()));
    }
}
