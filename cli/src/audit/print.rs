//! `lockstep audit history`: the recorded runs (oldest first) and the keys that
//! differed in each pair's last verified run, persistent ones (2+ consecutive runs)
//! marked; as a table for a person or as one JSON document.
//!
//! It only reads the history (opened read-only: it never creates or changes it, even
//! while a daemon is creating it); it never connects to either side.

use std::fmt::Write as _;
use std::process::ExitCode;

use chrono::DateTime;

use crate::audit::history::{History, Run, TrackedKey, PERSISTENT_RUNS};
use crate::audit::{config, HistoryArgs, HistoryFormat};

pub fn run(args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let config = config::load(&args.config)?;
    anyhow::ensure!(
        config.history.exists(),
        "the audit history {} does not exist yet: no audit has run with {}",
        config.history.display(),
        args.config.display()
    );
    let Some(history) = History::open_read_only(&config.history)? else {
        return no_runs_yet(args.format);
    };
    if let Some(name) = &args.pair {
        anyhow::ensure!(
            config.pairs.iter().any(|p| &p.name == name),
            "{} has no pair named `{name}`",
            args.config.display()
        );
    }
    let pair = args.pair.as_deref();
    let runs = history.runs(pair)?;
    let keys = history.current_keys(pair, 1)?;
    let text = match args.format {
        HistoryFormat::Json => json(&runs, &keys)?,
        HistoryFormat::Table => table(&runs, &keys),
        HistoryFormat::Html => crate::audit::html::page(&runs, &keys),
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn no_runs_yet(format: HistoryFormat) -> anyhow::Result<ExitCode> {
    match format {
        HistoryFormat::Json => print!("{}", json(&[], &[])?),
        HistoryFormat::Table => println!("no audit recorded yet"),
        HistoryFormat::Html => print!("{}", crate::audit::html::page(&[], &[])),
    }
    Ok(ExitCode::SUCCESS)
}

fn json(runs: &[Run], keys: &[TrackedKey]) -> anyhow::Result<String> {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            let mut value = serde_json::to_value(k).unwrap_or_default();
            value["persistent"] = (k.consecutive >= PERSISTENT_RUNS).into();
            value
        })
        .collect();
    let document = serde_json::json!({ "runs": runs, "differing_keys": keys });
    Ok(serde_json::to_string_pretty(&document)? + "\n")
}

fn time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn table(runs: &[Run], keys: &[TrackedKey]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<19} {:>8} {:<6} {:>10} {:>11}  verdict",
        "pair", "started (UTC)", "seconds", "mode", "keys", "differences"
    );
    for r in runs {
        let seconds = (r.ended_ms - r.started_ms) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{:<20} {:<19} {:>8.1} {:<6} {:>10} {:>11}  {}",
            r.pair,
            time(r.started_ms),
            seconds,
            r.mode,
            r.keys_compared,
            r.differences,
            r.verdict
        );
    }
    if keys.is_empty() {
        let _ = writeln!(
            out,
            "no key differs in the last verified run of any pair shown"
        );
        return out;
    }
    let _ = writeln!(out, "keys differing in the last verified run:");
    for k in keys {
        let state = if k.consecutive >= PERSISTENT_RUNS {
            "PERSISTENT"
        } else {
            "new (lag?)"
        };
        let _ = writeln!(
            out,
            "  {state} {} db {} key {}: {} in {} consecutive runs since {}",
            k.pair,
            k.db,
            lockstep_verify::output::encode_key(&k.key),
            k.kind,
            k.consecutive,
            time(k.first_seen_ms)
        );
    }
    out
}
