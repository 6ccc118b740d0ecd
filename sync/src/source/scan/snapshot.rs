//! The scan source's snapshot: every key of the databases in scope, found by
//! `SCAN` and read by `DUMP` + `PTTL` ([`super::read`]), written as the RDB stream
//! the engine's parser already reads, so the full copy (filters, rules, routes,
//! re-encoding for an older target, the loader's limits) is the PSYNC copy's own.
//!
//! # The RDB written
//! A header `REDIS<version>` (the source's RDB version, from `INFO server`), then
//! per database `SELECTDB`, and per key `EXPIRETIME_MS` when it has a TTL, the
//! DUMP payload's type byte, the key as an RDB string and the payload's body
//! without its trailer (2-byte RDB version and CRC64: the body of a DUMP and of an
//! RDB record are one format). The source's functions come first, as `FUNCTION
//! DUMP` gives them (RDB records too). `EOF` and a zero checksum ("not computed", as a
//! server with `rdbchecksum no` writes) end it.
//!
//! A key `SCAN` returns twice (it may, while the source rehashes) is written twice:
//! the loader's `RESTORE ... REPLACE` makes the second a rewrite. A key gone
//! between `SCAN` and `DUMP` is not written; a key that changes after its read is
//! read again by the change stream (its notification arrived after the
//! subscription began, which precedes the first `SCAN`).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::conn::Conn;
use crate::rdb::writer::write_len;
use crate::rdb::writer::write_string;
use crate::resp::Frame;
use crate::source::Snapshot;

use super::changes::Shared;
use super::read::{KeyRead, KeyState, ReadPlan};
use super::ScanError;

/// Bytes of RDB gathered before a piece is handed to the engine.
pub const PIECE_BYTES: usize = 256 << 10;
/// Keys asked of each `SCAN` (its `COUNT` hint).
pub const SCAN_COUNT: usize = 512;

/// One pass over the databases in scope.
pub struct ScanSnapshot {
    /// Databases not begun yet.
    dbs: VecDeque<u32>,
    /// The database being scanned.
    current: Option<Scanning>,
    /// The header is written first, `EOF` last.
    header: Option<u16>,
    finished: bool,
    /// The source is a cluster node (a transaction holds one slot's keys).
    cluster: bool,
    /// Keys written so far.
    pub keys: u64,
}

/// Where the scan of one database stands: the cursor of its next `SCAN` (none
/// once `SCAN` answered cursor 0) and the keys found and not yet read.
struct Scanning {
    db: u32,
    cursor: Option<Bytes>,
    found: Vec<(u32, Bytes)>,
}

impl Snapshot for ScanSnapshot {
    fn bytes_total(&self) -> Option<u64> {
        None
    }
}

impl ScanSnapshot {
    /// A pass over `dbs`, written as an RDB of `rdb_version`.
    pub fn new(dbs: Vec<u32>, rdb_version: u16, cluster: bool) -> ScanSnapshot {
        ScanSnapshot {
            dbs: dbs.into(),
            current: None,
            header: Some(rdb_version),
            finished: false,
            cluster,
            keys: 0,
        }
    }

    /// The next piece of RDB bytes, `None` after `EOF`.
    pub async fn next_piece(
        &mut self,
        conn: &mut Conn,
        endpoint: &str,
        selected: &mut u32,
        shared: &Shared,
    ) -> Result<Option<Bytes>, ScanError> {
        if self.finished {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(PIECE_BYTES + (64 << 10));
        if let Some(version) = self.header.take() {
            out.extend_from_slice(format!("REDIS{version:04}").as_bytes());
            out.extend_from_slice(&functions(conn).await?);
        }
        while out.len() < PIECE_BYTES {
            let Some(scanning) = self.current.take() else {
                match self.dbs.pop_front() {
                    Some(db) => {
                        out.push(0xfe); // SELECTDB
                        write_len(&mut out, u64::from(db));
                        self.current = Some(Scanning {
                            db,
                            cursor: Some(Bytes::from_static(b"0")),
                            found: Vec::new(),
                        });
                        continue;
                    }
                    None => {
                        out.push(0xff); // EOF
                        out.extend_from_slice(&[0; 8]);
                        self.finished = true;
                        break;
                    }
                }
            };
            if scanning.cursor.is_none() && scanning.found.is_empty() {
                continue; // this database is done
            }
            let (reads, next) =
                read_and_scan(conn, endpoint, selected, &scanning, self.cluster).await?;
            for read in reads {
                shared.saw(&read);
                if write_record(&mut out, &read, endpoint)? {
                    self.keys += 1;
                }
            }
            self.current = Some(next);
        }
        Ok(Some(Bytes::from(out)))
    }
}

/// One round trip: the keys `scanning` found are read, and its next `SCAN` is
/// sent behind them (the source answers both in one go, and the next batch is
/// found while this one is written). Returns the reads and where the scan stands.
async fn read_and_scan(
    conn: &mut Conn,
    endpoint: &str,
    selected: &mut u32,
    scanning: &Scanning,
    cluster: bool,
) -> Result<(Vec<KeyRead>, Scanning), ScanError> {
    let mut commands = Vec::with_capacity(scanning.found.len() * 2 + 8);
    let plan = ReadPlan::push_commands(&scanning.found, selected, cluster, &mut commands);
    let select = *selected != scanning.db && scanning.cursor.is_some();
    if select {
        commands.push(vec![
            Bytes::from_static(b"SELECT"),
            Bytes::from(scanning.db.to_string()),
        ]);
        *selected = scanning.db;
    }
    if let Some(cursor) = &scanning.cursor {
        commands.push(vec![
            Bytes::from_static(b"SCAN"),
            cursor.clone(),
            Bytes::from_static(b"COUNT"),
            Bytes::from(SCAN_COUNT.to_string()),
        ]);
    }
    let sent_at = crate::clock::unix_ms();
    let replies = conn.query_pipelined(&commands).await?;
    let mut replies = replies.into_iter();
    let reads = plan.answers(&mut replies, endpoint, sent_at)?;
    let refused = |command: String, reply: &[u8]| ScanError::Refused {
        endpoint: endpoint.to_owned(),
        command,
        reply: String::from_utf8_lossy(reply).into_owned(),
    };
    if select {
        if let Some(Frame::Error(e)) = replies.next() {
            return Err(refused(format!("SELECT {}", scanning.db), &e));
        }
    }
    let mut next = Scanning {
        db: scanning.db,
        cursor: None,
        found: Vec::new(),
    };
    if scanning.cursor.is_some() {
        let answer = replies.next().unwrap_or(Frame::Null);
        let (cursor, keys) = parse_scan(answer).map_err(|what| match what {
            Err(reply) => refused("SCAN".into(), reply.as_bytes()),
            Ok(what) => ScanError::Protocol {
                endpoint: endpoint.to_owned(),
                what,
            },
        })?;
        next.cursor = (cursor.as_ref() != b"0").then_some(cursor);
        next.found = keys.into_iter().map(|k| (scanning.db, k)).collect();
    }
    Ok((reads, next))
}

/// The source's functions (7.0+) as RDB records: `FUNCTION DUMP`'s payload is
/// the libraries' `FUNCTION2` records, then its trailer. Nothing on a server
/// without functions or without the command.
async fn functions(conn: &mut Conn) -> Result<Vec<u8>, ScanError> {
    match conn.query(&[b"FUNCTION".as_slice(), b"DUMP"]).await? {
        Frame::Bulk(payload) if payload.len() > 10 => Ok(payload[..payload.len() - 10].to_vec()),
        _ => Ok(Vec::new()),
    }
}

/// `[cursor, [key...]]`; an error reply as `Err(Err(reply))`, anything else as
/// `Err(Ok(what))`.
fn parse_scan(answer: Frame) -> Result<(Bytes, Vec<Bytes>), Result<String, String>> {
    let items = match answer {
        Frame::Array(items) if items.len() == 2 => items,
        Frame::Error(e) => return Err(Err(String::from_utf8_lossy(&e).into_owned())),
        other => return Err(Ok(format!("{other:?} as the answer to SCAN"))),
    };
    let mut items = items.into_iter();
    let cursor = match items.next() {
        Some(Frame::Bulk(cursor)) => cursor,
        other => return Err(Ok(format!("{other:?} as SCAN's cursor"))),
    };
    let keys = match items.next() {
        Some(Frame::Array(keys)) => keys,
        other => return Err(Ok(format!("{other:?} as SCAN's keys"))),
    };
    let keys = keys
        .into_iter()
        .map(|k| match k {
            Frame::Bulk(k) => Ok(k),
            other => Err(Ok(format!("{other:?} as a key in SCAN's answer"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cursor, keys))
}

/// Writes `read` as an RDB record; false when the key was gone.
fn write_record(out: &mut Vec<u8>, read: &KeyRead, endpoint: &str) -> Result<bool, ScanError> {
    let KeyState::Present {
        payload,
        expire_at_ms,
    } = &read.state
    else {
        return Ok(false);
    };
    if super::read::is_heartbeat(&read.key) {
        return Ok(false); // a heartbeat is never written to the target
    }
    let Some(body_end) = payload.len().checked_sub(10).filter(|&end| end >= 1) else {
        return Err(ScanError::Protocol {
            endpoint: endpoint.to_owned(),
            what: format!(
                "a DUMP payload of {} bytes for {:?} (a payload has a type byte, a body and a 10-byte trailer)",
                payload.len(),
                String::from_utf8_lossy(&read.key)
            ),
        });
    };
    if let Some(at) = expire_at_ms {
        out.push(0xfc); // EXPIRETIME_MS
        out.extend_from_slice(&at.to_le_bytes());
    }
    out.push(payload[0]);
    write_string(out, &read.key);
    out.extend_from_slice(&payload[1..body_end]);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_answer_reads_as_cursor_and_keys() {
        let answer = Frame::Array(vec![
            Frame::bulk("17"),
            Frame::Array(vec![Frame::bulk("a"), Frame::bulk(b"\x00b")]),
        ]);
        let (cursor, keys) = parse_scan(answer).expect("parses");
        assert_eq!(cursor.as_ref(), b"17");
        assert_eq!(keys, [Bytes::from("a"), Bytes::from_static(b"\x00b")]);
        assert!(matches!(
            parse_scan(Frame::Error(Bytes::from("NOPERM"))),
            Err(Err(_))
        ));
        assert!(matches!(parse_scan(Frame::Integer(1)), Err(Ok(_))));
    }

    #[test]
    fn a_record_is_the_payload_body_under_its_key() {
        // DUMP of a string "v" by Redis 7.0: type 0, "v", version 10, a CRC.
        let payload = Bytes::from_static(b"\x00\x01v\x0a\x00\x01\x02\x03\x04\x05\x06\x07\x08");
        let read = KeyRead {
            db: 0,
            key: Bytes::from("k"),
            state: KeyState::Present {
                payload,
                expire_at_ms: Some(0x0102),
            },
        };
        let mut out = Vec::new();
        assert!(write_record(&mut out, &read, "s").expect("writes"));
        assert_eq!(
            out,
            b"\xfc\x02\x01\x00\x00\x00\x00\x00\x00\x00\x01k\x01v".to_vec()
        );
        let short = KeyRead {
            state: KeyState::Present {
                payload: Bytes::from_static(b"\x00short"),
                expire_at_ms: None,
            },
            ..read
        };
        assert!(write_record(&mut Vec::new(), &short, "s").is_err());
    }
}
