//! The explorer through `lockstep chaos --explore`, as CI runs it: 150 seconds of
//! random episodes from a seed that rotates every day (`LOCKSTEP_EXPLORE_SEED`
//! overrides it; the seed is printed, and every failure prints a one-line replay).
//! A longer run is one command: `lockstep chaos --explore --seed N --duration 3600`.
//! Always on: the plans are a pure function of the seed (through the binary), and one
//! short episode runs end to end and holds.

use std::process::{Command, Output};

fn explore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["chaos", "--explore"])
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("lockstep runs")
}

#[test]
fn the_same_seed_prints_the_same_plans() {
    let plans = || explore(&["--plan-only", "--seed", "11", "--episodes", "4"]);
    let (first, again) = (plans(), plans());
    assert!(first.status.success());
    let text = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("episode ")).count(),
        4
    );
    assert_eq!(first.stdout, again.stdout);
    let other = explore(&["--plan-only", "--seed", "12", "--episodes", "4"]);
    assert_ne!(first.stdout, other.stdout);
}

/// Every kind of declarative rule: `--without-rules` with this gives the plans
/// drawn before the rules existed.
const NO_RULES: &str = "patterns,types,ttl,field-drops,renames,refusals";

/// Seed 1's episode 3 (6.2 -> 7.0, `--dbs=0`, kill -9 of the sync 0.4 s in; its
/// drawn rules taken out) held on the branch without issue 14's fixes (db 0 only,
/// which verify covers; no guard left in the runs seen): the explorer's own
/// machinery (servers, child process, load, fault, quiesce, judges) end to end, in
/// about 25 s.
#[test]
fn one_episode_runs_and_holds() {
    let out = explore(&[
        "--seed",
        "1",
        "--start-episode",
        "3",
        "--episodes",
        "1",
        "--without-rules",
        NO_RULES,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 of 1 episodes held"), "{stdout}");
    assert!(stdout.contains("verify: exit 0"), "{stdout}");
}

/// Seed 3's episode 10 (7.0 -> 7.0) draws a regex rename that drops a group: the
/// sync must refuse to start saying so, write nothing, and verify must refuse the
/// same flags; that refusal is the episode holding, in a few seconds.
#[test]
fn a_refused_start_drawn_as_such_holds() {
    let out = explore(&["--seed", "3", "--start-episode", "10", "--episodes", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("the sync must refuse a regex rename that drops a group"));
    assert!(stdout.contains("refused at start as drawn"), "{stdout}");
    assert!(stdout.contains("1 of 1 episodes held"), "{stdout}");
}

/// Today's seed: the day number since 1970, unless `LOCKSTEP_EXPLORE_SEED` says.
fn seed() -> String {
    std::env::var("LOCKSTEP_EXPLORE_SEED").unwrap_or_else(|_| {
        let days = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 86_400);
        days.to_string()
    })
}

/// CI's explorer run: 150 s from today's seed. Sources are 7.0 and 8.2 only while one
/// finding stays open: a 6.2 source carries relative expiries (EXPIRE, SET EX ...) in
/// its stream, which the target applies as received, so after the stream was
/// delayed by D a key's target expiry is up to D later than the source's (never
/// earlier; the source's DEL at expiry still removes it). Replay with every version:
/// `lockstep chaos --explore --seed 2 --start-episode 0 --episodes 1`
/// (docs/consistency.md, "The explorer"). Rules of every kind are drawn (the hash
/// field drops' RENAME finding, seed 101 episode 12, is fixed: the move is applied as
/// DEL / COPY / DEL).
#[test]
fn explorer_finds_nothing_in_150_seconds() {
    let seed = seed();
    println!("explorer seed {seed} (LOCKSTEP_EXPLORE_SEED={seed} replays this run)");
    let out = explore(&[
        "--duration",
        "150",
        "--seed",
        &seed,
        "--source-versions",
        "7.0,8.2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the explorer found something (seed {seed}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
