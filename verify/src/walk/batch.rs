//! One batch of keys compared on both sides: the first reads, the heads, the value
//! reads (second pipeline, long strings in windows, DUMP, chunked digests), the
//! expiry re-check, and the TTLs of equal values; and the target pass's batch (extra
//! keys).
//!
//! The order of the reads is this module's; what each answer means is
//! [`crate::judge`]'s. It must never write, and never turn a parse failure or a
//! reply error into "equal".

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use redis::Value as Reply;

use crate::read::first::{first_read, heads, heads_after, FirstAsk, FirstRead};
use crate::read::pipeline::{length_command, replies, tolerant_pipe};
use crate::read::side::Conn;
use crate::read::slot::key_slot;
use crate::read::{digest, long_string};
use crate::report::difference::{Difference, DifferenceKind};
use crate::walk::context::Ctx;
use crate::walk::tally::Outcome;

/// The RDB version in a DUMP payload's trailer (2 bytes LE, then an 8-byte CRC64).
pub(crate) fn rdb_version(payload: &[u8]) -> Option<u16> {
    let n = payload.len();
    (n >= 10).then(|| u16::from_le_bytes([payload[n - 10], payload[n - 9]]))
}

/// How two DUMP replies relate.
pub(crate) enum Dumped {
    Equal,
    /// Different bytes: read the values.
    Differ,
}

pub(crate) fn dumped(ctx: &Ctx, a: &Reply, b: &Reply) -> Dumped {
    match (a, b) {
        (Reply::BulkString(a), Reply::BulkString(b)) if a == b => Dumped::Equal,
        (Reply::BulkString(a), Reply::BulkString(b)) => {
            if rdb_version(a) != rdb_version(b) {
                ctx.dump_ok.store(false, Ordering::Relaxed);
            }
            Dumped::Differ
        }
        _ => Dumped::Differ,
    }
}

/// One side's first read ([`first_read`]), asked as this side's last batch showed
/// (TTLs present, INFO permitted), and what it showed kept for the next batch.
async fn first_read_on(
    ctx: &Ctx,
    conn: Conn,
    db: u32,
    keys: &[Vec<u8>],
    ttls: &AtomicBool,
) -> anyhow::Result<FirstRead> {
    let ask = FirstAsk {
        limit: ctx.long_string_limit(),
        read_ttls: ttls.load(Ordering::Relaxed),
        ask_info: ctx.info_ok.load(Ordering::Relaxed),
    };
    let first = first_read(conn, db, keys, ask).await?;
    if first.info_refused {
        ctx.info_ok.store(false, Ordering::Relaxed);
    }
    ttls.store(first.ttls_exist, Ordering::Relaxed);
    Ok(first)
}

/// Compares `keys` (of database `db`) on both sides. In the source pass a key gone
/// from the source is skipped; in a re-check it is extra if the target has it.
pub(crate) async fn compare_batch(
    ctx: &Ctx,
    src: Conn,
    dst: Conn,
    db: u32,
    keys: Vec<Vec<u8>>,
    recheck: bool,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    if keys.is_empty() {
        return Ok(out);
    }
    let (mut sf, mut df) = tokio::try_join!(
        first_read_on(ctx, src.clone(), db, &keys, &ctx.source_ttls),
        first_read_on(ctx, dst.clone(), db, &keys, &ctx.target_ttls)
    )?;
    let strings: Vec<bool> = sf
        .values
        .iter()
        .zip(&df.values)
        .map(|(a, b)| a.is_some() && b.is_some())
        .collect();
    let ((sh, snow), (dh, dnow)) = tokio::try_join!(
        heads_after(src.clone(), &keys, &strings, &sf),
        heads_after(dst.clone(), &keys, &strings, &df)
    )?;
    let (sv, dv) = (&mut sf.values, &mut df.values);
    let diff = |i: usize, kind: DifferenceKind, detail: String| Difference {
        db,
        key: keys[i].clone(),
        kind,
        detail,
        source_type: sh[i].kind.clone(),
        target_type: dh[i].kind.clone(),
        source_pttl: sh[i].pttl,
        target_pttl: dh[i].pttl,
    };
    // Keys of the same type on both sides, whose values are to be compared.
    let mut same = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        out.counts.slots.insert(u32::from(key_slot(key)));
        let (s, d) = (&sh[i], &dh[i]);
        if s.kind == "none" {
            if recheck && d.kind != "none" && !ctx.expiring_on_target(d.pttl) {
                out.diffs
                    .push(diff(i, DifferenceKind::ExtraOnTarget, String::new()));
            }
            continue;
        }
        out.counts.compared += 1;
        *out.counts.per_type.entry(s.kind.clone()).or_insert(0) += 1;
        if d.kind == "none" {
            if !ctx.expiring_on_source(s.pttl) {
                out.diffs
                    .push(diff(i, DifferenceKind::MissingOnTarget, String::new()));
            }
            continue;
        }
        out.counts.on_both += 1;
        if s.kind != d.kind {
            let detail = format!("{} vs {}", s.kind, d.kind);
            out.diffs.push(diff(i, DifferenceKind::Type, detail));
        } else {
            same.push(i);
        }
    }

    // Strings read by the first GETRANGE on both sides are compared by their bytes;
    // other keys: GETRANGE + EXISTS of strings (empty, or created after the first
    // read: EXISTS tells an empty string from a key deleted since), lengths of
    // collections.
    let limit = ctx.long_string_limit();
    let fast = ctx.dump_ok.load(Ordering::Relaxed);
    let mut pipe = tolerant_pipe();
    let mut second = Vec::new();
    let mut slow = Vec::new();
    let mut equal = Vec::new();
    // Strings read on both sides (None: gone or retyped since TYPE, a difference that
    // is read again next round).
    let mut string_pairs = Vec::new();
    // Values that differ: (index, hint), reported after the expiry check below.
    let mut value_diffs: Vec<(usize, String)> = Vec::new();
    for &i in &same {
        let key = &keys[i];
        match (sh[i].kind.as_str(), length_command(&sh[i].kind)) {
            ("string", _) if strings[i] => string_pairs.push((i, sv[i].take(), dv[i].take())),
            ("string", _) => {
                match limit {
                    Some(limit) => pipe.cmd("GETRANGE").arg(key).arg(0).arg(limit),
                    None => pipe.cmd("GET").arg(key),
                };
                pipe.cmd("EXISTS").arg(key);
                second.push(i);
            }
            (_, Some(len)) if fast => {
                pipe.cmd(len).arg(key);
                second.push(i);
            }
            _ => slow.push(i),
        }
    }
    let (sr, dr) = tokio::try_join!(replies(src.clone(), &pipe), replies(dst.clone(), &pipe))?;
    let mut third = Vec::new();
    let (mut sr, mut dr) = (sr.into_iter(), dr.into_iter());
    for &i in &second {
        let (a, b) = (
            sr.next().unwrap_or(Reply::Nil),
            dr.next().unwrap_or(Reply::Nil),
        );
        if sh[i].kind == "string" {
            let (a_exists, b_exists) = (sr.next(), dr.next());
            let bytes = |r: Reply, exists: Option<Reply>| match (r, exists) {
                (Reply::BulkString(bytes), Some(Reply::Int(1))) => Some(bytes),
                _ => None,
            };
            string_pairs.push((i, bytes(a, a_exists), bytes(b, b_exists)));
        } else {
            let (x, y) = (as_int(&a), as_int(&b));
            if x != y {
                value_diffs.push((i, format!("source {x} elements, target {y}")));
            } else if x as u64 <= ctx.options.dump_elements_max {
                third.push(i);
            } else {
                slow.push(i);
            }
        }
    }

    let mut long_strings = Vec::new();
    for (i, a, b) in string_pairs {
        let long = |v: &Option<Vec<u8>>| {
            limit.is_some_and(|limit| v.as_ref().is_some_and(|v| v.len() > limit))
        };
        if long(&a) || long(&b) {
            long_strings.push(i);
        } else if a.is_some() && a == b {
            out.counts.strings_equal += 1;
            equal.push(i);
        } else {
            let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
            value_diffs.push((i, string_hint(&a, &b)));
        }
    }

    for &i in &long_strings {
        out.counts.windowed += 1;
        let window = limit.unwrap_or(usize::MAX);
        match compare_long_string(&src, &dst, &keys[i], window).await? {
            None => {
                out.counts.strings_equal += 1;
                equal.push(i);
            }
            Some(detail) => value_diffs.push((i, detail)),
        }
    }

    // Third pipeline: DUMP of small collections.
    let mut pipe = tolerant_pipe();
    for &i in &third {
        pipe.cmd("DUMP").arg(&keys[i]);
    }
    let (sr, dr) = tokio::try_join!(replies(src.clone(), &pipe), replies(dst.clone(), &pipe))?;
    for (n, &i) in third.iter().enumerate() {
        match dumped(ctx, &sr[n], &dr[n]) {
            Dumped::Equal => {
                out.counts.dump_equal += 1;
                equal.push(i);
            }
            Dumped::Differ => slow.push(i),
        }
    }

    // The rest: chunked digests, key by key.
    let chunk = ctx.options.chunk_elements;
    for &i in &slow {
        let (key, kind) = (&keys[i], sh[i].kind.as_str());
        let (mut s, mut d) = (src.clone(), dst.clone());
        let (a, b) = tokio::join!(
            digest::read(&mut s, key, kind, chunk),
            digest::read(&mut d, key, kind, chunk)
        );
        // A reply error (the key deleted or retyped during the read: XINFO's "no such
        // key", WRONGTYPE) is a difference that a later round re-reads; a failed
        // connection ends the check.
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) if e.is_io_error() || e.is_unrecoverable_error() => {
                return Err(e).with_context(|| {
                    format!("reading {} in chunks", String::from_utf8_lossy(key))
                });
            }
            (Err(e), _) | (_, Err(e)) => {
                value_diffs.push((i, format!("changed during the read: {e}")));
                continue;
            }
        };
        out.counts.digests += 1;
        if a == b {
            equal.push(i);
        } else {
            let detail = if a.elements == b.elements {
                format!("{} elements on both sides, different digests", a.elements)
            } else {
                format!("source {} elements, target {}", a.elements, b.elements)
            };
            value_diffs.push((i, detail));
        }
    }

    // A value that differs on a key with a TTL may have expired on one side during
    // the reads (each side expires on its own clock): its PTTL is read again, and a key
    // now gone or expiring on either side is not an inconsistency.
    let volatile: Vec<usize> = value_diffs
        .iter()
        .map(|(i, _)| *i)
        .filter(|&i| sh[i].pttl >= 0 || dh[i].pttl >= 0)
        .collect();
    let mut pipe = tolerant_pipe();
    for &i in &volatile {
        pipe.cmd("PTTL").arg(&keys[i]);
    }
    let (sr, dr) = tokio::try_join!(replies(src.clone(), &pipe), replies(dst.clone(), &pipe))?;
    let expired: HashSet<usize> = volatile
        .iter()
        .zip(sr.iter().zip(&dr))
        .filter(|(_, (a, b))| {
            let (a, b) = (as_int(a), as_int(b));
            a == -2 || b == -2 || ctx.expiring_on_source(a) || ctx.expiring_on_target(b)
        })
        .map(|(&i, _)| i)
        .collect();
    for (i, detail) in value_diffs {
        if !expired.contains(&i) {
            out.diffs.push(diff(i, DifferenceKind::Value, detail));
        }
    }

    // TTLs of equal values.
    for i in equal {
        let (a, b) = (sh[i].pttl, dh[i].pttl);
        if !ctx.ttls_agree(snow, a, dnow, b) {
            let expiry = |now: i64, pttl: i64| (pttl >= 0).then_some(now + pttl);
            let mut detail = format!(
                "expiry (unix ms) {:?} vs {:?}",
                expiry(snow, a),
                expiry(dnow, b)
            );
            if ctx.extension_ms() > 0 {
                detail.push_str(&format!(", extension {} ms expected", ctx.extension_ms()));
            }
            out.diffs.push(diff(i, DifferenceKind::Ttl, detail));
        }
    }
    Ok(out)
}

/// A long string on both sides compared in windows: None when equal, else a hint. A
/// reply error (the key deleted or retyped during the read) is a difference that a
/// later round re-reads; a failed connection ends the check.
pub(crate) async fn compare_long_string(
    src: &Conn,
    dst: &Conn,
    key: &[u8],
    window: usize,
) -> anyhow::Result<Option<String>> {
    let (mut s, mut d) = (src.clone(), dst.clone());
    match long_string::compare_windows(&mut s, &mut d, key, window).await {
        Ok(outcome) => Ok(outcome),
        Err(e) if e.is_io_error() || e.is_unrecoverable_error() => Err(e).with_context(|| {
            format!(
                "reading the long string {} in windows",
                String::from_utf8_lossy(key)
            )
        }),
        Err(e) => Ok(Some(format!("changed during the read: {e}"))),
    }
}

pub(crate) fn as_int(reply: &Reply) -> i64 {
    match reply {
        Reply::Int(n) => *n,
        _ => -1,
    }
}

pub(crate) fn string_hint(a: &[u8], b: &[u8]) -> String {
    if a.len() == b.len() {
        format!("{} bytes on both sides, different bytes", a.len())
    } else {
        format!("source {} bytes, target {}", a.len(), b.len())
    }
}

/// Target keys absent from the source (one multi-key EXISTS on the source); those
/// still on the target, and not about to expire, are extra.
pub(crate) async fn extra_batch(
    ctx: &Ctx,
    src: Conn,
    dst: Conn,
    db: u32,
    keys: Vec<Vec<u8>>,
) -> anyhow::Result<Outcome> {
    let mut out = Outcome::default();
    out.counts.target_checked = keys.len() as u64;
    if keys.is_empty() {
        return Ok(out);
    }
    for key in &keys {
        out.counts.slots.insert(u32::from(key_slot(key)));
    }
    // One multi-key EXISTS answers for the whole batch when every key exists (the
    // common case); only otherwise is each key asked about.
    let mut src = src;
    let all: i64 = redis::cmd("EXISTS")
        .arg(&keys)
        .query_async(&mut src)
        .await
        .context("EXISTS")?;
    if all == keys.len() as i64 {
        return Ok(out);
    }
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("EXISTS").arg(k);
    }
    let exists: Vec<i64> = pipe.query_async(&mut src).await.context("EXISTS")?;
    let absent: Vec<Vec<u8>> = keys
        .into_iter()
        .zip(exists)
        .filter(|(_, e)| *e == 0)
        .map(|(k, _)| k)
        .collect();
    if absent.is_empty() {
        return Ok(out);
    }
    let (dh, _) = heads(dst, &absent).await?;
    for (key, d) in absent.into_iter().zip(dh) {
        if d.kind != "none" && !ctx.expiring_on_target(d.pttl) {
            out.diffs.push(Difference {
                db,
                key,
                kind: DifferenceKind::ExtraOnTarget,
                detail: String::new(),
                source_type: "none".into(),
                target_type: d.kind,
                source_pttl: -2,
                target_pttl: d.pttl,
            });
        }
    }
    Ok(out)
}
