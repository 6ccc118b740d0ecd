//! Issue 16, "an audit adds nothing to verify's cost: the same keys/s as `lockstep
//! verify` on the same data, measured in one run": `lockstep verify` and `lockstep
//! audit --once` compare the same pair of real 7.0 servers, in the same run, taking
//! turns within each round, so the load of the shared machine falls on all alike.
//!
//! The pair: a 7.0 source filled with `$BENCH_KEYS` (500 000) keys of every type
//! (`common::fill_mixed`: strings, hashes, lists, sets, zsets, streams; one in ten with
//! a TTL), and a 7.0 target made an exact copy by a native replica (REPLICAOF, then
//! REPLICAOF NO ONE), so every comparison is consistent and reads every key.
//!
//! Per round, three full comparisons of every key, both directions, `$BENCH_WORKERS`
//! (4) workers, in an order that rotates by round:
//! - `verify`: `lockstep verify --mode full` without a keys/s limit (its default);
//! - `verify limited`: the same with `--keys-per-second $BENCH_KEYS_PER_SECOND`;
//! - `audit`: `lockstep audit --config F --once` of one pair with `mode = "full"`, the
//!   same `workers` and `keys_per_second = $BENCH_KEYS_PER_SECOND` (an audit always has
//!   a limit, 5000 by default; 1 000 000 000 here: none that binds).
//!
//! Each is timed from spawn to exit 0 under `/usr/bin/time` (peak RSS, CPU). keys/s is
//! the keys compared (verify's `--summary` JSON, the audit's history JSON) over the
//! wall time, and also over the comparison's own time (verify's `elapsed_ms`; the
//! audit's `ended_ms - started_ms`, which includes its two connections). The result is
//! the ratio audit / verify per round, median and range.
//!
//! `cargo bench -p lockstep-tests --bench audit_rate`; `$BENCH_RUNS` rounds (5);
//! `$BENCH_RECORD=1` appends the table to docs/benchmarks.md.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context};
use common::{dbsize, spread, Lockstep};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Verify,
    VerifyLimited,
    Audit,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Verify => "verify",
            Kind::VerifyLimited => "verify limited",
            Kind::Audit => "audit --once",
        }
    }
}

/// One comparison's numbers.
struct Measured {
    wall_s: f64,
    /// The comparison's own time (see the header).
    inner_s: f64,
    keys: u64,
    cpu_s: f64,
    rss_mib: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.keys as f64 / self.wall_s
    }
    fn inner_rate(&self) -> f64 {
        self.keys as f64 / self.inner_s
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keys = env_or("BENCH_KEYS", 500_000);
    let runs = env_or("BENCH_RUNS", 5) as usize;
    let workers = env_or("BENCH_WORKERS", 4);
    let limit = env_or("BENCH_KEYS_PER_SECOND", 1_000_000_000);
    let bin = common::lockstep_binary()?;
    println!(
        "audit_rate: {keys} mixed keys, 7.0 -> 7.0, {workers} workers, limit {limit} keys/s, lockstep {}",
        bin.display()
    );
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut src = common::patient(&source).await?;
    common::fill_mixed(&mut src, keys).await?;
    ensure!(dbsize(&mut src).await? == keys, "the source was not filled");
    common::copy_natively(&source, &target).await?;

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "history = \"history.db\"\n\n[[pair]]\nname = \"bench\"\nsource = \"{}\"\ntarget = \"{}\"\n\
             interval_secs = 3600\nmode = \"full\"\nworkers = {workers}\nkeys_per_second = {limit}\n",
            source.url(),
            target.url()
        ),
    )?;

    let kinds = [Kind::Verify, Kind::VerifyLimited, Kind::Audit];
    let mut measured: Vec<Vec<Measured>> = vec![vec![], vec![], vec![]];
    for round in 0..runs {
        for step in 0..kinds.len() {
            let i = (round + step) % kinds.len();
            let kind = kinds[i];
            let m = match kind {
                Kind::Audit => audit(&bin, &config).await?,
                _ => {
                    verify(
                        &bin,
                        &source,
                        &target,
                        workers,
                        (kind == Kind::VerifyLimited).then_some(limit),
                        dir.path(),
                    )
                    .await?
                }
            };
            ensure!(
                m.keys == keys as u64,
                "{} compared {} keys, not {keys}",
                kind.name(),
                m.keys
            );
            println!(
                "  round {round} {:<15} {:.3} s wall, {:.3} s comparing: {:.0} keys/s ({:.0} comparing), CPU {:.2} s, peak RSS {:.1} MiB",
                kind.name(),
                m.wall_s,
                m.inner_s,
                m.rate(),
                m.inner_rate(),
                m.cpu_s,
                m.rss_mib
            );
            measured[i].push(m);
        }
    }
    let [v, vl, a] = &measured[..] else {
        unreachable!("three kinds")
    };
    let col = |m: &[Measured], f: fn(&Measured) -> f64| m.iter().map(f).collect::<Vec<_>>();
    let ratio = |x: &[Measured], y: &[Measured], f: fn(&Measured) -> f64| {
        let r: Vec<f64> = x.iter().zip(y).map(|(x, y)| f(x) / f(y)).collect();
        spread(&r, "x")
    };
    let rows = vec![
        ("verify keys/s (wall)", spread(&col(v, Measured::rate), "")),
        (
            "verify limited keys/s (wall)",
            spread(&col(vl, Measured::rate), ""),
        ),
        ("audit keys/s (wall)", spread(&col(a, Measured::rate), "")),
        (
            "audit / verify limited, keys/s (wall)",
            ratio(a, vl, Measured::rate),
        ),
        ("audit / verify, keys/s (wall)", ratio(a, v, Measured::rate)),
        (
            "audit / verify limited, keys/s (comparing)",
            ratio(a, vl, Measured::inner_rate),
        ),
        (
            "audit / verify, keys/s (comparing)",
            ratio(a, v, Measured::inner_rate),
        ),
        ("verify CPU", spread(&col(v, |m| m.cpu_s), " s")),
        ("audit CPU", spread(&col(a, |m| m.cpu_s), " s")),
        ("verify peak RSS", spread(&col(v, |m| m.rss_mib), " MiB")),
        ("audit peak RSS", spread(&col(a, |m| m.rss_mib), " MiB")),
    ];
    for (name, value) in &rows {
        println!("{name:<44} {value}");
    }
    common::record(
        &format!("Audit against verify: {keys} mixed keys, full mode"),
        "audit keys/s = verify keys/s (issue 16)",
        &rows,
    )
}

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn verify(
    bin: &Path,
    source: &RedisServer,
    target: &RedisServer,
    workers: i64,
    limit: Option<i64>,
    dir: &Path,
) -> anyhow::Result<Measured> {
    let summary = dir.join("summary.json");
    let _ = std::fs::remove_file(&summary);
    let mut args: Vec<String> = [
        "verify",
        "--source",
        &source.url(),
        "--target",
        &target.url(),
        "--mode",
        "full",
        "--workers",
        &workers.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(limit) = limit {
        args.extend(["--keys-per-second".into(), limit.to_string()]);
    }
    args.extend(["--summary".into(), summary.to_string_lossy().into_owned()]);
    let done = Lockstep::start(bin, &args)?
        .wait(Duration::from_secs(600))
        .await?;
    ensure!(
        done.status.success(),
        "lockstep verify: {} (not consistent?)",
        done.status
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&summary).context("reading verify's summary")?,
    )?;
    let field = |name: &str| {
        json[name]
            .as_u64()
            .with_context(|| format!("verify's summary has no {name}"))
    };
    Ok(Measured {
        wall_s: done.wall.as_secs_f64(),
        inner_s: field("elapsed_ms")? as f64 / 1000.0,
        keys: field("keys_compared")?,
        cpu_s: done.cpu_s,
        rss_mib: done.max_rss_kib as f64 / 1024.0,
    })
}

async fn audit(bin: &Path, config: &Path) -> anyhow::Result<Measured> {
    let config_arg = config.to_string_lossy().into_owned();
    let done = Lockstep::start(bin, &["audit", "--config", &config_arg, "--once"])?
        .wait(Duration::from_secs(600))
        .await?;
    ensure!(
        done.status.success(),
        "lockstep audit --once: {} (not consistent?)",
        done.status
    );
    let output = std::process::Command::new(bin)
        .args([
            "audit",
            "history",
            "--config",
            &config_arg,
            "--format",
            "json",
        ])
        .output()
        .context("running lockstep audit history")?;
    ensure!(
        output.status.success(),
        "lockstep audit history: {}",
        output.status
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let last = json["runs"]
        .as_array()
        .and_then(|runs| runs.last())
        .context("the history holds no run")?;
    let field = |name: &str| {
        last[name]
            .as_i64()
            .with_context(|| format!("the history's run has no {name}"))
    };
    ensure!(
        last["verdict"] == "consistent",
        "the audit's verdict: {}",
        last["verdict"]
    );
    Ok(Measured {
        wall_s: done.wall.as_secs_f64(),
        inner_s: (field("ended_ms")? - field("started_ms")?) as f64 / 1000.0,
        keys: field("keys_compared")? as u64,
        cpu_s: done.cpu_s,
        rss_mib: done.max_rss_kib as f64 / 1024.0,
    })
}
