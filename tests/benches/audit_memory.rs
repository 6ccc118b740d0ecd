//! Issue 16, "the daemon's RSS flat over 100 audits": the `lockstep audit` daemon runs
//! one pair every second (`interval_secs = 1`, the shortest schedule) for
//! `$BENCH_AUDITS` (100) audits, and its VmRSS (`/proc/<pid>/status`) is sampled each
//! time it prints a recorded run's line (one line per run, after the history write).
//!
//! The pair: a 7.0 source with `$BENCH_KEYS` (10 000) keys of every type
//! (`common::fill_mixed`), a 7.0 target copied natively from it, then
//! `$BENCH_DIFFERING` (50) of the target's strings changed, so every run finds
//! differences and the history tracks their streaks (the path that holds the most per
//! run). `status_addr` is set and `/metrics` is read after every run, as a scraper
//! would; no keys/s limit that binds (`keys_per_second = 1000000000`).
//!
//! Printed: RSS after runs 1, 10, 50 and the last, the least-squares slope over runs
//! 10 to the last (KiB per run), VmHWM at the end; `$BENCH_RECORD=1` appends the table
//! to docs/benchmarks.md.
//!
//! `cargo bench -p lockstep-tests --bench audit_memory`

mod common;

use std::io::{BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use common::dbsize;
use lockstep_testkit::{RedisServer, RedisVersion, Run, ServerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keys = env_or("BENCH_KEYS", 10_000);
    let audits = env_or("BENCH_AUDITS", 100) as usize;
    let differing = env_or("BENCH_DIFFERING", 50);
    let bin = common::lockstep_binary()?;
    println!(
        "audit_memory: daemon, one pair of {keys} mixed keys ({differing} differing), every second, {audits} audits, lockstep {}",
        bin.display()
    );
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut src = common::patient(&source).await?;
    common::fill_mixed(&mut src, keys).await?;
    ensure!(dbsize(&mut src).await? == keys, "the source was not filled");
    common::copy_natively(&source, &target).await?;
    let mut dst = common::patient(&target).await?;
    for i in 0..differing {
        // Keys `k:<6n>` are the plain strings of the mixed set.
        dst.run_args::<()>(("SET", format!("k:{}", 6 * i), "changed"))
            .await?;
    }

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "history = \"history.db\"\nstatus_addr = \"127.0.0.1:0\"\n\n[[pair]]\nname = \"small\"\n\
             source = \"{}\"\ntarget = \"{}\"\ninterval_secs = 1\nmode = \"full\"\n\
             keys_per_second = 1000000000\n",
            source.url(),
            target.url()
        ),
    )?;
    // `$LOCKSTEP_WRAP` (e.g. `valgrind --tool=massif --massif-out-file=f`) goes first;
    // the pid sampled is then the wrapper's, which is the process itself for valgrind.
    let wrap = std::env::var("LOCKSTEP_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(first) => {
            let mut c = Command::new(first);
            c.args(words).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let mut child = command
        .arg("audit")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {} audit", bin.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("the daemon's stdout")?;
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let started = Instant::now();
    let mut status_addr: Option<String> = None;
    let mut rss_kib: Vec<u64> = Vec::new();
    while rss_kib.len() < audits {
        let line = lines
            .recv_timeout(Duration::from_secs(120))
            .context("the daemon printed nothing for 120 s (ended?)")?;
        if let Some(addr) = line.strip_prefix("lockstep audit: /status and /metrics on http://") {
            status_addr = Some(addr.trim().to_owned());
        }
        let Some(result) = line.strip_prefix("audit `small`: ") else {
            continue;
        };
        if result == "started" {
            continue;
        }
        ensure!(
            result.starts_with("INCONSISTENT"),
            "run {}: expected differences, got {result}",
            rss_kib.len() + 1
        );
        if let Some(addr) = &status_addr {
            scrape(addr).with_context(|| format!("GET /metrics from {addr}"))?;
        }
        let rss = status_kib(pid, "VmRSS")?;
        rss_kib.push(rss);
        let n = rss_kib.len();
        if n == 1 || n.is_multiple_of(10) {
            println!(
                "  run {n:>3} at {:>6.1} s: VmRSS {rss} KiB",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let hwm = status_kib(pid, "VmHWM")?;
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = child.wait()?;
    ensure!(
        status.success(),
        "the daemon exited with {status} after SIGINT"
    );

    let output = Command::new(&bin)
        .args(["audit", "history", "--format", "json", "--config"])
        .arg(&config)
        .output()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let recorded = json["runs"].as_array().map_or(0, Vec::len);
    ensure!(
        recorded >= audits,
        "the history holds {recorded} runs, not {audits}"
    );

    let at = |n: usize| rss_kib[n.min(rss_kib.len()) - 1] as f64 / 1024.0;
    let from = 10.min(rss_kib.len());
    let slope = slope_kib_per_run(&rss_kib[from - 1..]);
    let rows = vec![
        ("VmRSS after run 1", format!("{:.2} MiB", at(1))),
        ("VmRSS after run 10", format!("{:.2} MiB", at(10))),
        ("VmRSS after run 50", format!("{:.2} MiB", at(50))),
        (
            "VmRSS after the last run",
            format!("{:.2} MiB (run {})", at(audits), rss_kib.len()),
        ),
        (
            "slope, runs 10 to the last (least squares)",
            format!("{slope:.2} KiB per run"),
        ),
        (
            "VmHWM at the end",
            format!("{:.2} MiB", hwm as f64 / 1024.0),
        ),
        (
            "wall time",
            format!("{:.1} s", started.elapsed().as_secs_f64()),
        ),
    ];
    for (name, value) in &rows {
        println!("{name:<44} {value}");
    }
    common::record(
        &format!("Audit daemon memory: {audits} audits of {keys} mixed keys"),
        "RSS flat over 100 audits (issue 16)",
        &rows,
    )
}

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `Vm*` line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// GET /metrics, read to the end (the daemon closes the connection).
fn scrape(addr: &str) -> anyhow::Result<()> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    if !body.starts_with("HTTP/1.1 200") {
        bail!("not 200: {}", body.lines().next().unwrap_or(""));
    }
    Ok(())
}

/// Least-squares slope of `values` against their index.
fn slope_kib_per_run(values: &[u64]) -> f64 {
    let n = values.len() as f64;
    if values.len() < 2 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, &v) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (v as f64 - mean_y);
        den += dx * dx;
    }
    num / den
}
