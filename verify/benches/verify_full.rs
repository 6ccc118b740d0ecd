//! Full verify of DEBUG POPULATE keys on two local Redis 7.0 servers, side by side
//! with baselines measured on the same servers in the same run: a plain SCAN walk of
//! the source (what `redis-cli --scan | wc -l` does) and `redis-benchmark` GET.
//!
//! `cargo bench -p lockstep-verify --bench verify_full` (LOCKSTEP_BENCH_KEYS to change
//! the 2 000 000 keys, LOCKSTEP_BENCH_WORKERS the worker count). Prints one line per
//! measurement; numbers go to docs/benchmarks.md.

use std::time::Instant;

use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, CompareOptions};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of this process (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keys = env_or("LOCKSTEP_BENCH_KEYS", 2_000_000);
    let workers = env_or("LOCKSTEP_BENCH_WORKERS", 4) as usize;
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    for server in [&source, &target] {
        // DEBUG POPULATE of 2M keys takes longer than the default response timeout.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut conn = server
            .redis_client()?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(keys)
            .query_async::<()>(&mut conn)
            .await?;
    }
    println!(
        "verify_full: {keys} keys (DEBUG POPULATE) on two Redis 7.0 servers, {workers} workers"
    );

    // Baseline 1: SCAN of the source alone, COUNT 1000 (as `redis-cli --scan`).
    let started = Instant::now();
    let mut conn = source.client().await?;
    let (mut cursor, mut seen) = (0u64, 0u64);
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        seen += batch.len() as u64;
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let scan = started.elapsed();
    println!(
        "baseline scan-only: {seen} keys in {scan:.2?} = {:.0} keys/s",
        seen as f64 / scan.as_secs_f64()
    );

    // Baseline 2: redis-benchmark GET, pipelined 16, on the source.
    let bench = std::process::Command::new("redis-benchmark")
        .args([
            "-p",
            &source.port().to_string(),
            "-t",
            "get",
            "-n",
            "1000000",
        ])
        .args(["-P", "16", "-r", &keys.to_string(), "-q"])
        .output();
    match bench {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.rsplit('\r').next().unwrap_or("").trim();
            println!("baseline redis-benchmark -P 16 GET: {line}");
        }
        Err(err) => println!("baseline redis-benchmark: not run ({err})"),
    }

    let rss_before = peak_rss_mb();
    let options = CompareOptions {
        dbs: vec![0],
        workers,
        ..CompareOptions::default()
    };
    let started = Instant::now();
    let report = compare(&source.redis_client()?, &target.redis_client()?, &options).await?;
    let elapsed = started.elapsed();
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.keys_compared, keys);
    println!(
        "verify full: {} keys in {elapsed:.2?} = {:.0} keys/s end to end ({} equal by DUMP); peak RSS {:.1} MB (before verify {:.1} MB)",
        report.keys_compared,
        report.keys_compared as f64 / elapsed.as_secs_f64(),
        report.dump_equal,
        peak_rss_mb(),
        rss_before
    );
    Ok(())
}
