//! Verify against real servers: injected differences of every kind on every type,
//! in both directions, reported exactly and nothing else; identical data on 6.2 and
//! 8.2 (different encodings and RDB versions) reported consistent.

use std::collections::BTreeSet;

use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, output, CompareOptions, DifferenceKind, Report};

type Found = BTreeSet<(u32, Vec<u8>, DifferenceKind)>;

fn found(report: &Report) -> Found {
    report
        .differences
        .iter()
        .map(|d| (d.db, d.key.clone(), d.kind))
        .collect()
}

/// Writes one key of `kind` (string, list, set, zset, hash, stream) named `key`.
fn write(pipe: &mut redis::Pipeline, kind: &str, key: &[u8], variant: u8) {
    let v = [b'v', variant];
    match kind {
        "string" => {
            pipe.cmd("SET").arg(key).arg(&v[..]);
        }
        "list" => {
            pipe.cmd("RPUSH").arg(key).arg("a").arg(&v[..]).arg("c");
        }
        "set" => {
            pipe.cmd("SADD").arg(key).arg("a").arg(&v[..]);
        }
        "zset" => {
            pipe.cmd("ZADD")
                .arg(key)
                .arg(1.5)
                .arg("a")
                .arg(f64::from(variant))
                .arg("b");
        }
        "hash" => {
            pipe.cmd("HSET")
                .arg(key)
                .arg("f")
                .arg(&v[..])
                .arg("g")
                .arg("1");
        }
        "stream" => {
            pipe.cmd("XADD").arg(key).arg("1-1").arg("f").arg("1");
            pipe.cmd("XADD").arg(key).arg("2-1").arg("f").arg(&v[..]);
        }
        other => unreachable!("{other}"),
    }
}

const TYPES: [&str; 6] = ["string", "list", "set", "zset", "hash", "stream"];

/// Writes the same background keys and, per type, one key of each kind of difference.
/// Returns the differences expected from `compare(source, target)`.
async fn inject(source: &RedisServer, target: &RedisServer, db: u32) -> anyhow::Result<Found> {
    let (mut s, mut t) = (redis::pipe(), redis::pipe());
    for p in [&mut s, &mut t] {
        p.cmd("SELECT").arg(db).ignore();
    }
    let mut expected = Found::new();
    for (n, kind) in TYPES.iter().enumerate() {
        let key = |what: &str| format!("inj:{kind}:{what}").into_bytes();
        // Equal on both sides, with an equal TTL.
        write(&mut s, kind, &key("equal"), 1);
        write(&mut t, kind, &key("equal"), 1);
        for p in [&mut s, &mut t] {
            p.cmd("EXPIRE").arg(key("equal")).arg(3600).ignore();
        }
        write(&mut s, kind, &key("missing"), 1);
        expected.insert((db, key("missing"), DifferenceKind::MissingOnTarget));
        write(&mut t, kind, &key("extra"), 1);
        expected.insert((db, key("extra"), DifferenceKind::ExtraOnTarget));
        write(&mut s, kind, &key("value"), 1);
        write(&mut t, kind, &key("value"), 2);
        expected.insert((db, key("value"), DifferenceKind::Value));
        write(&mut s, kind, &key("type"), 1);
        write(&mut t, kind, &key("type"), 1);
        // The target's copy becomes another type.
        t.cmd("DEL").arg(key("type")).ignore();
        write(&mut t, TYPES[(n + 1) % TYPES.len()], &key("type"), 1);
        expected.insert((db, key("type"), DifferenceKind::Type));
        write(&mut s, kind, &key("ttl"), 1);
        write(&mut t, kind, &key("ttl"), 1);
        t.cmd("EXPIRE").arg(key("ttl")).arg(3600).ignore();
        expected.insert((db, key("ttl"), DifferenceKind::Ttl));
        // A TTL that differs by more than the tolerance.
        write(&mut s, kind, &key("ttl2"), 1);
        write(&mut t, kind, &key("ttl2"), 1);
        s.cmd("EXPIRE").arg(key("ttl2")).arg(3600).ignore();
        t.cmd("EXPIRE").arg(key("ttl2")).arg(3700).ignore();
        expected.insert((db, key("ttl2"), DifferenceKind::Ttl));
    }
    // A binary key, and a big hash (compared by chunked digests) that differs in one field.
    let binary = b"inj:\xff\x00bin".to_vec();
    s.cmd("SET").arg(&binary).arg("x").ignore();
    expected.insert((db, binary, DifferenceKind::MissingOnTarget));
    for p in [&mut s, &mut t] {
        for i in 0..3000 {
            p.cmd("HSET").arg("inj:bighash").arg(i).arg(i).ignore();
            p.cmd("RPUSH").arg("inj:biglist").arg(i).ignore();
        }
    }
    t.cmd("HSET")
        .arg("inj:bighash")
        .arg(7)
        .arg("changed")
        .ignore();
    expected.insert((db, b"inj:bighash".to_vec(), DifferenceKind::Value));
    s.query_async::<()>(&mut source.client().await?).await?;
    t.query_async::<()>(&mut target.client().await?).await?;
    Ok(expected)
}

fn mirror(expected: &Found) -> Found {
    expected
        .iter()
        .map(|(db, key, kind)| {
            let kind = match kind {
                DifferenceKind::MissingOnTarget => DifferenceKind::ExtraOnTarget,
                DifferenceKind::ExtraOnTarget => DifferenceKind::MissingOnTarget,
                other => *other,
            };
            (*db, key.clone(), kind)
        })
        .collect()
}

async fn injected(
    source_version: RedisVersion,
    target_version: RedisVersion,
) -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(source_version)).await?;
    let target = RedisServer::start(ServerConfig::new(target_version)).await?;
    let mut expected = inject(&source, &target, 0).await?;
    expected.extend(inject(&source, &target, 3).await?);
    let options = CompareOptions {
        dbs: vec![0, 3],
        workers: 3,
        batch_keys: 7, // many small batches
        chunk_elements: 100,
        ..CompareOptions::default()
    };
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    // With the batch script and with plain pipelined commands.
    let plain = CompareOptions {
        batch_script: false,
        ..options.clone()
    };
    for options in [&plain, &options] {
        let report = compare(&src, &dst, options).await?;
        assert_eq!(found(&report), expected, "{report}");
        let reverse = compare(&dst, &src, options).await?;
        assert_eq!(found(&reverse), mirror(&expected), "{reverse}");
    }
    let report = compare(&src, &dst, &options).await?;

    // The CSV holds every difference, the binary key escaped losslessly.
    let mut csv = Vec::new();
    output::write_csv(&report, &mut csv)?;
    let text = String::from_utf8(csv)?;
    assert_eq!(text.lines().count(), expected.len() + 1);
    let escaped = output::encode_key(b"inj:\xff\x00bin");
    assert!(escaped.starts_with("base64:"));
    assert!(text.contains(&escaped));
    assert_eq!(output::decode_key(&escaped).unwrap(), b"inj:\xff\x00bin");
    Ok(())
}

#[tokio::test]
async fn injected_differences_7_0_to_7_0() -> anyhow::Result<()> {
    injected(RedisVersion::V7_0, RedisVersion::V7_0).await
}

#[tokio::test]
async fn injected_differences_6_2_to_8_2() -> anyhow::Result<()> {
    injected(RedisVersion::V6_2, RedisVersion::V8_2).await
}

#[tokio::test]
async fn identical_data_on_6_2_and_8_2_is_consistent() -> anyhow::Result<()> {
    let old = RedisServer::start(ServerConfig::new(RedisVersion::V6_2)).await?;
    let new = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let spec = DataSpec::new(7, 60).big_keys(200_000);
    let (a, b) = (old.redis_client()?, new.redis_client()?);
    let (wa, wb) = tokio::join!(DataSet::write(&a, &spec), DataSet::write(&b, &spec));
    wa?;
    wb?;
    let options = CompareOptions {
        // Hash field TTLs exist from 7.4: only the 8.2 side has those keys.
        ignore_prefixes: vec![b"LOCKSTEP_".to_vec(), b"hash-field-ttl:".to_vec()],
        ..CompareOptions::default()
    };
    for (s, t) in [(&a, &b), (&b, &a)] {
        let report = compare(s, t, &options).await?;
        assert!(report.is_consistent(), "{report}");
        assert!(report.keys_compared > 500, "{report}");
    }
    Ok(())
}

#[tokio::test]
async fn sample_is_deterministic_and_rounds_count_vanished() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut s = redis::pipe();
    for i in 0..5000 {
        s.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
    }
    s.query_async::<()>(&mut source.client().await?).await?;
    s.query_async::<()>(&mut target.client().await?).await?;
    let options = CompareOptions {
        dbs: vec![0],
        sample: lockstep_verify::Sample::Rate(0.1),
        ..CompareOptions::default()
    };
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let one = compare(&src, &dst, &options).await?;
    assert!((300..700).contains(&one.keys_compared), "{one}");
    assert_eq!(
        compare(&src, &dst, &options).await?.keys_compared,
        one.keys_compared
    );

    // Rounds: a difference repaired during the pause vanishes, one left persists.
    let mut t = target.client().await?;
    redis::cmd("SET")
        .arg("lag")
        .arg(1)
        .query_async::<()>(&mut source.client().await?)
        .await?;
    redis::cmd("SET")
        .arg("k1")
        .arg("corrupt")
        .query_async::<()>(&mut t)
        .await?;
    let options = CompareOptions {
        dbs: vec![0],
        rounds: 3,
        round_pause: std::time::Duration::from_millis(300),
        ..CompareOptions::default()
    };
    let run = tokio::spawn(async move { compare(&src, &dst, &options).await });
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    redis::cmd("SET")
        .arg("lag")
        .arg(1)
        .query_async::<()>(&mut t)
        .await?;
    let report = run.await??;
    assert_eq!(report.round_differences.first(), Some(&2), "{report}");
    assert_eq!(report.vanished, 1, "{report}");
    assert_eq!(
        found(&report),
        Found::from([(0, b"k1".to_vec(), DifferenceKind::Value)])
    );
    Ok(())
}
