//! Key renames by prefix (`--rename-prefix OLD=NEW`): the one transform of key names
//! the sync applies, in the full copy and in the stream alike (docs/transforms.md).
//!
//! A rule `OLD=NEW` writes a source key `OLD rest` as `NEW rest` on the target; a key
//! no rule matches keeps its name. The filter's other rules (databases, prefixes,
//! lockstep's own keys) judge the *source* names; the rename comes last, just before
//! the target (`Filter::command`, `load.rs`), so the checkpoint stays exact: a
//! command is renamed once, inside the transaction that records its offset.
//!
//! # Why the rules must be one-to-one, and how that is checked
//! Two source keys written onto one target key would leave the target holding
//! whichever came last: the task could not be exact and verify could not prove it.
//! [`KeyRenames::validate`] refuses, at start, any set of rules under which two kept
//! source keys could share a target name:
//! - the OLD prefixes are pairwise prefix-free (so at most one rule matches a key),
//!   and so are the NEW prefixes (so two rules' images never meet);
//! - every kept key that starts with a NEW prefix is itself renamed (it starts with
//!   some OLD), or it would meet a renamed key: checked against the include and
//!   exclude prefixes (see [`KeyRenames::validate`]).
//!
//! Under these rules the rename is a bijection between the kept source keys and their
//! images, and [`KeyRenames::source_key`] inverts it: the clear before a full resync
//! and the TTL guard's settle find the task's keys on the target by their source
//! names. No rule may write into `LOCKSTEP_` (lockstep's own keys).

use std::borrow::Cow;

use crate::filter::OWN_KEY_PREFIX;
use crate::rules::rename_regex::RegexRename;

/// The rename rules, OLD -> NEW, in the order given, then the regex rules
/// ([`crate::rules::rename_regex`]), first match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRenames {
    rules: Vec<(Vec<u8>, Vec<u8>)>,
    regexes: Vec<RegexRename>,
}

/// Why a set of rules was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--rename-prefix: {0}")]
pub struct RenameError(pub String);

impl KeyRenames {
    /// The rules as given (checked by [`KeyRenames::validate`]).
    pub fn new(rules: Vec<(Vec<u8>, Vec<u8>)>) -> KeyRenames {
        KeyRenames {
            rules,
            regexes: Vec::new(),
        }
    }

    /// These rules, then `regexes` (`--rename-regex`), tried in order after them.
    pub fn with_regexes(mut self, regexes: Vec<RegexRename>) -> KeyRenames {
        self.regexes = regexes;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.regexes.is_empty()
    }

    pub fn regexes(&self) -> &[RegexRename] {
        &self.regexes
    }

    pub fn rules(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.rules
    }

    /// Refuses rules that could write two source keys onto one target key whatever
    /// the keys (see the module doc; the per-key guard is [`KeyRenames::collides`]).
    pub fn validate(&self) -> Result<(), RenameError> {
        let show = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
        if let Some(r) = self.regexes.iter().find(|r| r.writes_under(OWN_KEY_PREFIX)) {
            return Err(RenameError(format!(
                "--rename-regex {:?} {:?} writes under LOCKSTEP_, which is lockstep's own; pick another name",
                r.from_text(),
                r.to_text()
            )));
        }
        for (i, (old, new)) in self.rules.iter().enumerate() {
            if old == new {
                return Err(RenameError(format!(
                    "{}={} renames nothing",
                    show(old),
                    show(new)
                )));
            }
            if new.starts_with(OWN_KEY_PREFIX) {
                return Err(RenameError(format!(
                    "{} starts with LOCKSTEP_, which is lockstep's own; pick another prefix",
                    show(new)
                )));
            }
            for (other_old, other_new) in &self.rules[..i] {
                if comparable(old, other_old) {
                    return Err(RenameError(format!(
                        "{} and {} overlap: a key starting with both would match two rules (fix: keep one, or make them differ before either ends)",
                        show(other_old),
                        show(old)
                    )));
                }
                if comparable(new, other_new) {
                    return Err(RenameError(format!(
                        "{} and {} overlap: keys of two rules could be written onto one target key (fix: give each rule a NEW prefix that is not the start of another)",
                        show(other_new),
                        show(new)
                        )));
                }
            }
        }
        Ok(())
    }

    /// Would source key `key`, which no rule renames, land under a NEW prefix, where
    /// a renamed key may be written too? Such a key stops the task (see the module
    /// doc): it is the only way two source keys could share a target name once
    /// [`KeyRenames::validate`] has accepted the rules.
    ///
    /// With regex rules the check is the general one: the key's target name must
    /// lead back to it ([`KeyRenames::source_key`]), and must not be lockstep's own.
    pub fn collides(&self, key: &[u8]) -> bool {
        if !self.regexes.is_empty() {
            let target = self.target_key(key);
            return target.starts_with(OWN_KEY_PREFIX)
                || self.source_key(&target).as_deref() != Some(key);
        }
        !self.rules.is_empty()
            && !self.rules.iter().any(|(old, _)| key.starts_with(old))
            && self.rules.iter().any(|(_, new)| key.starts_with(new))
    }

    /// The target name of source key `key`.
    pub fn target_key<'k>(&self, key: &'k [u8]) -> Cow<'k, [u8]> {
        for (old, new) in &self.rules {
            if let Some(rest) = key.strip_prefix(old.as_slice()) {
                let mut renamed = Vec::with_capacity(new.len() + rest.len());
                renamed.extend_from_slice(new);
                renamed.extend_from_slice(rest);
                return Cow::Owned(renamed);
            }
        }
        for rule in &self.regexes {
            if let Some(renamed) = rule.rename(key) {
                return Cow::Owned(renamed);
            }
        }
        Cow::Borrowed(key)
    }

    /// The source key written as target key `key`, or None when no source key is
    /// (its name lies under an OLD prefix but under no NEW one: the source key of that
    /// name would have been renamed).
    pub fn source_key<'k>(&self, key: &'k [u8]) -> Option<Cow<'k, [u8]>> {
        for (old, new) in &self.rules {
            if let Some(rest) = key.strip_prefix(new.as_slice()) {
                let mut source = Vec::with_capacity(old.len() + rest.len());
                source.extend_from_slice(old);
                source.extend_from_slice(rest);
                return Some(Cow::Owned(source));
            }
        }
        if self.regexes.is_empty() {
            if self.rules.iter().any(|(old, _)| key.starts_with(old)) {
                return None;
            }
            return Some(Cow::Borrowed(key));
        }
        // A regex rule's inverse, when the key it finds really renames into `key`.
        for rule in &self.regexes {
            if let Some(source) = rule.invert(key) {
                if *self.target_key(&source) == *key {
                    return Some(Cow::Owned(source));
                }
            }
        }
        (*self.target_key(key) == *key).then_some(Cow::Borrowed(key))
    }
}

/// Is one of `a`, `b` a prefix of the other (some key could start with both)?
fn comparable(a: &[u8], b: &[u8]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(pairs: &[(&str, &str)]) -> KeyRenames {
        KeyRenames::new(
            pairs
                .iter()
                .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn prefixes(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn a_prefix_is_replaced_and_other_keys_keep_their_name() {
        let r = rules(&[("user:", "u:")]);
        assert_eq!(&*r.target_key(b"user:42"), b"u:42");
        assert_eq!(&*r.target_key(b"order:1"), b"order:1");
        assert_eq!(r.source_key(b"u:42").as_deref(), Some(&b"user:42"[..]));
        assert_eq!(r.source_key(b"order:1").as_deref(), Some(&b"order:1"[..]));
        // A target `user:x` cannot come from the source: `user:x` there is `u:x` here.
        assert_eq!(r.source_key(b"user:x"), None);
    }

    #[test]
    fn one_to_one_rules_are_accepted() {
        assert_eq!(rules(&[("user:", "u:")]).validate(), Ok(()));
        assert_eq!(
            rules(&[("", "app1:")]).validate(),
            Ok(()),
            "every key under a prefix"
        );
        assert_eq!(
            rules(&[("a:", "b:"), ("b:", "a:")]).validate(),
            Ok(()),
            "a swap"
        );
        assert_eq!(rules(&[("app1:", "")]).validate(), Ok(()), "a strip");
    }

    #[test]
    fn rules_that_could_merge_two_keys_are_refused_with_the_reason() {
        let refused = |pairs: &[(&str, &str)]| rules(pairs).validate().expect_err("refused").0;
        assert!(refused(&[("a:", "x:"), ("b:", "x:y")]).contains("overlap"));
        assert!(refused(&[("a:", "x:"), ("a:b", "y:")]).contains("overlap"));
        assert!(refused(&[("", "x:"), ("a:", "y:")]).contains("overlap"));
        assert!(refused(&[("a:", "LOCKSTEP_x")]).contains("LOCKSTEP_"));
        assert!(refused(&[("a:", "a:")]).contains("renames nothing"));
    }

    #[test]
    fn a_key_left_under_a_new_prefix_collides() {
        let r = rules(&[("user:", "u:")]);
        assert!(r.collides(b"u:5"), "it would meet user:5");
        assert!(!r.collides(b"user:5"), "renamed");
        assert!(!r.collides(b"order:5"));
        assert!(
            !rules(&[("a:", "b:"), ("b:", "a:")]).collides(b"a:1"),
            "a swap renames both"
        );
        assert!(
            !rules(&[("", "app1:")]).collides(b"app1:x"),
            "every key is renamed"
        );
        assert!(!KeyRenames::default().collides(b"u:5"));
    }

    #[test]
    fn regex_rules_rename_after_the_prefixes_and_guard_each_key() {
        let r = rules(&[("user:", "u:")]).with_regexes(vec![
            RegexRename::new(r"^order:(\d+)$", "o:$1").expect("valid"),
            RegexRename::new(r"^(.*):tmp$", "t:$1").expect("valid"),
        ]);
        assert_eq!(r.validate(), Ok(()));
        assert_eq!(&*r.target_key(b"user:1"), b"u:1");
        assert_eq!(&*r.target_key(b"order:7"), b"o:7");
        assert_eq!(&*r.target_key(b"a:b:tmp"), b"t:a:b");
        assert_eq!(&*r.target_key(b"order:x"), b"order:x");
        assert_eq!(r.source_key(b"o:7").as_deref(), Some(&b"order:7"[..]));
        assert_eq!(r.source_key(b"t:a:b").as_deref(), Some(&b"a:b:tmp"[..]));
        assert_eq!(r.source_key(b"order:7"), None, "order:7 is written as o:7");
        assert!(!r.collides(b"order:7") && !r.collides(b"a:b:tmp") && !r.collides(b"x"));
        assert!(r.collides(b"o:7"), "a kept o:7 would meet order:7");
        assert!(r.collides(b"t:q"), "and t:q would meet q:tmp");
        // A rule that renames two keys onto one: `o:1:tmp` can be reached from
        // `order:...`? No, but `user:1:tmp` is renamed by the prefix rule first.
        let own = KeyRenames::default().with_regexes(vec![
            RegexRename::new("a(.)", "LOCKSTEP_$1").expect("parses")
        ]);
        assert!(own.validate().is_err());
    }

    proptest! {
        /// Regex rules: every key that does not collide is renamed one-to-one and found
        /// back, over a small alphabet where rules often meet.
        #[test]
        fn regex_rules_that_pass_the_guard_are_one_to_one(
            keys in proptest::collection::btree_set("[ab:]{0,5}", 0..60),
        ) {
            let r = KeyRenames::new(vec![(b"a:".to_vec(), b"b:".to_vec())]).with_regexes(vec![
                RegexRename::new("(a*):(b*)", "$2:$1").expect("valid"),
                RegexRename::new("b(.*)", "a:$1").expect("valid"),
            ]);
            let mut seen = std::collections::HashMap::new();
            for key in keys.iter().map(|k| k.as_bytes()).filter(|k| !r.collides(k)) {
                let target = r.target_key(key).into_owned();
                let back = r.source_key(&target).map(|k| k.into_owned());
                prop_assert_eq!(back.as_deref(), Some(key));
                if let Some(other) = seen.insert(target.clone(), key.to_vec()) {
                    prop_assert!(false, "{:?} and {:?} both become {:?}", other, key, target);
                }
            }
        }
    }

    fn keep(key: &[u8], include: &[Vec<u8>], exclude: &[Vec<u8>]) -> bool {
        (include.is_empty() || include.iter().any(|p| key.starts_with(p)))
            && !exclude.iter().any(|p| key.starts_with(p))
    }

    proptest! {
        /// Whenever the rules are accepted, no two kept keys that do not collide share a
        /// target name and the inverse finds each of them again: checked over small alphabets, where
        /// overlaps are likely.
        #[test]
        fn accepted_rules_are_one_to_one_and_invertible(
            pairs in proptest::collection::vec(("[ab]{0,2}", "[ab]{0,2}"), 1..4),
            include in proptest::collection::vec("[ab]{1,2}", 0..3),
            exclude in proptest::collection::vec("[ab]{1,2}", 0..2),
            keys in proptest::collection::btree_set("[ab]{0,4}", 0..40),
        ) {
            let r = KeyRenames::new(pairs.iter().map(|(a, b)| (a.clone().into_bytes(), b.clone().into_bytes())).collect());
            let (include, exclude) = (prefixes(&include.iter().map(String::as_str).collect::<Vec<_>>()), prefixes(&exclude.iter().map(String::as_str).collect::<Vec<_>>()));
            prop_assume!(r.validate().is_ok());
            let mut seen = std::collections::HashMap::new();
            let kept = keys.iter().map(|k| k.as_bytes()).filter(|k| keep(k, &include, &exclude));
            // A colliding key stops the task: it is never renamed or written.
            for key in kept.filter(|k| !r.collides(k)) {
                let target = r.target_key(key).into_owned();
                let back = r.source_key(&target);
                prop_assert_eq!(back.as_deref(), Some(key));
                if let Some(other) = seen.insert(target.clone(), key.to_vec()) {
                    prop_assert!(false, "{:?} and {:?} both become {:?}", other, key, target);
                }
            }
        }
    }
}
