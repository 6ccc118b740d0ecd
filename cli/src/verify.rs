//! `lockstep verify`: runs the comparison, writes the reports and turns the outcome
//! into an exit code: 0 consistent over everything, 1 differences found, 2 the check
//! itself failed (the error and its cause chain are printed by `main`), 3 no
//! difference in what was read but coverage is incomplete (a sample, databases with
//! keys outside `--dbs`, a database a side refused, databases that could not be
//! learned). The last line says which, and names what was compared and what was not:
//! CONSISTENT is printed only when nothing was left out. A sampled run's last line also
//! says what the sample proves (`lockstep_verify::statement`). Key lists (`--keys-from`,
//! `--recheck`) are read here; verify itself never reads a file.
//!
//! How it fits: `main` runs it for `lockstep verify`; the comparison itself is
//! `lockstep_verify`. It must never write to either side.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use lockstep_verify::{
    compare, output, CompareOptions, KeyList, Report, RuleSpec, Sample, ScriptOptions, TtlRule,
    Verdict,
};

use crate::args::{VerifyArgs, VerifyModeArg, VerifyRuleArgs};
use crate::connection::{self, Side};

/// Exit status: no difference in what was read, but not everything was read.
const EXIT_INCOMPLETE: u8 = 3;

/// The comparison's options from the flags (key lists aside: [`key_list`]).
fn options(args: &VerifyArgs) -> anyhow::Result<CompareOptions> {
    let defaults = CompareOptions::default();
    let sample = match (args.mode, args.sample_rate, args.sample_count) {
        (VerifyModeArg::Full, None, None) => Sample::All,
        (VerifyModeArg::Full, _, _) => {
            anyhow::bail!("--sample-rate and --sample-count need --mode sample")
        }
        (VerifyModeArg::Sample, Some(rate), None) if rate > 0.0 && rate <= 1.0 => {
            Sample::Rate(rate)
        }
        (VerifyModeArg::Sample, Some(rate), None) => {
            anyhow::bail!("--sample-rate {rate}: must be above 0 and at most 1")
        }
        (VerifyModeArg::Sample, None, Some(count)) => Sample::Count(count),
        (VerifyModeArg::Sample, _, _) => {
            anyhow::bail!("--mode sample needs --sample-rate or --sample-count")
        }
    };
    let mut ignore = defaults.ignore_prefixes.clone();
    ignore.extend(args.exclude_prefix.iter().map(|p| p.as_bytes().to_vec()));
    Ok(CompareOptions {
        dbs: args.dbs.clone(),
        long_string_bytes: usize::try_from(args.long_string_bytes)
            .context("--long-string-bytes")?,
        ttl_tolerance: Duration::from_millis(args.ttl_tolerance_ms),
        ttl_extension: Duration::from_secs(args.extend_ttl),
        max_listed: args.max_listed,
        ignore_prefixes: ignore,
        include_prefixes: args.prefix.iter().map(|p| p.as_bytes().to_vec()).collect(),
        sample,
        workers: args.workers as usize,
        keys_per_second: args.keys_per_second,
        rounds: args.rounds,
        round_pause: Duration::from_millis(args.round_pause_ms),
        db_map: db_map(&args.map_db, "--map-db")?,
        renames: renames(&args.rename_prefix, "--rename-prefix")?,
        ttl_rule: ttl_rule(&args.rules),
        rules: rule_spec(&args.rules),
        script: args
            .script
            .as_deref()
            .map(|path| script_options(path, args.script_timeout, args.script_memory, "--script"))
            .transpose()?,
        ..defaults
    })
    .and_then(|options| {
        lockstep_verify::rules::Rules::check(&options).map_err(anyhow::Error::msg)?;
        lockstep_verify::script::check_options(&options).map_err(anyhow::Error::msg)?;
        Ok(options)
    })
}

/// A script's options from its file and limits (`--script-timeout` ms,
/// `--script-memory` MiB), loaded once here so that an unreadable file, a syntax
/// error (with its line) or a missing `transform` is refused before any connection.
/// `option` names where the path came from in the error.
pub(crate) fn script_options(
    path: &std::path::Path,
    timeout_ms: u64,
    memory_mib: u64,
    option: &str,
) -> anyhow::Result<ScriptOptions> {
    let file = path.display().to_string();
    let code = std::fs::read(path).with_context(|| {
        format!("{option} {file}: cannot read it (fix: the path of the sync's script)")
    })?;
    let mut script = ScriptOptions::new(&file, code);
    script.timeout = Duration::from_millis(timeout_ms);
    script.memory = usize::try_from(memory_mib << 20).context("--script-memory")?;
    lockstep_verify::script::lua::Runner::load(&file, &script.code, script.timeout, script.memory)
        .map_err(|e| anyhow::anyhow!("{option}: {e}"))?;
    Ok(script)
}

/// The TTL rule of the flags (clap lets at most one through).
fn ttl_rule(args: &VerifyRuleArgs) -> TtlRule {
    match (args.ttl_remove, args.ttl_cap, args.ttl_set) {
        (true, _, _) => TtlRule::Remove,
        (_, Some(cap), _) => TtlRule::Cap(cap),
        (_, _, Some(set)) => TtlRule::Set(set),
        _ => TtlRule::Keep,
    }
}

/// The declarative rules of the flags, as given (checked by the comparison's
/// [`lockstep_verify::rules::Rules::check`]).
fn rule_spec(args: &VerifyRuleArgs) -> RuleSpec {
    RuleSpec {
        match_globs: args.match_globs.clone(),
        exclude_match: args.exclude_match.clone(),
        key_regex: args.key_regex.clone(),
        exclude_key_regex: args.exclude_key_regex.clone(),
        types: args.types.clone(),
        exclude_types: args.exclude_types.clone(),
        drop_hash_field: args.drop_hash_field.clone(),
        route_db: args.route_db.clone(),
        rename_regex: args
            .rename_regex
            .chunks(2)
            .filter_map(|pair| match pair {
                [from, to] => Some((from.clone(), to.clone())),
                _ => None,
            })
            .collect(),
    }
}

/// A database mapping as the sync takes it, checked: one target database per source
/// database, and no two source databases into one (verify could not tell their keys
/// apart). `option` names where it came from in the error.
pub(crate) fn db_map(map: &[(u32, u32)], option: &str) -> anyhow::Result<Vec<(u32, u32)>> {
    for (i, (from, to)) in map.iter().enumerate() {
        for (other_from, other_to) in &map[..i] {
            if other_from == from {
                anyhow::bail!("{option}: source database {from} is mapped twice (keep one)");
            }
            if other_to == to {
                anyhow::bail!(
                    "{option}: source databases {other_from} and {from} are both mapped into target database {to}: the sync refuses that, and verify could not tell their keys apart"
                );
            }
        }
    }
    Ok(map.to_vec())
}

/// Rename rules as the sync takes them, refused unless one-to-one (the sync's own
/// check: the rules are the sync's, their application in verify is verify's own).
/// `option` names where they came from in the error.
pub(crate) fn renames(
    rules: &[(String, String)],
    option: &str,
) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let rules: Vec<(Vec<u8>, Vec<u8>)> = rules
        .iter()
        .map(|(old, new)| (old.as_bytes().to_vec(), new.as_bytes().to_vec()))
        .collect();
    lockstep_sync::rename::KeyRenames::new(rules.clone())
        .validate()
        .map_err(|e| {
            let why = e.0;
            anyhow::anyhow!("{option}: {why}")
        })?;
    Ok(rules)
}

/// With `--keys-from` or `--recheck`, the keys and their databases (a key file's keys
/// are looked for in each database of `--dbs`, by default in each database holding
/// keys on either side).
async fn key_list(
    args: &VerifyArgs,
    options: &CompareOptions,
    source: &redis::Client,
    target: &redis::Client,
) -> anyhow::Result<Option<(Vec<u32>, KeyList, KeyList)>> {
    let dbs = args.dbs.clone();
    if let Some(path) = &args.keys_from {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the key list {}", path.display()))?;
        let keys = output::read_key_lines(std::io::BufReader::new(file))
            .with_context(|| format!("reading the key list {}", path.display()))?;
        let dbs = if dbs.is_empty() {
            databases_with_keys(source, target, &args.map_db).await?
        } else {
            dbs
        };
        let list = dbs.iter().map(|&db| (db, keys.clone())).collect();
        return Ok(Some((dbs, list, KeyList::new())));
    }
    if let Some(path) = &args.recheck {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the report {}", path.display()))?;
        let rows = output::read_report_rows(std::io::BufReader::new(file))
            .with_context(|| format!("reading the report {}", path.display()))?;
        let (mut list, mut target_only) = report_keys(rows, options)?;
        if !dbs.is_empty() {
            list.retain(|db, _| dbs.contains(db));
            target_only.retain(|db, _| dbs.contains(db));
        }
        let all: std::collections::BTreeSet<u32> =
            list.keys().chain(target_only.keys()).copied().collect();
        return Ok(Some((all.into_iter().collect(), list, target_only)));
    }
    Ok(None)
}

/// A report's keys to read again: by source name, and the target keys that no source
/// key is written as. With renamed prefixes an extra key is named by its target name
/// in the report: it is read again by its source name, if it has one.
fn report_keys(
    rows: Vec<(u32, Vec<u8>, String)>,
    options: &CompareOptions,
) -> anyhow::Result<(KeyList, KeyList)> {
    let rules = lockstep_verify::rules::Rules::check(options).map_err(anyhow::Error::msg)?;
    let map = lockstep_verify::keymap::KeyMap::new(Vec::new(), options.renames.clone())
        .with_regexes(rules.renames);
    let (mut list, mut target_only) = (KeyList::new(), KeyList::new());
    for (db, key, kind) in rows {
        if kind != "extra_on_target" {
            list.entry(db).or_default().push(key);
            continue;
        }
        match map.source_key(&key) {
            Some(source) => list.entry(db).or_default().push(source.into_owned()),
            None => target_only.entry(db).or_default().push(key),
        }
    }
    for keys in list.values_mut().chain(target_only.values_mut()) {
        keys.sort();
        keys.dedup();
    }
    Ok((list, target_only))
}

/// Every database holding keys on either side (the source's numbers: a target
/// database by the source database mapped into it, if any).
async fn databases_with_keys(
    source: &redis::Client,
    target: &redis::Client,
    db_map: &[(u32, u32)],
) -> anyhow::Result<Vec<u32>> {
    let (s, t) = tokio::try_join!(
        lockstep_verify::coverage::learn(source),
        lockstep_verify::coverage::learn(target)
    )
    .context("learning the databases for --keys-from")?;
    let map = lockstep_verify::keymap::KeyMap::new(db_map.to_vec(), Vec::new());
    let mut dbs = s.with_keys;
    dbs.extend(t.with_keys.iter().filter_map(|&db| map.source_db(db)));
    Ok(dbs.into_iter().collect())
}

/// The last line: what may be claimed, over what.
pub(crate) fn verdict_line(report: &Report) -> (String, u8) {
    let coverage = &report.coverage;
    let gaps = coverage.gaps();
    let gaps = if gaps.is_empty() {
        String::new()
    } else {
        format!("; NOT COVERED: {}", gaps.join("; "))
    };
    match report.verdict() {
        Verdict::Differences => (
            format!(
                "INCONSISTENT: {} differences in {}{gaps}",
                report.difference_count(),
                coverage.scope()
            ),
            1,
        ),
        Verdict::Consistent => (
            format!(
                "CONSISTENT: the target equals the source in {}",
                coverage.scope()
            ),
            0,
        ),
        Verdict::Incomplete => {
            let what = match coverage.sample {
                Some(sample) => format!(
                    "in a sample of {} keys (rate {:.6}) of {}; the rest was not compared",
                    report.keys_compared,
                    sample.rate,
                    coverage.scope()
                ),
                None => format!("in {}", coverage.scope()),
            };
            (
                format!("NO DIFFERENCES {what}{gaps}; not everything was compared (exit 3)"),
                EXIT_INCOMPLETE,
            )
        }
    }
}

/// A client of one side, from its URL and the connection options, by the URL parser
/// and the messages every subcommand shares.
async fn client(args: &VerifyArgs, side: Side, url: &str) -> anyhow::Result<redis::Client> {
    let endpoint = args.connection.endpoint(side, url)?;
    connection::redis_client(side, &endpoint, &args.connection.tls(side)).await
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut options = options(&args)?;
    let source = client(&args, Side::Source, &args.source).await?;
    let target = client(&args, Side::Target, &args.target).await?;
    if let Some((dbs, keys, target_only)) = key_list(&args, &options, &source, &target).await? {
        options.dbs = dbs;
        options.keys = Some(keys);
        options.target_only_keys = Some(target_only);
    }
    let report = compare(&source, &target, &options)
        .await
        .context("could not verify")?;
    if let Some(path) = &args.report {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating the report {}", path.display()))?;
        output::write_csv(&report, std::io::BufWriter::new(file))
            .with_context(|| format!("writing the report {}", path.display()))?;
    }
    if let Some(path) = &args.summary {
        let json = serde_json::to_string_pretty(&output::summary(&report, &options))?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the summary {}", path.display()))?;
    }
    println!("{report}");
    let (line, code) = verdict_line(&report);
    match report.statement() {
        Some(statement) => println!("{line}; {}", statement.sentence()),
        None => println!("{line}"),
    }
    Ok(ExitCode::from(code))
}
