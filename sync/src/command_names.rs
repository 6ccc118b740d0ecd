//! Looking a command name up in a static table, case-insensitively, in one probe:
//! the stream filter does it for every command (the key table of [`crate::keys`],
//! the type table of [`crate::rules::types`]).
//!
//! Written by hand because it is on the hot path and tiny: a binary search over
//! ~130 names cost 7 string comparisons per command (measured with
//! `cargo bench -p lockstep-sync --bench filter_rules`: `key_spec` and `memcmp` were
//! a quarter of the filter's time under prefix rules). The index is an
//! open-addressing table of the names' positions, built once; a lookup upper-cases
//! the name on the stack, hashes it and compares one or two entries.

use std::sync::OnceLock;

/// Names longer than this are in no table.
const NAME_MAX: usize = 24;
/// Slots of the index (a power of two, at least twice the longest table).
const SLOTS: usize = 512;
const EMPTY: u16 = u16::MAX;

/// An index over the names of one static table.
pub(crate) struct NameIndex {
    slots: Vec<u16>,
}

impl NameIndex {
    /// Indexes `names` (upper-case ASCII, distinct, fewer than SLOTS / 2).
    pub(crate) fn build<'a>(names: impl Iterator<Item = &'a str>) -> NameIndex {
        let mut slots = vec![EMPTY; SLOTS];
        for (i, name) in names.enumerate() {
            assert!(
                i < SLOTS / 2 && name.len() <= NAME_MAX,
                "the table outgrew the index"
            );
            let mut at = hash(name.as_bytes());
            while slots[at] != EMPTY {
                at = (at + 1) % SLOTS;
            }
            slots[at] = i as u16;
        }
        NameIndex { slots }
    }

    /// The position of `name` (any case) in the table `name_at` reads.
    pub(crate) fn find<'t>(
        &self,
        name: &[u8],
        name_at: impl Fn(usize) -> &'t str,
    ) -> Option<usize> {
        let mut buf = [0u8; NAME_MAX];
        let upper = buf.get_mut(..name.len())?;
        for (u, c) in upper.iter_mut().zip(name) {
            *u = c.to_ascii_uppercase();
        }
        let mut at = hash(upper);
        loop {
            let entry = self.slots[at];
            if entry == EMPTY {
                return None;
            }
            if name_at(usize::from(entry)).as_bytes() == &*upper {
                return Some(usize::from(entry));
            }
            at = (at + 1) % SLOTS;
        }
    }
}

/// A lazily built index (one per table).
pub(crate) struct LazyIndex(OnceLock<NameIndex>);

impl LazyIndex {
    pub(crate) const fn new() -> LazyIndex {
        LazyIndex(OnceLock::new())
    }

    pub(crate) fn get<'a>(
        &self,
        names: impl FnOnce() -> Box<dyn Iterator<Item = &'a str> + 'a>,
    ) -> &NameIndex {
        self.0.get_or_init(|| NameIndex::build(names()))
    }
}

fn hash(upper: &[u8]) -> usize {
    let mut h: u32 = 2_166_136_261;
    for &b in upper {
        h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    h as usize % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_name_in_any_case_and_nothing_else() {
        let names = ["SET", "GET", "HSET", "ZUNIONSTORE", "X"];
        let index = NameIndex::build(names.iter().copied());
        for (i, n) in names.iter().enumerate() {
            assert_eq!(index.find(n.as_bytes(), |j| names[j]), Some(i));
            assert_eq!(
                index.find(n.to_lowercase().as_bytes(), |j| names[j]),
                Some(i)
            );
        }
        assert_eq!(index.find(b"SETX", |j| names[j]), None);
        assert_eq!(index.find(b"", |j| names[j]), None);
        assert_eq!(index.find(&[b'A'; 40], |j| names[j]), None);
    }
}
