//! The count proof: when the target's extra keys need not be looked for.
//!
//! The target pass is skipped only when counts prove there is no extra key: every
//! source key is read (no sample, no include prefix), neither side changed during the
//! source pass (the quiet states before and after are equal, which a write, an
//! expiry, an eviction, a save or a replication offset would break), the source pass
//! saw exactly the source's DBSIZE (so no key twice), and the target's DBSIZE equals
//! the keys found on both sides plus lockstep's own checkpoint key. A target holding
//! a key outside the source's set cannot meet that.
//!
//! Pure arithmetic over what was read; it must never prove anything from a state it
//! could not read (a missing quiet state proves nothing).

use crate::options::{CompareOptions, Sample};
use crate::read::quiet::QuietState;

/// The quiet states of both sides (source, target).
pub(crate) type QuietStates = (QuietState, QuietState);

/// What the source pass of one database counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SourcePass {
    /// Keys SCAN returned on the source, before filtering.
    pub(crate) scanned: u64,
    /// Keys found on both sides.
    pub(crate) on_both: u64,
}

/// Whether counts may prove anything: every source key is read (no sample, no
/// include rule of any kind, no type kept apart), so the keys found on both sides
/// are all the target's wanted keys. (Exclude rules only make a proof rarer: a target
/// holding an excluded key has more keys than were found on both sides.)
pub(crate) fn may_prove(options: &CompareOptions) -> bool {
    let rules = &options.rules;
    options.sample == Sample::All
        && options.include_prefixes.is_empty()
        && rules.match_globs.is_empty()
        && rules.key_regex.is_empty()
        && rules.types.is_empty()
}

/// Whether the target holds no key outside the source's: the states read before
/// and after the source pass, and what the pass counted.
pub(crate) fn proves_no_extra_key(
    before: &QuietStates,
    after: Option<&QuietStates>,
    pass: SourcePass,
) -> bool {
    let (source, target) = before;
    after == Some(before)
        && source.dbsize == pass.scanned
        && target.dbsize == pass.on_both + target.own_keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(dbsize: u64, own_keys: u64, offset: &str) -> QuietState {
        QuietState {
            counters: vec![("master_repl_offset".into(), offset.into())],
            dbsize,
            own_keys,
        }
    }

    fn quiet() -> QuietStates {
        (state(100, 0, "7"), state(101, 1, "9"))
    }

    const PASS: SourcePass = SourcePass {
        scanned: 100,
        on_both: 100,
    };

    #[test]
    fn equal_counts_on_quiet_sides_prove_no_extra_key() {
        assert!(proves_no_extra_key(&quiet(), Some(&quiet()), PASS));
    }

    #[test]
    fn a_change_on_either_side_or_an_unread_state_proves_nothing() {
        let (source, _) = quiet();
        let moved = (source, state(101, 1, "10"));
        assert!(!proves_no_extra_key(&quiet(), Some(&moved), PASS));
        assert!(!proves_no_extra_key(&quiet(), None, PASS));
    }

    #[test]
    fn any_count_off_by_one_proves_nothing() {
        let twice = SourcePass {
            scanned: 101,
            ..PASS
        };
        assert!(!proves_no_extra_key(&quiet(), Some(&quiet()), twice));
        let one_extra = SourcePass {
            on_both: 99,
            ..PASS
        };
        assert!(!proves_no_extra_key(&quiet(), Some(&quiet()), one_extra));
        // Without lockstep's checkpoint key counted apart, 101 target keys are one
        // too many.
        let unowned = (state(100, 0, "7"), state(101, 0, "9"));
        assert!(!proves_no_extra_key(&unowned, Some(&unowned), PASS));
    }

    #[test]
    fn a_sample_or_an_include_prefix_never_proves() {
        assert!(may_prove(&CompareOptions::default()));
        let sample = CompareOptions {
            sample: Sample::Rate(0.5),
            ..CompareOptions::default()
        };
        assert!(!may_prove(&sample));
        let include = CompareOptions {
            include_prefixes: vec![b"user:".to_vec()],
            ..CompareOptions::default()
        };
        assert!(!may_prove(&include));
        let glob = CompareOptions {
            rules: crate::options::RuleSpec {
                match_globs: vec!["user:*".into()],
                ..Default::default()
            },
            ..CompareOptions::default()
        };
        assert!(!may_prove(&glob));
    }
}
