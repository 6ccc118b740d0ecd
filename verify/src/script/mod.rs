//! `verify --script FILE.lua`: proves a sync transformed by a Lua script (issue 17,
//! docs/transforms.md, "Verifying a scripted sync").
//!
//! # How it fits
//! For each source key the script touches (its `keys` globs; every key without
//! them), [`pass`] reads the value with ordinary commands ([`recreate`]; never a
//! decoded DUMP), expresses it as the commands that recreate it, in the form the
//! sync's full copy passes to the script, runs each through verify's own Lua runner
//! ([`lua`]), interprets what the script returns into an in-memory model of the keys
//! written ([`model`]) and compares every key of the model with the target's
//! ([`judge`]): value and TTL, within verify's tolerance. Keys the script does not
//! touch are compared by the ordinary walk, as without a script ([`crate::walk`]:
//! the source pass skips scripted keys).
//!
//! # Memory
//! Keys are judged several at once; together they hold at most
//! [`ScriptOptions::value_bytes`] of values (a share by `MEMORY USAGE` each, or the
//! whole budget for a key whose size the server does not give), plus the produced
//! names below.
//!
//! # What is NOT VERIFIED (never CONSISTENT)
//! A key whose commands the model does not know (the command is named), a key too
//! big to hold ([`ScriptOptions::value_bytes`]), a stream or module value whose
//! target DUMP is not the payload the script wrote (a module value, or a stream
//! payload the script changed), and a target key written from two source keys (each
//! source key's commands are judged alone). They are gaps of the coverage.
//!
//! # Extra keys
//! A target key cannot be mapped back to a source key through a script. So each
//! database's target names the script produced are kept ([`ScriptScope`], at most
//! [`ScriptOptions::names_bytes`] bytes of names): in the target pass a produced key
//! is already judged, a key under a touched source name that the script did not
//! produce is extra, and any other key is looked for on the source by its name, as
//! without a script. When the names outgrow the bound, or a key's produced names are
//! unknown (not verified, a sample), extra keys of that database are not checked
//! and the report says so (a gap).
//!
//! A script error (Lua's, a limit, an output the sync refuses) stops verify, naming
//! the key, the command and the script's line.

pub(crate) mod judge;
pub mod lua;
pub mod model;
pub(crate) mod pass;
pub mod recreate;

use std::collections::HashMap;
use std::sync::Mutex;

pub use crate::options::ScriptOptions;
use crate::options::{CompareOptions, TtlRule};
use lua::Runner;

/// The target names one database's scripted keys produced.
#[derive(Debug, Default)]
struct Produced {
    /// Target name -> the xxh3 of the source key that wrote it.
    names: HashMap<Vec<u8>, u64>,
    bytes: usize,
    /// Why the names are not all known (then extra keys are not checked).
    unknown: Option<String>,
}

/// The loaded script and the names it produced, shared by the walk.
pub(crate) struct ScriptScope {
    pub(crate) runner: Runner,
    pub(crate) options: ScriptOptions,
    produced: Mutex<HashMap<u32, Produced>>,
    /// The bytes of values the keys in flight may hold together
    /// ([`ScriptOptions::value_bytes`]), in KiB permits.
    budget: tokio::sync::Semaphore,
}

impl std::fmt::Debug for ScriptScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptScope")
            .field("file", &self.options.file)
            .finish()
    }
}

impl ScriptScope {
    /// Checks the run's options against a script and loads it.
    pub(crate) fn load(options: &CompareOptions) -> Result<Option<ScriptScope>, String> {
        let Some(script) = &options.script else {
            return Ok(None);
        };
        check_options(options)?;
        let runner = Runner::load(&script.file, &script.code, script.timeout, script.memory)?;
        Ok(Some(ScriptScope {
            runner,
            options: script.clone(),
            produced: Mutex::new(HashMap::new()),
            budget: tokio::sync::Semaphore::new(budget_permits(script.value_bytes) as usize),
        }))
    }

    /// Holds a share of the budget of values for a key of about `bytes` (None: not
    /// known, so the whole budget) until the guard drops.
    pub(crate) async fn hold(
        &self,
        bytes: Option<u64>,
    ) -> anyhow::Result<tokio::sync::SemaphorePermit<'_>> {
        let all = budget_permits(self.options.value_bytes);
        let want = bytes.map_or(all, |b| {
            u32::try_from(b / 1024 + 1).unwrap_or(u32::MAX).min(all)
        });
        self.budget
            .acquire_many(want)
            .await
            .map_err(|e| anyhow::anyhow!("the scripted keys' memory budget: {e}"))
    }

    /// Whether source key `key` goes through the script.
    pub(crate) fn touches(&self, key: &[u8]) -> bool {
        self.runner.touches(key)
    }

    /// Records target name `key` as produced in `db` from source key `source`;
    /// false when another source key already wrote it.
    pub(crate) fn record(&self, db: u32, key: &[u8], source: &[u8]) -> bool {
        let owner = xxhash_rust::xxh3::xxh3_64(source);
        let mut all = self.produced.lock().unwrap_or_else(|p| p.into_inner());
        let produced = all.entry(db).or_default();
        if let Some(&other) = produced.names.get(key) {
            return other == owner;
        }
        if produced.unknown.is_some() {
            return true;
        }
        produced.bytes += key.len() + 32;
        if produced.bytes > self.options.names_bytes {
            produced.names = HashMap::new();
            produced.unknown = Some(format!(
                "the target names the script produced outgrew verify's bound ({} bytes)",
                self.options.names_bytes
            ));
            return true;
        }
        produced.names.insert(key.to_vec(), owner);
        true
    }

    /// Notes that the names `db`'s scripted keys produced are not all known.
    pub(crate) fn names_unknown(&self, db: u32, why: String) {
        let mut all = self.produced.lock().unwrap_or_else(|p| p.into_inner());
        let produced = all.entry(db).or_default();
        if produced.unknown.is_none() {
            produced.names = HashMap::new();
            produced.unknown = Some(why);
        }
    }

    /// Whether `key` of `db` is a name the script produced.
    pub(crate) fn produced(&self, db: u32, key: &[u8]) -> bool {
        let all = self.produced.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&db).is_some_and(|p| p.names.contains_key(key))
    }

    /// Why `db`'s extra keys cannot be checked, if they cannot.
    pub(crate) fn extras_unchecked(&self, db: u32) -> Option<String> {
        let all = self.produced.lock().unwrap_or_else(|p| p.into_inner());
        all.get(&db).and_then(|p| p.unknown.clone())
    }
}

/// The budget of `bytes` in KiB permits (at least one).
fn budget_permits(bytes: usize) -> u32 {
    u32::try_from(bytes / 1024)
        .unwrap_or(u32::MAX >> 4)
        .clamp(1, u32::MAX >> 4)
}

/// What a run with a script refuses, and why (nothing without a script).
pub fn check_options(options: &CompareOptions) -> Result<(), String> {
    if options.script.is_none() {
        return Ok(());
    }
    let rule = if !options.renames.is_empty() || !options.rules.rename_regex.is_empty() {
        "--rename-prefix / --rename-regex (the sync refuses them with a script: rename in the script)"
    } else if matches!(options.ttl_rule, TtlRule::Cap(_) | TtlRule::Set(_)) {
        "--ttl-cap / --ttl-set (the expiry the sync passed to the script depended on its clock at the copy; cap TTLs in the script)"
    } else if options.keys.is_some() {
        "--keys-from / --recheck (a key list names target keys the script cannot map back)"
    } else {
        return Ok(());
    };
    Err(format!("--script cannot be combined with {rule}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(names_bytes: usize) -> ScriptScope {
        let mut script = ScriptOptions::new("t.lua", b"function transform() end".to_vec());
        script.names_bytes = names_bytes;
        let options = CompareOptions {
            script: Some(script),
            ..CompareOptions::default()
        };
        ScriptScope::load(&options)
            .expect("loads")
            .expect("a script")
    }

    #[test]
    fn produced_names_know_their_source_and_give_up_past_the_bound() {
        let s = scope(1 << 20);
        assert!(s.record(0, b"u:1", b"user:1"));
        assert!(
            s.record(0, b"u:1", b"user:1"),
            "the same source again (a round)"
        );
        assert!(!s.record(0, b"u:1", b"user:2"), "a second source key");
        assert!(s.produced(0, b"u:1") && !s.produced(1, b"u:1"));
        assert_eq!(s.extras_unchecked(0), None);
        let small = scope(100);
        for i in 0..10 {
            small.record(0, format!("key:{i}").as_bytes(), b"s");
        }
        assert!(small
            .extras_unchecked(0)
            .is_some_and(|why| why.contains("outgrew")));
        assert!(
            !small.produced(0, b"key:0"),
            "the names are dropped, not kept"
        );
    }

    #[test]
    fn rules_a_script_cannot_follow_are_refused() {
        let with = |f: fn(&mut CompareOptions)| {
            let mut options = CompareOptions {
                script: Some(ScriptOptions::new("t.lua", Vec::new())),
                ..CompareOptions::default()
            };
            f(&mut options);
            check_options(&options)
        };
        assert!(with(|_| {}).is_ok());
        assert!(with(|o| o.renames = vec![(b"a".to_vec(), b"b".to_vec())])
            .is_err_and(|e| e.contains("--rename-prefix")));
        assert!(
            with(|o| o.ttl_rule = TtlRule::Cap(std::time::Duration::from_secs(9)))
                .is_err_and(|e| e.contains("--ttl-cap"))
        );
        assert!(with(|o| o.ttl_rule = TtlRule::Remove).is_ok());
        assert!(
            with(|o| o.keys = Some(Default::default())).is_err_and(|e| e.contains("--keys-from"))
        );
    }
}
