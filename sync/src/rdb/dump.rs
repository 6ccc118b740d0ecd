//! DUMP / RESTORE payloads: one object in RDB form with a version and checksum.
//!
//! Layout: object type byte, object body (as in an RDB file, no key), the RDB
//! version as u16 LE, then the CRC64 (u64 LE) of everything before it.
//! `RESTORE` refuses a payload whose version is above its own RDB version.
//!
//! [`decode_dump`] reads a payload into the [`Value`] model (with the same
//! parser code as files). [`encode_dump`] writes a value for a chosen target
//! RDB version, in the simplest encoding that version loads: plain types for
//! strings, lists, sets, zsets and hashes (every version converts them to its
//! own compact encodings on load), type 24 for a hash with field TTLs (RDB
//! 12), and stream listpacks of the newest stream type the version knows.
//!
//! How it fits: the full copy (`load.rs`) re-encodes a value for an older target
//! with [`encode_dump`], and the cluster target's cross-slot path decodes a
//! source's DUMP and encodes it for the target. It must never accept a payload
//! whose checksum does not match, and never encode a value the target version
//! cannot hold exactly: it fails with [`RdbError::Encode`] instead.

use super::crc64::crc64;
use super::error::RdbError;
use super::parser::{Event, ParseOptions, RdbParser};
use super::stream::encode_nodes;
use super::value::{HashField, RdbType, Stream, Value};
use super::writer::{write_len, write_string, write_string_double};
use super::RDB_VERSION_MAX;

/// Options for [`decode_dump`].
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Parser options (limits, module policy). Capture is ignored.
    pub parse: ParseOptions,
}

/// A decoded DUMP payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Dump {
    /// The object type byte.
    pub rdb_type: RdbType,
    /// The RDB version in the trailer.
    pub version: u16,
    /// The value.
    pub value: Value,
}

/// Decodes a DUMP payload, verifying its checksum (a stored 0 is accepted as
/// "checksum disabled", as Redis does).
pub fn decode_dump(payload: &[u8], opts: &DumpOptions) -> Result<Dump, RdbError> {
    if payload.len() < 11 {
        return Err(RdbError::UnexpectedEof {
            offset: payload.len() as u64,
            what: "a DUMP payload (type byte, body, 2-byte version, 8-byte CRC64)",
        });
    }
    let body_end = payload.len() - 10;
    let version = u16::from_le_bytes([payload[body_end], payload[body_end + 1]]);
    let mut crc_bytes = [0u8; 8];
    crc_bytes.copy_from_slice(&payload[body_end + 2..]);
    let expected = u64::from_le_bytes(crc_bytes);
    if expected != 0 {
        let computed = crc64(&payload[..body_end + 2]);
        if computed != expected {
            return Err(RdbError::ChecksumMismatch { expected, computed });
        }
    }
    if version == 0 || version as u32 > RDB_VERSION_MAX {
        return Err(RdbError::UnsupportedVersion {
            version: version as u32,
            max: RDB_VERSION_MAX,
        });
    }
    let rdb_type = RdbType::from_u8(payload[0]).ok_or(RdbError::UnknownType {
        offset: 0,
        byte: payload[0],
    })?;
    let mut parse = opts.parse.clone();
    parse.capture_raw = false;
    parse.verify_checksum = false;
    let body = &payload[1..body_end];
    let mut p = RdbParser::for_object(body, version as u32, rdb_type, parse);
    let mut value = Value::empty(rdb_type.kind());
    loop {
        match p.next_event().map_err(|e| shift_offset(e, 1))? {
            Some(Event::Elements(batch)) => {
                if value.extend(batch).is_err() {
                    return Err(RdbError::Corrupt {
                        offset: 0,
                        what: "DUMP payload",
                        detail: "a batch of another kind than the type byte".into(),
                    });
                }
            }
            Some(Event::KeyEnd { .. }) => break,
            _ => {
                return Err(RdbError::Corrupt {
                    offset: 0,
                    what: "DUMP payload",
                    detail: "unexpected event".into(),
                })
            }
        }
    }
    if !p.at_eof()? {
        return Err(RdbError::Corrupt {
            offset: p.offset() + 1,
            what: "DUMP payload",
            detail: "bytes left after the object".into(),
        });
    }
    Ok(Dump {
        rdb_type,
        version,
        value,
    })
}

/// Offsets from the body parser count from byte 1 of the payload.
fn shift_offset(e: RdbError, by: u64) -> RdbError {
    match e {
        RdbError::UnexpectedEof { offset, what } => RdbError::UnexpectedEof {
            offset: offset + by,
            what,
        },
        RdbError::UnknownType { offset, byte } => RdbError::UnknownType {
            offset: offset + by,
            byte,
        },
        RdbError::Corrupt {
            offset,
            what,
            detail,
        } => RdbError::Corrupt {
            offset: offset + by,
            what,
            detail,
        },
        RdbError::LimitExceeded {
            offset,
            what,
            len,
            limit,
        } => RdbError::LimitExceeded {
            offset: offset + by,
            what,
            len,
            limit,
        },
        other => other,
    }
}

/// The kind of value a DUMP payload holds, from its first byte (the RDB type),
/// without decoding it; `None` for an empty payload or an unknown type.
pub fn payload_kind(payload: &[u8]) -> Option<super::Kind> {
    payload
        .first()
        .and_then(|t| RdbType::from_u8(*t))
        .map(RdbType::kind)
}

/// The RDB version a DUMP payload was written for (its trailer); `None` for a
/// payload too short to have one.
pub fn payload_version(payload: &[u8]) -> Option<u16> {
    let at = payload.len().checked_sub(10)?;
    Some(u16::from_le_bytes([payload[at], payload[at + 1]]))
}

/// `payload` as it is when a server of RDB version `target_version` restores it
/// (its version is not above the target's), else decoded and encoded for that
/// version; fails when the payload does not decode or the version cannot hold
/// the value.
pub fn readable_by(payload: &[u8], target_version: u16) -> Result<Option<Vec<u8>>, RdbError> {
    match payload_version(payload) {
        Some(version) if version != 0 && version <= target_version => Ok(None),
        _ => {
            let dump = decode_dump(payload, &DumpOptions::default())?;
            encode_dump(&dump.value, target_version).map(Some)
        }
    }
}

/// Wraps a raw object (type byte + body, e.g. captured from an RDB) as a DUMP
/// payload of `version`.
pub fn wrap_raw(raw_object: &[u8], version: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw_object.len() + 10);
    out.extend_from_slice(raw_object);
    finish(&mut out, version);
    out
}

fn finish(out: &mut Vec<u8>, version: u16) {
    out.extend_from_slice(&version.to_le_bytes());
    let crc = crc64(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Encodes `value` as a DUMP payload that a server of RDB version
/// `target_version` (or newer) restores. Fails when the version cannot hold
/// the value (a stream below 9, hash field TTLs below 12, a module value).
pub fn encode_dump(value: &Value, target_version: u16) -> Result<Vec<u8>, RdbError> {
    if target_version == 0 || target_version as u32 > RDB_VERSION_MAX {
        return Err(RdbError::Encode {
            what: "DUMP payload",
            detail: format!("target RDB version {target_version} is not 1..={RDB_VERSION_MAX}"),
        });
    }
    let mut out = Vec::new();
    encode_object(value, target_version, &mut out)?;
    finish(&mut out, target_version);
    Ok(out)
}

/// Appends the object (type byte + body) for `target_version`.
pub fn encode_object(
    value: &Value,
    target_version: u16,
    out: &mut Vec<u8>,
) -> Result<(), RdbError> {
    match value {
        Value::String(s) => {
            out.push(RdbType::String.as_u8());
            write_string(out, s);
        }
        Value::List(v) => encode_strings(RdbType::List, v, out),
        Value::Set(v) => encode_strings(RdbType::Set, v, out),
        Value::ZSet(v) => encode_zset(v, target_version, out)?,
        Value::Hash(fields) => match fields.iter().filter_map(|f| f.expire_ms).min() {
            None => encode_hash(fields, out),
            Some(min) => encode_hash_ttl(fields, min, target_version, out)?,
        },
        Value::Stream(s) => encode_stream(s, target_version, out)?,
        Value::Module(m) => {
            if target_version < 8 {
                return Err(RdbError::Encode {
                    what: "module value",
                    detail: format!("RDB version {target_version} has no module type"),
                });
            }
            out.push(RdbType::Module2.as_u8());
            write_len(out, m.module_id);
            out.extend_from_slice(&m.raw);
        }
    }
    Ok(())
}

/// A list or set of type `t`, element by element.
fn encode_strings(t: RdbType, v: &[Vec<u8>], out: &mut Vec<u8>) {
    out.push(t.as_u8());
    write_len(out, v.len() as u64);
    for e in v {
        write_string(out, e);
    }
}

/// A zset: binary scores from RDB 8, scores as strings before.
fn encode_zset(
    v: &[(Vec<u8>, f64)],
    target_version: u16,
    out: &mut Vec<u8>,
) -> Result<(), RdbError> {
    let binary = target_version >= 8;
    let t = if binary {
        RdbType::ZSet2
    } else {
        RdbType::ZSet
    };
    out.push(t.as_u8());
    write_len(out, v.len() as u64);
    for (m, score) in v {
        if score.is_nan() {
            return Err(RdbError::Encode {
                what: "zset",
                detail: "a NaN score".into(),
            });
        }
        write_string(out, m);
        if binary {
            out.extend_from_slice(&score.to_le_bytes());
        } else {
            write_string_double(out, *score);
        }
    }
    Ok(())
}

/// A hash with no field TTL.
fn encode_hash(fields: &[HashField], out: &mut Vec<u8>) {
    out.push(RdbType::Hash.as_u8());
    write_len(out, fields.len() as u64);
    for f in fields {
        write_string(out, &f.field);
        write_string(out, &f.value);
    }
}

/// A hash with field TTLs (RDB 12): the min expire, then each field's TTL
/// relative to it (0: no TTL).
fn encode_hash_ttl(
    fields: &[HashField],
    min: u64,
    target_version: u16,
    out: &mut Vec<u8>,
) -> Result<(), RdbError> {
    if target_version < 12 {
        return Err(RdbError::Encode {
            what: "hash with field TTLs",
            detail: format!(
                "RDB version {target_version} has no field TTLs (needs 12, Redis 7.4+)"
            ),
        });
    }
    out.push(RdbType::HashMetadata.as_u8());
    out.extend_from_slice(&min.to_le_bytes());
    write_len(out, fields.len() as u64);
    for f in fields {
        write_len(out, f.expire_ms.map_or(0, |e| e - min + 1));
        write_string(out, &f.field);
        write_string(out, &f.value);
    }
    Ok(())
}

fn encode_stream(s: &Stream, target_version: u16, out: &mut Vec<u8>) -> Result<(), RdbError> {
    let t = match target_version {
        0..=8 => {
            return Err(RdbError::Encode {
                what: "stream",
                detail: format!(
                    "RDB version {target_version} has no streams (needs 9, Redis 5.0+)"
                ),
            })
        }
        9 => RdbType::StreamListpacks,
        10 => RdbType::StreamListpacks2,
        _ => RdbType::StreamListpacks3,
    };
    out.push(t.as_u8());
    let nodes = encode_nodes(&s.entries);
    write_len(out, nodes.len() as u64);
    for (master, lp) in &nodes {
        write_string(out, &master.to_be_bytes());
        write_string(out, lp);
    }
    let m = &s.meta;
    write_len(out, m.length);
    write_len(out, m.last_id.ms);
    write_len(out, m.last_id.seq);
    if t >= RdbType::StreamListpacks2 {
        // A type-15 source lacks these; derive them as Redis does on load.
        let first = m
            .first_id
            .or_else(|| s.entries.first().map(|e| e.id))
            .unwrap_or_default();
        let max_deleted = m.max_deleted_id.unwrap_or_default();
        write_len(out, first.ms);
        write_len(out, first.seq);
        write_len(out, max_deleted.ms);
        write_len(out, max_deleted.seq);
        write_len(out, m.entries_added.unwrap_or(m.length));
    }
    write_len(out, s.groups.len() as u64);
    for g in &s.groups {
        write_string(out, &g.name);
        write_len(out, g.last_id.ms);
        write_len(out, g.last_id.seq);
        if t >= RdbType::StreamListpacks2 {
            // Unknown (type 15 source): Redis's "invalid" marker, -1.
            write_len(out, g.entries_read.unwrap_or(u64::MAX));
        }
        write_len(out, g.pel.len() as u64);
        for p in &g.pel {
            out.extend_from_slice(&p.id.to_be_bytes());
            out.extend_from_slice(&p.delivery_time_ms.to_le_bytes());
            write_len(out, p.delivery_count);
        }
        write_len(out, g.consumers.len() as u64);
        for c in &g.consumers {
            write_string(out, &c.name);
            out.extend_from_slice(&c.seen_time_ms.to_le_bytes());
            if t >= RdbType::StreamListpacks3 {
                out.extend_from_slice(&c.active_time_ms.unwrap_or(c.seen_time_ms).to_le_bytes());
            }
            write_len(out, c.pending.len() as u64);
            for id in &c.pending {
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::value::HashField;

    #[test]
    fn string_round_trip_and_checksum() {
        let v = Value::String(b"hello".to_vec());
        let p = encode_dump(&v, 9).expect("encodes");
        let d = decode_dump(&p, &DumpOptions::default()).expect("decodes");
        assert_eq!(d.value, v);
        assert_eq!(d.version, 9);
        let mut bad = p.clone();
        bad[2] ^= 1;
        assert!(matches!(
            decode_dump(&bad, &DumpOptions::default()),
            Err(RdbError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn hash_ttl_needs_12() {
        let v = Value::Hash(vec![HashField {
            field: b"f".to_vec(),
            value: b"v".to_vec(),
            expire_ms: Some(1_900_000_000_000),
        }]);
        assert!(encode_dump(&v, 11).is_err());
        let p = encode_dump(&v, 12).expect("encodes");
        assert_eq!(
            decode_dump(&p, &DumpOptions::default())
                .expect("decodes")
                .value,
            v
        );
    }
}
