//! `lockstep verify`: runs the comparison, writes the reports and turns the outcome
//! into an exit code (0 consistent, 1 differences found, 2 the check itself failed:
//! the error and its cause chain are printed by `main`). Key lists (`--keys-from`,
//! `--recheck`) are read here; verify itself never reads a file.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use lockstep_verify::{compare, output, CompareOptions, KeyList, Sample};

use crate::args::{VerifyArgs, VerifyModeArg};
use crate::connection::{self, Side};

/// The comparison's options from the flags (no I/O).
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
    let (dbs, keys) = key_list(args)?;
    ignore.extend(args.exclude_prefix.iter().map(|p| p.as_bytes().to_vec()));
    Ok(CompareOptions {
        dbs,
        keys,
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
        ..defaults
    })
}

/// The databases to compare and, with `--keys-from` or `--recheck`, the keys.
fn key_list(args: &VerifyArgs) -> anyhow::Result<(Vec<u32>, Option<KeyList>)> {
    let dbs = if args.dbs.is_empty() {
        CompareOptions::default().dbs
    } else {
        args.dbs.clone()
    };
    if let Some(path) = &args.keys_from {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the key list {}", path.display()))?;
        let keys = output::read_key_lines(std::io::BufReader::new(file))
            .with_context(|| format!("reading the key list {}", path.display()))?;
        let list = dbs.iter().map(|&db| (db, keys.clone())).collect();
        return Ok((dbs, Some(list)));
    }
    if let Some(path) = &args.recheck {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the report {}", path.display()))?;
        let mut list = output::read_report_keys(std::io::BufReader::new(file))
            .with_context(|| format!("reading the report {}", path.display()))?;
        list.retain(|db, _| dbs.contains(db));
        return Ok((list.keys().copied().collect(), Some(list)));
    }
    Ok((dbs, None))
}

/// A client of one side, from its URL and the connection options, by the URL parser
/// and the messages every subcommand shares.
async fn client(args: &VerifyArgs, side: Side, url: &str) -> anyhow::Result<redis::Client> {
    let endpoint = args.connection.endpoint(side, url)?;
    connection::redis_client(side, &endpoint, &args.connection.tls(side)).await
}

pub async fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let options = options(&args)?;
    let source = client(&args, Side::Source, &args.source).await?;
    let target = client(&args, Side::Target, &args.target).await?;
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
    Ok(if report.is_consistent() {
        println!("CONSISTENT: the target equals the source");
        ExitCode::SUCCESS
    } else {
        println!("INCONSISTENT: {} differences", report.difference_count());
        ExitCode::from(1)
    })
}
