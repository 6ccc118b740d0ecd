//! An episode whose rules the sync must refuse at start ([`Refusal`]: a TTL rule that
//! `--extend-ttl` contradicts, overlapping or empty renames, a `LOCKSTEP_` name, an
//! unclosed glob, a regex rename that drops a group, two TTL rules). It starts
//! `lockstep sync` as every episode does and judges the refusal: the sync must exit
//! with an error that says why (the drawn words), within a bound, having written
//! nothing to the target; `lockstep verify` with the same flags must refuse too
//! (exit 2) and say why in its own words. No load runs and no fault is done.
//!
//! A refusal that comes as drawn is not a finding; a sync that starts anyway, exits 0,
//! or refuses for another reason is. A refusal the schedule did not draw is judged
//! by the episode (the sync exited during the episode).

use std::time::{Duration, Instant};

use super::checker;
use super::rules::Refusal;
use super::schedule::EpisodePlan;
use super::verify;
use super::world::World;

/// How long the sync may take to refuse (it refuses before connecting).
const REFUSAL_BOUND: Duration = Duration::from_secs(30);

/// Findings and a summary line of a refused start.
pub async fn judge(
    plan: &EpisodePlan,
    world: &mut World,
    expected: &Refusal,
) -> anyhow::Result<(Vec<String>, String)> {
    let mut findings = Vec::new();
    let sync_line = judge_sync(world, expected, &mut findings).await?;
    let target = checker::snapshot(&world.target.redis_client()?).await?;
    if !target.is_empty() {
        findings.push(format!(
            "refusal: the target holds {} keys after a refused start (nothing may be written)",
            target.len()
        ));
    }
    let ports = verify::Ports {
        source: world.source().port(),
        target: world.target.port(),
    };
    let verify_line = match verify::output(plan, &ports).await {
        Err(line) => {
            findings.push(format!("refusal: {line}"));
            line
        }
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = last_line(&stderr);
            let code = output.status.code();
            if code != Some(2) || !stderr.contains(expected.verify_says) {
                findings.push(format!(
                    "refusal: lockstep verify with the same flags gave exit {code:?} ({last}); expected exit 2 saying {:?}",
                    expected.verify_says
                ));
            }
            format!("exit {code:?}: {last}")
        }
    };
    let summary = format!(
        "refused at start as drawn ({}): sync {sync_line}; verify {verify_line}",
        expected.what
    );
    Ok((findings, summary))
}

/// Starts the sync and waits for its refusal; returns what it said.
async fn judge_sync(
    world: &mut World,
    expected: &Refusal,
    findings: &mut Vec<String>,
) -> anyhow::Result<String> {
    world.start_sync()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = world.sync_exit() {
            break Some(status);
        }
        if started.elapsed() > REFUSAL_BOUND {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = world.log_text();
    let last = last_line(&log).to_owned();
    match status {
        None => findings.push(format!(
            "refusal: lockstep sync still runs {REFUSAL_BOUND:?} after its start with {}; expected a refusal saying {:?}",
            expected.what, expected.sync_says
        )),
        Some(status) if status.success() || !log.contains(expected.sync_says) => {
            findings.push(format!(
                "refusal: lockstep sync exited ({status}: {last}); expected a refusal saying {:?}",
                expected.sync_says
            ));
        }
        Some(_) => {}
    }
    Ok(format!(
        "{}: {last}",
        status.map_or("running".to_owned(), |s| s.to_string())
    ))
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
}
