//! Reading keys of the source as they are now: `DUMP` and `PTTL` of each key in
//! one `MULTI`/`EXEC` (so the value and its TTL are of the same instant), pipelined
//! over a batch. The snapshot and the change reader both read keys so.
//!
//! lockstep's heartbeat keys are read with `GET` instead of `DUMP`: the command
//! stream recognizes a heartbeat by its value, the time it was written.

use bytes::Bytes;

use crate::clock::unix_ms;
use crate::conn::Conn;
use crate::engine::HEARTBEAT_PREFIX;
use crate::resp::Frame;

use super::dirty::DbKey;
use super::ScanError;

/// What a key holds at the instant of its read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyState {
    /// Deleted, expired or evicted (or never there).
    Gone,
    /// Its DUMP payload (or, for a heartbeat key, its plain value) and its expiry
    /// as unix milliseconds.
    Present {
        payload: Bytes,
        expire_at_ms: Option<i64>,
    },
}

/// One key as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRead {
    pub db: u32,
    pub key: Bytes,
    pub state: KeyState,
}

/// Is `key` one of lockstep's heartbeat keys?
pub fn is_heartbeat(key: &[u8]) -> bool {
    key.starts_with(HEARTBEAT_PREFIX)
}

/// Reads `keys` (each of its database) in one pipeline. `selected` is the
/// database the connection has selected, kept up to date.
pub async fn read_keys(
    conn: &mut Conn,
    endpoint: &str,
    selected: &mut u32,
    keys: &[DbKey],
) -> Result<Vec<KeyRead>, ScanError> {
    let mut commands: Vec<Vec<Bytes>> = Vec::with_capacity(keys.len() * 4 + 1);
    let mut selects = Vec::with_capacity(keys.len());
    for (db, key) in keys {
        let select = *db != *selected;
        if select {
            commands.push(vec![
                Bytes::from_static(b"SELECT"),
                Bytes::from(db.to_string()),
            ]);
            *selected = *db;
        }
        selects.push(select);
        let read = if is_heartbeat(key) { "GET" } else { "DUMP" };
        commands.push(vec![Bytes::from_static(b"MULTI")]);
        commands.push(vec![Bytes::from_static(read.as_bytes()), key.clone()]);
        commands.push(vec![Bytes::from_static(b"PTTL"), key.clone()]);
        commands.push(vec![Bytes::from_static(b"EXEC")]);
    }
    // Expiries are counted from before the reads ran: a TTL is never lengthened.
    let sent_at = unix_ms();
    let replies = conn.query_pipelined(&commands).await?;
    let mut replies = replies.into_iter();
    let mut read = Vec::with_capacity(keys.len());
    for ((db, key), select) in keys.iter().zip(selects) {
        if select {
            expect_ok(replies.next(), endpoint, "SELECT")?;
        }
        expect_ok(replies.next(), endpoint, "MULTI")?;
        for _ in 0..2 {
            expect_queued(replies.next(), endpoint, key)?;
        }
        let state = key_state(replies.next(), endpoint, key, sent_at)?;
        read.push(KeyRead {
            db: *db,
            key: key.clone(),
            state,
        });
    }
    Ok(read)
}

fn refused(endpoint: &str, command: &str, key: &[u8], reply: &[u8]) -> ScanError {
    ScanError::Refused {
        endpoint: endpoint.to_owned(),
        command: format!("{command} {}", String::from_utf8_lossy(key)),
        reply: String::from_utf8_lossy(reply).into_owned(),
    }
}

fn unexpected(endpoint: &str, what: String) -> ScanError {
    ScanError::Protocol {
        endpoint: endpoint.to_owned(),
        what,
    }
}

fn expect_ok(reply: Option<Frame>, endpoint: &str, command: &str) -> Result<(), ScanError> {
    match reply {
        Some(Frame::Simple(_)) => Ok(()),
        Some(Frame::Error(e)) => Err(refused(endpoint, command, b"", &e)),
        other => Err(unexpected(
            endpoint,
            format!("{other:?} as the answer to {command}"),
        )),
    }
}

fn expect_queued(reply: Option<Frame>, endpoint: &str, key: &[u8]) -> Result<(), ScanError> {
    match reply {
        Some(Frame::Simple(_)) => Ok(()),
        Some(Frame::Error(e)) => Err(refused(endpoint, "DUMP/PTTL", key, &e)),
        other => Err(unexpected(
            endpoint,
            format!("{other:?} where +QUEUED was expected"),
        )),
    }
}

/// The key's state from its EXEC's answer: `[payload or nil, pttl]`.
fn key_state(
    reply: Option<Frame>,
    endpoint: &str,
    key: &[u8],
    sent_at: i64,
) -> Result<KeyState, ScanError> {
    let items = match reply {
        Some(Frame::Array(items)) if items.len() == 2 => items,
        Some(Frame::Error(e)) => return Err(refused(endpoint, "EXEC of DUMP/PTTL", key, &e)),
        other => {
            return Err(unexpected(
                endpoint,
                format!("{other:?} as the answer to EXEC of DUMP/PTTL"),
            ))
        }
    };
    let mut items = items.into_iter();
    let (value, pttl) = (items.next(), items.next());
    let payload = match value {
        Some(Frame::Bulk(payload)) => payload,
        Some(Frame::NullBulk | Frame::Null) => return Ok(KeyState::Gone),
        Some(Frame::Error(e)) => return Err(refused(endpoint, "DUMP", key, &e)),
        other => return Err(unexpected(endpoint, format!("{other:?} as a DUMP payload"))),
    };
    let expire_at_ms = match pttl {
        Some(Frame::Integer(-2)) => return Ok(KeyState::Gone),
        Some(Frame::Integer(ms)) if ms < 0 => None,
        // Expired between the two reads of one transaction cannot happen (one
        // instant); 0 ms left is an expiry now.
        Some(Frame::Integer(ms)) => Some(sent_at.saturating_add(ms)),
        other => return Err(unexpected(endpoint, format!("{other:?} as a PTTL"))),
    };
    Ok(KeyState::Present {
        payload,
        expire_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_answer_reads_as_the_key_state() {
        let exec = |value: Frame, pttl: i64| Some(Frame::Array(vec![value, Frame::Integer(pttl)]));
        let payload = Bytes::from_static(b"\x00\x01x\x0b\x00........");
        assert_eq!(
            key_state(exec(Frame::Bulk(payload.clone()), -1), "s", b"k", 1_000).ok(),
            Some(KeyState::Present {
                payload: payload.clone(),
                expire_at_ms: None
            })
        );
        assert_eq!(
            key_state(exec(Frame::Bulk(payload.clone()), 500), "s", b"k", 1_000).ok(),
            Some(KeyState::Present {
                payload,
                expire_at_ms: Some(1_500)
            })
        );
        assert_eq!(
            key_state(exec(Frame::NullBulk, -2), "s", b"k", 1_000).ok(),
            Some(KeyState::Gone)
        );
        let refused = key_state(Some(Frame::Error(Bytes::from("NOPERM no"))), "s", b"k", 0);
        assert!(
            matches!(refused, Err(ScanError::Refused { .. })),
            "{refused:?}"
        );
        let odd = key_state(Some(Frame::Integer(3)), "s", b"k", 0);
        assert!(matches!(odd, Err(ScanError::Protocol { .. })), "{odd:?}");
    }
}
