//! Strings beyond `long_string_bytes` are compared in GETRANGE windows (never read
//! whole) and reported exactly as whole reads report them; with 0, by MGET whole.
//! Empty strings, a string on one side only and a key list go the same way.

use std::collections::BTreeSet;

use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, CompareOptions, DifferenceKind, Report};

/// A key, its value on the source and on the target (None: absent there).
type Written<'a> = (&'a str, &'a [u8], Option<&'a [u8]>);

fn found(report: &Report) -> BTreeSet<(Vec<u8>, DifferenceKind)> {
    report
        .differences
        .iter()
        .map(|d| (d.key.clone(), d.kind))
        .collect()
}

#[tokio::test]
async fn long_strings_in_windows_are_reported_as_whole_reads_are() -> anyhow::Result<()> {
    let source = RedisServer::start(ServerConfig::new(RedisVersion::V6_2)).await?;
    let target = RedisServer::start(ServerConfig::new(RedisVersion::V8_2)).await?;
    let long: Vec<u8> = (0..100u8).collect();
    let mut last = long.clone();
    last[99] ^= 1;
    let mut first = long.clone();
    first[0] ^= 1;
    let strings: [Written; 7] = [
        ("equal", &long, Some(&long)),
        ("last-byte", &long, Some(&last)),
        ("first-byte", &long, Some(&first)),
        ("longer", &long, Some(&long[..99])),
        ("empty", b"", Some(b"")),
        ("empty-only-on-source", b"", None),
        ("short", b"abc", Some(b"abc")),
    ];
    let (mut s, mut t) = (source.client().await?, target.client().await?);
    for (key, on_source, on_target) in strings {
        redis::cmd("SET")
            .arg(key)
            .arg(on_source)
            .query_async::<()>(&mut s)
            .await?;
        if let Some(value) = on_target {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query_async::<()>(&mut t)
                .await?;
        }
    }
    let expected: BTreeSet<(Vec<u8>, DifferenceKind)> = [
        ("last-byte", DifferenceKind::Value),
        ("first-byte", DifferenceKind::Value),
        ("longer", DifferenceKind::Value),
        ("empty-only-on-source", DifferenceKind::MissingOnTarget),
    ]
    .into_iter()
    .map(|(k, kind)| (k.as_bytes().to_vec(), kind))
    .collect();
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    for (limit, windowed) in [(16, 4), (99, 4), (100, 0), (0, 0)] {
        let options = CompareOptions {
            long_string_bytes: limit,
            ..CompareOptions::default()
        };
        let report = compare(&src, &dst, &options).await?;
        assert_eq!(found(&report), expected, "limit {limit}: {report}");
        assert_eq!(report.strings_windowed, windowed, "limit {limit}: {report}");
        assert_eq!(report.coverage.compared, [0], "{report}");
    }
    Ok(())
}
