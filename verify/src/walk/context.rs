//! What every batch of a run shares: the options, the sample's threshold, and what the
//! run learned about the sides (DUMP usable, INFO permitted, TTLs present).
//!
//! The learned flags only ever turn a cheaper read off or a safer read on; they must
//! never change what counts as a difference (that is [`crate::judge`]'s).

use std::sync::atomic::AtomicBool;

use crate::judge::ttl::TtlRules;
use crate::keymap::KeyMap;
use crate::options::{CompareOptions, SYNC_CHECKPOINT_KEY};
use crate::rules::Rules;
use crate::script::ScriptScope;

/// What every batch shares.
pub(crate) struct Ctx {
    pub(crate) options: CompareOptions,
    /// Where source databases and keys live on the target ([`crate::keymap`]).
    pub(crate) map: KeyMap,
    /// The compiled rules: key and type filters, dropped hash fields.
    pub(crate) rules: Rules,
    /// The TTL rules of [`crate::judge::ttl`], from the options.
    pub(crate) ttl: TtlRules,
    /// Keys hashing below this are sampled; None: every key.
    pub(crate) threshold: Option<u64>,
    /// False once two DUMP payloads showed different RDB versions.
    pub(crate) dump_ok: AtomicBool,
    /// False once `INFO keyspace` failed (not permitted): TTLs are then always read.
    pub(crate) info_ok: AtomicBool,
    /// Whether each side's database held keys with a TTL at the last batch read: then
    /// PTTLs are read in the batch's first pipeline.
    pub(crate) source_ttls: AtomicBool,
    pub(crate) target_ttls: AtomicBool,
    /// With `--route-db`: the view this run compares ([`crate::compare`]).
    pub(crate) view: Option<RouteView>,
    /// `--script`: the loaded script and the target names it produced.
    pub(crate) script: Option<ScriptScope>,
}

/// One target database of a run with `--route-db`: only the source keys routed into
/// it are compared, and only target keys routed into it are the sync's there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RouteView {
    /// The target database of this view.
    pub(crate) db: u32,
    /// Where the source database's keys go when no route matches.
    pub(crate) home: u32,
}

impl Ctx {
    /// A context for `options`, nothing learned yet; `threshold`: the sample's. Fails
    /// when a rule is invalid ([`Rules::check`]).
    pub(crate) fn new(options: &CompareOptions, threshold: Option<u64>) -> anyhow::Result<Ctx> {
        let rules = Rules::check(options).map_err(anyhow::Error::msg)?;
        let script = ScriptScope::load(options).map_err(anyhow::Error::msg)?;
        let map = KeyMap::new(options.db_map.clone(), options.renames.clone())
            .with_regexes(rules.renames.clone());
        Ok(Ctx {
            options: options.clone(),
            map,
            rules,
            ttl: TtlRules::of(options),
            threshold,
            dump_ok: AtomicBool::new(true),
            info_ok: AtomicBool::new(true),
            source_ttls: AtomicBool::new(false),
            target_ttls: AtomicBool::new(false),
            view: None,
            script,
        })
    }

    /// The same context, comparing only the keys of `view`.
    pub(crate) fn in_view(self, view: Option<RouteView>) -> Ctx {
        Ctx { view, ..self }
    }

    /// Whether `key` is compared: not ignored nor excluded (by prefix, glob or
    /// regex), included when any include rule is given (a prefix, a glob or a regex
    /// of it), and in the sample.
    pub(crate) fn wanted(&self, key: &[u8]) -> bool {
        let o = &self.options;
        let filter = &self.rules.keys;
        if let Some(view) = self.view {
            if self.rules.route(key).unwrap_or(view.home) != view.db {
                return false;
            }
        }
        if o.ignore_prefixes.iter().any(|p| key.starts_with(p)) || filter.excluded(key) {
            return false;
        }
        let includes = !o.include_prefixes.is_empty() || filter.has_includes();
        if includes
            && !o.include_prefixes.iter().any(|p| key.starts_with(p))
            && !filter.included(key)
        {
            return false;
        }
        self.threshold.is_none_or(|t| {
            let offset = t.wrapping_mul(self.options.sample_window);
            xxhash_rust::xxh3::xxh3_64(key).wrapping_sub(offset) < t
        })
    }

    /// Whether source key `key` goes through the script (then the scripted pass
    /// judges it, not the ordinary walk).
    pub(crate) fn scripted(&self, key: &[u8]) -> bool {
        self.script.as_ref().is_some_and(|s| s.touches(key))
    }

    /// Whether target key `key` is compared: the prefixes and the sample judge its
    /// source name ([`KeyMap::source_key`]); a target key that no source key is
    /// written as (extra whatever the source holds) is judged by its own name. A
    /// name ignored on either side (lockstep's own keys) is ignored.
    pub(crate) fn target_wanted(&self, key: &[u8]) -> bool {
        if self.map.renames_nothing() {
            return self.wanted(key);
        }
        if self
            .options
            .ignore_prefixes
            .iter()
            .any(|p| key.starts_with(p))
        {
            return false;
        }
        match self.map.source_key(key) {
            Some(source) => self.wanted(&source),
            None => self.wanted(key),
        }
    }

    /// Whether a key of this type (`TYPE`'s answer, on the source; on the target for
    /// a key absent from the source) is in scope of the type filters.
    pub(crate) fn type_kept(&self, kind: &str) -> bool {
        self.rules.types.keeps(kind)
    }

    /// The glob SCAN may filter by on the server (`SCAN ... MATCH g`), when it is the
    /// only include rule of any kind: then keys outside it are never even named. On
    /// the target only when names are not renamed (a target key is judged by its
    /// source name). The rules still judge every key SCAN returns.
    pub(crate) fn scan_match(&self, on_target: bool) -> Option<&str> {
        if !self.options.include_prefixes.is_empty() || (on_target && !self.map.renames_nothing()) {
            return None;
        }
        match (
            self.options.rules.match_globs.as_slice(),
            self.options.rules.key_regex.is_empty(),
        ) {
            ([only], true) => Some(only.as_str()),
            _ => None,
        }
    }

    /// The type SCAN may filter by on the server (`SCAN ... TYPE t`, Redis 6.0 and
    /// later), when the type filters keep exactly one core type: then keys of other
    /// types are never even named. None: every type is scanned and judged by TYPE.
    pub(crate) fn scan_type(&self) -> Option<&str> {
        let types = &self.rules.types;
        match types.types.as_slice() {
            [only] if only != "module" && types.keeps(only) => Some(only.as_str()),
            _ => None,
        }
    }

    /// The length beyond which strings are read in windows; None (0 in the
    /// options): strings are read whole by MGET.
    pub(crate) fn long_string_limit(&self) -> Option<usize> {
        (self.options.long_string_bytes > 0).then_some(self.options.long_string_bytes)
    }

    /// Whether lockstep's checkpoint key is among the ignored keys (then the count
    /// proof counts it apart).
    pub(crate) fn own_checkpoint(&self) -> bool {
        self.options
            .ignore_prefixes
            .iter()
            .any(|p| SYNC_CHECKPOINT_KEY.as_bytes().starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_keys_skip_ignored_prefixes_and_keep_included_ones() {
        let all = Ctx::new(&CompareOptions::default(), None).unwrap();
        assert!(all.wanted(b"user:1"));
        assert!(!all.wanted(b"LOCKSTEP_CHECKPOINT"), "the sync's own keys");
        assert!(all.own_checkpoint());
        let included = CompareOptions {
            include_prefixes: vec![b"user:".to_vec()],
            ignore_prefixes: Vec::new(),
            ..CompareOptions::default()
        };
        let included = Ctx::new(&included, None).unwrap();
        assert!(included.wanted(b"user:1") && !included.wanted(b"order:1"));
        assert!(!included.own_checkpoint());
    }

    #[test]
    fn target_keys_are_judged_by_their_source_names() {
        let options = CompareOptions {
            include_prefixes: vec![b"user:".to_vec()],
            renames: vec![(b"user:".to_vec(), b"u:".to_vec())],
            ..CompareOptions::default()
        };
        let ctx = Ctx::new(&options, None).unwrap();
        assert!(ctx.target_wanted(b"u:1"), "the image of user:1");
        assert!(!ctx.target_wanted(b"order:1"));
        assert!(ctx.target_wanted(b"user:1"), "no source name: its own");
        assert!(!ctx.target_wanted(b"LOCKSTEP_CHECKPOINT"));
        let strip = CompareOptions {
            renames: vec![(b"app1:".to_vec(), Vec::new())],
            ..CompareOptions::default()
        };
        let strip = Ctx::new(&strip, None).unwrap();
        assert!(
            !strip.target_wanted(b"LOCKSTEP_CHECKPOINT"),
            "ignored by its own name"
        );
        assert!(strip.target_wanted(b"x"));
    }

    #[test]
    fn any_include_rule_keeps_and_any_exclude_rule_drops() {
        let options = CompareOptions {
            include_prefixes: vec![b"user:".to_vec()],
            ignore_prefixes: vec![b"LOCKSTEP_".to_vec(), b"user:tmp".to_vec()],
            rules: crate::options::RuleSpec {
                match_globs: vec!["order:[0-9]*".into()],
                key_regex: vec![r"^\x00bin".into()],
                exclude_match: vec!["*:secret".into()],
                exclude_key_regex: vec!["draft".into()],
                ..Default::default()
            },
            ..CompareOptions::default()
        };
        let ctx = Ctx::new(&options, None).unwrap();
        assert!(ctx.wanted(b"user:1") && ctx.wanted(b"order:7") && ctx.wanted(b"\x00bin\xff"));
        assert!(!ctx.wanted(b"order:x") && !ctx.wanted(b"other"));
        assert!(!ctx.wanted(b"user:tmp:1") && !ctx.wanted(b"user:1:secret"));
        assert!(!ctx.wanted(b"order:1:draft") && !ctx.wanted(b"LOCKSTEP_HEARTBEAT"));
        let excludes_only = CompareOptions {
            rules: crate::options::RuleSpec {
                exclude_match: vec!["tmp:*".into()],
                ..Default::default()
            },
            ..CompareOptions::default()
        };
        let ctx = Ctx::new(&excludes_only, None).unwrap();
        assert!(ctx.wanted(b"anything") && !ctx.wanted(b"tmp:1"));
        let invalid = CompareOptions {
            rules: crate::options::RuleSpec {
                match_globs: vec!["[".into()],
                ..Default::default()
            },
            ..CompareOptions::default()
        };
        let err = Ctx::new(&invalid, None).err().unwrap().to_string();
        assert!(err.contains("--match \"[\""), "{err}");
    }

    #[test]
    fn scan_filters_by_a_glob_only_when_it_is_the_only_include_rule() {
        let ctx = |globs: &[&str], prefixes: &[&str], regexes: &[&str], renamed: bool| {
            let options = CompareOptions {
                include_prefixes: prefixes.iter().map(|p| p.as_bytes().to_vec()).collect(),
                renames: if renamed {
                    vec![(b"a:".to_vec(), b"b:".to_vec())]
                } else {
                    Vec::new()
                },
                rules: crate::options::RuleSpec {
                    match_globs: globs.iter().map(|g| g.to_string()).collect(),
                    key_regex: regexes.iter().map(|r| r.to_string()).collect(),
                    ..Default::default()
                },
                ..CompareOptions::default()
            };
            Ctx::new(&options, None).unwrap()
        };
        let only = ctx(&["user:*"], &[], &[], false);
        assert_eq!(only.scan_match(false), Some("user:*"));
        assert_eq!(only.scan_match(true), Some("user:*"));
        let renamed = ctx(&["user:*"], &[], &[], true);
        assert_eq!(
            (renamed.scan_match(false), renamed.scan_match(true)),
            (Some("user:*"), None)
        );
        assert_eq!(ctx(&["a*", "b*"], &[], &[], false).scan_match(false), None);
        assert_eq!(ctx(&["a*"], &["b"], &[], false).scan_match(false), None);
        assert_eq!(ctx(&["a*"], &[], &["b"], false).scan_match(false), None);
        assert_eq!(ctx(&[], &[], &[], false).scan_match(false), None);
    }

    #[test]
    fn scan_filters_by_type_only_when_one_core_type_is_kept() {
        let scan_type = |types: &[&str], exclude: &[&str]| {
            let options = CompareOptions {
                rules: crate::options::RuleSpec {
                    types: types.iter().map(|t| t.to_string()).collect(),
                    exclude_types: exclude.iter().map(|t| t.to_string()).collect(),
                    ..Default::default()
                },
                ..CompareOptions::default()
            };
            let ctx = Ctx::new(&options, None).unwrap();
            ctx.scan_type().map(str::to_owned)
        };
        assert_eq!(scan_type(&["hash"], &[]).as_deref(), Some("hash"));
        assert_eq!(scan_type(&["hash"], &["stream"]).as_deref(), Some("hash"));
        assert_eq!(
            scan_type(&["hash"], &["hash"]),
            None,
            "nothing kept: TYPE judges"
        );
        assert_eq!(scan_type(&["hash", "set"], &[]), None);
        assert_eq!(
            scan_type(&["module"], &[]),
            None,
            "module types have many names"
        );
        assert_eq!(scan_type(&[], &["hash"]), None);
    }

    #[test]
    fn a_sample_keeps_the_keys_hashing_below_its_threshold() {
        let key = b"user:1";
        let hash = xxhash_rust::xxh3::xxh3_64(key);
        let options = CompareOptions::default();
        assert!(Ctx::new(&options, Some(hash + 1)).unwrap().wanted(key));
        assert!(!Ctx::new(&options, Some(hash)).unwrap().wanted(key));
    }

    #[test]
    fn consecutive_sample_windows_take_every_key_exactly_once() {
        let quarter = 1u64 << 62;
        for i in 0..200u32 {
            let key = format!("key:{i}");
            let windows: Vec<u64> = (0..4)
                .filter(|&w| {
                    let options = CompareOptions {
                        sample_window: w,
                        ..CompareOptions::default()
                    };
                    Ctx::new(&options, Some(quarter))
                        .unwrap()
                        .wanted(key.as_bytes())
                })
                .collect();
            assert_eq!(windows.len(), 1, "{key}: in windows {windows:?}");
            let next_cycle = CompareOptions {
                sample_window: windows[0] + 4,
                ..CompareOptions::default()
            };
            assert!(Ctx::new(&next_cycle, Some(quarter))
                .unwrap()
                .wanted(key.as_bytes()));
        }
    }
}
