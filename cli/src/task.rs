//! From the task arguments of `lockstep sync` (`TaskArgs`: name, objects, throttles)
//! to the engine's `SyncOptions::{task_name, filter, script, throttle}`.
//!
//! How it fits: `sync.rs` (`engine_options`) applies it to each target's options.
//! It only builds values: no I/O, and a filter the engine would refuse
//! (`Filter::validate`) is an error here, never a silent default.

use std::sync::Arc;
use std::time::Duration;

use lockstep_sync::engine::SyncOptions;
use lockstep_sync::filter::Filter;
use lockstep_sync::script::{Script, ScriptLimits};
use lockstep_sync::throttle::ThrottleOptions;

use lockstep_sync::rules::hash_fields::HashFieldDrops;
use lockstep_sync::rules::key_match::KeyPatterns;
use lockstep_sync::rules::rename_regex::RegexRename;
use lockstep_sync::rules::routes::DbRoutes;
use lockstep_sync::rules::ttl::TtlRule;
use lockstep_sync::rules::types::{parse_type, TypeRules};

use crate::args::{rule_duration, TaskArgs};

/// Type names (checked by clap already) as kinds.
fn kinds(names: &[String]) -> anyhow::Result<Vec<lockstep_sync::rdb::Kind>> {
    names
        .iter()
        .map(|n| parse_type(n).map_err(anyhow::Error::msg))
        .collect()
}

/// Bytes in one MB of the throttle flags.
const MB: f64 = 1_000_000.0;

impl TaskArgs {
    /// Sets the task's name, filter and throttles; checks the filter's consistency
    /// (a mapping of an unselected database, two sources into one target database).
    pub fn apply_to(&self, options: &mut SyncOptions) -> anyhow::Result<()> {
        options.task_name = self.task_name.clone();
        options.filter = self.filter()?;
        options.filter.validate()?;
        options.script = self.script()?;
        if options.script.is_some() {
            lockstep_sync::script::check_filter(&options.filter).map_err(anyhow::Error::msg)?;
        }
        options.throttle = self.throttle();
        Ok(())
    }

    /// The script of `--script`, loaded (a syntax error or a missing `transform` is
    /// refused here, before anything is written).
    pub fn script(&self) -> anyhow::Result<Option<Arc<Script>>> {
        let Some(path) = &self.script else {
            return Ok(None);
        };
        let limits = ScriptLimits {
            timeout: Duration::from_millis(self.script_timeout),
            memory: usize::try_from(self.script_memory << 20).unwrap_or(usize::MAX),
        };
        Ok(Some(Arc::new(Script::from_file(path, limits)?)))
    }

    pub fn filter(&self) -> anyhow::Result<Filter> {
        Ok(Filter {
            dbs: self.dbs.clone(),
            db_map: self.map_db.clone(),
            include_prefixes: self.prefix.iter().map(|p| p.as_bytes().to_vec()).collect(),
            exclude_prefixes: self
                .exclude_prefix
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            renames: self.renames()?,
            keep_publish: self.keep_publish,
            drop_commands: self.drop_command.clone(),
            extend_ttl: Duration::from_secs(self.extend_ttl),
            patterns: KeyPatterns::new(
                &self.key_match,
                &self.exclude_match,
                &self.key_regex,
                &self.exclude_key_regex,
            )
            .map_err(anyhow::Error::msg)?,
            types: TypeRules::new(kinds(&self.types)?, kinds(&self.exclude_types)?),
            ttl_rule: self.ttl_rule()?,
            hash_fields: HashFieldDrops::parse(&self.drop_hash_field)?,
            routes: DbRoutes::new(&self.route_db).map_err(anyhow::Error::msg)?,
            // Set per shard when the source turns out to be a cluster.
            source_slots: Vec::new(),
        })
    }

    /// --rename-prefix rules, then --rename-regex rules (checked here: the form).
    fn renames(&self) -> anyhow::Result<lockstep_sync::rename::KeyRenames> {
        let prefixes = self
            .rename_prefix
            .iter()
            .map(|(old, new)| (old.as_bytes().to_vec(), new.as_bytes().to_vec()))
            .collect();
        let regexes = self
            .rename_regex
            .chunks(2)
            .map(|pair| match pair {
                [from, to] => RegexRename::new(from, to).map_err(anyhow::Error::msg),
                _ => anyhow::bail!("--rename-regex takes two values, FROM and TO"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(lockstep_sync::rename::KeyRenames::new(prefixes).with_regexes(regexes))
    }

    /// --ttl-remove, --ttl-cap, --ttl-set (at most one).
    fn ttl_rule(&self) -> anyhow::Result<TtlRule> {
        let given = usize::from(self.ttl_remove)
            + usize::from(self.ttl_cap.is_some())
            + usize::from(self.ttl_set.is_some());
        anyhow::ensure!(
            given <= 1,
            "--ttl-remove, --ttl-cap and --ttl-set: give at most one (each decides every expiry)"
        );
        let duration = |text: &str| rule_duration(text).map_err(anyhow::Error::msg);
        Ok(match (&self.ttl_cap, &self.ttl_set) {
            _ if self.ttl_remove => TtlRule::Remove,
            (Some(cap), _) => TtlRule::Cap(duration(cap)?),
            (None, Some(set)) => TtlRule::Set(duration(set)?),
            (None, None) => TtlRule::Keep,
        })
    }

    pub fn throttle(&self) -> ThrottleOptions {
        let bytes = |mb: Option<f64>| mb.map(|mb| ((mb * MB) as u64).max(1));
        ThrottleOptions {
            full_keys_per_sec: self.full_keys_per_sec,
            full_bytes_per_sec: bytes(self.full_mb_per_sec),
            incremental_commands_per_sec: self.incremental_commands_per_sec,
            incremental_bytes_per_sec: bytes(self.incremental_mb_per_sec),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::{Cli, Command};

    fn task(flags: &[&str]) -> Result<crate::args::TaskArgs, clap::Error> {
        let mut argv = vec![
            "lockstep",
            "sync",
            "--source",
            "redis://s:1",
            "--target",
            "redis://t:1",
            "--checkpoint-dir",
            "d",
        ];
        argv.extend(flags);
        match Cli::try_parse_from(argv)?.command {
            Command::Sync(args) => Ok(args.task),
            _ => unreachable!("a sync command line"),
        }
    }

    #[test]
    fn flags_become_the_engine_options() {
        let args = task(&[
            "--task-name",
            "east-1",
            "--dbs",
            "0,2",
            "--map-db",
            "0:5",
            "--prefix",
            "user:",
            "--prefix",
            "order:",
            "--exclude-prefix",
            "user:tmp",
            "--drop-command",
            "flushall",
            "--extend-ttl",
            "600",
            "--full-keys-per-sec",
            "5000",
            "--full-mb-per-sec",
            "1.5",
            "--incremental-commands-per-sec",
            "2000",
            "--incremental-mb-per-sec",
            "2",
        ])
        .expect("parses");
        let filter = args.filter().expect("valid");
        assert_eq!(filter.dbs, [0, 2]);
        assert_eq!(filter.db_map, [(0, 5)]);
        assert_eq!(
            filter.include_prefixes,
            [b"user:".to_vec(), b"order:".to_vec()]
        );
        assert_eq!(filter.exclude_prefixes, [b"user:tmp".to_vec()]);
        assert!(!filter.keep_publish, "PUBLISH is dropped by default");
        assert_eq!(filter.extend_ttl.as_secs(), 600);
        let throttle = args.throttle();
        assert_eq!(throttle.full_keys_per_sec, Some(5000));
        assert_eq!(throttle.full_bytes_per_sec, Some(1_500_000));
        assert_eq!(throttle.incremental_commands_per_sec, Some(2000));
        assert_eq!(throttle.incremental_bytes_per_sec, Some(2_000_000));
        assert_eq!(args.task_name, "east-1");
        assert_eq!(task(&[]).expect("parses").task_name, "default");
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_range() {
        for bad in [
            &["--map-db", "0:256"][..],
            &["--map-db", "0-5"],
            &["--dbs", "300"],
            &["--extend-ttl", "-1"],
            &["--full-mb-per-sec", "0"],
            &["--incremental-commands-per-sec", "0"],
            &["--task-name", "a b"],
            &["--task-name", ""],
        ] {
            assert!(task(bad).is_err(), "{bad:?} was accepted");
        }
        let err = task(&["--map-db", "x"])
            .expect_err("bad mapping")
            .to_string();
        assert!(err.contains("SRC:DST"), "{err}");
    }

    /// The script is loaded when the options are built: a syntax error, and a script
    /// with prefix rules, are refused before the task starts.
    #[test]
    fn the_script_is_loaded_and_refused_before_the_task() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let good = dir.path().join("good.lua");
        let bad = dir.path().join("bad.lua");
        std::fs::write(&good, "function transform(db, argv) return nil end").expect("written");
        std::fs::write(&bad, "function transform(db, argv)\n  return {{\nend").expect("written");
        let endpoint = lockstep_sync::endpoint::Endpoint::parse("redis://s:1").expect("a URL");
        let options =
            || lockstep_sync::engine::SyncOptions::new(endpoint.clone(), endpoint.clone(), "d");
        let path = |p: &std::path::Path| p.to_str().expect("a path").to_owned();

        let mut o = options();
        let args = task(&[
            "--script",
            &path(&good),
            "--script-timeout",
            "50",
            "--script-memory",
            "8",
        ])
        .expect("parses");
        args.apply_to(&mut o).expect("accepted");
        assert!(o.script.is_some());

        let args = task(&["--script", &path(&bad)]).expect("parses");
        let err = args
            .apply_to(&mut options())
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("syntax error") && err.contains("bad.lua:"),
            "{err}"
        );

        let args = task(&["--script", &path(&good), "--prefix", "a:"]).expect("parses");
        let err = args
            .apply_to(&mut options())
            .expect_err("refused")
            .to_string();
        assert!(err.contains("cannot be combined with --prefix"), "{err}");

        let missing = dir.path().join("missing.lua");
        let args = task(&["--script", &path(&missing)]).expect("parses");
        let err = args
            .apply_to(&mut options())
            .expect_err("refused")
            .to_string();
        assert!(err.contains("cannot read it"), "{err}");
    }
}
