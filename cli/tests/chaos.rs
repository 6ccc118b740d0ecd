//! The chaos catalog through `lockstep chaos`, as a user's CI runs it: every scenario
//! on 7.0 -> 7.0, and a cheap cross-version subset (6.2 <-> 8.2), with a fixed seed
//! (`LOCKSTEP_CHAOS_SEED` overrides it; the command prints the replay line of a
//! failure). The long variant, every scenario on every version pair with several
//! seeds, runs on request:
//! `cargo test -p lockstep --test chaos -- --ignored` (`LOCKSTEP_CHAOS_SEEDS=1,2,3`).

use std::process::{Command, Output};

/// Scenarios left out of this test because of a known, not yet explained failure
/// (they stay in the catalog, and `lockstep chaos` reports them). None now: the
/// `source-failover` flake was the testkit's replica set calling a replica in sync
/// before the primary streamed to it (see docs/consistency.md).
const KNOWN_BUGS: &[&str] = &[];

fn lockstep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .arg("chaos")
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("lockstep runs")
}

fn seed() -> String {
    std::env::var("LOCKSTEP_CHAOS_SEED").unwrap_or_else(|_| "1".to_owned())
}

/// Every scenario's name, from `lockstep chaos --list`.
fn scenario_names() -> Vec<String> {
    let out = lockstep(&["--list"]);
    assert!(out.status.success(), "--list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with(' '))
        .map(str::to_owned)
        .collect()
}

/// Runs the chosen scenarios on `pairs` and fails with the whole table unless all held.
fn assert_catalog_holds(scenarios: &[String], pairs: &str, seed: &str) {
    let mut args = vec!["--pairs", pairs, "--seed", seed, "--parallel", "2"];
    for name in scenarios {
        args.push("--scenario");
        args.push(name);
    }
    args.extend(["--budget-secs", "600"]);
    let out = lockstep(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lockstep chaos {args:?} failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{} of {} held",
            scenarios.len() * pairs.split(',').count(),
            scenarios.len() * pairs.split(',').count()
        )),
        "{stdout}"
    );
}

#[test]
fn the_catalog_lists_each_scenario_with_the_documented_sentence() {
    let out = lockstep(&["--list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let names = scenario_names();
    assert!(names.len() >= 20, "{text}");
    assert_eq!(
        text.matches("documented: \"").count(),
        names.len(),
        "every scenario quotes the DTS documentation: {text}"
    );
    let unknown = lockstep(&["--scenario", "no-such-scenario"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--list"));
}

#[test]
fn every_scenario_holds_from_7_0_to_7_0() {
    let scenarios: Vec<String> = scenario_names()
        .into_iter()
        .filter(|name| !KNOWN_BUGS.contains(&name.as_str()))
        .collect();
    assert_catalog_holds(&scenarios, "7.0:7.0", &seed());
}

#[test]
fn a_cheap_subset_holds_across_versions() {
    let scenarios: Vec<String> = [
        "flushdb-during-incremental",
        "ttls-expire-during-incremental",
        "kill-sync-during-incremental",
        "network-cut-within-backlog",
        "list-into-non-empty-target",
    ]
    .map(str::to_owned)
    .to_vec();
    assert_catalog_holds(&scenarios, "6.2:8.2,8.2:6.2", &seed());
}

/// The same subset between Valkey 8.1 and Redis 7.0 and 8.2, both ways.
#[test]
fn a_cheap_subset_holds_between_valkey_and_redis() {
    let scenarios: Vec<String> = [
        "flushdb-during-incremental",
        "ttls-expire-during-incremental",
        "kill-sync-during-incremental",
        "network-cut-within-backlog",
        "list-into-non-empty-target",
    ]
    .map(str::to_owned)
    .to_vec();
    let pairs = "valkey-8.1:8.2,8.2:valkey-8.1,7.0:valkey-8.1,valkey-8.1:7.0";
    assert_catalog_holds(&scenarios, pairs, &seed());
}

#[test]
#[ignore = "soak: every scenario on every version pair and several seeds (minutes)"]
fn soak_every_scenario_on_every_pair() {
    let scenarios: Vec<String> = scenario_names()
        .into_iter()
        .filter(|name| !KNOWN_BUGS.contains(&name.as_str()))
        .collect();
    let pairs = "6.2:6.2,6.2:7.0,6.2:8.2,7.0:6.2,7.0:7.0,7.0:8.2,8.2:6.2,8.2:7.0,8.2:8.2,\
                 valkey-8.1:valkey-8.1,valkey-8.1:7.0,valkey-8.1:8.2,7.0:valkey-8.1,8.2:valkey-8.1";
    let seeds = std::env::var("LOCKSTEP_CHAOS_SEEDS").unwrap_or_else(|_| "1,2,3".to_owned());
    for seed in seeds.split(',') {
        assert_catalog_holds(&scenarios, pairs, seed.trim());
    }
}
