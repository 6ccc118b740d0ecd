//! What a comparison covered: which databases exist on each side and hold keys, how
//! that was learned, which were compared, and everything that was not looked at.
//!
//! verify says CONSISTENT only about what it read. Before walking, each side is asked
//! which databases it has ([`crate::read::databases`], also reachable as
//! `coverage::learn`); what could not be learned is a gap of the coverage.
//!
//! By default every database holding keys on either side is compared (their union);
//! an explicit list (`--dbs`) restricts the scope, and the databases outside it that
//! hold keys are named. A database that exists on one side only (the other's
//! `databases` is smaller) is compared against an empty one, so its keys are reported
//! missing or extra. A database a side refuses to SELECT is "not read", with the reason.
//!
//! [`Coverage::is_complete`] is what the exit status distinguishes: no gap, no sample.
//! Databases outside an explicit `--dbs` are the user's scope, not a gap: they are
//! named in the scope ("databases 0, 3 as asked; database 20 holds keys and was not
//! compared (not asked)"), so an audit of a filtered sync can exit 0.
//! With a database mapping (`--map-db SRC:DST`) the databases compared are the
//! source's numbers (each read on the target as its image); a target database holding
//! keys that is no source database's image (its number mapped elsewhere) is out of
//! scope, and named as such ([`Coverage::unmapped_target`]), never left unsaid.
//! A key list (`--keys-from`, `--recheck`) compares exactly the keys asked and is named
//! as such; it is not a gap.
//!
//! Plain data and its wording; it must never read either side.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

/// How one side's databases were learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A Redis Cluster: database 0 only.
    Cluster,
    /// From `INFO keyspace`.
    InfoKeyspace,
    /// INFO refused: by `SELECT n` + `DBSIZE`, for n below this.
    Probed { below: u32 },
}

impl Learned {
    pub fn describe(&self) -> String {
        match self {
            Learned::Cluster => "a cluster: database 0 only".into(),
            Learned::InfoKeyspace => "from INFO keyspace".into(),
            Learned::Probed { below } => {
                format!(
                    "INFO refused: probed with SELECT and DBSIZE, databases 0 to {}",
                    below.saturating_sub(1)
                )
            }
        }
    }
}

/// What one side said about its databases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideDatabases {
    pub learned: Learned,
    /// `CONFIG GET databases`, when asked (INFO refused) and it could be read.
    pub configured: Option<u32>,
    /// Databases holding keys (or whose size could not be read).
    pub with_keys: BTreeSet<u32>,
    /// What could not be learned (a gap of the coverage).
    pub unknown: Option<String>,
}

/// What the run covered; reported with the differences.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    /// The databases given explicitly (`--dbs`); None: every database with keys.
    pub asked: Option<Vec<u32>>,
    /// What each side said (None: a key list, nothing learned).
    pub source: Option<SideDatabases>,
    pub target: Option<SideDatabases>,
    /// Databases walked (or whose listed keys were read).
    pub compared: Vec<u32>,
    /// Databases that could not be read, and why.
    pub not_read: BTreeMap<u32, String>,
    /// Databases holding keys on either side, outside the asked scope.
    pub not_asked: Vec<u32>,
    /// A sample: keys compared out of about how many (the source's DBSIZE).
    pub sample: Option<SampleCoverage>,
    /// Only the keys of a key list were read.
    pub key_list: bool,
    /// Target databases (the target's numbers) holding keys that no source database
    /// is written into (`--map-db`): out of scope, named in [`Coverage::scope`].
    pub unmapped_target: Vec<u32>,
    /// `--script`: keys NOT VERIFIED (db, key, why), the first ones of
    /// [`Coverage::not_verified_count`]; a gap.
    pub not_verified: Vec<(u32, Vec<u8>, String)>,
    pub not_verified_count: u64,
    /// `--script`: databases whose extra keys were not checked, and why; a gap.
    pub extras_unchecked: BTreeMap<u32, String>,
}

/// A sample's extent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleCoverage {
    /// The fraction of the key space (by key hash) compared.
    pub rate: f64,
}

impl Coverage {
    /// Joins another view's coverage of the same run ([`crate::Report::absorb`]):
    /// compared and unreadable databases of either; out of scope or unmapped only
    /// what is so in both; what a side could not tell, from either.
    pub fn absorb(&mut self, other: Coverage) {
        for db in other.compared {
            if !self.compared.contains(&db) {
                self.compared.push(db);
            }
        }
        self.compared.sort_unstable();
        for (db, why) in other.not_read {
            self.not_read.entry(db).or_insert(why);
        }
        self.not_asked.retain(|db| other.not_asked.contains(db));
        self.unmapped_target
            .retain(|db| other.unmapped_target.contains(db));
        for (mine, theirs) in [
            (&mut self.source, other.source),
            (&mut self.target, other.target),
        ] {
            match (mine.as_mut(), theirs) {
                (Some(mine), Some(theirs)) if mine.unknown.is_none() => {
                    mine.unknown = theirs.unknown
                }
                (None, Some(theirs)) => *mine = Some(theirs),
                _ => {}
            }
        }
        self.key_list |= other.key_list;
    }

    /// Nothing left out: every database with keys compared, every side's databases
    /// learned, no sample.
    pub fn is_complete(&self) -> bool {
        self.gaps().is_empty() && self.sample.is_none()
    }

    /// Whatever was not covered, one sentence each (the sample aside).
    pub fn gaps(&self) -> Vec<String> {
        let mut gaps = Vec::new();
        for (name, side) in [("source", &self.source), ("target", &self.target)] {
            if let Some(unknown) = side.as_ref().and_then(|s| s.unknown.as_ref()) {
                gaps.push(format!("{name}: {unknown}"));
            }
        }
        for (db, why) in &self.not_read {
            gaps.push(format!("database {db} not read: {why}"));
        }
        if self.not_verified_count > 0 {
            let first: Vec<String> = self
                .not_verified
                .iter()
                .take(3)
                .map(|(db, key, why)| {
                    format!("db {db} key {:?}: {why}", String::from_utf8_lossy(key))
                })
                .collect();
            gaps.push(format!(
                "{} scripted keys NOT VERIFIED ({})",
                self.not_verified_count,
                first.join("; ")
            ));
        }
        for (db, why) in &self.extras_unchecked {
            gaps.push(format!(
                "database {db}: extra target keys were not checked ({why})"
            ));
        }
        gaps
    }

    /// The databases holding keys outside an explicit `--dbs`, in words: the user's
    /// choice (a filtered sync), so not a gap, but never left unsaid.
    pub fn outside_scope(&self) -> Option<String> {
        if self.not_asked.is_empty() {
            return None;
        }
        let verb = if self.not_asked.len() == 1 {
            "holds keys and was"
        } else {
            "hold keys and were"
        };
        Some(format!(
            "{} {verb} not compared (not asked)",
            databases(&self.not_asked)
        ))
    }

    /// The target's databases with keys that no source database is written into, in
    /// words.
    pub fn outside_mapping(&self) -> Option<String> {
        if self.unmapped_target.is_empty() {
            return None;
        }
        let (verb, image) = if self.unmapped_target.len() == 1 {
            ("holds keys and is", "the image of no source database")
        } else {
            ("hold keys and are", "the images of no source database")
        };
        Some(format!(
            "the target's {} {verb} {image} (--map-db): not compared",
            databases(&self.unmapped_target)
        ))
    }

    /// The scope in words: "databases 0, 3 as asked", "databases 0, 20 (every
    /// database holding keys)", and the target's databases outside the mapping.
    pub fn scope(&self) -> String {
        let scope = self.scope_of_source();
        match self.outside_mapping() {
            Some(outside) => format!("{scope}; {outside}"),
            None => scope,
        }
    }

    fn scope_of_source(&self) -> String {
        let compared = if self.compared.is_empty() {
            "no database (none holds keys)".to_owned()
        } else {
            databases(&self.compared)
        };
        if self.key_list {
            format!("the listed keys of {compared}")
        } else if self.asked.is_some() {
            match self.outside_scope() {
                Some(outside) => format!("{compared} as asked; {outside}"),
                None => format!("{compared} as asked"),
            }
        } else {
            format!("{compared} (every database holding keys)")
        }
    }

    /// The `coverage` object of the JSON summary.
    pub fn to_json(&self) -> serde_json::Value {
        let side = |s: &Option<SideDatabases>| {
            s.as_ref().map(|s| {
                json!({
                    "learned": match &s.learned {
                        Learned::Cluster => "cluster".to_owned(),
                        Learned::InfoKeyspace => "info_keyspace".to_owned(),
                        Learned::Probed { .. } => "probed".to_owned(),
                    },
                    "how": s.learned.describe(),
                    "configured_databases": s.configured,
                    "databases_with_keys": s.with_keys,
                    "unknown": s.unknown,
                })
            })
        };
        json!({
            "complete": self.is_complete(),
            "scope": if self.key_list { "key_list" } else if self.asked.is_some() { "asked" } else { "every_database_with_keys" },
            "asked": self.asked,
            "compared": self.compared,
            "not_read": self.not_read.iter().map(|(db, why)| (db.to_string(), why.clone())).collect::<BTreeMap<_, _>>(),
            "not_asked_with_keys": self.not_asked,
            "target_unmapped_with_keys": self.unmapped_target,
            "sample": self.sample.map(|s| json!({"rate": s.rate})),
            "source": side(&self.source),
            "target": side(&self.target),
            "gaps": self.gaps(),
            "not_verified": self.not_verified_count,
        })
    }
}

/// "database 3" or "databases 0, 3".
fn databases(dbs: &[u32]) -> String {
    let list: Vec<String> = dbs.iter().map(u32::to_string).collect();
    match dbs.len() {
        1 => format!("database {}", list[0]),
        _ => format!("databases {}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_scope_names_the_databases_left_out() {
        let coverage = Coverage {
            asked: Some(vec![0, 3]),
            compared: vec![0, 3],
            not_asked: vec![20, 31],
            ..Coverage::default()
        };
        assert!(coverage.is_complete(), "an explicit scope is not a gap");
        assert_eq!(
            coverage.scope(),
            "databases 0, 3 as asked; databases 20, 31 hold keys and were not compared (not asked)"
        );
        assert!(coverage.gaps().is_empty());
        let sampled = Coverage {
            sample: Some(SampleCoverage::default()),
            ..Coverage::default()
        };
        assert!(sampled.gaps().is_empty() && !sampled.is_complete());
    }

    #[test]
    fn a_target_database_outside_the_mapping_is_named() {
        let coverage = Coverage {
            compared: vec![3],
            unmapped_target: vec![3],
            ..Coverage::default()
        };
        assert!(coverage.is_complete(), "the mapping's scope is not a gap");
        assert_eq!(
            coverage.scope(),
            "database 3 (every database holding keys); the target's database 3 holds keys and is the image of no source database (--map-db): not compared"
        );
    }
}
