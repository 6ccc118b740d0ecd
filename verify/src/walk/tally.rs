//! What batches found, added up: counts (keys read, by type, by fast path, slots
//! covered) and the differences ([`Differences`]: listed, then fingerprints).
//!
//! Plain accumulation; it must never read or judge anything.

use std::collections::BTreeMap;

use roaring::RoaringBitmap;

use crate::report::difference::Difference;
use crate::report::track::Differences;

/// What batches found, besides differences.
#[derive(Default)]
pub(crate) struct Counts {
    /// Keys SCAN returned, before filtering.
    pub(crate) scanned: u64,
    pub(crate) compared: u64,
    /// Keys present on both sides.
    pub(crate) on_both: u64,
    pub(crate) per_type: BTreeMap<String, u64>,
    pub(crate) target_checked: u64,
    pub(crate) strings_equal: u64,
    pub(crate) dump_equal: u64,
    pub(crate) digests: u64,
    pub(crate) windowed: u64,
    pub(crate) slots: RoaringBitmap,
}

impl Counts {
    pub(crate) fn add(&mut self, other: Counts) {
        self.scanned += other.scanned;
        self.compared += other.compared;
        self.on_both += other.on_both;
        for (k, n) in other.per_type {
            *self.per_type.entry(k).or_insert(0) += n;
        }
        self.target_checked += other.target_checked;
        self.strings_equal += other.strings_equal;
        self.dump_equal += other.dump_equal;
        self.digests += other.digests;
        self.windowed += other.windowed;
        self.slots |= other.slots;
    }
}

/// What one batch found.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) counts: Counts,
    pub(crate) diffs: Vec<Difference>,
}

/// Everything found so far.
pub(crate) struct Tally {
    pub(crate) counts: Counts,
    pub(crate) diffs: Differences,
}

impl Tally {
    pub(crate) fn new(max_listed: usize) -> Tally {
        Tally {
            counts: Counts::default(),
            diffs: Differences::new(max_listed),
        }
    }

    pub(crate) fn absorb(&mut self, o: Outcome) {
        self.counts.add(o.counts);
        for d in o.diffs {
            self.diffs.push(d);
        }
    }

    /// Adds another tally's counts and differences.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.counts.add(other.counts);
        self.diffs.absorb(other.diffs);
    }
}
