//! Runs `lockstep verify` (this binary, as a user would) at the end of an episode
//! with the episode's options (the same flags as the sync's: databases and their
//! mapping, prefixes, TTL extension and the declarative rules), and holds its
//! verdict against the checker's: a CONSISTENT over fewer keys than the source
//! holds, or a verdict the checker does not share, is a finding. Where the checker
//! only bounds a value (a capped or set expiry), verify's exact judgment of the same
//! rule is the check.
//!
//! It must never soften verify's verdict: an exit code it does not expect is a finding.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use super::checker::Snapshot;
use super::schedule::EpisodePlan;
use super::shared::CLOCK_FAMILY;

/// What verify said and what disagreed.
pub struct VerifyOutcome {
    pub line: String,
    pub findings: Vec<String>,
}

fn url(port: u16, password: Option<&str>) -> String {
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    format!("redis://{auth}127.0.0.1:{port}")
}

/// `N keys compared, ...` -> N.
fn keys_compared(stdout: &str) -> Option<usize> {
    stdout
        .lines()
        .find_map(|line| line.split_once(" keys compared")?.0.trim().parse().ok())
}

/// The servers verify compares, by port (not the proxies).
pub struct Ports {
    pub source: u16,
    pub target: u16,
}

/// Runs verify between the servers at `ports`; `expected` is the checker's prediction
/// of the target, `checker_equal` its verdict.
pub async fn run(
    plan: &EpisodePlan,
    ports: Ports,
    expected: &Snapshot,
    checker_equal: bool,
) -> VerifyOutcome {
    let output = match output(plan, &ports).await {
        Ok(output) => output,
        Err(line) => return failed(line),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let verdict_line = stdout.lines().last().unwrap_or_default().to_owned();
    let compared = keys_compared(&stdout);
    let line = format!(
        "exit {}, {} ({} keys compared)",
        output
            .status
            .code()
            .map_or("none".to_owned(), |c| c.to_string()),
        verdict_line,
        compared.map_or("?".to_owned(), |n| n.to_string())
    );
    let mut findings = Vec::new();
    let code = output.status.code();
    // A verdict over fewer keys than the source holds did not look at all of them,
    // whatever it says.
    if matches!(code, Some(0 | 1)) && compared.is_some_and(|n| n < expected.len()) {
        findings.push(format!(
            "verify-coverage: verify compared {} keys ({verdict_line}); the source holds {} synchronized keys, by database {}",
            compared.unwrap_or_default(),
            expected.len(),
            keys_per_db(expected)
        ));
    }
    match code {
        Some(0) if !checker_equal => findings.push(format!(
            "verify: says CONSISTENT ({line}) while the checker finds the target different"
        )),
        Some(0) => {}
        Some(1) if checker_equal => findings.push(format!(
            "verify: reports differences ({line}) the checker does not see"
        )),
        Some(1) => {}
        _ => findings.push(format!(
            "verify: failed ({line}): {}",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )),
    }
    VerifyOutcome { line, findings }
}

/// Runs `lockstep verify` with the episode's flags between the servers at `ports`.
pub async fn output(plan: &EpisodePlan, ports: &Ports) -> Result<Output, String> {
    let exe = std::env::current_exe().map_err(|err| format!("cannot find this binary: {err}"))?;
    let mut command = Command::new(exe);
    command
        .arg("verify")
        .args(plan.options.flags())
        .arg(format!("--exclude-prefix={CLOCK_FAMILY}"))
        .env_remove("LOCKSTEP_SOURCE_PASSWORD")
        .env_remove("LOCKSTEP_TARGET_PASSWORD")
        .env(
            "LOCKSTEP_SOURCE",
            url(ports.source, plan.source_password.as_deref()),
        )
        .env("LOCKSTEP_TARGET", url(ports.target, None));
    match tokio::task::spawn_blocking(move || command.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(err)) => Err(format!("cannot run lockstep verify: {err}")),
        Err(err) => Err(format!("lockstep verify's runner: {err}")),
    }
}

fn failed(line: String) -> VerifyOutcome {
    VerifyOutcome {
        findings: vec![format!("verify: {line}")],
        line,
    }
}

/// `{db 0: 120, db 20: 35}`.
fn keys_per_db(snapshot: &Snapshot) -> String {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for (db, _) in snapshot.keys() {
        *counts.entry(*db).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(db, n)| format!("db {db}: {n}"))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_count_is_read_from_the_report_line() {
        let out = "812 keys compared, 0 differences (1.2s ...)\nCONSISTENT: the target equals the source\n";
        assert_eq!(super::keys_compared(out), Some(812));
    }
}
