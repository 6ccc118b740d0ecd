//! The skip windows of cross-slot copies, as plain state without I/O (see
//! [`super::cross_slot`] for why they exist): which keys' copies hold the stream up
//! to an offset ([`Skips`]: their commands up to it are dropped), and the entries
//! of each slot's skip hash `LOCKSTEP_SKIP[:task]:{n}` that a later checkpoint of
//! that slot removes ([`SkipEntries`]).
//!
//! The router loads both with the checkpoints at a session's start, adds to both
//! when it copies a key, judges every stream command by [`Skips::judge`], and asks
//! [`SkipEntries::passed`] which entries go with each checkpoint it writes. The
//! seeded simulation (`sim.rs` beside this file) drives the same structs.
//!
//! Invariants: a key's window only lengthens while it lasts; an entry leaves
//! [`SkipEntries`] only with a checkpoint at or past its offset.
//! Never: do I/O; drop a command on a key that no window holds.

use std::collections::HashMap;

use bytes::Bytes;

/// Keys whose copy holds the stream up to an offset: their commands up to it are
/// skipped (see the module doc).
#[derive(Default)]
pub struct Skips {
    through: HashMap<Bytes, i64>,
}

/// What to do with a stream command, given the keys it touches.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// No key of it is skipped here.
    Apply,
    /// Every key of it holds its effect already.
    Drop,
    /// Some keys hold its effect and some do not: copy them all again.
    Copy,
}

/// Entries kept before the ones that mean nothing any more are swept.
const SKIPS_SWEEP_AT: usize = 4096;

impl Skips {
    pub fn is_empty(&self) -> bool {
        self.through.is_empty()
    }

    /// Commands on `key` at offsets up to `offset` are in its copy; the stream is
    /// at offset `at` (entries behind it mean nothing and may be swept).
    pub fn insert(&mut self, key: Bytes, offset: i64, at: i64) {
        let through = self.through.entry(key).or_insert(offset);
        *through = (*through).max(offset);
        if self.through.len() > SKIPS_SWEEP_AT {
            self.through.retain(|_, o| *o >= at);
        }
    }

    /// Judges a command at stream offset `at` by its `keys`.
    pub fn judge<'k>(&mut self, keys: impl Iterator<Item = &'k [u8]>, at: i64) -> Judgement {
        let (mut skipped, mut applied) = (0, 0);
        for key in keys {
            match self.through.get(key) {
                Some(&through) if at <= through => skipped += 1,
                Some(_) => {
                    self.through.remove(key);
                    applied += 1;
                }
                None => applied += 1,
            }
        }
        match (skipped, applied) {
            (0, _) => Judgement::Apply,
            (_, 0) => Judgement::Drop,
            _ => Judgement::Copy,
        }
    }

    /// Forgets every entry (a FLUSHALL in the stream, a new full copy).
    pub fn clear(&mut self) {
        self.through.clear();
    }
}

/// The entries written to (or read from) each slot's skip hash, to remove once the
/// slot's checkpoint has passed them.
#[derive(Default)]
pub(crate) struct SkipEntries {
    by_slot: HashMap<u16, Vec<(Bytes, i64)>>,
}

impl SkipEntries {
    /// `key`'s copy in `slot` holds the stream through `through`.
    pub fn record(&mut self, slot: u16, key: Bytes, through: i64) {
        self.by_slot.entry(slot).or_default().push((key, through));
    }

    /// Takes the keys of `slot`'s entries that a checkpoint at `offset` passes.
    pub fn passed(&mut self, slot: u16, offset: i64) -> Vec<Bytes> {
        let Some(entries) = self.by_slot.get_mut(&slot) else {
            return Vec::new();
        };
        let mut passed = Vec::new();
        entries.retain(|(key, through)| {
            let gone = *through <= offset;
            if gone {
                passed.push(key.clone());
            }
            !gone
        });
        if entries.is_empty() {
            self.by_slot.remove(&slot);
        }
        passed
    }

    /// Forgets every entry (a FLUSHALL in the stream, a new full copy, a new read).
    pub fn clear(&mut self) {
        self.by_slot.clear();
    }

    /// The slots whose skip hash holds entries.
    pub fn slots(&self) -> Vec<u16> {
        self.by_slot.keys().copied().collect()
    }
}

/// The `(key, offset)` pairs of a skip hash's HGETALL reply, its fields in order;
/// a pair whose offset is not a number is left out.
pub(crate) fn skip_pairs(items: &[crate::resp::Frame]) -> Vec<(Bytes, i64)> {
    items
        .chunks_exact(2)
        .filter_map(|pair| {
            let key = pair[0].as_bytes()?;
            let through = std::str::from_utf8(pair[1].as_bytes()?)
                .ok()?
                .parse::<i64>()
                .ok()?;
            Some((Bytes::copy_from_slice(key), through))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::Frame;

    #[test]
    fn a_command_is_dropped_applied_or_copied_by_its_keys_windows() {
        let mut skips = Skips::default();
        skips.insert(Bytes::from_static(b"a"), 100, 50);
        skips.insert(Bytes::from_static(b"b"), 150, 50);
        let judge = |skips: &mut Skips, keys: &[&[u8]], at| skips.judge(keys.iter().copied(), at);
        assert_eq!(judge(&mut skips, &[b"a"], 90), Judgement::Drop);
        assert_eq!(judge(&mut skips, &[b"a"], 100), Judgement::Drop);
        assert_eq!(judge(&mut skips, &[b"a", b"c"], 95), Judgement::Copy);
        assert_eq!(judge(&mut skips, &[b"c"], 95), Judgement::Apply);
        // Past its window a key applies again, and its entry goes.
        assert_eq!(judge(&mut skips, &[b"a", b"b"], 120), Judgement::Copy);
        assert_eq!(judge(&mut skips, &[b"a"], 130), Judgement::Apply);
        assert_eq!(judge(&mut skips, &[b"b"], 151), Judgement::Apply);
        assert!(skips.is_empty());
    }

    #[test]
    fn a_later_copy_only_lengthens_a_window_and_old_entries_are_swept() {
        let mut skips = Skips::default();
        skips.insert(Bytes::from_static(b"a"), 200, 50);
        skips.insert(Bytes::from_static(b"a"), 100, 50);
        assert_eq!(skips.judge([&b"a"[..]].into_iter(), 150), Judgement::Drop);
        for i in 0..=SKIPS_SWEEP_AT as i64 {
            skips.insert(Bytes::from(format!("k{i}")), 1000 + i, 300);
        }
        // Only "a", behind the stream, was swept.
        assert_eq!(skips.through.len(), SKIPS_SWEEP_AT + 1);
        assert!(!skips.through.contains_key(&b"a"[..]));
        skips.insert(Bytes::from_static(b"last"), 9000, 3000);
        assert_eq!(skips.through.len(), 1 + 1 + (SKIPS_SWEEP_AT - 2000));
        assert!(skips.through.contains_key(&b"k4096"[..]));
    }

    #[test]
    fn entries_leave_only_with_a_checkpoint_that_passes_them() {
        let mut entries = SkipEntries::default();
        entries.record(4, Bytes::from_static(b"a"), 100);
        entries.record(4, Bytes::from_static(b"b"), 200);
        entries.record(5, Bytes::from_static(b"c"), 50);
        assert!(entries.passed(4, 99).is_empty());
        assert_eq!(entries.passed(4, 150), vec![Bytes::from_static(b"a")]);
        assert_eq!(entries.passed(4, 200), vec![Bytes::from_static(b"b")]);
        assert!(entries.passed(4, 999).is_empty());
        assert_eq!(entries.passed(5, 50), vec![Bytes::from_static(b"c")]);
    }

    #[test]
    fn an_hgetall_reply_gives_its_pairs() {
        let bulk = |s: &'static str| Frame::Bulk(Bytes::from_static(s.as_bytes()));
        let items = [bulk("k1"), bulk("120"), bulk("k2"), bulk("x"), bulk("odd")];
        assert_eq!(skip_pairs(&items), vec![(Bytes::from_static(b"k1"), 120)]);
    }
}
