//! What the sync benchmarks share: the `lockstep` binary under test, run as a
//! subprocess under `/usr/bin/time` so that its peak RSS is the kernel's own count,
//! plus small statistics and INFO helpers.
//!
//! The binary is `$LOCKSTEP_BIN` when set, else `<target dir>/release/lockstep`, built
//! first with `cargo build --release -p lockstep` (the target dir is
//! `$CARGO_TARGET_DIR`, or `target/` at the workspace root).
//!
//! A benchmark measures, it does not judge equality by the sync's own word: the
//! sample check reads both servers, and these helpers must never run the unoptimised
//! binary (the release build is made first, or `$LOCKSTEP_BIN` names the binary).

#![allow(dead_code)] // each bench uses its own part

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use lockstep_testkit::info::Info;
use lockstep_testkit::version::workspace_root;
use lockstep_testkit::{RedisServer, Run};
use redis::aio::MultiplexedConnection;

/// The release `lockstep` binary to measure.
pub fn lockstep_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("LOCKSTEP_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "lockstep"])
        .current_dir(&root)
        .status()
        .context("running cargo build --release -p lockstep")?;
    if !status.success() {
        bail!("cargo build --release -p lockstep failed: {status}");
    }
    Ok(target_dir.join("release/lockstep"))
}

/// A `lockstep` process started under `/usr/bin/time -f %M`.
pub struct Lockstep {
    child: Child,
    started: Instant,
    time_file: tempfile::NamedTempFile,
}

/// How a `lockstep` process ended.
pub struct Finished {
    pub status: ExitStatus,
    pub wall: Duration,
    /// Peak resident set size (VmHWM / ru_maxrss) in KiB.
    pub max_rss_kib: u64,
    /// CPU seconds in user and kernel mode.
    pub cpu_s: f64,
}

impl Lockstep {
    /// `lockstep sync --source .. --target .. --checkpoint-dir .. --mode ..`.
    pub fn sync(
        bin: &Path,
        source: &RedisServer,
        target: &RedisServer,
        checkpoint_dir: &Path,
        mode: &str,
    ) -> anyhow::Result<Lockstep> {
        Lockstep::sync_urls(bin, &source.url(), &target.url(), checkpoint_dir, mode)
    }

    /// [`Lockstep::sync`] between any two URLs (a cluster is named by any node).
    pub fn sync_urls(
        bin: &Path,
        source: &str,
        target: &str,
        checkpoint_dir: &Path,
        mode: &str,
    ) -> anyhow::Result<Lockstep> {
        let mut args: Vec<std::ffi::OsString> = ["sync", "--source", source, "--target", target]
            .iter()
            .map(Into::into)
            .collect();
        args.push("--checkpoint-dir".into());
        args.push(checkpoint_dir.into());
        args.extend(["--mode".into(), mode.into()]);
        // `$BENCH_SOURCE_MODE` (e.g. `scan`) reads the source so instead of as a replica.
        if let Ok(source_mode) = std::env::var("BENCH_SOURCE_MODE") {
            args.extend(["--source-mode".into(), source_mode.into()]);
        }
        Lockstep::start(bin, &args)
    }

    /// `lockstep ARGS...` under `/usr/bin/time` (stdout discarded, stderr shown).
    pub fn start(bin: &Path, args: &[impl AsRef<std::ffi::OsStr>]) -> anyhow::Result<Lockstep> {
        let time_file = tempfile::NamedTempFile::new()?;
        let started = Instant::now();
        // `$LOCKSTEP_WRAP` (e.g. `perf record -g -o f --`) goes between time and lockstep.
        let wrap = std::env::var("LOCKSTEP_WRAP").unwrap_or_default();
        let child = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(time_file.path())
            .args(wrap.split_whitespace())
            .arg(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} under /usr/bin/time", bin.display()))?;
        Ok(Lockstep {
            child,
            started,
            time_file,
        })
    }

    /// The pid of `lockstep` itself (the child of `/usr/bin/time`), for `perf -p`.
    pub fn lockstep_pid(&self) -> Option<u32> {
        let children = format!("/proc/{0}/task/{0}/children", self.child.id());
        std::fs::read_to_string(children)
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit (polling, so the caller's runtime keeps running).
    pub async fn wait(mut self, timeout: Duration) -> anyhow::Result<Finished> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("lockstep did not finish within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let wall = self.started.elapsed();
        let (max_rss_kib, cpu_s) = self.usage()?;
        Ok(Finished {
            status,
            wall,
            max_rss_kib,
            cpu_s,
        })
    }

    /// Stops it the way an operator does (SIGINT: drain, checkpoint, exit 0).
    pub async fn interrupt(self, timeout: Duration) -> anyhow::Result<Finished> {
        if let Some(pid) = self.lockstep_pid() {
            // SAFETY: plain kill(2) on a pid of our own child's child.
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
        }
        self.wait(timeout).await
    }

    /// (peak RSS KiB, user + system CPU seconds) from `/usr/bin/time`'s last line.
    fn usage(&self) -> anyhow::Result<(u64, f64)> {
        let text = std::fs::read_to_string(self.time_file.path())?;
        let parse = |line: &str| -> Option<(u64, f64)> {
            let mut words = line.split_whitespace();
            let rss = words.next()?.parse().ok()?;
            let user: f64 = words.next()?.parse().ok()?;
            let sys: f64 = words.next()?.parse().ok()?;
            Some((rss, user + sys))
        };
        text.lines()
            .filter_map(parse)
            .next_back()
            .with_context(|| format!("no usage in /usr/bin/time's output: {text:?}"))
    }
}

impl Drop for Lockstep {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Some(pid) = self.lockstep_pid() {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `INFO section` over an existing connection (no new connection per sample).
pub async fn info(conn: &mut MultiplexedConnection, section: &str) -> anyhow::Result<Info> {
    let text: String = conn.run_args(("INFO", section)).await?;
    Ok(Info::parse(&text))
}

/// DBSIZE of the selected database, less lockstep's own checkpoint key
/// (`LOCKSTEP_CHECKPOINT`, which lockstep keeps in db 0 of its target).
pub async fn dbsize(conn: &mut MultiplexedConnection) -> anyhow::Result<i64> {
    let (size, own): (i64, i64) = redis::pipe()
        .cmd("DBSIZE")
        .cmd("EXISTS")
        .arg("LOCKSTEP_CHECKPOINT")
        .query_async(conn)
        .await?;
    Ok(size - own)
}

/// Compares `samples` random keys of the source with the target (GET, so strings).
pub async fn sample_strings_equal(
    source: &mut MultiplexedConnection,
    target: &mut MultiplexedConnection,
    samples: usize,
) -> anyhow::Result<()> {
    for _ in 0..samples {
        let key: Vec<u8> = source.run("RANDOMKEY").await?;
        let a: Option<Vec<u8>> = source.run_args(("GET", &key)).await?;
        let b: Option<Vec<u8>> = target.run_args(("GET", &key)).await?;
        if a != b {
            bail!(
                "key {:?} differs: source {:?} bytes, target {:?} bytes",
                String::from_utf8_lossy(&key),
                a.map(|v| v.len()),
                b.map(|v| v.len())
            );
        }
    }
    Ok(())
}

/// The `q`-quantile (0..=1) of sorted `values`, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// "median m (min a, max b)" of repeated runs.
pub fn spread(values: &[f64], unit: &str) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    format!(
        "median {:.3}{unit} (min {:.3}, max {:.3}, n={})",
        quantile(&v, 0.5),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    )
}

/// Runs per measurement: `$BENCH_RUNS`, default 3.
pub fn runs() -> usize {
    std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// `name=value` out of an INFO value like `ip=..,port=..,state=online,offset=12,lag=0`.
pub fn subfield(value: &str, name: &str) -> Option<i64> {
    value
        .split(',')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Calls of the given commands from `INFO commandstats`.
pub fn calls(commandstats: &Info, commands: &[&str]) -> i64 {
    commands
        .iter()
        .filter_map(|c| commandstats.get(&format!("cmdstat_{c}")))
        .filter_map(|v| subfield(v, "calls"))
        .sum()
}

/// A connection without redis-rs's response timeout (DEBUG POPULATE of millions of
/// keys, big pipelines and INFO under load take longer than its default).
pub async fn patient(server: &RedisServer) -> anyhow::Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(server
        .redis_client()?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// CPU seconds (user + system, with reaped children) a process has used so far, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return f64::NAN;
    };
    // Fields after the ")" that ends the command name: utime, stime, cutime, cstime
    // are the 12th to 15th (children count once reaped: the source's RDB fork).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12, 13, 14]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0 // USER_HZ
}

/// With `$BENCH_RECORD=1`, appends a result table to docs/benchmarks.md (section
/// "Recorded runs"): the title, date, machine, Redis and lockstep versions, the exact
/// command (the `BENCH_*` variables set and the bench's name), the target and the
/// rows. Without it, does nothing: a run is recorded only when asked.
pub fn record(title: &str, target: &str, rows: &[(&str, String)]) -> anyhow::Result<()> {
    if std::env::var("BENCH_RECORD").as_deref() != Ok("1") {
        return Ok(());
    }
    use std::fmt::Write as _;
    let run = |cmd: &str, args: &[&str]| -> String {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        })
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(String::new(), |kib| {
            format!("{:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let bench = std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .map(|s| {
            s.rsplit_once('-')
                .map_or(s.clone(), |(name, _hash)| name.to_string())
        })
        .unwrap_or_default();
    let mut vars: Vec<String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BENCH_") || k == "LOCKSTEP_BIN")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    vars.sort();
    let root = workspace_root();
    let revision = run(
        "git",
        &[
            "-C",
            &root.to_string_lossy(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    );
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\n### {title} ({})\n",
        run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        text,
        "Machine: {} cores ({cpu}), {memory}; load average before: {}. Redis 7.0 ({}); \
         workspace at `{revision}`. Target: {target}.\n",
        run("nproc", &[]),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        run("redis-server", &["--version"])
            .split_whitespace()
            .nth(2)
            .unwrap_or("?"),
    );
    let _ = writeln!(
        text,
        "    {} cargo bench -p lockstep-tests --bench {bench}\n",
        vars.join(" ")
    );
    let _ = writeln!(text, "| measure | median (min, max, runs) |\n|---|---|");
    for (name, value) in rows {
        let _ = writeln!(text, "| {name} | {} |", value.trim_start_matches("median "));
    }
    let path = root.join("docs/benchmarks.md");
    let mut doc =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    if !doc.contains("\n## Recorded runs (issue 9)\n") {
        doc.push_str("\n## Recorded runs (issue 9)\n\nAppended by the benches when run with `BENCH_RECORD=1` (`scripts/bench.sh` runs them all).\n");
    }
    doc.push_str(&text);
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    println!("recorded in {}", path.display());
    Ok(())
}

/// Writes `keys` keys of every type into the selected database, on the server (a
/// script per 10 000 keys, so filling is not the slow part of a bench): strings,
/// hashes, lists, sets, zsets and streams of a few small elements (`k:<i>`, type by
/// `i % 6`), one key in ten with a TTL of a day.
pub async fn fill_mixed(src: &mut MultiplexedConnection, keys: i64) -> anyhow::Result<()> {
    const MIXED: &str = "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do \
        local k = 'k:' .. i local v = 'value-' .. i \
        local t = i % 6 \
        if t == 0 then redis.call('SET', k, v) \
        elseif t == 1 then redis.call('HSET', k, 'a', v, 'b', i, 'c', 'x') \
        elseif t == 2 then redis.call('RPUSH', k, v, i, 'x', 'y') \
        elseif t == 3 then redis.call('SADD', k, v, i, 'x') \
        elseif t == 4 then redis.call('ZADD', k, 1, v, 2.5, i, 3, 'x') \
        else redis.call('XADD', k, '*', 'f', v) redis.call('XADD', k, '*', 'g', i) end \
        if i % 10 == 0 then redis.call('EXPIRE', k, 86400) end \
    end";
    let mut from = 0;
    while from < keys {
        let to = (from + 10_000).min(keys) - 1;
        src.run_args::<()>(("EVAL", MIXED, 0, from, to)).await?;
        from = to + 1;
    }
    Ok(())
}

/// Makes `target` an exact copy of `source` the native way (REPLICAOF until the link
/// is up and DBSIZE matches, then REPLICAOF NO ONE): the pair a verify or an audit
/// compares, independent of lockstep's own sync.
pub async fn copy_natively(source: &RedisServer, target: &RedisServer) -> anyhow::Result<()> {
    let mut src = patient(source).await?;
    let mut dst = patient(target).await?;
    let keys = dbsize(&mut src).await?;
    dst.run_args::<()>(("REPLICAOF", source.addr().ip().to_string(), source.port()))
        .await?;
    let started = Instant::now();
    loop {
        let up = info(&mut dst, "replication")
            .await?
            .get("master_link_status")
            == Some("up");
        // DBSIZE answers -LOADING while the replica loads: not there yet.
        if up && dbsize(&mut dst).await.ok() == Some(keys) {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the native copy did not finish within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dst.run_args::<()>(("REPLICAOF", "NO", "ONE")).await?;
    Ok(())
}
