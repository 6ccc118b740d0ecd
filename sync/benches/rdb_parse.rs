//! Benchmark: parse a 2-million-key RDB end to end, side by side with
//! `redis-check-rdb` on the same file, and CRC64 throughput. Not a timed test:
//! it prints numbers for docs/benchmarks.md.
//!
//! Run: `CARGO_TARGET_DIR=target/h-rdb cargo bench -p lockstep-sync --bench rdb_parse`
//! Input: `$RDB_BENCH_FILE`, else a cached file generated once with the
//! testkit's Redis 7.0 (`DEBUG POPULATE 2000000 key 100`, `SAVE`).
//! Each parser run is a child process under `/usr/bin/time -f "%e %M"`, so
//! wall time and peak RSS are measured the same way for both programs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use lockstep_sync::rdb::{crc64::crc64, Event, ParseOptions, RdbParser};

const CHILD_ENV: &str = "LOCKSTEP_RDB_BENCH_CHILD";
const RUNS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        return child_parse(Path::new(&path));
    }
    let file = match std::env::var("RDB_BENCH_FILE") {
        Ok(f) => PathBuf::from(f),
        Err(_) => generate()?,
    };
    let size = std::fs::metadata(&file)?.len();
    println!("file: {} ({} bytes)", file.display(), size);

    let bytes = std::fs::read(&file)?;
    let body = &bytes[..bytes.len().saturating_sub(8)];
    let mut crc_s = f64::INFINITY;
    let mut c = 0;
    for _ in 0..5 {
        let t = Instant::now();
        c = crc64(body);
        crc_s = crc_s.min(t.elapsed().as_secs_f64());
    }
    println!(
        "crc64 (rdb::crc64, PCLMULQDQ folding, best of 5): {:.3} s for {} MB = {:.0} MB/s (crc {c:016x})",
        crc_s,
        size / 1_000_000,
        size as f64 / 1e6 / crc_s
    );
    drop(bytes);

    let exe = std::env::current_exe()?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..RUNS {
        let (t_ours, rss_ours, out) = timed(
            Command::new("/usr/bin/time")
                .arg("-f")
                .arg("%e %M")
                .arg(&exe)
                .env(CHILD_ENV, &file),
        )?;
        let (t_check, rss_check, _) = timed(
            Command::new("/usr/bin/time")
                .arg("-f")
                .arg("%e %M")
                .arg("/usr/bin/redis-check-rdb")
                .arg(&file),
        )?;
        println!("run {run}: lockstep {t_ours:.2} s {rss_ours} KB ({}) | redis-check-rdb {t_check:.2} s {rss_check} KB", out.trim());
        ours.push((t_ours, rss_ours));
        theirs.push((t_check, rss_check));
    }
    let best = |v: &[(f64, u64)]| v.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    let rss = |v: &[(f64, u64)]| v.iter().map(|x| x.1).max().unwrap_or(0);
    let (o, t) = (best(&ours), best(&theirs));
    println!(
        "best of {RUNS}: lockstep {o:.2} s (peak RSS {} KB), redis-check-rdb {t:.2} s (peak RSS {} KB): {:.1}x faster",
        rss(&ours),
        rss(&theirs),
        t / o
    );
    Ok(())
}

/// Runs a command under /usr/bin/time -f "%e %M"; (seconds, max RSS KB, stdout).
fn timed(cmd: &mut Command) -> Result<(f64, u64, String), Box<dyn std::error::Error>> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let mut it = last.split_whitespace();
    let secs: f64 = it.next().unwrap_or("0").parse()?;
    let rss: u64 = it.next().unwrap_or("0").parse()?;
    Ok((secs, rss, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The measured work: parse every event, verify the CRC, touch every byte.
fn child_parse(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let f = std::fs::File::open(path)?;
    let mut p = RdbParser::new(f, ParseOptions::default());
    let (mut keys, mut elements, mut bytes) = (0u64, 0u64, 0u64);
    while let Some(ev) = p.next_event()? {
        match ev {
            Event::KeyStart(m) => {
                keys += 1;
                bytes += m.key.len() as u64;
            }
            Event::Elements(b) => {
                elements += b.len() as u64;
                match &b {
                    lockstep_sync::rdb::Elements::String(s)
                    | lockstep_sync::rdb::Elements::StringPiece { bytes: s, .. } => {
                        bytes += s.len() as u64
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    println!("{keys} keys, {elements} elements, {bytes} key+string bytes");
    Ok(())
}

/// Generates (once) the 2M-key file with a real Redis 7.0 from the testkit.
fn generate() -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/rdb-bench");
    let path = dir.join("populate-2m-7.0.rdb");
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
        let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let mut c = server
            .redis_client()?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let _: () = redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(2_000_000)
            .arg("key")
            .arg(100)
            .query_async(&mut c)
            .await?;
        let _: () = redis::cmd("SAVE").query_async(&mut c).await?;
        std::fs::copy(server.rdb_path(), &path)?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    Ok(path)
}
