//! `lockstep sync --config FILE`: the sync's options from a TOML file.
//!
//! **One source of truth: the clap arguments of `SyncArgs` in `args.rs`.** Every
//! argument of `lockstep sync` is a TOML key of the same name as its flag, in
//! snake_case (`--retry-minutes` is `retry_minutes`); a repeatable flag takes an array
//! (`target = ["redis://a", "redis://b"]`); a switch takes `true`/`false`. To add an
//! option, add one field to `SyncArgs` (or a struct it flattens) and document its
//! line in `docs/configuration.md`: nothing here changes, and the tests below check
//! that every argument is documented and that the example file there parses.
//!
//! How: the command line is parsed first (every argument optional when a required
//! one is missing, to find `--config`); then each key of the file that names a sync
//! argument not given on the command line or in the environment is appended to the
//! command line as `--flag=value`, and the whole is parsed again by clap's own rules
//! (required arguments, ranges, enums). Each file value is first checked by its
//! argument's value parser, so an error names the key and the file. Unknown keys are
//! errors. Values never appear in messages (a password may be one of them).
//!
//! How it fits: `main` calls it before dispatching `sync`; the fuzz crate compiles
//! this file (`fuzz/fuzz_targets/config_file.rs`), so it must depend on nothing
//! but clap, toml and `args.rs` (whose value parsers use lockstep-sync's rules and
//! lockstep-verify's duration parser: both are dependencies of the fuzz crate). It
//! never prints a value from the file.

use std::ffi::OsString;
use std::path::Path;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use crate::args::Cli;

/// The subcommand whose options a config file holds.
const CONFIG_SUBCOMMAND: &str = "sync";
/// Arguments that are not options of the task.
const NOT_KEYS: &[&str] = &["config", "help", "version"];

/// Parses the process's arguments, merging a sync's `--config` file; prints clap's
/// message and exits on an error (exit code 2), as `Cli::parse` does.
pub fn parse_cli() -> Cli {
    match parse_from(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    }
}

/// Parses `argv` (program name first), merging a sync's `--config` file.
pub fn parse_from(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    command.build();
    let first = command.clone().try_get_matches_from(&argv);
    let matches = match first {
        Ok(matches) => matches,
        Err(err) if err.kind() == ErrorKind::MissingRequiredArgument => {
            // Required arguments may be in the file: find --config without them.
            let lenient = command
                .clone()
                .mut_subcommand(CONFIG_SUBCOMMAND, |sub| sub.mut_args(|a| a.required(false)));
            match lenient.try_get_matches_from(&argv) {
                Ok(matches) if config_path(&matches).is_some() => matches,
                _ => return Err(err),
            }
        }
        Err(err) => return Err(err),
    };
    let Some((path, given)) = config_path(&matches) else {
        return Cli::from_arg_matches(&matches);
    };
    let sync = command
        .find_subcommand(CONFIG_SUBCOMMAND)
        .ok_or_else(|| config_error("internal: no sync subcommand".to_owned()))?;
    let mut full = argv;
    full.extend(file_args(&path, given, sync)?);
    Cli::from_arg_matches(&command.try_get_matches_from(full)?)
}

/// The `--config` path of a sync, with the sync's matches.
fn config_path(matches: &ArgMatches) -> Option<(std::path::PathBuf, &ArgMatches)> {
    match matches.subcommand() {
        Some((CONFIG_SUBCOMMAND, given)) => given
            .get_one::<std::path::PathBuf>("config")
            .map(|path| (path.clone(), given)),
        _ => None,
    }
}

/// The file's keys as `--flag=value` arguments, for the options not given otherwise.
fn file_args(
    path: &Path,
    given: &ArgMatches,
    sync: &clap::Command,
) -> Result<Vec<OsString>, clap::Error> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| config_error(format!("cannot read the config file {file}: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The message only, never the offending line: it may hold a password.
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
        config_error(format!(
            "the config file {file} is not valid TOML{at}: {}",
            e.message()
        ))
    })?;
    let mut args = Vec::new();
    for (key, value) in &table {
        let arg = sync
            .get_arguments()
            .find(|a| a.get_id() == key.as_str() && !NOT_KEYS.contains(&key.as_str()))
            .ok_or_else(|| {
                config_error(format!(
                    "the config file {file} has an unknown key `{key}` (keys are the flags of \
                     `lockstep sync` in snake_case; see docs/configuration.md)"
                ))
            })?;
        if matches!(
            given.value_source(key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue; // the command line and the environment win over the file
        }
        let flag = match arg.get_long() {
            Some(long) => format!("--{long}"),
            None => continue,
        };
        let bad = |what: &str| config_error(format!("the config file {file}: key `{key}` {what}"));
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            match value {
                toml::Value::Boolean(true) => args.push(OsString::from(&flag)),
                toml::Value::Boolean(false) => {}
                _ => return Err(bad("must be true or false")),
            }
            continue;
        }
        let two_values = arg.get_num_args().is_some_and(|n| n.min_values() == 2);
        if two_values {
            args.extend(value_pairs(value, &flag).map_err(|what| bad(&what))?);
            continue;
        }
        let values = match value {
            toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("must be an array of strings or numbers"))?,
            toml::Value::Array(_) => return Err(bad("takes one value, not an array")),
            other => vec![scalar(other).ok_or_else(|| bad("must be a string or a number"))?],
        };
        for text in values {
            let one = OsString::from(format!("{flag}={text}"));
            // The argument's own parser, alone, so the error can name the key.
            clap::Command::new("config")
                .no_binary_name(true)
                .arg(arg.clone().required(false))
                .try_get_matches_from([one.as_os_str()])
                .map_err(|e| bad(&format!("is invalid: {}", clap_reason(&e, &text))))?;
            args.push(one);
        }
    }
    Ok(args)
}

/// A two-valued repeatable flag (`--rename-regex FROM TO`) from an array of pairs:
/// `[["FROM", "TO"], ...]`.
fn value_pairs(value: &toml::Value, flag: &str) -> Result<Vec<OsString>, String> {
    let shape = "must be an array of [FROM, TO] pairs of strings";
    let toml::Value::Array(pairs) = value else {
        return Err(shape.to_owned());
    };
    let mut out = Vec::with_capacity(pairs.len() * 3);
    for pair in pairs {
        match pair.as_array().map(Vec::as_slice) {
            Some([toml::Value::String(a), toml::Value::String(b)]) => {
                out.extend([OsString::from(flag), OsString::from(a), OsString::from(b)]);
            }
            _ => return Err(shape.to_owned()),
        }
    }
    Ok(out)
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// Why clap refused `value`, without the value itself: a value parser's own message
/// may quote it (`parse_db_mapping` does), so any quote of it becomes "the value".
fn clap_reason(err: &clap::Error, value: &str) -> String {
    use clap::error::ContextKind;
    match err.get(ContextKind::ValidValue) {
        Some(valid) => format!("the valid values are {valid}"),
        None => match err.kind() {
            ErrorKind::ValueValidation => std::error::Error::source(err)
                .map(|s| without_value(&s.to_string(), value))
                .unwrap_or_else(|| "out of range".to_owned()),
            kind => kind.to_string(),
        },
    }
}

/// `message` with `value`, quoted (`{:?}`) or not, replaced by "the value".
fn without_value(message: &str, value: &str) -> String {
    if value.is_empty() {
        return message.to_owned();
    }
    message
        .replace(&format!("{value:?}"), "the value")
        .replace(value, "the value")
}

fn config_error(message: String) -> clap::Error {
    clap::Error::raw(ErrorKind::InvalidValue, format!("{message}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Command, ModeArg, SyncArgs};

    fn sync_with(file: &str, flags: &[&str]) -> Result<SyncArgs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("lockstep.toml");
        std::fs::write(&path, file).map_err(|e| e.to_string())?;
        let mut argv: Vec<OsString> = vec!["lockstep".into(), "sync".into(), "--config".into()];
        argv.push(path.into_os_string());
        argv.extend(flags.iter().map(OsString::from));
        match parse_from(argv) {
            Ok(Cli {
                command: Command::Sync(args),
                ..
            }) => Ok(args),
            Ok(_) => Err("not a sync".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The ```toml block of docs/configuration.md.
    fn documented_example() -> String {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("an example block") + "```toml\n".len();
        let end = doc[start..].find("```").expect("the block ends") + start;
        doc[start..end].to_owned()
    }

    #[test]
    fn the_documented_example_parses_with_its_values() {
        let args = sync_with(&documented_example(), &[]).expect("the example parses");
        assert_eq!(args.source, "redis://10.0.0.1:6379");
        assert_eq!(args.target.len(), 2, "{:?}", args.target);
        assert_eq!(args.retry_minutes, 720);
        assert_eq!(args.mode, ModeArg::FullAndIncremental);
    }

    #[test]
    fn every_sync_option_is_documented_with_its_key() {
        let doc = include_str!("../../docs/configuration.md");
        let mut command = Cli::command();
        command.build();
        let sync = command.find_subcommand("sync").expect("sync");
        for arg in sync.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_KEYS.contains(&id) {
                continue;
            }
            assert!(
                doc.contains(&format!("| `{id}` |")),
                "docs/configuration.md has no table row for the key `{id}`"
            );
        }
    }

    #[test]
    fn the_file_fills_what_the_command_line_leaves_out_and_flags_win() {
        let file = "source = \"redis://s:1\"\ntarget = [\"redis://t:1\"]\n\
                    checkpoint_dir = \"/tmp/cp\"\nretry_minutes = 30\nkeep_publish = true\n\
                    mode = \"full\"\n";
        let args = sync_with(file, &[]).expect("parses");
        assert_eq!(
            (args.retry_minutes, args.task.keep_publish, args.mode),
            (30, true, ModeArg::Full)
        );
        let args =
            sync_with(file, &["--retry-minutes", "60", "--target", "redis://u:2"]).expect("parses");
        assert_eq!(args.retry_minutes, 60, "the flag wins");
        assert_eq!(args.target, vec!["redis://u:2".to_owned()], "the flag wins");
    }

    #[test]
    fn the_rule_keys_build_the_filter() {
        let base = "source = \"redis://s:1\"\ntarget = [\"redis://t:1\"]\ncheckpoint_dir = \"d\"\n";
        let file = format!(
            "{base}rename_regex = [[\"^user:(\\\\d+)$\", \"u:$1\"]]\nmatch = [\"user:*\"]\n\
             exclude_types = [\"stream\"]\nttl_cap = \"7d\"\ndrop_hash_field = [\"ssn\"]\n"
        );
        let args = sync_with(&file, &[]).expect("parses");
        let filter = args.task.filter().expect("a filter");
        assert_eq!(&*filter.renames.target_key(b"user:42"), b"u:42");
        assert!(filter.keeps_key(b"user:1") && !filter.keeps_key(b"order:1"));
        assert!(!filter.types.keeps(lockstep_sync::rdb::Kind::Stream));
        assert_eq!(
            filter.ttl_rule,
            lockstep_sync::rules::ttl::TtlRule::Cap(std::time::Duration::from_secs(7 * 86_400))
        );
        assert!(filter.hash_fields.drops(b"h", b"ssn"));
        for bad in [
            "rename_regex = [\"a(.)\", \"$1\"]\n",
            "rename_regex = [[\"a(.)\"]]\n",
        ] {
            let err = sync_with(&format!("{base}{bad}"), &[]).expect_err("refused");
            assert!(
                err.contains("`rename_regex`") && err.contains("[FROM, TO]"),
                "{err}"
            );
        }
        let err = sync_with(&format!("{base}rename_regex = [[\"a.\", \"b\"]]\n"), &[])
            .map(|a| a.task.filter().map(|_| ()))
            .expect("parses")
            .expect_err("the form is refused");
        assert!(
            err.to_string().contains("literals and capture groups"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_the_file_never_the_value() {
        let base = "source = \"redis://s:1\"\ntarget = [\"redis://t:1\"]\ncheckpoint_dir = \"d\"\n";
        let err = sync_with(&format!("{base}retry_minuts = 30\n"), &[]).expect_err("unknown");
        assert!(
            err.contains("`retry_minuts`") && err.contains("lockstep.toml"),
            "{err}"
        );
        let err = sync_with(&format!("{base}retry_minutes = 5\n"), &[]).expect_err("range");
        assert!(
            err.contains("`retry_minutes`") && err.contains("10..=1440"),
            "{err}"
        );
        let err = sync_with(&format!("{base}mode = \"fast\"\n"), &[]).expect_err("enum");
        assert!(err.contains("`mode`") && !err.contains("fast"), "{err}");
        let err = sync_with("source = \"redis://:hunter2@s:1\n", &[]).expect_err("toml");
        assert!(err.contains("line 1") && !err.contains("hunter2"), "{err}");
        let err = sync_with("source = \"redis://s:1\"\n", &[]).expect_err("required");
        assert!(err.contains("--target"), "{err}");
    }

    /// Found by the config_file fuzz target: a value parser's own message quoted the
    /// value (`map_db`: "\"red,@@K@og-fo'\": use SRC:DST ..."), and the loader passed it on.
    #[test]
    fn a_value_parser_that_quotes_the_value_does_not_show_it() {
        let base = "source = \"redis://s:1\"\ntarget = [\"redis://t:1\"]\ncheckpoint_dir = \"d\"\n";
        for bad in ["map_db = [\"hunter2@x\"]", "map_db = \"red,@@K@og-fo'\""] {
            let err = sync_with(&format!("{base}{bad}\n"), &[]).expect_err("bad map_db");
            assert!(err.contains("`map_db`") && err.contains("SRC:DST"), "{err}");
            assert!(!err.contains("hunter2") && !err.contains("@@K@"), "{err}");
        }
    }
}
