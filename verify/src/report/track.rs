//! Compact sets of what a run has seen, so that memory stays bounded by the options,
//! not by the data:
//!
//! - [`Differences`]: the differences found, with their full key bytes for at most
//!   `max_listed` of them (those go to the CSV); every further differing key is kept
//!   only as a 32-bit fingerprint in a roaring bitmap per database (about 2 to 4 bytes
//!   a key), plus a count per kind. A later round finds those keys again by walking the
//!   key space and re-reading only keys whose fingerprint is in the set: a fingerprint
//!   shared by another key only costs that key a re-read, never a wrong report.
//! - [`key_slot`] (from [`crate::read::slot`], kept here under its old path): the Redis
//!   Cluster hash slot of a key, so a run can report which of the 16384 slots it
//!   covered (a roaring bitmap).
//!
//! Plain sets; it must never read either side.

use std::collections::BTreeMap;

use roaring::RoaringBitmap;

pub use crate::read::slot::{key_slot, SLOTS};
use crate::report::difference::{Difference, DifferenceKind};

/// The fingerprint under which a differing key is remembered when it is not listed.
pub fn fingerprint(key: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(key) as u32
}

/// Differences found: the first `max_listed` with their keys, the rest as
/// fingerprints per database and counts per kind.
#[derive(Clone, Debug, Default)]
pub struct Differences {
    max_listed: usize,
    listed: Vec<Difference>,
    unlisted: BTreeMap<u32, RoaringBitmap>,
    unlisted_by_kind: BTreeMap<DifferenceKind, u64>,
}

impl Differences {
    pub fn new(max_listed: usize) -> Differences {
        Differences {
            max_listed,
            ..Differences::default()
        }
    }

    pub fn push(&mut self, difference: Difference) {
        if self.listed.len() < self.max_listed {
            self.listed.push(difference);
        } else {
            self.unlisted
                .entry(difference.db)
                .or_default()
                .insert(fingerprint(&difference.key));
            *self.unlisted_by_kind.entry(difference.kind).or_insert(0) += 1;
        }
    }

    /// Adds the differences of `other` (listed ones up to this set's limit).
    pub fn absorb(&mut self, other: Differences) {
        for d in other.listed {
            self.push(d);
        }
        for (db, fingerprints) in other.unlisted {
            *self.unlisted.entry(db).or_default() |= fingerprints;
        }
        for (kind, n) in other.unlisted_by_kind {
            *self.unlisted_by_kind.entry(kind).or_insert(0) += n;
        }
    }

    /// Every difference, listed or not.
    pub fn len(&self) -> u64 {
        self.listed.len() as u64 + self.unlisted_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Differences kept only as fingerprints (not in the CSV).
    pub fn unlisted_count(&self) -> u64 {
        self.unlisted_by_kind.values().sum()
    }

    /// The listed differences, with their keys.
    pub fn listed(&self) -> &[Difference] {
        &self.listed
    }

    pub fn sort(&mut self) {
        self.listed
            .sort_by(|a, b| (a.db, &a.key, a.kind).cmp(&(b.db, &b.key, b.kind)));
    }

    /// Counts per kind, listed and unlisted.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for d in &self.listed {
            *out.entry(d.kind.as_str()).or_insert(0) += 1;
        }
        for (kind, n) in &self.unlisted_by_kind {
            *out.entry(kind.as_str()).or_insert(0) += n;
        }
        out
    }

    /// The fingerprints of the unlisted differing keys of each database.
    pub fn unlisted_fingerprints(&self) -> &BTreeMap<u32, RoaringBitmap> {
        &self.unlisted
    }

    /// Bytes held by the fingerprints (their serialized size, close to the heap size).
    pub fn fingerprint_bytes(&self) -> usize {
        self.unlisted
            .values()
            .map(RoaringBitmap::serialized_size)
            .sum()
    }

    /// The listed differences, taken out.
    pub fn into_listed(self) -> Vec<Difference> {
        self.listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn difference() -> Difference {
        Difference {
            db: 0,
            key: Vec::new(),
            kind: DifferenceKind::MissingOnTarget,
            detail: String::new(),
            source_type: "string".into(),
            target_type: "none".into(),
            source_pttl: -1,
            target_pttl: -2,
        }
    }

    #[test]
    fn many_differences_cost_a_few_bytes_each_beyond_the_listed_ones() {
        let mut set = Differences::new(1000);
        let template = difference();
        // 400k keys (a million takes 10 s in a debug build): ~2.4 bytes a key; the
        // per-key cost falls as the bitmap's 65536 containers fill up.
        const N: u64 = 400_000;
        for n in 0..N {
            set.push(Difference {
                key: format!("key:{n}").into_bytes(),
                ..template.clone()
            });
        }
        assert_eq!(set.len(), N);
        assert_eq!(set.listed().len(), 1000);
        assert_eq!(set.unlisted_count(), N - 1000);
        assert_eq!(set.by_kind()["missing_on_target"], N);
        let bytes = set.fingerprint_bytes() as u64;
        assert!(bytes < 4 * N, "{bytes} bytes for {} fingerprints", N - 1000);
        // Every unlisted key is found again by its fingerprint.
        let fps = &set.unlisted_fingerprints()[&0];
        assert!((1000..N).all(|n| fps.contains(fingerprint(format!("key:{n}").as_bytes()))));
    }
}
