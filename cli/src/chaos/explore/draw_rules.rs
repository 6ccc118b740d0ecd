//! Draws an episode's declarative rules ([`Rules`]) from the schedule's generator:
//! none in 45 of 100 episodes (the coverage of the explorer before the rules stays),
//! a combination the sync must refuse at start in 7, and otherwise a random mix of
//! key patterns, a type rule, one TTL rule, field drops and renames.
//!
//! Every rule is drawn from a table that holds its text and its meaning together
//! ([`super::rules`]), and aimed at what the workload writes: its key families
//! (`str:`, `hsh:`, ...; `bin:` with binary bytes), the numbers after them (a pattern
//! may take the part of a family whose numbers start with one digit), the fields of
//! its hashes (`0` to `9`, `count`) and its TTLs (30 s to 30 min: a cap or a set of
//! 200 s to 20 min changes many of them, and none runs out during the episode).
//! What the sync refuses at start (a TTL set or removed with `--extend-ttl`,
//! overlapping or empty renames, `LOCKSTEP_` names, an unclosed glob, a regex rename
//! that drops a group, two TTL rules) is drawn only as an expected refusal. What the
//! sync stops on by design later is not drawn: the workload sends no command that
//! reads a type into another (ZUNIONSTORE, SORT ... STORE, COPY ... DB ... REPLACE,
//! scripts), so a type rule may take any types, and its two-key commands stay on one
//! side of every key pattern ([`Rules::separates`]).
//!
//! Pure: a [`ChaCha8Rng`] in, rules out; no I/O, no clock.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::rules::{
    FieldDrop, FieldSet, KeyPattern, PatternKind, Refusal, RegexRename, Rules, TtlRule, TypeRule,
};
use super::workload::FAMILIES;

/// The families whose keys end with a decimal number.
const DECIMAL: [&str; 7] = ["str:", "cnt:", "lst:", "set:", "zst:", "hsh:", "xst:"];

/// The types of `TYPE`'s answers that the workload writes.
const TYPES: [&str; 6] = ["string", "list", "set", "zset", "hash", "stream"];

/// First letters of renamed names: no workload key starts with a capital, and `L`
/// is left out (`LOCKSTEP_`).
const LETTERS: &[u8] = b"ABCDEFGHIJKMNOPQRSTUVWXYZ";

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// The rules of one episode; `extend_ttl` is the episode's `--extend-ttl`.
pub fn rules(rng: &mut ChaCha8Rng, extend_ttl: u64) -> Rules {
    match rng.random_range(0..100) {
        0..=44 => Rules::default(),
        45..=51 => Rules {
            refusal: Some(refusal(rng, extend_ttl)),
            ..Rules::default()
        },
        _ => some_rules(rng, extend_ttl),
    }
}

fn some_rules(rng: &mut ChaCha8Rng, extend_ttl: u64) -> Rules {
    let mut letters: Vec<u8> = LETTERS.to_vec();
    let mut rules = Rules::default();
    if rng.random_bool(0.3) {
        rules.include.push(key_pattern(rng));
    }
    if rng.random_bool(0.3) {
        rules.exclude.push(key_pattern(rng));
    }
    if rng.random_bool(0.25) {
        rules.types = Some(type_rule(rng));
    }
    if rng.random_bool(0.4) {
        rules.ttl = ttl_rule(rng, extend_ttl);
    }
    for _ in 0..rng.random_range(0..=2) {
        rules.drops.push(field_drop(rng));
    }
    if rng.random_bool(0.3) {
        rules.prefix_renames = prefix_renames(rng, &mut letters);
    }
    if rng.random_bool(0.25) {
        rules.regex_renames.push(regex_rename(rng, &mut letters));
    }
    if rules.is_empty() {
        rules.ttl = ttl_rule(rng, extend_ttl);
    }
    rules
}

/// A key pattern: a whole family, the part of a decimal family whose numbers start
/// with one digit, or one of a few patterns over several families.
fn key_pattern(rng: &mut ChaCha8Rng) -> KeyPattern {
    let glob = |text: String, prefixes: Vec<String>| KeyPattern {
        kind: PatternKind::Glob,
        text,
        prefixes,
    };
    let regex = |text: String, prefixes: Vec<String>| KeyPattern {
        kind: PatternKind::Regex,
        text,
        prefixes,
    };
    match rng.random_range(0..10) {
        0..=3 => {
            let family = pick(rng, &FAMILIES);
            let meaning = vec![family.to_owned()];
            match rng.random_range(0..3) {
                0 => glob(format!("{family}*"), meaning),
                1 => glob(format!("[{}]{}*", &family[..1], &family[1..]), meaning),
                _ => regex(format!("^{family}"), meaning),
            }
        }
        4..=6 => {
            let part = format!("{}{}", pick(rng, &DECIMAL), rng.random_range(1..10));
            if rng.random_bool(0.5) {
                glob(format!("{part}*"), vec![part])
            } else {
                regex(format!("^{part}"), vec![part])
            }
        }
        _ => {
            let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
            match rng.random_range(0..5) {
                0 => glob("?st:*".into(), owned(&["lst:", "xst:", "zst:"])),
                1 => regex("^(str|cnt):".into(), owned(&["str:", "cnt:"])),
                2 => glob("*[0-9]".into(), owned(&DECIMAL)),
                3 => regex("^[a-z]st:".into(), owned(&["lst:", "xst:", "zst:"])),
                _ => regex("^bin:\\x00\\r\\n".into(), owned(&["bin:"])),
            }
        }
    }
}

/// Some types kept, or some (not all) dropped.
fn type_rule(rng: &mut ChaCha8Rng) -> TypeRule {
    let mut chosen: Vec<&'static str> = TYPES
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.4))
        .collect();
    if chosen.is_empty() {
        chosen.push(pick(rng, &TYPES));
    }
    if rng.random_bool(0.5) {
        TypeRule::Only(chosen)
    } else {
        if chosen.len() == TYPES.len() {
            chosen.pop();
        }
        TypeRule::Except(chosen)
    }
}

/// A duration of 200 s to 20 min, written in one of the forms the flags take.
fn duration(rng: &mut ChaCha8Rng) -> (u64, String) {
    let secs: u64 = pick(rng, &[200, 300, 600, 1200]);
    let text = match rng.random_range(0..4) {
        0 => secs.to_string(),
        1 => format!("{secs}s"),
        2 if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        _ => format!("{}ms", secs * 1000),
    };
    (secs, text)
}

/// One TTL rule; only a cap with `--extend-ttl` (the others are refused with it).
fn ttl_rule(rng: &mut ChaCha8Rng, extend_ttl: u64) -> TtlRule {
    let roll = if extend_ttl > 0 {
        1
    } else {
        rng.random_range(0..3)
    };
    let (secs, text) = duration(rng);
    match roll {
        0 => TtlRule::Remove,
        1 => TtlRule::Cap { secs, text },
        _ => TtlRule::Set { secs, text },
    }
}

/// A field drop of every hash, of the `hsh:` family by a glob, or of its part whose
/// numbers start with one digit; the fields from a table of globs over the
/// workload's field names.
fn field_drop(rng: &mut ChaCha8Rng) -> FieldDrop {
    let scope = match rng.random_range(0..4) {
        0 | 1 => None,
        2 => Some((
            pick(rng, &["hsh:*", "h?h:*"]).to_owned(),
            vec!["hsh:".to_owned()],
        )),
        _ => {
            let part = format!("hsh:{}", rng.random_range(1..10));
            Some((format!("{part}*"), vec![part]))
        }
    };
    let names = |range: std::ops::RangeInclusive<u32>| {
        FieldSet::Named(range.map(|n| n.to_string()).collect())
    };
    let count = || FieldSet::Named(vec!["count".to_owned()]);
    let (field_glob, fields) = match rng.random_range(0..8) {
        0 => ("count", count()),
        1 => ("c*", count()),
        2 => ("*t", count()),
        3 => ("[0-4]", names(0..=4)),
        4 => ("?", names(0..=9)),
        5 => ("[^0-5]", names(6..=9)),
        6 => ("7", names(7..=7)),
        _ => ("*", FieldSet::Any),
    };
    FieldDrop {
        scope,
        field_glob: field_glob.to_owned(),
        fields,
    }
}

fn take_letter(rng: &mut ChaCha8Rng, letters: &mut Vec<u8>) -> char {
    char::from(letters.remove(rng.random_range(0..letters.len())))
}

/// One or two prefix renames of different families (a whole family, or the part of
/// a decimal one whose numbers start with one digit), each onto its own capital.
fn prefix_renames(rng: &mut ChaCha8Rng, letters: &mut Vec<u8>) -> Vec<(String, String)> {
    let mut renames: Vec<(String, String)> = Vec::new();
    for _ in 0..rng.random_range(1..=2) {
        let family = pick(rng, &FAMILIES);
        if renames.iter().any(|(old, _)| old.starts_with(family)) {
            continue;
        }
        let old = if family != "bin:" && rng.random_bool(0.3) {
            format!("{family}{}", rng.random_range(1..10))
        } else {
            family.to_owned()
        };
        let letter = take_letter(rng, letters);
        let new = pick(rng, &[":", "-", "x:"]);
        renames.push((old, format!("{letter}{new}")));
    }
    renames
}

/// A regex rename of one family (`^lst:(\d+)$` -> `Q$1:q`) or of two with their
/// parts swapped (`^(zst|set):(\d+)$` -> `W$2-$1`).
fn regex_rename(rng: &mut ChaCha8Rng, letters: &mut Vec<u8>) -> RegexRename {
    let before = take_letter(rng, letters).to_string();
    if rng.random_bool(0.7) {
        RegexRename::Suffix {
            family: pick(rng, &FAMILIES).to_owned(),
            before,
            after: pick(rng, &["", ":x", "_"]).to_owned(),
        }
    } else {
        let first = pick(rng, &DECIMAL);
        let second = pick(rng, &DECIMAL);
        let mut names = vec![first.trim_end_matches(':').to_owned()];
        if second != first {
            names.push(second.trim_end_matches(':').to_owned());
        }
        RegexRename::Swap { names, before }
    }
}

/// A combination the sync refuses at start, with the words of both refusals.
fn refusal(rng: &mut ChaCha8Rng, extend_ttl: u64) -> Refusal {
    let family = pick(rng, &DECIMAL);
    let flags = |list: &[String]| list.to_vec();
    let extend = if extend_ttl > 0 {
        Vec::new()
    } else {
        vec!["--extend-ttl=600".to_owned()]
    };
    match rng.random_range(0..9) {
        0 => Refusal {
            what: "--ttl-set with --extend-ttl",
            flags: [flags(&["--ttl-set=300s".into()]), extend].concat(),
            sync_says: "--extend-ttl with --ttl-remove or --ttl-set",
            verify_says: "--extend-ttl with --ttl-set",
        },
        1 => Refusal {
            what: "--ttl-remove with --extend-ttl",
            flags: [flags(&["--ttl-remove".into()]), extend].concat(),
            sync_says: "--extend-ttl with --ttl-remove or --ttl-set",
            verify_says: "--extend-ttl with --ttl-remove",
        },
        2 => Refusal {
            what: "two rename prefixes that overlap",
            flags: flags(&[
                format!("--rename-prefix={family}=P:"),
                format!("--rename-prefix={family}1=Q:"),
            ]),
            sync_says: "overlap: a key starting with both would match two rules",
            verify_says: "overlap: a key starting with both would match two rules",
        },
        3 => Refusal {
            what: "two rename targets that overlap",
            flags: flags(&[
                format!("--rename-prefix={family}=P:"),
                "--rename-prefix=bin:=P:b".to_owned(),
            ]),
            sync_says: "overlap: keys of two rules could be written onto one target key",
            verify_says: "overlap: keys of two rules could be written onto one target key",
        },
        4 => Refusal {
            what: "a rename onto itself",
            flags: flags(&[format!("--rename-prefix={family}={family}")]),
            sync_says: "renames nothing",
            verify_says: "renames nothing",
        },
        5 => Refusal {
            what: "a rename under LOCKSTEP_",
            flags: flags(&[format!("--rename-prefix={family}=LOCKSTEP_{family}")]),
            sync_says: "starts with LOCKSTEP_",
            verify_says: "starts with LOCKSTEP_",
        },
        6 => Refusal {
            what: "an unclosed glob",
            flags: flags(&[format!("--match={family}[0-4")]),
            sync_says: "is never closed",
            verify_says: "is never closed",
        },
        7 => Refusal {
            what: "a regex rename that drops a group",
            flags: flags(&[
                "--rename-regex".into(),
                format!("^({}):(\\d+)$", family.trim_end_matches(':')),
                "Z$2".into(),
            ]),
            sync_says: "group 1",
            verify_says: "group 1",
        },
        _ => Refusal {
            what: "two TTL rules",
            flags: flags(&["--ttl-cap=300s".into(), "--ttl-set=300s".into()]),
            sync_says: "give at most one",
            verify_says: "cannot be used with",
        },
    }
}

#[cfg(test)]
mod tests {
    //! The drawn rules against the sync's own parsing, validation and matchers (the
    //! explorer's checker never uses them: here they judge the explorer's meanings).

    use std::collections::BTreeSet;

    use clap::Parser;
    use lockstep_sync::filter::Filter;

    use super::super::schedule::{self, EpisodePlan};
    use super::super::workload::KeySpace;
    use super::*;

    #[derive(Parser)]
    struct SyncFlags {
        #[command(flatten)]
        task: crate::args::TaskArgs,
    }

    #[derive(Parser)]
    struct VerifyFlags {
        #[command(flatten)]
        verify: crate::args::VerifyArgs,
    }

    /// The sync's filter of `flags`, validated as at start; the error otherwise.
    fn sync_filter(flags: &[String]) -> Result<Filter, String> {
        let args = std::iter::once("lockstep".to_owned()).chain(flags.iter().cloned());
        let parsed = SyncFlags::try_parse_from(args).map_err(|e| e.to_string())?;
        let filter = parsed.task.filter().map_err(|e| format!("{e:#}"))?;
        filter.validate().map_err(|e| e.to_string())?;
        Ok(filter)
    }

    /// 300 plans of three seeds, made once (a plan's big values take a while).
    fn plans() -> &'static [EpisodePlan] {
        static PLANS: std::sync::OnceLock<Vec<EpisodePlan>> = std::sync::OnceLock::new();
        PLANS.get_or_init(|| {
            (0..3)
                .flat_map(|seed| (0..100).map(move |i| schedule::episode(seed, i)))
                .collect()
        })
    }

    /// Every key name the workload can write (40 of each family: more than any
    /// episode's), and the clock.
    fn universe() -> Vec<Vec<u8>> {
        let space = KeySpace {
            dbs: vec![0],
            keys_per_family: 40,
        };
        let mut keys: Vec<Vec<u8>> = FAMILIES
            .iter()
            .flat_map(|f| (0..40).map(|n| space.key(f, n)))
            .collect();
        keys.push(b"clk:now".to_vec());
        keys
    }

    #[test]
    fn drawn_rules_start_or_are_refused_as_expected() {
        for plan in plans() {
            let flags = plan.options.flags();
            let started = sync_filter(&flags);
            match (&plan.options.rules.refusal, started) {
                (None, Ok(_)) => {}
                (None, Err(err)) => panic!("{flags:?} refused: {err}"),
                (Some(r), Ok(_)) => panic!("{flags:?} started; expected {:?}", r.sync_says),
                (Some(r), Err(err)) => assert!(err.contains(r.sync_says), "{flags:?}: {err}"),
            }
            let verify_args = ["lockstep", "--source", "redis://a", "--target", "redis://b"];
            let args = verify_args
                .map(str::to_owned)
                .into_iter()
                .chain(flags.clone());
            let parsed = VerifyFlags::try_parse_from(args);
            if plan.options.rules.refusal.is_none() {
                assert!(parsed.is_ok(), "verify does not take {flags:?}");
            }
        }
    }

    #[test]
    fn the_sync_reads_each_rule_as_the_checker_means_it() {
        let keys = universe();
        let fields: Vec<Vec<u8>> = (0..10)
            .map(|n| n.to_string().into_bytes())
            .chain([b"count".to_vec()])
            .collect();
        for plan in plans().iter().filter(|p| p.options.rules.refusal.is_none()) {
            let (options, rules) = (&plan.options, &plan.options.rules);
            let flags = options.flags();
            let filter = sync_filter(&flags).expect("valid rules");
            for key in &keys {
                let shown = key.escape_ascii();
                assert_eq!(
                    filter.keeps_key(key),
                    options.keeps_key(key),
                    "{flags:?} {shown}"
                );
                let target = filter.target_key(key).expect("one to one");
                assert_eq!(*target, *rules.target_key(key), "{flags:?} {shown}");
                for field in &fields {
                    assert_eq!(
                        filter.hash_fields.drops(key, field),
                        !rules.keeps_field(key, field),
                        "{flags:?} {shown} {}",
                        field.escape_ascii()
                    );
                }
            }
            for name in TYPES {
                let kind = lockstep_sync::rules::types::parse_type(name).expect("a type");
                assert_eq!(
                    filter.types.keeps(kind),
                    rules.keeps_type(name),
                    "{flags:?}"
                );
            }
        }
    }

    type RuleTest = dyn Fn(&Rules) -> bool;

    #[test]
    fn every_kind_of_rule_is_drawn_and_many_episodes_have_none() {
        let rules: Vec<&Rules> = plans().iter().map(|p| &p.options.rules).collect();
        let share = |f: &dyn Fn(&Rules) -> bool| rules.iter().filter(|r| f(r)).count();
        assert!(share(&|r| r.is_empty()) * 100 >= rules.len() * 35);
        assert!(share(&|r| r.refusal.is_some()) > 10);
        let refusals: BTreeSet<&str> = rules
            .iter()
            .filter_map(|r| Some(r.refusal.as_ref()?.what))
            .collect();
        assert_eq!(refusals.len(), 9, "{refusals:?}");
        let kinds: [(&str, &RuleTest); 11] = [
            ("include glob", &|r| {
                r.include.iter().any(|p| p.kind == PatternKind::Glob)
            }),
            ("include regex", &|r| {
                r.include.iter().any(|p| p.kind == PatternKind::Regex)
            }),
            ("exclude", &|r| !r.exclude.is_empty()),
            ("types", &|r| r.types.is_some()),
            ("ttl-remove", &|r| r.ttl == TtlRule::Remove),
            ("ttl-cap", &|r| matches!(r.ttl, TtlRule::Cap { .. })),
            ("ttl-set", &|r| matches!(r.ttl, TtlRule::Set { .. })),
            ("scoped drop", &|r| {
                r.drops.iter().any(|d| d.scope.is_some())
            }),
            ("drop of every hash", &|r| {
                r.drops.iter().any(|d| d.scope.is_none())
            }),
            ("prefix rename", &|r| !r.prefix_renames.is_empty()),
            ("regex rename", &|r| !r.regex_renames.is_empty()),
        ];
        for (name, has) in kinds {
            assert!(
                share(has) >= 10,
                "{name}: {} of {}",
                share(has),
                rules.len()
            );
        }
    }

    #[test]
    fn the_workload_hits_the_rules_and_keeps_two_key_commands_on_one_side() {
        for plan in plans().iter().filter(|p| !p.options.rules.is_empty()) {
            let rules = &plan.options.rules;
            let ops = plan.preload.iter().chain(plan.load.iter().map(|t| &t.op));
            let written: Vec<&[u8]> = ops
                .clone()
                .filter_map(|op| op.argv.get(1).map(Vec::as_slice))
                .collect();
            for pattern in rules.include.iter().chain(&rules.exclude) {
                assert!(
                    written.iter().any(|k| pattern.selects(k)),
                    "no key of {pattern:?} written"
                );
            }
            for op in ops {
                let name = op.argv[0].as_slice();
                if [&b"RENAME"[..], b"RENAMENX", b"COPY"].contains(&name) {
                    assert!(!rules.separates(&op.argv[1], &op.argv[2]), "{op:?}");
                }
            }
        }
    }
}
