//! The explorer's workload: seeded write commands over every kind the stream carries
//! (strings, counters, lists, sets, sorted sets, hashes, streams, binary keys and
//! values, big values, EXPIRE/PEXPIRE/PERSIST with short TTLs, RENAME, RENAMENX, MOVE,
//! COPY with and without DB, SWAPDB, DEL, UNLINK, MSET, a rare FLUSHDB) in up to 64
//! databases, and the runner that sends them to the source at their instants.
//!
//! Generation is pure (a [`ChaCha8Rng`] in, commands out). Keys live in families
//! (`str:`, `cnt:`, ...) and a two-key command stays within one family, so a prefix
//! rule keeps both keys or neither, and on one side of every declarative key rule
//! that takes a part of a family (`str:1*`: both keys or neither, its own key twice
//! otherwise); a command across databases stays among the
//! synchronized ones or among the others: what lockstep's filter supports (a MOVE
//! into the selection from outside stops the task, by design).
//!
//! Generation must never read a reply or a clock (a replay sends the same commands);
//! only the runner talks to the source, and a refused single command is counted,
//! not fatal.

use std::time::{Duration, Instant};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use super::shared::{unix_ms, TaskOptions, CLOCK_KEY, DATABASES};

/// The key families; a key is `<family><n>` (binary bytes after `bin:`).
pub const FAMILIES: [&str; 8] = [
    "str:", "cnt:", "lst:", "set:", "zst:", "hsh:", "xst:", "bin:",
];

/// One command in one database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub db: u32,
    pub argv: Vec<Vec<u8>>,
}

/// A command and when to send it, in ms from the sync's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedOp {
    pub at_ms: u64,
    pub op: Op,
}

/// The databases and key names an episode writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpace {
    /// Database 0 and a few others up to 63 (often some above 15).
    pub dbs: Vec<u32>,
    pub keys_per_family: u32,
}

impl KeySpace {
    pub fn choose(rng: &mut ChaCha8Rng) -> KeySpace {
        let mut dbs = vec![0];
        for _ in 0..rng.random_range(2..7) {
            let db = rng.random_range(1..DATABASES);
            if !dbs.contains(&db) {
                dbs.push(db);
            }
        }
        dbs.sort_unstable();
        KeySpace {
            dbs,
            keys_per_family: rng.random_range(10..40),
        }
    }

    pub fn key(&self, family: &str, n: u32) -> Vec<u8> {
        let mut key = family.as_bytes().to_vec();
        if family == "bin:" {
            // Every awkward byte: NUL, CR LF, space, high bytes, and the number.
            key.extend_from_slice(&[0, b'\r', b'\n', b' ', 0xff, 0x80]);
            key.extend_from_slice(&n.to_le_bytes());
        } else {
            key.extend_from_slice(n.to_string().as_bytes());
        }
        key
    }
}

fn bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let len = rng.random_range(1..=max);
    (0..len).map(|_| rng.random::<u8>()).collect()
}

fn text(rng: &mut ChaCha8Rng) -> Vec<u8> {
    format!("v{}", rng.random_range(0..100_000)).into_bytes()
}

/// A big value of 1 to 8 MB, cheap to make (a pattern, not random bytes).
fn big(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = rng.random_range(1..=8) * 1_000_000 + rng.random_range(0..1000);
    let salt = rng.random::<u8>();
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

/// A TTL in ms: mostly 30 s to 10 min (alive through the episode), a few of 1-10 s.
fn ttl_ms(rng: &mut ChaCha8Rng) -> u64 {
    if rng.random_bool(0.1) {
        rng.random_range(1_000..10_000)
    } else {
        rng.random_range(30_000..600_000)
    }
}

fn argv(parts: &[&[u8]]) -> Vec<Vec<u8>> {
    parts.iter().map(|p| p.to_vec()).collect()
}

fn num(n: impl ToString) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// A write that creates or changes a key of `family` (its own type's commands).
fn typed_write(rng: &mut ChaCha8Rng, family: &str, key: Vec<u8>) -> Vec<Vec<u8>> {
    let k = key.as_slice();
    let roll = rng.random_range(0..4);
    match family {
        "str:" if rng.random_bool(0.0015) => argv(&[b"SET", k, &big(rng)]),
        "str:" => match roll {
            0 => argv(&[b"SET", k, &text(rng), b"PX", &num(ttl_ms(rng))]),
            1 => argv(&[b"APPEND", k, &text(rng)]),
            _ => argv(&[b"SET", k, &text(rng)]),
        },
        "cnt:" => argv(&[b"INCRBY", k, &num(rng.random_range(1..5))]),
        "lst:" => match roll {
            0 => argv(&[b"LPOP", k]),
            1 => argv(&[b"LPUSH", k, &text(rng), &text(rng)]),
            _ => argv(&[b"RPUSH", k, &text(rng)]),
        },
        "set:" => match roll {
            0 => argv(&[b"SREM", k, &num(rng.random_range(0..20))]),
            _ => argv(&[b"SADD", k, &num(rng.random_range(0..20)), &text(rng)]),
        },
        "zst:" => match roll {
            0 => argv(&[b"ZREM", k, &num(rng.random_range(0..20))]),
            1 => argv(&[b"ZINCRBY", k, b"1.5", &num(rng.random_range(0..20))]),
            _ => argv(&[
                b"ZADD",
                k,
                &num(rng.random_range(-1000..1000)),
                &num(rng.random_range(0..20)),
            ]),
        },
        "hsh:" => match roll {
            0 => argv(&[b"HDEL", k, &num(rng.random_range(0..10))]),
            1 => argv(&[b"HINCRBY", k, b"count", b"1"]),
            _ => argv(&[b"HSET", k, &num(rng.random_range(0..10)), &text(rng)]),
        },
        "xst:" => match roll {
            0 => argv(&[b"XTRIM", k, b"MAXLEN", b"20"]),
            _ => argv(&[b"XADD", k, b"*", b"f", &text(rng)]),
        },
        _ => argv(&[b"SET", k, &bytes(rng, 64)]),
    }
}

/// Another database of the same kind as `db` (synchronized or not), if any.
fn other_db(rng: &mut ChaCha8Rng, space: &KeySpace, options: &TaskOptions, db: u32) -> Option<u32> {
    let same: Vec<u32> = space
        .dbs
        .iter()
        .copied()
        .filter(|&d| d != db && options.keeps_db(d) == options.keeps_db(db))
        .collect();
    (!same.is_empty()).then(|| same[rng.random_range(0..same.len())])
}

/// One command of the live load.
pub fn next_op(rng: &mut ChaCha8Rng, space: &KeySpace, options: &TaskOptions) -> Op {
    let db = space.dbs[rng.random_range(0..space.dbs.len())];
    let family = FAMILIES[rng.random_range(0..FAMILIES.len())];
    let key = space.key(family, rng.random_range(0..space.keys_per_family));
    let other = space.key(family, rng.random_range(0..space.keys_per_family));
    // A two-key command stays on one side of every key rule (the RNG draws the same).
    let other = if options.rules.separates(&key, &other) {
        key.clone()
    } else {
        other
    };
    let (k, o) = (key.as_slice(), other.as_slice());
    let argv = match rng.random_range(0..100) {
        0..=54 => typed_write(rng, family, key.clone()),
        55..=62 => argv(&[b"PEXPIRE", k, &num(ttl_ms(rng))]),
        63..=65 => argv(&[b"EXPIRE", k, &num(ttl_ms(rng) / 1000 + 1)]),
        66..=67 => argv(&[b"PERSIST", k]),
        68..=73 => argv(&[b"RENAME", k, o]),
        74..=76 => argv(&[b"RENAMENX", k, o]),
        77..=80 => match other_db(rng, space, options, db) {
            Some(to) => argv(&[b"MOVE", k, &num(to)]),
            None => argv(&[b"DEL", k]),
        },
        81..=84 => match other_db(rng, space, options, db) {
            Some(to) if rng.random_bool(0.5) => argv(&[b"COPY", k, o, b"DB", &num(to)]),
            _ => argv(&[b"COPY", k, o, b"REPLACE"]),
        },
        85..=88 => argv(&[b"DEL", k]),
        89..=90 => argv(&[b"UNLINK", k, o]),
        91..=94 => {
            let a = space.key("str:", rng.random_range(0..space.keys_per_family));
            let b = space.key("bin:", rng.random_range(0..space.keys_per_family));
            argv(&[b"MSET", &a, &text(rng), &b, &bytes(rng, 32)])
        }
        95..=98 => match other_db(rng, space, options, db) {
            Some(to) if rng.random_bool(0.3) => argv(&[b"SWAPDB", &num(db), &num(to)]),
            _ => typed_write(rng, family, key.clone()),
        },
        _ if rng.random_bool(0.2) => argv(&[b"FLUSHDB"]),
        _ => typed_write(rng, family, key.clone()),
    };
    Op { db, argv }
}

/// The data written before the sync starts (what the full copy carries): keys of
/// every family in every database, a third of them with a TTL (most within the hour,
/// so the copy guards them), and now and then a big value.
pub fn preload(rng: &mut ChaCha8Rng, space: &KeySpace, _options: &TaskOptions) -> Vec<Op> {
    let mut ops = Vec::new();
    for &db in &space.dbs {
        for family in FAMILIES {
            for n in 0..space.keys_per_family {
                if rng.random_bool(0.4) {
                    continue;
                }
                let key = space.key(family, n);
                let write = typed_write(rng, family, key.clone());
                ops.push(Op { db, argv: write });
                if rng.random_bool(0.35) {
                    ops.push(Op {
                        db,
                        argv: argv(&[b"PEXPIRE", &key, &num(rng.random_range(60_000..1_800_000))]),
                    });
                }
            }
        }
    }
    if rng.random_bool(0.3) {
        let key = space.key("str:", 0);
        ops.push(Op {
            db: space.dbs[rng.random_range(0..space.dbs.len())],
            argv: argv(&[b"SET", &key, &big(rng)]),
        });
    }
    ops
}

/// The live load: commands at a steady random rate over `load_ms`.
pub fn timed_load(
    rng: &mut ChaCha8Rng,
    space: &KeySpace,
    options: &TaskOptions,
    load_ms: u64,
) -> Vec<TimedOp> {
    let per_sec = rng.random_range(40..120);
    let count = load_ms * per_sec / 1000;
    (0..count)
        .map(|i| TimedOp {
            at_ms: i * 1000 / per_sec,
            op: next_op(rng, space, options),
        })
        .collect()
}

/// What the load runner did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    /// Commands the source answered with an error (WRONGTYPE, no such key: expected).
    pub refused: u64,
    /// Commands that never reached the source (it was down or restarting).
    pub lost: u64,
}

fn command(op: &Op) -> redis::Cmd {
    let mut cmd = redis::cmd(&String::from_utf8_lossy(&op.argv[0]));
    for arg in &op.argv[1..] {
        cmd.arg(arg.as_slice());
    }
    cmd
}

/// Sends `ops` to the source at their instants from `start`, one round trip each,
/// reconnecting while the source is away; stops early when `stop` turns true.
pub async fn run_load(
    source: redis::Client,
    ops: Vec<TimedOp>,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> LoadReport {
    let mut report = LoadReport::default();
    let mut conn = None;
    for timed in ops {
        let due = start + Duration::from_millis(timed.at_ms);
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            _ = stop.wait_for(|s| *s) => return report,
        }
        if conn.is_none() {
            conn = source.get_multiplexed_async_connection().await.ok();
        }
        let Some(c) = conn.as_mut() else {
            report.lost += 1;
            continue;
        };
        let sent = redis::pipe()
            .cmd("SELECT")
            .arg(timed.op.db)
            .ignore()
            .add_command(command(&timed.op))
            .query_async::<redis::Value>(c)
            .await;
        report.sent += 1;
        match sent {
            Ok(_) => {}
            Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
                report.lost += 1;
                conn = None;
            }
            Err(_) => report.refused += 1,
        }
    }
    report
}

/// Writes the preload, pipelined.
pub async fn write_preload(source: &redis::Client, ops: &[Op]) -> anyhow::Result<()> {
    let mut conn = source.get_multiplexed_async_connection().await?;
    for chunk in ops.chunks(200) {
        let mut pipe = redis::pipe();
        for op in chunk {
            pipe.cmd("SELECT").arg(op.db).ignore();
            pipe.add_command(command(op)).ignore();
        }
        // Errors of single commands (a PEXPIRE of a key already popped) do not matter.
        let _ = pipe.query_async::<redis::Value>(&mut conn).await;
    }
    Ok(())
}

/// Writes [`CLOCK_KEY`] into db 0 of the source every 100 ms until stopped.
pub async fn run_clock(source: redis::Client, mut stop: watch::Receiver<bool>) {
    let mut conn = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if conn.is_none() {
            conn = source.get_multiplexed_async_connection().await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let written = redis::pipe()
            .cmd("SELECT")
            .arg(0)
            .ignore()
            .cmd("SET")
            .arg(CLOCK_KEY)
            .arg(unix_ms())
            .ignore()
            .query_async::<()>(c)
            .await;
        if written.is_err() {
            conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn two_key_commands_stay_in_one_family_and_cross_dbs_within_one_kind() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let space = KeySpace::choose(&mut rng);
        let options = TaskOptions {
            dbs: space.dbs.iter().copied().step_by(2).collect(),
            ..TaskOptions::default()
        };
        for _ in 0..5000 {
            let op = next_op(&mut rng, &space, &options);
            let name = op.argv[0].as_slice();
            if name == b"RENAME" || name == b"RENAMENX" || name == b"COPY" {
                assert_eq!(op.argv[1][..4], op.argv[2][..4]);
            }
            if name == b"MOVE" || (name == b"COPY" && op.argv.len() == 5) {
                let to: u32 = String::from_utf8_lossy(op.argv.last().unwrap())
                    .parse()
                    .unwrap();
                assert_eq!(options.keeps_db(to), options.keeps_db(op.db));
            }
        }
    }
}
