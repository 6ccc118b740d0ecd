//! The explorer through `lockstep chaos --explore`, as CI runs it: 150 seconds of
//! random episodes from a seed that rotates every day (`LOCKSTEP_EXPLORE_SEED`
//! overrides it; the seed is printed, and every failure prints a one-line replay).
//! A longer run is one command: `lockstep chaos --explore --seed N --duration 3600`.

use std::process::Command;

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
    let out = Command::new(env!("CARGO_BIN_EXE_lockstep"))
        .args(["chaos", "--explore", "--duration", "150", "--seed", &seed])
        .env("RUST_LOG", "error")
        .output()
        .expect("lockstep runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the explorer found something (seed {seed}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
