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
        dump_elements_max: 0,
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

/// The same data set written into two versions compares equal both ways.
async fn identical_data_is_consistent(a: RedisVersion, b: RedisVersion) -> anyhow::Result<()> {
    let old = RedisServer::start(ServerConfig::new(a)).await?;
    let new = RedisServer::start(ServerConfig::new(b)).await?;
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
async fn identical_data_on_6_2_and_8_2_is_consistent() -> anyhow::Result<()> {
    identical_data_is_consistent(RedisVersion::V6_2, RedisVersion::V8_2).await
}

#[tokio::test]
async fn identical_data_on_valkey_8_1_and_redis_7_0_and_8_2_is_consistent() -> anyhow::Result<()> {
    for redis in [RedisVersion::V7_0, RedisVersion::V8_2] {
        identical_data_is_consistent(RedisVersion::Valkey8_1, redis).await?;
    }
    Ok(())
}

#[tokio::test]
async fn injected_differences_valkey_8_1_and_redis_both_ways() -> anyhow::Result<()> {
    injected(RedisVersion::Valkey8_1, RedisVersion::V8_2).await?;
    injected(RedisVersion::V7_0, RedisVersion::Valkey8_1).await
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

/// Strings on both sides, `n` keys `s:0..n`; `ttl` on the keys listed.
async fn strings(server: &RedisServer, n: u32, ttls: &[(u32, u64)]) -> anyhow::Result<()> {
    let mut p = redis::pipe();
    for i in 0..n {
        p.cmd("SET").arg(format!("s:{i}")).arg(i).ignore();
    }
    for (i, ms) in ttls {
        p.cmd("PEXPIREAT").arg(format!("s:{i}")).arg(ms).ignore();
    }
    p.query_async::<()>(&mut server.client().await?).await?;
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[tokio::test]
async fn ttls_on_one_side_only_and_the_count_proof_of_no_extra_key() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    // The source holds no TTL at all (INFO keyspace: expires=0): its PTTLs are not read.
    let at = unix_ms() + 3_600_000;
    strings(&source, 3000, &[]).await?;
    strings(&target, 3000, &[(17, at)]).await?;
    let options = CompareOptions {
        dbs: vec![0],
        ..CompareOptions::default()
    };
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    for (s, t) in [(&src, &dst), (&dst, &src)] {
        let report = compare(s, t, &options).await?;
        assert_eq!(
            found(&report),
            Found::from([(0, b"s:17".to_vec(), DifferenceKind::Ttl)]),
            "{report}"
        );
        // Nothing changed and the counts match: no target pass was needed.
        assert_eq!(
            report.target_pass[&0],
            lockstep_verify::TargetPass::ProvenByCounts,
            "{report}"
        );
        assert_eq!(report.strings_equal, 3000, "{report}");
        let slots: std::collections::BTreeSet<u32> = (0..3000)
            .map(|i| {
                u32::from(lockstep_verify::track::key_slot(
                    format!("s:{i}").as_bytes(),
                ))
            })
            .collect();
        assert_eq!(
            report
                .slots_covered
                .iter()
                .collect::<std::collections::BTreeSet<_>>(),
            slots
        );
    }
    // An extra key on the target defeats the proof; the target pass finds it. The
    // sync's own checkpoint key does not.
    redis::pipe()
        .cmd("SET")
        .arg("extra")
        .arg(1)
        .ignore()
        .cmd("SET")
        .arg(lockstep_verify::compare::SYNC_CHECKPOINT_KEY)
        .arg("x")
        .ignore()
        .query_async::<()>(&mut target.client().await?)
        .await?;
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(
        found(&report),
        Found::from([
            (0, b"s:17".to_vec(), DifferenceKind::Ttl),
            (0, b"extra".to_vec(), DifferenceKind::ExtraOnTarget)
        ]),
        "{report}"
    );
    assert_eq!(report.target_pass[&0], lockstep_verify::TargetPass::Scanned);
    redis::cmd("DEL")
        .arg("extra")
        .query_async::<()>(&mut target.client().await?)
        .await?;
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(
        report.target_pass[&0],
        lockstep_verify::TargetPass::ProvenByCounts,
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn a_ttl_extension_is_expected_exactly() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let (at, extension) = (unix_ms() + 600_000, 3_600_000);
    // s:0 and s:1 extended as the sync does, s:2 not extended, s:3 persistent on both,
    // s:4 persistent on the source but given a TTL on the target.
    strings(&source, 5, &[(0, at), (1, at + 5), (2, at)]).await?;
    strings(
        &target,
        5,
        &[
            (0, at + extension),
            (1, at + 5 + extension),
            (2, at),
            (4, at + extension),
        ],
    )
    .await?;
    // On the target only, expiring within the extension: the source expired it already.
    redis::cmd("SET")
        .arg("gone-on-source")
        .arg(1)
        .arg("PX")
        .arg(extension / 2)
        .query_async::<()>(&mut target.client().await?)
        .await?;
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let extended = CompareOptions {
        dbs: vec![0],
        ttl_extension: std::time::Duration::from_millis(extension),
        ..CompareOptions::default()
    };
    let report = compare(&src, &dst, &extended).await?;
    assert_eq!(
        found(&report),
        Found::from([
            (0, b"s:2".to_vec(), DifferenceKind::Ttl),
            (0, b"s:4".to_vec(), DifferenceKind::Ttl)
        ]),
        "{report}"
    );
    let plain = CompareOptions {
        ttl_extension: std::time::Duration::ZERO,
        ..extended
    };
    let report = compare(&src, &dst, &plain).await?;
    assert_eq!(
        found(&report),
        Found::from([
            (0, b"s:0".to_vec(), DifferenceKind::Ttl),
            (0, b"s:1".to_vec(), DifferenceKind::Ttl),
            (0, b"s:4".to_vec(), DifferenceKind::Ttl),
            (0, b"gone-on-source".to_vec(), DifferenceKind::ExtraOnTarget)
        ]),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn key_lists_and_the_recheck_of_a_report() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let expected = inject(&source, &target, 2).await?;
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let options = CompareOptions {
        dbs: vec![2],
        ..CompareOptions::default()
    };
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(found(&report), expected, "{report}");
    let mut csv = Vec::new();
    output::write_csv(&report, &mut csv)?;

    // Re-checking the report's keys finds exactly the same differences (extra keys
    // too: a key only on the target is extra), without walking the key spaces.
    let list = output::read_report_keys(csv.as_slice())?;
    assert_eq!(list[&2].len(), expected.len());
    let recheck = CompareOptions {
        keys: Some(list),
        ..options.clone()
    };
    let again = compare(&src, &dst, &recheck).await?;
    assert_eq!(found(&again), expected, "{again}");
    assert!(again.keys_compared < 40, "{again}");
    assert_eq!(again.target_keys_checked, 0);

    // A key list: equal keys, a binary key escaped as in the CSV, an absent key, a key
    // listed twice (read once).
    let text = format!(
        "inj:string:equal\r\n\n{}\ninj:hash:equal\nno-such-key\ninj:hash:equal\n",
        output::encode_key(b"inj:\xff\x00bin")
    );
    let keys = output::read_key_lines(text.as_bytes())?;
    assert_eq!(keys.len(), 5);
    let listed = CompareOptions {
        keys: Some([(2, keys)].into()),
        ..options
    };
    let report = compare(&src, &dst, &listed).await?;
    assert_eq!(
        found(&report),
        Found::from([(
            2,
            b"inj:\xff\x00bin".to_vec(),
            DifferenceKind::MissingOnTarget
        )]),
        "{report}"
    );
    assert_eq!(report.keys_compared, 3, "{report}");
    assert!(output::read_key_lines("base64:%%%\n".as_bytes()).is_err());
    assert!(output::read_report_keys("a,b\n1,2\n".as_bytes()).is_err());
    Ok(())
}

#[tokio::test]
async fn differences_beyond_the_listed_ones_are_counted_and_rechecked() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    // 2000 keys missing on the target, 1000 of which expire before the second round;
    // one key extra on the target.
    let soon = unix_ms() + 2_500;
    let expiring: Vec<(u32, u64)> = (0..1000).map(|i| (i, soon)).collect();
    strings(&source, 2000, &expiring).await?;
    redis::cmd("SET")
        .arg("extra")
        .arg(1)
        .query_async::<()>(&mut target.client().await?)
        .await?;
    let options = CompareOptions {
        dbs: vec![0],
        max_listed: 10,
        rounds: 2,
        round_pause: std::time::Duration::from_millis(2_600),
        ttl_tolerance: std::time::Duration::from_millis(100),
        ..CompareOptions::default()
    };
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(report.round_differences, vec![2001, 1001], "{report}");
    assert_eq!(report.vanished, 1000);
    assert_eq!(report.difference_count(), 1001);
    assert_eq!(report.differences.len(), 10);
    assert_eq!(report.unlisted_differences, 991);
    assert_eq!(report.by_kind()["missing_on_target"], 1000, "{report}");
    assert_eq!(report.by_kind()["extra_on_target"], 1, "{report}");
    // A few thousand random fingerprints cost at most ~10 bytes each (one roaring
    // container each); a million cost 2 to 4 (track.rs's unit test).
    assert!(report.fingerprint_bytes < 1991 * 12, "{report}");
    Ok(())
}

#[tokio::test]
async fn plain_commands_only_for_a_user_without_scripting_or_info() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut expected = inject(&source, &target, 0).await?;
    let at = unix_ms() + 3_600_000;
    strings(&source, 100, &[]).await?;
    strings(&target, 100, &[(5, at)]).await?;
    expected.insert((0, b"s:5".to_vec(), DifferenceKind::Ttl));
    let mut urls = Vec::new();
    for (server, user, rules) in [
        (&source, "reader", "+info"),
        (&target, "reader", "+info"),
        (&source, "noinfo", "-info"),
        (&target, "noinfo", "-info"),
    ] {
        let mut conn = server.client().await?;
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg("on")
            .arg(">secret")
            .arg("~*")
            .arg("+@read")
            .arg("+@connection")
            .arg("-@scripting")
            .arg(rules)
            .query_async::<()>(&mut conn)
            .await?;
        redis::cmd("ACL")
            .arg("LOG")
            .arg("RESET")
            .query_async::<()>(&mut conn)
            .await?;
        urls.push(format!("redis://{user}:secret@{}", server.addr()));
    }
    let options = CompareOptions {
        dbs: vec![0],
        ..CompareOptions::default()
    };
    let (src, dst) = (
        redis::Client::open(urls[0].as_str())?,
        redis::Client::open(urls[1].as_str())?,
    );
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(found(&report), expected, "{report}");
    // Not one command was refused: no script was tried.
    for server in [&source, &target] {
        let log: Vec<redis::Value> = redis::cmd("ACL")
            .arg("LOG")
            .query_async(&mut server.client().await?)
            .await?;
        assert!(log.is_empty(), "refused commands: {log:?}");
    }
    // Without INFO, TTLs are read for every key: still exactly the same differences.
    let (src, dst) = (
        redis::Client::open(urls[2].as_str())?,
        redis::Client::open(urls[3].as_str())?,
    );
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(found(&report), expected, "{report}");
    Ok(())
}

/// A rotating audit: consecutive sample windows of rate 1/4 compare every key once in
/// four runs, a corrupted key is found in exactly one of them, and each sampled run
/// states what it proves.
#[tokio::test]
async fn four_sample_windows_of_a_quarter_cover_every_key_once() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
    }
    pipe.query_async::<()>(&mut source.client().await?).await?;
    pipe.cmd("SET").arg("k7").arg("corrupt").ignore();
    pipe.query_async::<()>(&mut target.client().await?).await?;
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let (mut compared, mut found_in) = (0, Vec::new());
    for window in 0..4 {
        let options = CompareOptions {
            dbs: vec![0],
            sample: lockstep_verify::Sample::Rate(0.25),
            sample_window: window,
            ..CompareOptions::default()
        };
        let report = compare(&src, &dst, &options).await?;
        compared += report.keys_compared;
        if !report.is_consistent() {
            found_in.push(window);
        }
        let statement = report.statement().expect("a sampled run states its bound");
        assert_eq!(statement.sampled, report.keys_compared, "{report}");
        let summary = output::summary(&report, &options);
        assert_eq!(
            summary["statement"]["sentence"].as_str(),
            Some(statement.sentence().as_str())
        );
    }
    assert_eq!(compared, 2000, "every key once over the four windows");
    assert_eq!(
        found_in.len(),
        1,
        "the corrupted key in one window: {found_in:?}"
    );
    let full = compare(&src, &dst, &CompareOptions::default()).await?;
    assert_eq!(full.statement(), None, "a full run makes no sampled claim");
    Ok(())
}
