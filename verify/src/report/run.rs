//! The report of one run: what was compared, the differences, how each database's
//! extra keys were looked for ([`TargetPass`]), the coverage, and what the run may
//! claim ([`Verdict`]). Its `Display` is the one-paragraph human summary.
//!
//! Plain data built once at the end of a run ([`crate::compare`]); it must never
//! claim CONSISTENT over what was not read: [`Report::verdict`] is Consistent only
//! with no difference and a complete coverage.

use std::collections::BTreeMap;
use std::time::Duration;

use roaring::RoaringBitmap;

use crate::report::coverage::Coverage;
use crate::report::difference::{Difference, DifferenceKind};
use crate::report::statement::Statement;

/// What a run may claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No difference, and everything was covered.
    Consistent,
    /// Differences were found.
    Differences,
    /// No difference in what was read, but not everything was (a sample, a database
    /// not read or not asked, databases that could not be learned).
    Incomplete,
}

/// How the extra keys of a database's target were looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetPass {
    /// Every target key was checked on the source.
    Scanned,
    /// Neither side changed and the counts matched: the target holds no other key.
    ProvenByCounts,
    /// Only the keys of a key list were read (on both sides).
    KeyList,
}

impl TargetPass {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetPass::Scanned => "scanned",
            TargetPass::ProvenByCounts => "proven_by_counts",
            TargetPass::KeyList => "key_list",
        }
    }
}

/// The outcome: keys compared and every difference.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Source keys read on both sides (present on the source when read).
    pub keys_compared: u64,
    /// Keys compared, by type.
    pub keys_per_type: BTreeMap<String, u64>,
    /// Target keys checked for existence on the source.
    pub target_keys_checked: u64,
    /// How each database's extra keys were looked for.
    pub target_pass: BTreeMap<u32, TargetPass>,
    /// Strings proved equal by their bytes (MGET).
    pub strings_equal: u64,
    /// Values proved equal by byte-equal DUMP payloads.
    pub dump_equal: u64,
    /// Values compared by chunked digests.
    pub digests_compared: u64,
    /// Differences still present in the last round, with their keys (at most
    /// `max_listed`, sorted by database and key).
    pub differences: Vec<Difference>,
    /// Further differences of the last round, counted but not listed.
    pub unlisted_differences: u64,
    /// Differences of the last round by kind, listed or not.
    pub differences_by_kind: BTreeMap<&'static str, u64>,
    /// Largest memory held by fingerprints of unlisted differences, in bytes.
    pub fingerprint_bytes: usize,
    /// Differences found in each round.
    pub round_differences: Vec<u64>,
    /// Differences of the first round that were gone in a later round (lag).
    pub vanished: u64,
    /// Cluster hash slots of the keys read (a standalone server's keys map onto them
    /// too): which of the 16384 slots the run covered.
    pub slots_covered: RoaringBitmap,
    /// Long strings compared in windows.
    pub strings_windowed: u64,
    /// `--script`: source keys judged through the script (of `keys_compared`).
    pub scripted_keys: u64,
    /// Which databases were compared, and everything that was not.
    pub coverage: Coverage,
    pub elapsed: Duration,
}

impl Report {
    /// Adds another view's report of the same run (a routed sync: one report per
    /// target database, [`crate::compare`]): counts added, differences listed
    /// together (at most `max_listed`, the rest counted), coverage joined. A
    /// database is out of scope or unmapped only when it is in every view.
    pub fn absorb(&mut self, other: Report, max_listed: usize) {
        self.keys_compared += other.keys_compared;
        add_counts(&mut self.keys_per_type, other.keys_per_type);
        self.target_keys_checked += other.target_keys_checked;
        for (db, pass) in other.target_pass {
            let entry = self.target_pass.entry(db).or_insert(pass);
            if pass == TargetPass::KeyList || *entry == TargetPass::ProvenByCounts {
                *entry = pass; // the weaker claim stands
            }
        }
        self.strings_equal += other.strings_equal;
        self.dump_equal += other.dump_equal;
        self.digests_compared += other.digests_compared;
        self.differences.extend(other.differences);
        self.differences
            .sort_by(|a, b| (a.db, &a.key).cmp(&(b.db, &b.key)));
        let beyond = self.differences.len().saturating_sub(max_listed);
        self.differences.truncate(max_listed);
        self.unlisted_differences += other.unlisted_differences + beyond as u64;
        for (kind, n) in other.differences_by_kind {
            *self.differences_by_kind.entry(kind).or_insert(0) += n;
        }
        self.fingerprint_bytes = self.fingerprint_bytes.max(other.fingerprint_bytes);
        let rounds = self
            .round_differences
            .len()
            .max(other.round_differences.len());
        self.round_differences.resize(rounds, 0);
        for (i, n) in other.round_differences.into_iter().enumerate() {
            self.round_differences[i] += n;
        }
        self.vanished += other.vanished;
        self.slots_covered |= other.slots_covered;
        self.strings_windowed += other.strings_windowed;
        self.coverage.absorb(other.coverage);
        self.elapsed += other.elapsed;
    }

    /// No difference in what was read. Whether that is everything: [`Report::verdict`]
    /// and [`Report::coverage`].
    pub fn is_consistent(&self) -> bool {
        self.difference_count() == 0
    }

    /// What the run may claim: differences, none in everything, or none in what it
    /// read (a sample, or a coverage with gaps).
    pub fn verdict(&self) -> Verdict {
        if !self.is_consistent() {
            Verdict::Differences
        } else if self.coverage.is_complete() {
            Verdict::Consistent
        } else {
            Verdict::Incomplete
        }
    }

    /// Every difference of the last round, listed or not.
    pub fn difference_count(&self) -> u64 {
        self.differences.len() as u64 + self.unlisted_differences
    }

    /// Differences by kind.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.differences_by_kind.clone()
    }

    /// What a sampled run proves about the differing fraction ([`Statement`]); None
    /// for a run that was not a sample (or sampled no key). The sampled keys are the
    /// source keys compared plus the sampled keys found only on the target.
    pub fn statement(&self) -> Option<Statement> {
        self.coverage.sample?;
        let extra = self
            .differences_by_kind
            .get(DifferenceKind::ExtraOnTarget.as_str())
            .copied()
            .unwrap_or(0);
        Statement::new(self.keys_compared + extra, self.difference_count())
    }

    /// Source keys compared per second.
    pub fn keys_per_second(&self) -> f64 {
        self.keys_compared as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} keys compared, {} differences",
            self.keys_compared,
            self.difference_count()
        )?;
        let passes: Vec<String> = self
            .target_pass
            .iter()
            .map(|(db, pass)| format!("db {db}: {}", pass.as_str()))
            .collect();
        write!(
            f,
            " ({:.2?}, {:.0} keys/s; by type {:?}; {} target keys checked [{}]; {} strings equal by bytes, {} values by DUMP, {} by digest; {} of 16384 slots covered",
            self.elapsed,
            self.keys_per_second(),
            self.keys_per_type,
            self.target_keys_checked,
            passes.join(", "),
            self.strings_equal,
            self.dump_equal,
            self.digests_compared,
            self.slots_covered.len(),
        )?;
        if self.round_differences.len() > 1 {
            write!(
                f,
                "; differences per round {:?}: {} vanished (lag), {} persisted",
                self.round_differences,
                self.vanished,
                self.difference_count()
            )?;
        }
        write!(f, "; compared {}", self.coverage.scope())?;
        if self.strings_windowed > 0 {
            write!(f, "; {} long strings in windows", self.strings_windowed)?;
        }
        if self.scripted_keys > 0 {
            write!(f, "; {} keys judged through the script", self.scripted_keys)?;
        }
        write!(f, ")")?;
        for gap in self.coverage.gaps() {
            write!(f, "\n  not covered: {gap}")?;
        }
        if let Some(sample) = self.coverage.sample {
            write!(
                f,
                "\n  a sample (rate {:.6}): the rest was not compared",
                sample.rate
            )?;
        }
        if !self.is_consistent() {
            write!(f, "\n  by kind {:?}", self.by_kind())?;
        }
        if self.unlisted_differences > 0 {
            write!(
                f,
                "\n  {} differences listed, {} more counted only (fingerprints, {} bytes)",
                self.differences.len(),
                self.unlisted_differences,
                self.fingerprint_bytes
            )?;
        }
        for d in self.differences.iter().take(20) {
            write!(
                f,
                "\n  db {} key {:?}: {} ({} vs {}) {}",
                d.db,
                String::from_utf8_lossy(&d.key),
                d.kind.as_str(),
                d.source_type,
                d.target_type,
                d.detail
            )?;
        }
        Ok(())
    }
}

/// `into` plus `more`, key by key.
fn add_counts(into: &mut BTreeMap<String, u64>, more: BTreeMap<String, u64>) {
    for (key, n) in more {
        *into.entry(key).or_insert(0) += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::coverage::{Learned, SampleCoverage, SideDatabases};
    use crate::report::difference::DifferenceKind;

    fn difference() -> Difference {
        Difference {
            db: 0,
            key: b"k".to_vec(),
            kind: DifferenceKind::Value,
            detail: String::new(),
            source_type: "string".into(),
            target_type: "string".into(),
            source_pttl: -1,
            target_pttl: -1,
        }
    }

    fn compared(dbs: Vec<u32>) -> Coverage {
        Coverage {
            compared: dbs,
            ..Coverage::default()
        }
    }

    #[test]
    fn consistent_only_without_differences_over_a_complete_coverage() {
        let report = Report {
            coverage: compared(vec![0]),
            ..Report::default()
        };
        assert_eq!(report.verdict(), Verdict::Consistent);
        let asked = Report {
            coverage: Coverage {
                asked: Some(vec![0]),
                not_asked: vec![3],
                ..compared(vec![0])
            },
            ..Report::default()
        };
        assert_eq!(
            asked.verdict(),
            Verdict::Consistent,
            "databases outside --dbs are the user's scope, not a gap"
        );
    }

    #[test]
    fn differences_win_over_any_gap_listed_or_counted_only() {
        let listed = Report {
            differences: vec![difference()],
            coverage: Coverage {
                sample: Some(SampleCoverage { rate: 0.1 }),
                ..compared(vec![0])
            },
            ..Report::default()
        };
        assert_eq!(listed.verdict(), Verdict::Differences);
        let counted = Report {
            unlisted_differences: 7,
            ..Report::default()
        };
        assert_eq!(counted.verdict(), Verdict::Differences);
        assert_eq!(counted.difference_count(), 7);
        assert!(!counted.is_consistent());
    }

    #[test]
    fn a_sample_or_a_gap_without_differences_is_incomplete() {
        let sampled = Report {
            coverage: Coverage {
                sample: Some(SampleCoverage { rate: 0.5 }),
                ..compared(vec![0])
            },
            ..Report::default()
        };
        assert_eq!(sampled.verdict(), Verdict::Incomplete);
        assert!(sampled.is_consistent(), "no difference in what was read");
        let not_read = Report {
            coverage: Coverage {
                not_read: [(2, "the target refused it: NOPERM".to_owned())].into(),
                ..compared(vec![0])
            },
            ..Report::default()
        };
        assert_eq!(not_read.verdict(), Verdict::Incomplete);
        let unknown = Report {
            coverage: Coverage {
                source: Some(SideDatabases {
                    learned: Learned::Probed { below: 256 },
                    configured: None,
                    with_keys: [0].into(),
                    unknown: Some("databases from 256 up were not probed".into()),
                }),
                ..compared(vec![0])
            },
            ..Report::default()
        };
        assert_eq!(unknown.verdict(), Verdict::Incomplete);
    }
}
