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

/// Seed 1's episode 3 (6.2 -> 7.0, `--dbs=0`, kill -9 of the sync 0.4 s in) held on
/// the branch without issue 14's fixes (db 0 only, which verify covers; no guard
/// left in the runs seen): the explorer's own machinery (servers, child process,
/// load, fault, quiesce, judges) end to end, in about 25 s.
#[test]
fn one_episode_runs_and_holds() {
    let out = explore(&["--seed", "1", "--start-episode", "3", "--episodes", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 of 1 episodes held"), "{stdout}");
    assert!(stdout.contains("verify: exit 0"), "{stdout}");
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

// Ignored until issue 14's sections 1 to 3 land (verify's databases beyond 15, the
// TTL guard after a RENAME during the copy, the frozen source link): on a branch
// without those fixes the explorer finds them, as docs/consistency.md ("The
// explorer") shows with the seeds that do. The integrator enables it after merging.
#[test]
#[ignore]
fn explorer_finds_nothing_in_150_seconds() {
    let seed = seed();
    println!("explorer seed {seed} (LOCKSTEP_EXPLORE_SEED={seed} replays this run)");
    let out = explore(&["--duration", "150", "--seed", &seed]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the explorer found something (seed {seed}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
