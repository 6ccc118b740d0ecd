//! One batch of keys compared on both sides: the first reads, the heads, the value
//! reads (second pipeline, long strings in windows, DUMP, chunked digests), the
//! expiry re-check, and the TTLs of equal values; and the target pass's batch (extra
//! keys).
//!
//! The order of the reads is this module's; what each answer means is
//! [`crate::judge`]'s. It must never write, and never turn a parse failure or a
//! reply error into "equal".

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use redis::Value as Reply;

use crate::judge::key::{extra_on_target, presence, Presence};
use crate::judge::ttl::TtlRules;
use crate::judge::value::{self, Dumps, Lengths, Pair, ReadFailure, Strings};
use crate::read::first::{first_read, heads, heads_after, FirstAsk, FirstRead, Head};
use crate::read::pipeline::{as_int, length_command, replies, tolerant_pipe};
use crate::read::side::Conn;
use crate::read::slot::key_slot;
use crate::read::{digest, long_string};
use crate::report::difference::{Difference, DifferenceKind};
use crate::walk::context::Ctx;
use crate::walk::tally::Outcome;

/// Compares `keys` (source names, of source database `db`) on both sides: on the
/// target, every read names the key's target name in the database `db` is written
/// into ([`crate::keymap`]). In the source pass a key gone from the source is
/// skipped; in a re-check it is extra if the target has it.
pub(crate) async fn compare_batch(
    ctx: &Ctx,
    src: Conn,
    dst: Conn,
    db: u32,
    keys: Vec<Vec<u8>>,
    recheck: bool,
) -> anyhow::Result<Outcome> {
    if keys.is_empty() {
        return Ok(Outcome::default());
    }
    let (mut batch, first_values) = SideBySide::read(ctx, src, dst, db, &keys).await?;
    let same = batch.presences(recheck);
    let mut pending = batch.plan_values(&same, first_values);
    batch.second_reads(&mut pending).await?;
    let long = batch.judge_strings(std::mem::take(&mut pending.strings));
    batch.long_strings(&long).await?;
    batch.dumps(&mut pending).await?;
    batch.digests(&pending.digests).await?;
    batch.emptied_hashes().await?;
    batch.confirm_value_differences().await?;
    batch.ttl_differences();
    Ok(batch.out)
}

/// One batch read side by side: the keys, their heads on both sides, and what the
/// value reads found so far.
struct SideBySide<'a> {
    ctx: &'a Ctx,
    src: Conn,
    dst: Conn,
    db: u32,
    /// Source names.
    keys: &'a [Vec<u8>],
    /// Target names (the same slice unless prefixes are renamed).
    tkeys: Cow<'a, [Vec<u8>]>,
    source: Vec<Head>,
    target: Vec<Head>,
    /// When each side's PTTLs were read (unix ms).
    source_now: i64,
    target_now: i64,
    out: Outcome,
    /// Keys whose values are equal (their TTLs are compared last).
    equal: Vec<usize>,
    /// Values that differ, with a hint, before the expiry re-check.
    differ: Vec<(usize, String)>,
    /// Hashes on the source only that lose fields to `--drop-hash-field`: missing
    /// unless every field is dropped.
    maybe_emptied: Vec<usize>,
}

/// The first read's string values of both sides (None: not a non-empty string).
type FirstValues = (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>);

/// A string as read on both sides: (index, source bytes, target bytes); None: not a
/// string (gone or retyped since TYPE).
type StringPair = (usize, Option<Vec<u8>>, Option<Vec<u8>>);

/// Keys of the same type whose values are still to be read, by how.
#[derive(Default)]
struct Pending {
    /// Strings read on both sides: (index, source bytes, target bytes).
    strings: Vec<StringPair>,
    /// In the second pipeline: strings read again, collections' lengths.
    second: Vec<usize>,
    /// Collections small enough for DUMP.
    dumps: Vec<usize>,
    /// Collections read as chunked digests.
    digests: Vec<usize>,
}

impl<'a> SideBySide<'a> {
    /// The first reads of both sides, then the heads of what they left open.
    async fn read(
        ctx: &'a Ctx,
        src: Conn,
        dst: Conn,
        db: u32,
        keys: &'a [Vec<u8>],
    ) -> anyhow::Result<(SideBySide<'a>, FirstValues)> {
        let tkeys = ctx.map.target_keys(keys);
        let tdb = ctx.map.target_db(db);
        let (sf, df) = tokio::try_join!(
            first_read_on(ctx, src.clone(), db, keys, &ctx.source_ttls),
            first_read_on(ctx, dst.clone(), tdb, &tkeys, &ctx.target_ttls)
        )?;
        let strings = strings_on_both(&sf, &df);
        let ((source, source_now), (target, target_now)) = tokio::try_join!(
            heads_after(src.clone(), keys, &strings, &sf),
            heads_after(dst.clone(), &tkeys, &strings, &df)
        )?;
        let batch = SideBySide {
            ctx,
            src,
            dst,
            db,
            keys,
            tkeys,
            source,
            target,
            source_now,
            target_now,
            out: Outcome::default(),
            equal: Vec::new(),
            differ: Vec::new(),
            maybe_emptied: Vec::new(),
        };
        Ok((batch, (sf.values, df.values)))
    }

    /// A difference of key `i`: named by its source name, except an extra key, named
    /// by its target name (the one that exists); a renamed key's detail says the
    /// other name.
    fn difference(&self, i: usize, kind: DifferenceKind, detail: String) -> Difference {
        let (key, other) = (&self.keys[i], &self.tkeys[i]);
        let (key, detail) = if key == other {
            (key.clone(), detail)
        } else if kind == DifferenceKind::ExtraOnTarget {
            (
                other.clone(),
                renamed_detail(detail, "target key; source name", key),
            )
        } else {
            (key.clone(), renamed_detail(detail, "on the target", other))
        };
        Difference {
            db: self.db,
            key,
            kind,
            detail,
            source_type: self.source[i].kind.clone(),
            target_type: self.target[i].kind.clone(),
            source_pttl: self.source[i].pttl,
            target_pttl: self.target[i].pttl,
        }
    }

    fn report(&mut self, i: usize, kind: DifferenceKind, detail: String) {
        let difference = self.difference(i, kind, detail);
        self.out.diffs.push(difference);
    }

    /// Every key judged on its heads (missing, extra, type); the keys of the same
    /// type on both sides, whose values are to be compared.
    fn presences(&mut self, recheck: bool) -> Vec<usize> {
        let mut same = Vec::new();
        for i in 0..self.keys.len() {
            let in_scope = self.in_type_scope(i);
            let counts = &mut self.out.counts;
            counts.slots.insert(u32::from(key_slot(&self.keys[i])));
            if !in_scope {
                continue;
            }
            let judged = presence(&self.source[i], &self.target[i], recheck, &self.ctx.ttl);
            if judged.compared() {
                counts.compared += 1;
                *counts
                    .per_type
                    .entry(self.source[i].kind.clone())
                    .or_insert(0) += 1;
            }
            if judged.on_both() {
                counts.on_both += 1;
            }
            match judged {
                Presence::NotOnSource { extra: true } => {
                    self.report(i, DifferenceKind::ExtraOnTarget, String::new())
                }
                Presence::NotOnTarget { missing: true } if self.loses_fields(i) => {
                    self.maybe_emptied.push(i)
                }
                Presence::NotOnTarget { missing: true } => {
                    self.report(i, DifferenceKind::MissingOnTarget, String::new())
                }
                Presence::TypesDiffer { detail } => self.report(i, DifferenceKind::Type, detail),
                Presence::SameType => same.push(i),
                Presence::NotOnSource { .. } | Presence::NotOnTarget { .. } => {}
            }
        }
        same
    }

    /// Whether key `i` is in scope of the type filters: judged by its source type, or
    /// by its target type when it is absent from the source. Out of scope, it is
    /// neither compared, nor missing, nor extra.
    fn in_type_scope(&self, i: usize) -> bool {
        match self.source[i].kind.as_str() {
            "none" => self.ctx.type_kept(&self.target[i].kind),
            kind => self.ctx.type_kept(kind),
        }
    }

    /// Whether key `i` is a source hash that `--drop-hash-field` takes fields of:
    /// compared by digests of its kept fields, never by length or DUMP.
    fn loses_fields(&self, i: usize) -> bool {
        self.source[i].kind == "hash" && self.ctx.rules.drops.applies_to(&self.keys[i])
    }

    /// How each value is read: strings read by the first GETRANGE on both sides are
    /// compared by their bytes; other strings are read again with EXISTS (empty, or
    /// created after the first read: EXISTS tells an empty string from a key deleted
    /// since); collections' lengths first while DUMP is usable, else digests. The
    /// second pipeline, in the order of `Pending::second`.
    fn plan_values(&self, same: &[usize], first: FirstValues) -> Pending {
        let (mut sv, mut dv) = first;
        let fast = self.ctx.dump_ok.load(Ordering::Relaxed);
        let mut pending = Pending::default();
        for &i in same {
            let kind = self.source[i].kind.as_str();
            match (kind, length_command(kind)) {
                ("hash", _) if self.loses_fields(i) => pending.digests.push(i),
                ("string", _) if sv[i].is_some() && dv[i].is_some() => {
                    pending.strings.push((i, sv[i].take(), dv[i].take()))
                }
                ("string", _) => pending.second.push(i),
                (_, Some(_)) if fast => pending.second.push(i),
                _ => pending.digests.push(i),
            }
        }
        pending
    }

    /// The second pipeline of `second` on the side whose key names are `keys`:
    /// strings read again (and EXISTS), collections' lengths.
    fn second_pipe(&self, keys: &[Vec<u8>], second: &[usize]) -> redis::Pipeline {
        let limit = self.ctx.long_string_limit();
        let mut pipe = tolerant_pipe();
        for &i in second {
            let key = &keys[i];
            let kind = self.source[i].kind.as_str();
            if kind == "string" {
                match limit {
                    Some(limit) => pipe.cmd("GETRANGE").arg(key).arg(0).arg(limit),
                    None => pipe.cmd("GET").arg(key),
                };
                pipe.cmd("EXISTS").arg(key);
            } else if let Some(len) = length_command(kind) {
                pipe.cmd(len).arg(key);
            }
        }
        pipe
    }

    /// The same commands built for each side's key names: the target's pipeline only
    /// when its names differ (renamed prefixes).
    fn pipes(
        &self,
        build: impl Fn(&[Vec<u8>]) -> redis::Pipeline,
    ) -> (redis::Pipeline, Option<redis::Pipeline>) {
        let source = build(self.keys);
        let target = matches!(self.tkeys, Cow::Owned(_)).then(|| build(&self.tkeys));
        (source, target)
    }

    /// Both sides' replies to [`SideBySide::pipes`].
    async fn both_replies(
        &self,
        pipes: &(redis::Pipeline, Option<redis::Pipeline>),
    ) -> anyhow::Result<(Vec<Reply>, Vec<Reply>)> {
        let (source, target) = pipes;
        tokio::try_join!(
            replies(self.src.clone(), source),
            replies(self.dst.clone(), target.as_ref().unwrap_or(source))
        )
    }

    /// The second pipeline on both sides: strings read again, collections' lengths
    /// (different counts differ; small ones go to DUMP, others to digests).
    async fn second_reads(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        let pipes = self.pipes(|keys| self.second_pipe(keys, &pending.second));
        let (sr, dr) = self.both_replies(&pipes).await?;
        let (mut sr, mut dr) = (sr.into_iter(), dr.into_iter());
        for &i in &pending.second {
            let (a, b) = (
                sr.next().unwrap_or(Reply::Nil),
                dr.next().unwrap_or(Reply::Nil),
            );
            if self.source[i].kind == "string" {
                let (a_exists, b_exists) = (sr.next(), dr.next());
                let (a, b) = (
                    value::reread_string(a, a_exists),
                    value::reread_string(b, b_exists),
                );
                pending.strings.push((i, a, b));
                continue;
            }
            let max = self.ctx.options.dump_elements_max;
            match value::lengths(as_int(&a), as_int(&b), max) {
                Lengths::Differ(detail) => self.differ.push((i, detail)),
                Lengths::Dump => pending.dumps.push(i),
                Lengths::Digest => pending.digests.push(i),
            }
        }
        Ok(())
    }

    /// Strings read on both sides judged by their bytes; the long ones, to be read
    /// in windows.
    fn judge_strings(&mut self, strings: Vec<StringPair>) -> Vec<usize> {
        let limit = self.ctx.long_string_limit();
        let mut long = Vec::new();
        for (i, a, b) in strings {
            match value::strings(a.as_deref(), b.as_deref(), limit) {
                Strings::Long => long.push(i),
                Strings::Equal => {
                    self.out.counts.strings_equal += 1;
                    self.equal.push(i);
                }
                Strings::Differ(hint) => self.differ.push((i, hint)),
            }
        }
        long
    }

    /// Long strings compared in windows of the first read's limit.
    async fn long_strings(&mut self, long: &[usize]) -> anyhow::Result<()> {
        let window = self.ctx.long_string_limit().unwrap_or(usize::MAX);
        for &i in long {
            self.out.counts.windowed += 1;
            let (key, tkey) = (&self.keys[i], &self.tkeys[i]);
            match compare_long_string(&self.src, &self.dst, key, tkey, window).await? {
                None => {
                    self.out.counts.strings_equal += 1;
                    self.equal.push(i);
                }
                Some(detail) => self.differ.push((i, detail)),
            }
        }
        Ok(())
    }

    /// DUMP of small collections: byte-equal payloads are equal values; any other
    /// pair goes to digests (and two RDB versions turn DUMP off for the run).
    async fn dumps(&mut self, pending: &mut Pending) -> anyhow::Result<()> {
        let pipes = self.pipes(|keys| {
            let mut pipe = tolerant_pipe();
            for &i in &pending.dumps {
                pipe.cmd("DUMP").arg(&keys[i]);
            }
            pipe
        });
        let (sr, dr) = self.both_replies(&pipes).await?;
        for (n, &i) in pending.dumps.iter().enumerate() {
            let (a, b) = (
                sr.get(n).unwrap_or(&Reply::Nil),
                dr.get(n).unwrap_or(&Reply::Nil),
            );
            match value::dumps(a, b) {
                Dumps::Equal => {
                    self.out.counts.dump_equal += 1;
                    self.equal.push(i);
                }
                Dumps::Differ { versions_differ } => {
                    if versions_differ {
                        self.ctx.dump_ok.store(false, Ordering::Relaxed);
                    }
                    pending.digests.push(i);
                }
            }
        }
        Ok(())
    }

    /// Chunked digests, key by key. A reply error (the key deleted or retyped during
    /// the read) is a difference that a later round re-reads; a failed connection
    /// ends the check.
    async fn digests(&mut self, keys: &[usize]) -> anyhow::Result<()> {
        let chunk = self.ctx.options.chunk_elements;
        for &i in keys {
            let (key, kind) = (&self.keys[i], self.source[i].kind.as_str());
            let (mut s, mut d) = (self.src.clone(), self.dst.clone());
            let drops = self.loses_fields(i).then_some(&self.ctx.rules.drops);
            let source = async {
                match drops {
                    Some(drops) => {
                        let dropped = |field: &[u8]| drops.drops(key, field);
                        digest::read_hash_without(&mut s, key, chunk, dropped).await
                    }
                    None => digest::read(&mut s, key, kind, chunk).await,
                }
            };
            let tkey = &self.tkeys[i];
            let target = async {
                match drops {
                    Some(_) => digest::read_hash_without(&mut d, tkey, chunk, |_| false).await,
                    None => digest::read(&mut d, tkey, kind, chunk).await,
                }
            };
            let (a, b) = tokio::join!(source, target);
            let (a, b) = match value::pair(a, b) {
                Pair::Read(a, b) => (a, b),
                Pair::Failed(ReadFailure::Fatal, e) => {
                    return Err(e).with_context(|| {
                        format!("reading {} in chunks", String::from_utf8_lossy(key))
                    });
                }
                Pair::Failed(ReadFailure::Changed(detail), _) => {
                    self.differ.push((i, detail));
                    continue;
                }
            };
            self.out.counts.digests += 1;
            match (drops, value::digests(&a, &b)) {
                (Some(_), _) if a.elements == 0 => self.differ.push((i, EMPTIED.into())),
                (_, None) => self.equal.push(i),
                (Some(_), Some(detail)) => self.differ.push((
                    i,
                    format!("{detail} (the source's without the fields --drop-hash-field drops)"),
                )),
                (None, Some(detail)) => self.differ.push((i, detail)),
            }
        }
        Ok(())
    }

    /// Source hashes absent from the target that lose fields to
    /// `--drop-hash-field`: their kept fields read; one with none is rightly absent,
    /// one with some is missing. A reply error (the key changed during the read) is
    /// a missing key, which a later round reads again.
    async fn emptied_hashes(&mut self) -> anyhow::Result<()> {
        let chunk = self.ctx.options.chunk_elements;
        let drops = &self.ctx.rules.drops;
        for i in std::mem::take(&mut self.maybe_emptied) {
            let key = &self.keys[i];
            let mut s = self.src.clone();
            let read = digest::read_hash_without(&mut s, key, chunk, |f| drops.drops(key, f)).await;
            let detail = match read {
                Ok(kept) if kept.elements == 0 => continue,
                Ok(kept) => format!("{} fields kept after --drop-hash-field", kept.elements),
                Err(e) => match value::read_failure(&e) {
                    ReadFailure::Fatal => {
                        return Err(e).with_context(|| {
                            format!(
                                "reading the hash {} in chunks",
                                String::from_utf8_lossy(key)
                            )
                        })
                    }
                    ReadFailure::Changed(detail) => detail,
                },
            };
            self.report(i, DifferenceKind::MissingOnTarget, detail);
        }
        Ok(())
    }

    /// A value that differs on a key with a TTL may have expired on one side during
    /// the reads (each side expires on its own clock): its PTTL is read again, and a
    /// key now gone or expiring on either side is not an inconsistency.
    async fn confirm_value_differences(&mut self) -> anyhow::Result<()> {
        let volatile: Vec<usize> = self
            .differ
            .iter()
            .map(|(i, _)| *i)
            .filter(|&i| TtlRules::volatile(self.source[i].pttl, self.target[i].pttl))
            .collect();
        let pipes = self.pipes(|keys| {
            let mut pipe = tolerant_pipe();
            for &i in &volatile {
                pipe.cmd("PTTL").arg(&keys[i]);
            }
            pipe
        });
        let (sr, dr) = self.both_replies(&pipes).await?;
        let expired: HashSet<usize> = volatile
            .iter()
            .zip(sr.iter().zip(&dr))
            .filter(|(_, (a, b))| self.ctx.ttl.expired_between_reads(as_int(a), as_int(b)))
            .map(|(&i, _)| i)
            .collect();
        for (i, detail) in std::mem::take(&mut self.differ) {
            if !expired.contains(&i) {
                self.report(i, DifferenceKind::Value, detail);
            }
        }
        Ok(())
    }

    /// The TTLs of equal values.
    fn ttl_differences(&mut self) {
        for i in std::mem::take(&mut self.equal) {
            let (a, b) = (self.source[i].pttl, self.target[i].pttl);
            let ttl = &self.ctx.ttl;
            if let Some(detail) = ttl.difference(self.source_now, a, self.target_now, b) {
                self.report(i, DifferenceKind::Ttl, detail);
            }
        }
    }
}

/// The difference of a source hash whose every field is dropped, held on the target.
const EMPTIED: &str =
    "every field of the source hash is dropped by --drop-hash-field: the target must not hold the key";

/// Which keys the first reads found a non-empty string on both sides.
fn strings_on_both(source: &FirstRead, target: &FirstRead) -> Vec<bool> {
    source
        .values
        .iter()
        .zip(&target.values)
        .map(|(a, b)| a.is_some() && b.is_some())
        .collect()
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

/// A long string on both sides compared in windows: None when equal, else a hint. A
/// reply error (the key deleted or retyped during the read) is a difference that a
/// later round re-reads; a failed connection ends the check.
async fn compare_long_string(
    src: &Conn,
    dst: &Conn,
    key: &[u8],
    target_key: &[u8],
    window: usize,
) -> anyhow::Result<Option<String>> {
    let (mut s, mut d) = (src.clone(), dst.clone());
    match long_string::compare_windows(&mut s, &mut d, key, target_key, window).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => match value::read_failure(&e) {
            ReadFailure::Fatal => Err(e).with_context(|| {
                format!(
                    "reading the long string {} in windows",
                    String::from_utf8_lossy(key)
                )
            }),
            ReadFailure::Changed(detail) => Ok(Some(detail)),
        },
    }
}

/// A difference's detail with the key's other name (renamed prefixes).
fn renamed_detail(detail: String, what: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if detail.is_empty() {
        format!("{what} {name:?}")
    } else {
        format!("{detail} ({what} {name:?})")
    }
}

/// Target keys (target names, in the database source database `db` is written
/// into) absent from the source: each looked for by its source name (one multi-key
/// EXISTS on the source); one that no source key is written as is absent whatever
/// the source holds. Those still on the target, and not about to expire, are extra,
/// reported by their target names.
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
    let keys = match &ctx.script {
        // Produced by the script: judged by the scripted pass. Names unknown: no
        // key can be called extra (the report says so).
        Some(scope) if scope.extras_unchecked(db).is_some() => return Ok(out),
        Some(scope) => keys
            .into_iter()
            .filter(|k| !scope.produced(db, k))
            .collect(),
        None => keys,
    };
    if keys.is_empty() {
        return Ok(out);
    }
    // A key under a name the script touches that it did not produce is no source
    // key's image: the script writes that source key elsewhere.
    let names: Vec<Option<Cow<[u8]>>> = keys
        .iter()
        .map(|k| ctx.map.source_key(k).filter(|_| !ctx.scripted(k)))
        .collect();
    let asked: Vec<&[u8]> = names.iter().flatten().map(|name| name.as_ref()).collect();
    // One multi-key EXISTS answers for the whole batch when every key exists (the
    // common case); only otherwise is each key asked about.
    let mut src = src;
    if asked.len() == keys.len() {
        let all: i64 = redis::cmd("EXISTS")
            .arg(&asked)
            .query_async(&mut src)
            .await
            .context("EXISTS")?;
        if all == keys.len() as i64 {
            return Ok(out);
        }
    }
    let mut pipe = redis::pipe();
    for name in &asked {
        pipe.cmd("EXISTS").arg(name);
    }
    let exists: Vec<i64> = if asked.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut src).await.context("EXISTS")?
    };
    let mut exists = exists.into_iter();
    let mut absent: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    for (key, name) in keys.iter().zip(&names) {
        let on_source = name.is_some() && exists.next().unwrap_or(0) != 0;
        if !on_source {
            let renamed = name.as_ref().filter(|n| ***n != **key).map(|n| n.to_vec());
            absent.push((key.clone(), renamed));
        }
    }
    if absent.is_empty() {
        return Ok(out);
    }
    let absent_keys: Vec<Vec<u8>> = absent.iter().map(|(k, _)| k.clone()).collect();
    let (dh, _) = heads(dst, &absent_keys).await?;
    let renames = !ctx.map.renames_nothing();
    for ((key, name), d) in absent.into_iter().zip(dh) {
        if extra_on_target(&d, &ctx.ttl) && ctx.type_kept(&d.kind) {
            let detail = match (renames, name) {
                (false, _) if ctx.scripted(&key) => {
                    "under a name the script touches, and not written by it".into()
                }
                (false, _) => String::new(),
                (true, Some(name)) => {
                    renamed_detail(String::new(), "target key; source name", &name)
                }
                (true, None) => "target key; no source key is written under this name".into(),
            };
            out.diffs.push(Difference {
                db,
                key,
                kind: DifferenceKind::ExtraOnTarget,
                detail,
                source_type: "none".into(),
                target_type: d.kind,
                source_pttl: -2,
                target_pttl: d.pttl,
            });
        }
    }
    Ok(out)
}
