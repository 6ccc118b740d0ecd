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
use crate::slots::key_slot;

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

/// Reads `keys` (each of its database) in one pipeline: each run of keys of one
/// database in one `MULTI` (`DUMP` and `PTTL` of each), so a key's value and TTL,
/// and the keys of a run, are of one instant. `selected` is the database the
/// connection has selected, kept up to date. Callers bound a batch (a few hundred
/// keys): a transaction holds the source for its duration.
pub async fn read_keys(
    conn: &mut Conn,
    endpoint: &str,
    selected: &mut u32,
    keys: &[DbKey],
    cluster: bool,
) -> Result<Vec<KeyRead>, ScanError> {
    let mut commands = Vec::with_capacity(keys.len() * 2 + 8);
    let plan = ReadPlan::push_commands(keys, selected, cluster, &mut commands);
    // Expiries are counted from before the reads ran: a TTL is never lengthened.
    let sent_at = unix_ms();
    let replies = conn.query_pipelined(&commands).await?;
    plan.answers(&mut replies.into_iter(), endpoint, sent_at)
}

/// The reads of a batch as sent, to take their answers off a pipeline's replies
/// (which may go on with other commands: the snapshot sends its next `SCAN` in the
/// same round trip).
pub struct ReadPlan<'k> {
    runs: Vec<(&'k [DbKey], bool)>,
}

impl<'k> ReadPlan<'k> {
    /// Appends the commands reading `keys` to `commands`.
    /// On a cluster node (`cluster`) a transaction holds keys of one slot only.
    pub fn push_commands(
        keys: &'k [DbKey],
        selected: &mut u32,
        cluster: bool,
        commands: &mut Vec<Vec<Bytes>>,
    ) -> ReadPlan<'k> {
        let mut runs = Vec::new();
        for run in runs_of(keys, cluster) {
            let db = run[0].0;
            let select = db != *selected;
            if select {
                commands.push(vec![
                    Bytes::from_static(b"SELECT"),
                    Bytes::from(db.to_string()),
                ]);
                *selected = db;
            }
            commands.push(vec![Bytes::from_static(b"MULTI")]);
            for (_, key) in run {
                let read = if is_heartbeat(key) { "GET" } else { "DUMP" };
                commands.push(vec![Bytes::from_static(read.as_bytes()), key.clone()]);
                commands.push(vec![Bytes::from_static(b"PTTL"), key.clone()]);
            }
            commands.push(vec![Bytes::from_static(b"EXEC")]);
            runs.push((run, select));
        }
        ReadPlan { runs }
    }

    /// Takes the reads' answers off `replies`, in order.
    pub fn answers(
        &self,
        replies: &mut impl Iterator<Item = Frame>,
        endpoint: &str,
        sent_at: i64,
    ) -> Result<Vec<KeyRead>, ScanError> {
        let mut read = Vec::new();
        for (run, select) in &self.runs {
            if *select {
                expect_ok(replies.next(), endpoint, "SELECT")?;
            }
            expect_ok(replies.next(), endpoint, "MULTI")?;
            for (_, key) in *run {
                for _ in 0..2 {
                    expect_queued(replies.next(), endpoint, key)?;
                }
            }
            let answers = exec_answers(replies.next(), endpoint, run.len())?;
            let mut answers = answers.into_iter();
            for (db, key) in *run {
                let state = pair_state(answers.next(), answers.next(), endpoint, key, sent_at)?;
                read.push(KeyRead {
                    db: *db,
                    key: key.clone(),
                    state,
                });
            }
        }
        Ok(read)
    }
}

/// `keys` cut into runs of consecutive keys of one database (and, on a cluster
/// node, of one hash slot: a transaction over several slots is refused there).
fn runs_of(keys: &[DbKey], cluster: bool) -> Vec<&[DbKey]> {
    keys.chunk_by(|a, b| a.0 == b.0 && (!cluster || key_slot(&a.1) == key_slot(&b.1)))
        .collect()
}

/// The EXEC's answers of a run of `keys` keys: two per key.
fn exec_answers(
    reply: Option<Frame>,
    endpoint: &str,
    keys: usize,
) -> Result<Vec<Frame>, ScanError> {
    match reply {
        Some(Frame::Array(items)) if items.len() == keys * 2 => Ok(items),
        Some(Frame::Error(e)) => Err(refused(endpoint, "EXEC of DUMP/PTTL", b"", &e)),
        other => Err(unexpected(
            endpoint,
            format!("{other:?} as the answer to EXEC of {keys} DUMP/PTTL pairs"),
        )),
    }
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

/// The key's state from its two answers in the EXEC: the payload (or nil) and
/// the PTTL.
fn pair_state(
    value: Option<Frame>,
    pttl: Option<Frame>,
    endpoint: &str,
    key: &[u8],
    sent_at: i64,
) -> Result<KeyState, ScanError> {
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
    fn two_answers_read_as_the_key_state() {
        let payload = Bytes::from_static(b"\x00\x01x\x0b\x00........");
        let state = |value: Frame, pttl: i64| {
            pair_state(Some(value), Some(Frame::Integer(pttl)), "s", b"k", 1_000).ok()
        };
        assert_eq!(
            state(Frame::Bulk(payload.clone()), -1),
            Some(KeyState::Present {
                payload: payload.clone(),
                expire_at_ms: None
            })
        );
        assert_eq!(
            state(Frame::Bulk(payload.clone()), 500),
            Some(KeyState::Present {
                payload,
                expire_at_ms: Some(1_500)
            })
        );
        assert_eq!(state(Frame::NullBulk, -2), Some(KeyState::Gone));
        let refused = pair_state(
            Some(Frame::Error(Bytes::from("NOPERM no"))),
            None,
            "s",
            b"k",
            0,
        );
        assert!(
            matches!(refused, Err(ScanError::Refused { .. })),
            "{refused:?}"
        );
        let odd = pair_state(Some(Frame::Integer(3)), None, "s", b"k", 0);
        assert!(matches!(odd, Err(ScanError::Protocol { .. })), "{odd:?}");
        let short = exec_answers(Some(Frame::Array(vec![Frame::Integer(1)])), "s", 1);
        assert!(
            matches!(short, Err(ScanError::Protocol { .. })),
            "{short:?}"
        );
    }

    #[test]
    fn keys_are_read_in_runs_of_one_database() {
        let keys: Vec<DbKey> = [(0, "a"), (0, "b"), (3, "c"), (0, "d")]
            .into_iter()
            .map(|(db, k)| (db, Bytes::from(k)))
            .collect();
        let runs: Vec<usize> = runs_of(&keys, false).iter().map(|r| r.len()).collect();
        assert_eq!(runs, [2, 1, 1]);
        // On a cluster node, keys of one slot only: {t}x and {t}y share one.
        let tagged: Vec<DbKey> = ["{t}x", "{t}y", "a", "b"]
            .into_iter()
            .map(|k| (0, Bytes::from(k)))
            .collect();
        let runs: Vec<usize> = runs_of(&tagged, true).iter().map(|r| r.len()).collect();
        assert_eq!(runs, [2, 1, 1]);
    }
}
