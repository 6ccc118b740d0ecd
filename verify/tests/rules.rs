//! Verify under the declarative rules of issue 17 (key filters by glob and regex,
//! type filters, TTL rules, dropped hash fields, renames by regex) against real
//! servers: each target is built by hand, with plain writes, as the transform of its
//! source; verify must call it consistent under the rules (and not without them),
//! then find and name one broken thing per rule.

use std::collections::BTreeSet;
use std::time::Duration;

use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use lockstep_verify::{compare, CompareOptions, DifferenceKind, Report, RuleSpec, TtlRule};

type Found = BTreeSet<(u32, Vec<u8>, DifferenceKind)>;

fn found(report: &Report) -> Found {
    report
        .differences
        .iter()
        .map(|d| (d.db, d.key.clone(), d.kind))
        .collect()
}

fn expect(db: u32, keys: &[(&[u8], DifferenceKind)]) -> Found {
    keys.iter()
        .map(|(k, kind)| (db, k.to_vec(), *kind))
        .collect()
}

/// The detail of the difference of `key`.
fn detail(report: &Report, key: &[u8]) -> String {
    report
        .differences
        .iter()
        .find(|d| d.key == key)
        .map(|d| d.detail.clone())
        .unwrap_or_default()
}

/// A command from its arguments.
fn cmd(args: &[&[u8]]) -> redis::Cmd {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap_or("PING"));
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// Runs `cmds` in database `db` of `server`, in one pipeline.
async fn run(server: &RedisServer, db: u32, cmds: &[redis::Cmd]) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    pipe.cmd("SELECT").arg(db).ignore();
    for c in cmds {
        pipe.add_command(c.clone()).ignore();
    }
    pipe.query_async::<()>(&mut server.client().await?).await?;
    Ok(())
}

fn small(options: CompareOptions) -> CompareOptions {
    CompareOptions {
        workers: 2,
        batch_keys: 9,
        chunk_elements: 100,
        ..options
    }
}

async fn servers(version: RedisVersion) -> anyhow::Result<(RedisServer, RedisServer)> {
    let config = || ServerConfig::new(version).set("databases", "32");
    Ok((
        RedisServer::start(config()).await?,
        RedisServer::start(config()).await?,
    ))
}

/// `--match user:*`, `--key-regex` for binary keys and `--prefix order:` (any
/// include rule keeps a key), `--exclude-match` and `--exclude-key-regex` (any
/// exclude rule drops it); the target holds only the kept keys.
#[tokio::test]
async fn key_filters_by_glob_and_regex_decide_the_scope_on_both_sides() -> anyhow::Result<()> {
    let (source, target) = servers(RedisVersion::V7_0).await?;
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for i in 0..30 {
        let user = format!("user:{i}").into_bytes();
        if (20..30).contains(&i) {
            dropped.push(user);
        } else {
            kept.push(user);
        }
        dropped.push(format!("junk:{i}").into_bytes());
    }
    for i in 0..6 {
        dropped.push(format!("user:tmp:{i}").into_bytes());
        kept.push(format!("order:{i}").into_bytes());
        kept.push([&b"\xffbin:"[..], &[i as u8, 0xfe]].concat());
    }
    let set = |k: &[u8]| cmd(&[b"SET", k, b"v"]);
    let all: Vec<redis::Cmd> = kept.iter().chain(&dropped).map(|k| set(k)).collect();
    run(&source, 0, &all).await?;
    let only_kept: Vec<redis::Cmd> = kept.iter().map(|k| set(k)).collect();
    run(&target, 0, &only_kept).await?;
    run(&target, 0, &[set(b"other:1")]).await?; // not kept by name: another task's
    let options = small(CompareOptions {
        include_prefixes: vec![b"order:".to_vec()],
        rules: RuleSpec {
            match_globs: vec!["user:*".into()],
            key_regex: vec![r"(?-u)^\xFFbin:".into()],
            exclude_match: vec!["user:tmp:*".into()],
            exclude_key_regex: vec![r"^user:2\d$".into()],
            ..RuleSpec::default()
        },
        ..CompareOptions::default()
    });
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let report = compare(&src, &dst, &options).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.keys_compared, kept.len() as u64, "{report}");
    // One glob as the only include rule (SCAN ... MATCH on both sides): the
    // `user:` keys, less the excluded ones.
    let one_glob = CompareOptions {
        include_prefixes: Vec::new(),
        rules: RuleSpec {
            key_regex: Vec::new(),
            ..options.rules.clone()
        },
        ..options.clone()
    };
    let report = compare(&src, &dst, &one_glob).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.keys_compared, 20, "{report}");
    // Without the rules the target lacks keys (the old verify's answer).
    let plain = small(CompareOptions::default());
    assert!(!compare(&src, &dst, &plain).await?.is_consistent());

    // An excluded name on the target is out of scope; a kept name only on the target
    // is extra; a kept key gone from the target is missing (a binary key too).
    let binary = [&b"\xffbin:"[..], &[3u8, 0xfe]].concat();
    run(
        &target,
        0,
        &[
            set(b"user:tmp:1"),
            set(b"user:25"),
            set(b"user:99"),
            cmd(&[b"DEL", &binary]),
        ],
    )
    .await?;
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(
        found(&report),
        expect(
            0,
            &[
                (b"user:99", DifferenceKind::ExtraOnTarget),
                (&binary, DifferenceKind::MissingOnTarget)
            ]
        ),
        "{report}"
    );
    let report = compare(&src, &dst, &one_glob).await?;
    assert_eq!(
        found(&report),
        expect(0, &[(b"user:99", DifferenceKind::ExtraOnTarget)]),
        "{report}"
    );
    Ok(())
}

/// `--types string,hash,set --exclude-types set` in database 20: lists, sets and
/// streams only on the source are not missing; a list only on the target is not
/// extra; a kept type is compared as ever.
#[tokio::test]
async fn type_filters_leave_other_types_out_of_scope() -> anyhow::Result<()> {
    let (source, target) = servers(RedisVersion::V8_2).await?;
    let mut both = Vec::new();
    let mut source_only = Vec::new();
    for i in 0..12 {
        let n = i.to_string().into_bytes();
        both.push(cmd(&[b"SET", format!("s:{i}").as_bytes(), &n]));
        both.push(cmd(&[b"HSET", format!("h:{i}").as_bytes(), b"f", &n]));
        source_only.push(cmd(&[b"RPUSH", format!("l:{i}").as_bytes(), &n]));
        source_only.push(cmd(&[b"SADD", format!("set:{i}").as_bytes(), &n]));
        source_only.push(cmd(&[b"XADD", format!("x:{i}").as_bytes(), b"*", b"f", &n]));
    }
    run(&source, 20, &[both.clone(), source_only].concat()).await?;
    run(&target, 20, &both).await?;
    let options = small(CompareOptions {
        rules: RuleSpec {
            types: vec!["string,hash".into(), "set".into()],
            exclude_types: vec!["set".into()],
            ..RuleSpec::default()
        },
        ..CompareOptions::default()
    });
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let report = compare(&src, &dst, &options).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.coverage.compared, vec![20], "{report}");
    assert_eq!(report.keys_compared, 24, "{report}");
    assert!(!compare(&src, &dst, &small(CompareOptions::default()))
        .await?
        .is_consistent());

    run(
        &target,
        20,
        &[
            cmd(&[b"RPUSH", b"l:extra", b"1"]),
            cmd(&[b"XADD", b"x:extra", b"*", b"f", b"1"]),
            cmd(&[b"SET", b"s:extra", b"1"]),
            cmd(&[b"DEL", b"h:3"]),
            cmd(&[b"DEL", b"s:4"]),
            cmd(&[b"RPUSH", b"s:4", b"1"]),
        ],
    )
    .await?;
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(
        found(&report),
        expect(
            20,
            &[
                (b"s:extra", DifferenceKind::ExtraOnTarget),
                (b"h:3", DifferenceKind::MissingOnTarget),
                (b"s:4", DifferenceKind::Type),
            ]
        ),
        "{report}"
    );
    // One type kept: SCAN ... TYPE hash names only hashes, on both sides; the
    // retyped s:4 and the extra string are out of scope, a hash only on the target
    // is extra, a string under a kept hash's name is a type difference.
    run(
        &target,
        20,
        &[
            cmd(&[b"HSET", b"h:extra", b"f", b"1"]),
            cmd(&[b"DEL", b"h:5"]),
            cmd(&[b"SET", b"h:5", b"5"]),
        ],
    )
    .await?;
    let hashes = CompareOptions {
        rules: RuleSpec {
            types: vec!["hash".into()],
            ..RuleSpec::default()
        },
        ..options.clone()
    };
    let report = compare(&src, &dst, &hashes).await?;
    assert_eq!(
        found(&report),
        expect(
            20,
            &[
                (b"h:extra", DifferenceKind::ExtraOnTarget),
                (b"h:3", DifferenceKind::MissingOnTarget),
                (b"h:5", DifferenceKind::Type),
            ]
        ),
        "{report}"
    );
    assert_eq!(report.keys_compared, 12, "{report}");
    Ok(())
}

/// Sets key `k:i`'s value on `server`, and its TTL in ms (None: persistent).
async fn ttl_keys(server: &RedisServer, ttls: &[Option<u64>]) -> anyhow::Result<()> {
    let mut cmds = Vec::new();
    for (i, ttl) in ttls.iter().enumerate() {
        let key = format!("k:{i}").into_bytes();
        cmds.push(cmd(&[b"SET", &key, b"v"]));
        cmds.push(cmd(&[b"HSET", &[&key[..], b":h"].concat(), b"f", b"v"]));
        if let Some(ms) = ttl {
            let ms = ms.to_string().into_bytes();
            cmds.push(cmd(&[b"PEXPIRE", &key, &ms]));
            cmds.push(cmd(&[b"PEXPIRE", &[&key[..], b":h"].concat(), &ms]));
        }
    }
    run(server, 0, &cmds).await
}

const MIN: u64 = 60_000;

/// A TTL rule, the target TTLs it writes (of `k:0` to `k:3`), TTLs that break it
/// on `k:3`, and the words that name it.
type TtlCase = (TtlRule, [Option<u64>; 4], [Option<u64>; 4], &'static str);

/// The three TTL rules: a target written as each rule writes is consistent (and
/// not under the plain rule); an expiry that breaks the rule is a TTL difference
/// naming it.
#[tokio::test]
async fn ttl_rules_judge_target_expiries_as_the_sync_wrote_them() -> anyhow::Result<()> {
    let (source, target) = servers(RedisVersion::V7_0).await?;
    let day = 24 * 60 * MIN;
    // Source: a day, 10 minutes, persistent, a day.
    ttl_keys(&source, &[Some(day), Some(10 * MIN), None, Some(day)]).await?;
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let check = |rule: TtlRule| {
        small(CompareOptions {
            ttl_rule: rule,
            ..CompareOptions::default()
        })
    };
    let cases: [TtlCase; 3] = [
        (
            TtlRule::Remove,
            [None, None, None, None],
            [None, None, None, Some(day)],
            "--ttl-remove: no expiry expected",
        ),
        (
            TtlRule::Cap(Duration::from_secs(3600)),
            [Some(60 * MIN), Some(10 * MIN), None, Some(59 * MIN)],
            [Some(60 * MIN), Some(10 * MIN), None, Some(62 * MIN)],
            "--ttl-cap 1h: an expiry at most",
        ),
        (
            TtlRule::Set(Duration::from_secs(1800)),
            [Some(30 * MIN); 4],
            [Some(30 * MIN), Some(30 * MIN), Some(30 * MIN), None],
            "--ttl-set 30m: an expiry at most",
        ),
    ];
    for (rule, good, bad, named) in cases {
        run(&target, 0, &[cmd(&[b"FLUSHALL"])]).await?;
        ttl_keys(&target, &good).await?;
        let report = compare(&src, &dst, &check(rule)).await?;
        assert!(report.is_consistent(), "{rule:?}: {report}");
        assert_eq!(report.keys_compared, 8, "{report}");
        let plain = compare(&src, &dst, &check(TtlRule::Keep)).await?;
        assert!(!plain.is_consistent(), "{rule:?} is not the plain rule");
        run(&target, 0, &[cmd(&[b"FLUSHALL"])]).await?;
        ttl_keys(&target, &bad).await?;
        let report = compare(&src, &dst, &check(rule)).await?;
        assert_eq!(
            found(&report),
            expect(
                0,
                &[
                    (b"k:3", DifferenceKind::Ttl),
                    (b"k:3:h", DifferenceKind::Ttl)
                ]
            ),
            "{rule:?}: {report}"
        );
        assert!(detail(&report, b"k:3").contains(named), "{report}");
    }
    Ok(())
}

/// `--drop-hash-field ssn --drop-hash-field 'user:*=email*'` in database 17: small
/// hashes (DUMP would differ), a big hash (beyond the DUMP bound: digests in chunks)
/// and a binary key, compared without their dropped fields; a hash with only dropped
/// fields is absent on the target.
#[tokio::test]
async fn dropped_hash_fields_are_left_out_of_the_source_side() -> anyhow::Result<()> {
    let (source, target) = servers(RedisVersion::V8_2).await?;
    let binary = b"user:\xfe\x00".to_vec();
    let (mut s, mut t) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let user = format!("user:{i}").into_bytes();
        let order = format!("order:{i}").into_bytes();
        let n = i.to_string().into_bytes();
        s.push(cmd(&[
            b"HSET", &user, b"name", &n, b"email", b"e", b"email2", b"e", b"ssn", b"1",
        ]));
        t.push(cmd(&[b"HSET", &user, b"name", &n]));
        s.push(cmd(&[
            b"HSET", &order, b"total", &n, b"email", b"e", b"ssn", b"2",
        ]));
        t.push(cmd(&[b"HSET", &order, b"total", &n, b"email", b"e"]));
    }
    s.push(cmd(&[b"HSET", &binary, b"\xff", b"\x00", b"ssn", b"3"]));
    t.push(cmd(&[b"HSET", &binary, b"\xff", b"\x00"]));
    s.push(cmd(&[b"HSET", b"only:ssn", b"ssn", b"4"]));
    // Field expiries of kept fields are compared (HPEXPIRETIME: 8.2 on both sides).
    s.push(cmd(&[
        b"HSET",
        b"user:ttl",
        b"name",
        b"n",
        b"email",
        b"e",
        b"ssn",
        b"6",
    ]));
    t.push(cmd(&[b"HSET", b"user:ttl", b"name", b"n"]));
    for side in [&mut s, &mut t] {
        side.push(cmd(&[
            b"HPEXPIREAT",
            b"user:ttl",
            b"4102444800000",
            b"FIELDS",
            b"1",
            b"name",
        ]));
    }
    s.push(cmd(&[b"HSET", b"user:big", b"email", b"x", b"ssn", b"5"]));
    for i in 0..3000 {
        let n = i.to_string().into_bytes();
        s.push(cmd(&[b"HSET", b"user:big", &n, &n]));
        t.push(cmd(&[b"HSET", b"user:big", &n, &n]));
    }
    run(&source, 17, &s).await?;
    run(&target, 17, &t).await?;
    let options = small(CompareOptions {
        rules: RuleSpec {
            drop_hash_field: vec!["ssn".into(), "user:*=email*".into()],
            ..RuleSpec::default()
        },
        ..CompareOptions::default()
    });
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let report = compare(&src, &dst, &options).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.keys_compared, 44, "{report}");
    assert!(report.digests_compared >= 43, "{report}");
    let plain = compare(&src, &dst, &small(CompareOptions::default())).await?;
    assert!(!plain.is_consistent());
    assert!(found(&plain).contains(&(17, b"only:ssn".to_vec(), DifferenceKind::MissingOnTarget)));

    // A dropped field present, the emptied hash present, a dropped field in the big
    // hash, a kept field changed (binary), a hash with kept fields missing, a kept
    // field's expiry moved.
    run(
        &target,
        17,
        &[
            cmd(&[b"HSET", b"user:3", b"ssn", b"1"]),
            cmd(&[b"HSET", b"only:ssn", b"ssn", b"4"]),
            cmd(&[b"HSET", b"user:big", b"email", b"x"]),
            cmd(&[b"HSET", &binary, b"\xff", b"\x01"]),
            cmd(&[b"DEL", b"order:2"]),
            cmd(&[
                b"HPEXPIREAT",
                b"user:ttl",
                b"4102444900000",
                b"FIELDS",
                b"1",
                b"name",
            ]),
        ],
    )
    .await?;
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(
        found(&report),
        expect(
            17,
            &[
                (b"user:3", DifferenceKind::Value),
                (b"only:ssn", DifferenceKind::Value),
                (b"user:big", DifferenceKind::Value),
                (&binary, DifferenceKind::Value),
                (b"order:2", DifferenceKind::MissingOnTarget),
                (b"user:ttl", DifferenceKind::Value),
            ]
        ),
        "{report}"
    );
    assert!(
        detail(&report, b"only:ssn").contains("every field"),
        "{report}"
    );
    assert!(
        detail(&report, b"user:3").contains("source 1 elements, target 2")
            && detail(&report, b"user:3").contains("--drop-hash-field"),
        "{report}"
    );
    assert!(
        detail(&report, b"order:2").contains("2 fields kept"),
        "{report}"
    );
    Ok(())
}

/// `--rename-regex` rules (with captures reordered, a binary capture) after a
/// `--rename-prefix` rule: consistent when the target holds the images; extra,
/// missing and unreachable target names found and named.
#[tokio::test]
async fn renames_by_regex_are_compared_with_their_images() -> anyhow::Result<()> {
    let (source, target) = servers(RedisVersion::V7_0).await?;
    let (mut s, mut t) = (Vec::new(), Vec::new());
    let mut pair = |from: Vec<u8>, to: Vec<u8>| {
        s.push(cmd(&[b"SET", &from, &from]));
        t.push(cmd(&[b"SET", &to, &from]));
    };
    for i in 0..15 {
        pair(
            format!("user:{i}").into_bytes(),
            format!("u:{i}").into_bytes(),
        );
        pair(
            format!("cart:{i}:eu").into_bytes(),
            format!("eu/cart/{i}").into_bytes(),
        );
        pair(
            format!("order:{i}").into_bytes(),
            format!("o:{i}").into_bytes(),
        );
        pair(
            [&b"bin:\xff"[..], &[i as u8]].concat(),
            [&b"b/\xff"[..], &[i as u8]].concat(),
        );
        pair(
            format!("plain:{i}").into_bytes(),
            format!("plain:{i}").into_bytes(),
        );
    }
    // Not matched by `^user:(\d+)$`: keeps its name.
    pair(b"user:abc".to_vec(), b"user:abc".to_vec());
    run(&source, 0, &s).await?;
    run(&target, 0, &t).await?;
    let options = small(CompareOptions {
        renames: vec![(b"order:".to_vec(), b"o:".to_vec())],
        rules: RuleSpec {
            rename_regex: vec![
                (r"^user:(\d+)$".into(), "u:$1".into()),
                (r"cart:(\d+):(\w+)".into(), "$2/cart/${1}".into()),
                (r"bin:((?s-u:.)+)".into(), "b/$1".into()),
            ],
            ..RuleSpec::default()
        },
        ..CompareOptions::default()
    });
    let (src, dst) = (source.redis_client()?, target.redis_client()?);
    let report = compare(&src, &dst, &options).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.keys_compared, 76, "{report}");
    let scanned = CompareOptions {
        rules: RuleSpec {
            match_globs: vec!["*".into()],
            ..options.rules.clone()
        },
        ..options.clone()
    };
    let report = compare(&src, &dst, &scanned).await?;
    assert!(report.is_consistent(), "the target pass: {report}");
    assert_eq!(report.target_keys_checked, 76, "{report}");
    let prefixes_only = CompareOptions {
        rules: RuleSpec::default(),
        ..options.clone()
    };
    assert!(!compare(&src, &dst, &prefixes_only).await?.is_consistent());

    run(
        &target,
        0,
        &[
            cmd(&[b"SET", b"u:abc", b"x"]),
            cmd(&[b"SET", b"u:77", b"x"]),
            cmd(&[b"SET", b"user:5", b"x"]),
            cmd(&[b"DEL", b"eu/cart/3"]),
            cmd(&[b"SET", b"b/\xff\x04", b"changed"]),
        ],
    )
    .await?;
    let report = compare(&src, &dst, &options).await?;
    assert_eq!(
        found(&report),
        expect(
            0,
            &[
                (b"u:abc", DifferenceKind::ExtraOnTarget),
                (b"u:77", DifferenceKind::ExtraOnTarget),
                (b"user:5", DifferenceKind::ExtraOnTarget),
                (b"cart:3:eu", DifferenceKind::MissingOnTarget),
                (b"bin:\xff\x04", DifferenceKind::Value),
            ]
        ),
        "{report}"
    );
    assert!(
        detail(&report, b"u:77").contains("source name \"user:77\""),
        "{report}"
    );
    assert!(
        detail(&report, b"user:5").contains("no source key"),
        "{report}"
    );
    assert!(
        detail(&report, b"cart:3:eu").contains("\"eu/cart/3\""),
        "{report}"
    );
    Ok(())
}

/// `--dbs 3 --route-db 'session:*=5' --route-db 'cache:*=6'`: source database 3 is
/// spread over target databases 0 (mapped with --map-db 3:0), 5 and 6. Keys of
/// another task in 5 and 6, and a session key left in 0, are not the sync's: not
/// extra. A routed key missing from its database, a value differing there and an
/// extra routed key are found, each named by its source database and key.
#[tokio::test]
async fn routed_keys_are_read_in_their_database() -> anyhow::Result<()> {
    let (source, target) = servers(RedisVersion::V7_0).await?;
    let set = |k: &str, v: &str| cmd(&[b"SET", k.as_bytes(), v.as_bytes()]);
    let mut on_source = Vec::new();
    let (mut home, mut five, mut six) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..20 {
        for (prefix, into) in [
            ("user", &mut home),
            ("session", &mut five),
            ("cache", &mut six),
        ] {
            let key = format!("{prefix}:{i}");
            on_source.push(set(&key, "v"));
            into.push(set(&key, "v"));
        }
    }
    run(&source, 3, &on_source).await?;
    run(&source, 0, &[set("session:0", "not the source's db")]).await?;
    home.push(set("session:stray", "left by someone"));
    five.push(set("other:1", "another task's"));
    six.push(set("session:1", "routed to 5, so not the sync's in 6"));
    run(&target, 0, &home).await?;
    run(&target, 5, &five).await?;
    run(&target, 6, &six).await?;
    let options = small(CompareOptions {
        dbs: vec![3],
        db_map: vec![(3, 0)],
        rules: RuleSpec {
            route_db: vec![("session:*".into(), 5), ("cache:*".into(), 6)],
            ..RuleSpec::default()
        },
        ..CompareOptions::default()
    });
    let report = compare(&source.redis_client()?, &target.redis_client()?, &options).await?;
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.keys_compared, 60, "{report}");
    let plain = CompareOptions {
        rules: RuleSpec::default(),
        ..options.clone()
    };
    let unrouted = compare(&source.redis_client()?, &target.redis_client()?, &plain).await?;
    assert!(!unrouted.is_consistent(), "without the routes: {unrouted}");
    run(
        &target,
        5,
        &[
            cmd(&[b"DEL", b"session:3"]),
            set("session:4", "changed"),
            set("session:99", "v"),
        ],
    )
    .await?;
    run(&target, 6, &[cmd(&[b"DEL", b"cache:7"])]).await?;
    let report = compare(&source.redis_client()?, &target.redis_client()?, &options).await?;
    use DifferenceKind::*;
    let mut wanted = expect(
        3,
        &[
            (b"session:3", MissingOnTarget),
            (b"session:4", Value),
            (b"session:99", ExtraOnTarget),
            (b"cache:7", MissingOnTarget),
        ],
    );
    let got = found(&report);
    wanted.retain(|w| !got.contains(w));
    assert!(wanted.is_empty(), "not found: {wanted:?}; report: {report}");
    assert_eq!(got.len(), 4, "{report}");
    let without_dbs = CompareOptions {
        dbs: Vec::new(),
        ..options
    };
    let refused = compare(
        &source.redis_client()?,
        &target.redis_client()?,
        &without_dbs,
    )
    .await;
    assert!(refused.is_err_and(|e| e.to_string().contains("--dbs")));
    Ok(())
}
