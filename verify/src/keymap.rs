//! Where a source database and key live on the target: the sync's `--map-db SRC:DST`,
//! `--rename-prefix OLD=NEW` and `--rename-regex FROM TO`, re-implemented here on purpose (verify shares no
//! code with the sync: it is the independent oracle of what the sync wrote).
//!
//! A source database `SRC` of a mapping is read on the target as `DST`; any other
//! database keeps its number. A source key `OLD rest` is read on the target as
//! `NEW rest` under the first rule whose OLD it starts with; a key no rule matches
//! keeps its name, unless a regex rule (tried after every prefix rule, first match
//! wins: [`crate::rules::rename`]) renames it. The inverses answer which source database and key a target one
//! is the image of: None when none is (a target database that no source database
//! is written into; a target key under some OLD prefix but under no NEW one, whose
//! source key of that name would have been renamed): such a key is extra.
//!
//! A target key's source name is the first candidate (a prefix rule's, a regex
//! rule's inverse, the key's own name) that the forward map writes as that very key:
//! a candidate another rule would rename elsewhere is no source of it.
//!
//! Pure; the rules are assumed one-to-one (the command line refuses overlapping
//! prefixes and malformed regex rules before a run, as the sync does).

use std::borrow::Cow;

use crate::rules::rename::RegexRename;

/// The mapping of databases and key names from the source onto the target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyMap {
    /// Source database -> target database; unmapped databases keep their number.
    pub db_map: Vec<(u32, u32)>,
    /// OLD prefix -> NEW prefix, in the order given.
    pub renames: Vec<(Vec<u8>, Vec<u8>)>,
    /// Regex rules, in the order given, tried after the prefix rules.
    pub regexes: Vec<RegexRename>,
}

impl KeyMap {
    pub fn new(db_map: Vec<(u32, u32)>, renames: Vec<(Vec<u8>, Vec<u8>)>) -> KeyMap {
        KeyMap {
            db_map,
            renames,
            regexes: Vec::new(),
        }
    }

    /// The same map with these regex rules after the prefix rules.
    pub fn with_regexes(self, regexes: Vec<RegexRename>) -> KeyMap {
        KeyMap { regexes, ..self }
    }

    /// Whether key names are the same on both sides.
    pub fn renames_nothing(&self) -> bool {
        self.renames.is_empty() && self.regexes.is_empty()
    }

    /// The target database source database `db` is written into.
    pub fn target_db(&self, db: u32) -> u32 {
        self.db_map
            .iter()
            .find(|(src, _)| *src == db)
            .map_or(db, |&(_, dst)| dst)
    }

    /// The source database written into target database `db`, or None when none is
    /// (its number is mapped elsewhere and no mapping points at it).
    pub fn source_db(&self, db: u32) -> Option<u32> {
        if let Some(&(src, _)) = self.db_map.iter().find(|(_, dst)| *dst == db) {
            return Some(src);
        }
        (!self.db_map.iter().any(|(src, _)| *src == db)).then_some(db)
    }

    /// The target name of source key `key`.
    pub fn target_key<'k>(&self, key: &'k [u8]) -> Cow<'k, [u8]> {
        for (old, new) in &self.renames {
            if let Some(rest) = key.strip_prefix(old.as_slice()) {
                return Cow::Owned([new.as_slice(), rest].concat());
            }
        }
        for rule in &self.regexes {
            if let Some(name) = rule.rename(key) {
                return Cow::Owned(name);
            }
        }
        Cow::Borrowed(key)
    }

    /// The source key written as target key `key`, or None when no source key is.
    pub fn source_key<'k>(&self, key: &'k [u8]) -> Option<Cow<'k, [u8]>> {
        let prefixed = self.renames.iter().filter_map(|(old, new)| {
            key.strip_prefix(new.as_slice())
                .map(|rest| [old.as_slice(), rest].concat())
        });
        let by_regex = self.regexes.iter().filter_map(|rule| rule.invert(key));
        for candidate in prefixed.chain(by_regex) {
            if *self.target_key(&candidate) == *key {
                return Some(Cow::Owned(candidate));
            }
        }
        (*self.target_key(key) == *key).then_some(Cow::Borrowed(key))
    }

    /// The target names of `keys`: borrowed as they are when nothing is renamed.
    pub fn target_keys<'k>(&self, keys: &'k [Vec<u8>]) -> Cow<'k, [Vec<u8>]> {
        if self.renames_nothing() {
            return Cow::Borrowed(keys);
        }
        Cow::Owned(
            keys.iter()
                .map(|k| self.target_key(k).into_owned())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn renames(pairs: &[(&str, &str)]) -> KeyMap {
        KeyMap::new(
            Vec::new(),
            pairs
                .iter()
                .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn nothing_mapped_is_the_identity() {
        let map = KeyMap::default();
        assert_eq!(map.target_db(5), 5);
        assert_eq!(map.source_db(5), Some(5));
        assert_eq!(&*map.target_key(b"user:1"), b"user:1");
        assert_eq!(map.source_key(b"user:1").as_deref(), Some(&b"user:1"[..]));
        let keys = vec![b"a".to_vec()];
        assert!(matches!(map.target_keys(&keys), Cow::Borrowed(_)));
    }

    #[test]
    fn a_mapped_database_is_read_elsewhere_and_its_number_has_no_source() {
        let map = KeyMap::new(vec![(3, 0)], Vec::new());
        assert_eq!(map.target_db(3), 0);
        assert_eq!(map.target_db(1), 1);
        assert_eq!(map.source_db(0), Some(3));
        assert_eq!(map.source_db(3), None, "source db 3 is written into 0");
        assert_eq!(map.source_db(1), Some(1));
        let swap = KeyMap::new(vec![(0, 1), (1, 0)], Vec::new());
        assert_eq!((swap.source_db(0), swap.source_db(1)), (Some(1), Some(0)));
    }

    #[test]
    fn a_prefix_is_renamed_and_inverted() {
        let map = renames(&[("user:", "u:")]);
        assert_eq!(&*map.target_key(b"user:7"), b"u:7");
        assert_eq!(&*map.target_key(b"order:7"), b"order:7");
        assert_eq!(map.source_key(b"u:7").as_deref(), Some(&b"user:7"[..]));
        assert_eq!(map.source_key(b"order:7").as_deref(), Some(&b"order:7"[..]));
        assert_eq!(map.source_key(b"user:1"), None, "user:1 is written as u:1");
        let all = renames(&[("", "app1:")]);
        assert_eq!(&*all.target_key(b"k"), b"app1:k");
        assert_eq!(all.source_key(b"k"), None);
        let strip = renames(&[("app1:", "")]);
        assert_eq!(strip.source_key(b"k").as_deref(), Some(&b"app1:k"[..]));
    }

    #[test]
    fn regex_rules_follow_the_prefix_rules_and_invert_only_onto_their_own_keys() {
        let rule = |from, to| RegexRename::new(from, to).expect(from);
        let map = renames(&[("user:", "u:")]).with_regexes(vec![
            rule(r"^order:(\d+):(\w+)$", "o:$2:$1"),
            rule(r"(.*):tmp", "tmp:$1"),
        ]);
        assert!(!map.renames_nothing());
        assert_eq!(
            &*map.target_key(b"user:1:tmp"),
            b"u:1:tmp",
            "prefixes first"
        );
        assert_eq!(&*map.target_key(b"order:7:eu"), b"o:eu:7");
        assert_eq!(&*map.target_key(b"x:tmp"), b"tmp:x");
        assert_eq!(&*map.target_key(b"order:x:eu"), b"order:x:eu");
        assert_eq!(
            map.source_key(b"o:eu:7").as_deref(),
            Some(&b"order:7:eu"[..])
        );
        assert_eq!(map.source_key(b"tmp:x").as_deref(), Some(&b"x:tmp"[..]));
        assert_eq!(
            map.source_key(b"u:1:tmp").as_deref(),
            Some(&b"user:1:tmp"[..])
        );
        // `tmp:user:1` inverts to `user:1:tmp`, which the prefix rule writes as
        // `u:1:tmp`: only the source key `tmp:user:1` itself is written as it.
        assert_eq!(
            map.source_key(b"tmp:user:1").as_deref(),
            Some(&b"tmp:user:1"[..])
        );
        assert_eq!(map.source_key(b"user:5"), None, "user:5 is written as u:5");
        // A source key a regex renames is not its own target name.
        assert_eq!(map.source_key(b"order:7:eu"), None);
        assert_eq!(map.source_key(b"plain").as_deref(), Some(&b"plain"[..]));
        let keys = vec![b"order:1:a".to_vec()];
        assert!(matches!(map.target_keys(&keys), Cow::Owned(_)));
    }

    /// Whether no OLD (and no NEW) prefix is the start of another: the rules the
    /// command line accepts.
    fn prefix_free(prefixes: &[&Vec<u8>]) -> bool {
        prefixes.iter().enumerate().all(|(i, a)| {
            prefixes[..i]
                .iter()
                .all(|b| !a.starts_with(b) && !b.starts_with(a))
        })
    }

    proptest! {
        /// Under one-to-one rules, every source key that does not land under a NEW
        /// prefix unrenamed (the sync refuses such a key) comes back from its target
        /// name, and two keys never share one; every target key with a source name is
        /// that name's image.
        #[test]
        fn renames_round_trip(
            pairs in proptest::collection::vec(("[ab]{0,2}", "[ab]{0,2}"), 1..4),
            keys in proptest::collection::btree_set("[ab]{0,4}", 0..40),
            dbs in proptest::collection::vec((0u32..4, 0u32..4), 0..3),
        ) {
            let rules: Vec<(Vec<u8>, Vec<u8>)> = pairs
                .iter()
                .map(|(a, b)| (a.clone().into_bytes(), b.clone().into_bytes()))
                .collect();
            let olds: Vec<&Vec<u8>> = rules.iter().map(|(o, _)| o).collect();
            let news: Vec<&Vec<u8>> = rules.iter().map(|(_, n)| n).collect();
            prop_assume!(prefix_free(&olds) && prefix_free(&news));
            prop_assume!(rules.iter().all(|(o, n)| o != n));
            let map = KeyMap::new(Vec::new(), rules.clone());
            let mut seen = std::collections::HashMap::new();
            for key in keys.iter().map(|k| k.as_bytes()) {
                let renamed = olds.iter().any(|o| key.starts_with(o));
                if !renamed && news.iter().any(|n| key.starts_with(n)) {
                    continue; // refused by the sync: it would meet a renamed key
                }
                let target = map.target_key(key).into_owned();
                let back = map.source_key(&target);
                prop_assert_eq!(back.as_deref(), Some(key));
                if let Some(other) = seen.insert(target.clone(), key.to_vec()) {
                    prop_assert!(false, "{:?} and {:?} both become {:?}", other, key, target);
                }
                if let Some(source) = map.source_key(key) {
                    prop_assert_eq!(&*map.target_key(&source), key);
                }
            }
            // Databases: a mapping with distinct sources and targets round-trips.
            let mut db_map: Vec<(u32, u32)> = Vec::new();
            for (s, t) in dbs {
                if db_map.iter().all(|&(a, b)| a != s && b != t) {
                    db_map.push((s, t));
                }
            }
            let map = KeyMap::new(db_map, Vec::new());
            for db in 0..6 {
                if let Some(source) = map.source_db(db) {
                    prop_assert_eq!(map.target_db(source), db);
                }
                if map.db_map.iter().any(|&(s, _)| s == db) {
                    prop_assert_eq!(map.source_db(map.target_db(db)), Some(db));
                }
            }
        }
    }
}
