//! One audit of one pair: connect both sides, compare in-process with verify's
//! options from the pair, turn the report (or the failure) into a history [`Run`]
//! and the line a person reads, record it, print it.
//!
//! A failure to connect or to compare is a run that could not verify (exit 2),
//! recorded with its error, never a consistent one. The sample window of a rotating
//! pair is the last recorded window plus one, so the rotation survives restarts.

use chrono::{DateTime, Utc};
use lockstep_verify::{compare, Report};
use tokio::task::JoinHandle;

use crate::audit::config::{Pair, Retention};
use crate::audit::history::{History, Run, SeenKey};
use crate::audit::state::State;
use crate::audit::webhook;
use crate::connection::{self, Side};

/// What one audit produced.
pub struct Outcome {
    pub run: Run,
    pub keys: Vec<SeenKey>,
    pub line: String,
    pub code: u8,
}

/// Where a recorded run is shown: the daemon's state and the webhook.
pub struct Sinks<'a> {
    pub state: &'a State,
    pub webhook_url: Option<&'a str>,
}

/// Audits `pair`, records the run in `history`, prints its line, shows it in the
/// state and alerts on a change of verdict; verify's exit code, and the alert's
/// delivery when one was sent.
pub async fn audit_and_record(
    pair: &Pair,
    history: &mut History,
    retention: Retention,
    sinks: &Sinks<'_>,
) -> anyhow::Result<(u8, Option<JoinHandle<()>>)> {
    let previous = history.last_run(&pair.name)?;
    let window = next_window(pair, previous.as_ref());
    let mut outcome = audit(pair, window).await;
    outcome.run.id = history.record(&outcome.run, &outcome.keys, retention)?;
    println!("audit `{}`: {}", pair.name, outcome.line);
    let alert = sinks
        .webhook_url
        .zip(webhook::alert(previous.as_ref(), &outcome.run))
        .map(|(url, body)| webhook::send(url, body));
    sinks.state.set_last_run(&pair.name, outcome.run);
    Ok((outcome.code, alert))
}

/// The sample window of the pair's next run: 0 unless it rotates.
fn next_window(pair: &Pair, previous: Option<&Run>) -> u64 {
    match (pair.rotate_sample, previous) {
        (true, Some(run)) => run.sample_window.wrapping_add(1),
        _ => 0,
    }
}

/// One audit of `pair` with sample window `window`; never fails: a failure is an
/// outcome that could not verify.
pub async fn audit(pair: &Pair, window: u64) -> Outcome {
    let started = Utc::now();
    let result = compare_pair(pair, window).await;
    let ended = Utc::now();
    let run = Run {
        pair: pair.name.clone(),
        started_ms: started.timestamp_millis(),
        ended_ms: ended.timestamp_millis(),
        mode: pair.mode().to_owned(),
        sample_window: window,
        ..Run::default()
    };
    match result {
        Ok(report) => from_report(run, &report),
        Err(err) => could_not_verify(run, &err, started),
    }
}

async fn compare_pair(pair: &Pair, window: u64) -> anyhow::Result<Report> {
    let source = client(pair, Side::Source, &pair.source).await?;
    let target = client(pair, Side::Target, &pair.target).await?;
    let mut options = pair.options.clone();
    options.sample_window = window;
    compare(&source, &target, &options).await
}

/// A client of one side, by the URL parser and messages sync and verify share.
async fn client(pair: &Pair, side: Side, url: &str) -> anyhow::Result<redis::Client> {
    let endpoint = pair.connection.endpoint(side, url)?;
    connection::redis_client(side, &endpoint, &pair.connection.tls(side)).await
}

fn from_report(mut run: Run, report: &Report) -> Outcome {
    let (line, code) = crate::verify::verdict_line(report);
    let statement = report.statement();
    let line = match &statement {
        Some(s) => format!("{line}; {}", s.sentence()),
        None => line,
    };
    run.keys_compared = report.keys_compared;
    run.coverage = Some(report.coverage.to_json());
    run.differences = report.difference_count();
    run.by_kind = report
        .by_kind()
        .into_iter()
        .map(|(kind, n)| (kind.to_owned(), n))
        .collect();
    run.verdict = match code {
        0 => "consistent",
        1 => "differences",
        _ => "incomplete",
    }
    .to_owned();
    run.statement = statement.map(|s| s.to_json());
    let keys = report
        .differences
        .iter()
        .map(|d| SeenKey {
            db: d.db,
            key: d.key.clone(),
            kind: d.kind.as_str().to_owned(),
        })
        .collect();
    Outcome {
        run,
        keys,
        line,
        code,
    }
}

fn could_not_verify(mut run: Run, err: &anyhow::Error, started: DateTime<Utc>) -> Outcome {
    let error = format!("{err:#}");
    run.verdict = "could_not_verify".to_owned();
    run.error = Some(error.clone());
    Outcome {
        line: format!(
            "COULD NOT VERIFY (audit started {}): {error}",
            started.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        run,
        keys: Vec::new(),
        code: 2,
    }
}
