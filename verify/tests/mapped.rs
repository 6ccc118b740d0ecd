//! Verify of a mapped and renamed sync (`--map-db`, `--rename-prefix`) against real
//! servers: CONSISTENT exactly when the target is the transform of the source, and
//! every injected difference reported, named as documented (the source name; an
//! extra key by its target name).

use std::collections::BTreeSet;

use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, CompareOptions, DifferenceKind, Report, TargetPass};

type Found = BTreeSet<(u32, Vec<u8>, DifferenceKind)>;

fn found(report: &Report) -> Found {
    report
        .differences
        .iter()
        .map(|d| (d.db, d.key.clone(), d.kind))
        .collect()
}

/// Source database 3 and target database 0 holding the same data of every type,
/// with TTLs: consistent under the mapping 3 -> 0, and not without it.
#[tokio::test]
async fn a_mapped_database_is_compared_with_its_image() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let spec = DataSpec::new(11, 40)
        .dbs(&[3])
        .big_keys(50_000)
        .soon_ttl(std::time::Duration::from_secs(3600));
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let (a, b) = tokio::join!(DataSet::write(&src, &spec), DataSet::write(&dst, &spec));
    let written = a?;
    b?;
    assert!(written.expiring_soon_per_db().values().sum::<usize>() > 0);
    // The target's copy moves to database 0, as `--map-db 3:0` would have written it.
    let mut conn = dst.get_multiplexed_async_connection().await?;
    redis::cmd("SWAPDB")
        .arg(0)
        .arg(3)
        .query_async::<()>(&mut conn)
        .await?;
    let mapped = CompareOptions {
        db_map: vec![(3, 0)],
        workers: 2,
        batch_keys: 50,
        ..CompareOptions::default()
    };
    let report = compare(&src, &dst, &mapped).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.coverage.compared, vec![3], "{report}");
    assert!(report.keys_compared > 0 && report.keys_per_type.len() >= 5);
    assert!(
        report.coverage.unmapped_target.is_empty(),
        "the target's db 3 is empty"
    );

    let unmapped = CompareOptions {
        db_map: Vec::new(),
        ..mapped.clone()
    };
    let report = compare(&src, &dst, &unmapped).await?;
    let kinds: BTreeSet<DifferenceKind> = report.differences.iter().map(|d| d.kind).collect();
    assert!(
        kinds.contains(&DifferenceKind::MissingOnTarget)
            && kinds.contains(&DifferenceKind::ExtraOnTarget),
        "{report}"
    );

    // A target database that no source database is written into is named, not read.
    redis::cmd("SELECT")
        .arg(3)
        .query_async::<()>(&mut conn)
        .await?;
    redis::cmd("SET")
        .arg("stray")
        .arg("x")
        .query_async::<()>(&mut conn)
        .await?;
    let report = compare(&src, &dst, &mapped).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.coverage.unmapped_target, vec![3]);
    assert!(
        report
            .coverage
            .scope()
            .contains("the target's database 3 holds keys and is the image of no source database"),
        "{}",
        report.coverage.scope()
    );
    Ok(())
}

/// Writes `user:*` and `order:*` on the source and their images (`u:*`, `order:*`)
/// on the target: strings with and without TTLs, hashes, a big hash and a big list
/// (beyond `dump_elements_max`: digests), a long string (beyond `long_string_bytes`:
/// windows).
async fn renamed_pair(source: &RedisServer, target: &RedisServer) -> anyhow::Result<()> {
    let (mut s, mut t) = (redis::pipe(), redis::pipe());
    for (p, user) in [(&mut s, "user:"), (&mut t, "u:")] {
        for i in 0..40 {
            p.cmd("SET")
                .arg(format!("{user}{i}"))
                .arg(format!("v{i}"))
                .ignore();
            p.cmd("HSET")
                .arg(format!("{user}h:{i}"))
                .arg("f")
                .arg(i)
                .ignore();
            p.cmd("SET").arg(format!("order:{i}")).arg(i).ignore();
            if i % 3 == 0 {
                p.cmd("PEXPIREAT")
                    .arg(format!("{user}{i}"))
                    .arg(4_102_444_800_000u64 + i)
                    .ignore();
                p.cmd("PEXPIREAT")
                    .arg(format!("order:{i}"))
                    .arg(4_102_444_800_000u64 + i)
                    .ignore();
            }
        }
        for i in 0..300 {
            p.cmd("HSET")
                .arg(format!("{user}bighash"))
                .arg(i)
                .arg(i)
                .ignore();
            p.cmd("RPUSH").arg(format!("{user}biglist")).arg(i).ignore();
        }
        p.cmd("SET")
            .arg(format!("{user}long"))
            .arg("x".repeat(5000))
            .ignore();
        p.cmd("PEXPIREAT")
            .arg(format!("{user}bighash"))
            .arg(4_102_444_800_000u64)
            .ignore();
    }
    s.query_async::<()>(&mut source.client().await?).await?;
    t.query_async::<()>(&mut target.client().await?).await?;
    Ok(())
}

fn renamed_options() -> CompareOptions {
    CompareOptions {
        renames: vec![(b"user:".to_vec(), b"u:".to_vec())],
        workers: 2,
        batch_keys: 7,
        chunk_elements: 50,
        dump_elements_max: 100,
        long_string_bytes: 1000,
        ..CompareOptions::default()
    }
}

#[tokio::test]
async fn renamed_prefixes_are_compared_with_their_images() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    renamed_pair(&source, &target).await?;
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let options = renamed_options();

    // Equal: consistent, every read path taken, and the count proof holds.
    let report = compare(&src, &dst, &options).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.keys_compared, 40 * 3 + 3, "{report}");
    assert!(report.digests_compared >= 2, "{report}");
    assert_eq!(report.strings_windowed, 1, "{report}");
    assert!(report.dump_equal >= 40, "{report}");
    assert_eq!(
        report.target_pass.get(&0),
        Some(&TargetPass::ProvenByCounts)
    );
    // The target pass itself, run (an include prefix rules out the count proof):
    // every `u:` key found on the source as `user:`.
    let scanned = CompareOptions {
        include_prefixes: vec![b"user:".to_vec(), b"order:".to_vec()],
        ..options.clone()
    };
    let report = compare(&src, &dst, &scanned).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.target_pass.get(&0), Some(&TargetPass::Scanned));
    assert_eq!(report.target_keys_checked, 40 * 3 + 3, "{report}");
    // Without the rule, nothing matches.
    let plain = CompareOptions {
        renames: Vec::new(),
        ..options.clone()
    };
    assert!(!compare(&src, &dst, &plain).await?.is_consistent());

    // Injected: a value, an extra image, a target key no source key is written as,
    // a missing image.
    let mut t = target.client().await?;
    redis::pipe()
        .cmd("SET")
        .arg("u:7")
        .arg("changed")
        .ignore()
        .cmd("SET")
        .arg("u:999")
        .arg("x")
        .ignore()
        .cmd("SET")
        .arg("user:1")
        .arg("x")
        .ignore()
        .cmd("DEL")
        .arg("u:3")
        .ignore()
        .cmd("HSET")
        .arg("u:bighash")
        .arg(17)
        .arg("changed")
        .ignore()
        .query_async::<()>(&mut t)
        .await?;
    let expected: Found = [
        (b"user:7".to_vec(), DifferenceKind::Value),
        (b"user:bighash".to_vec(), DifferenceKind::Value),
        (b"u:999".to_vec(), DifferenceKind::ExtraOnTarget),
        (b"user:1".to_vec(), DifferenceKind::ExtraOnTarget),
        (b"user:3".to_vec(), DifferenceKind::MissingOnTarget),
    ]
    .into_iter()
    .map(|(k, kind)| (0, k, kind))
    .collect();
    for rounds in [1, 2] {
        let options = CompareOptions {
            rounds,
            round_pause: std::time::Duration::from_millis(50),
            ..options.clone()
        };
        let report = compare(&src, &dst, &options).await?;
        assert_eq!(found(&report), expected, "rounds {rounds}: {report}");
        assert_eq!(report.target_pass.get(&0), Some(&TargetPass::Scanned));
        let detail = |key: &[u8]| {
            report
                .differences
                .iter()
                .find(|d| d.key == key)
                .map(|d| d.detail.clone())
                .unwrap_or_default()
        };
        assert!(
            detail(b"user:7").contains("on the target \"u:7\""),
            "{report}"
        );
        assert!(
            detail(b"u:999").contains("target key; source name \"user:999\""),
            "{report}"
        );
        assert!(detail(b"user:1").contains("no source key"), "{report}");
        if rounds == 2 {
            assert_eq!(report.round_differences, vec![5, 5], "{report}");
        }
    }
    Ok(())
}
