//! The data set on real servers of every version: `OBJECT ENCODING` on the server shows
//! that every encoding the version offers was produced, each key has the type and
//! encoding the report says, HyperLogLogs are sparse and dense as promised, big keys
//! have their size, DBSIZE per database matches the report, and the same seed writes
//! the same values. Written into a Redis Cluster, every key is on the primary that
//! serves its slot (as the server computes it), with the same checks, and every
//! primary holds keys.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use lockstep_testkit::data::{expected_encodings, DataReport, DataSet, DataSpec, Expiry, Family};
use lockstep_testkit::topology::{key_slot, Cluster, ClusterSpec, SLOT_COUNT};
use lockstep_testkit::Run;
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;

/// Small enough for the whole suite's budget, large enough that every db gets every
/// family and the size-dependent families (geo, hash field TTL) get both sizes.
const SCALE: usize = 12;
const BIG_KEY_BYTES: usize = 1 << 20;

async fn select(conn: &mut MultiplexedConnection, db: i64) -> anyhow::Result<()> {
    conn.run_args::<()>(("SELECT", db)).await?;
    Ok(())
}

#[tokio::test]
async fn every_version_gets_every_encoding_it_offers_and_the_counts_the_report_says(
) -> anyhow::Result<()> {
    for version in RedisVersion::WITH_VALKEY {
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        // Keys "about to expire" outlive the checks here; their TTL is checked below.
        let spec = DataSpec::new(11, SCALE)
            .big_keys(BIG_KEY_BYTES)
            .soon_ttl(Duration::from_secs(60));
        let report = DataSet::write(&server.redis_client()?, &spec).await?;
        eprintln!("{report}");
        assert_eq!(
            report.encodings(),
            expected_encodings(version),
            "{version}: report"
        );

        let mut conn = server.client().await?;
        let found = check_every_key(std::slice::from_mut(&mut conn), |_| 0, &report).await?;
        let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
        assert_eq!(
            found,
            expected_encodings(version),
            "{version}: on the server"
        );

        let mut expected_dbs = report.keys_per_db();
        assert_eq!(
            expected_dbs.keys().copied().collect::<Vec<_>>(),
            vec![0, 1, 5, 15],
            "{version}"
        );
        for db in 0..16 {
            select(&mut conn, db).await?;
            let size: usize = conn.run("DBSIZE").await?;
            assert_eq!(
                size,
                expected_dbs.remove(&db).unwrap_or(0),
                "{version}: DBSIZE of db {db}"
            );
        }
        check_big_keys(&mut conn, &report).await?;
    }
    Ok(())
}

/// Checks TYPE, OBJECT ENCODING, PFDEBUG ENCODING and TTL of every key on
/// `conns[route(key)]`; returns the encodings seen on the servers.
async fn check_every_key(
    conns: &mut [MultiplexedConnection],
    route: impl Fn(&[u8]) -> usize,
    report: &DataReport,
) -> anyhow::Result<BTreeSet<String>> {
    let version = report.version;
    let mut found = BTreeSet::new();
    let mut wrong = Vec::new();
    let mut selected = vec![None; conns.len()];
    for key in &report.keys {
        let index = route(&key.key);
        let conn = &mut conns[index];
        if selected[index] != Some(key.db) {
            select(conn, key.db).await?;
            selected[index] = Some(key.db);
        }
        let (key_type, encoding, pttl): (String, Option<String>, i64) = redis::pipe()
            .cmd("TYPE")
            .arg(&key.key)
            .cmd("OBJECT")
            .arg("ENCODING")
            .arg(&key.key)
            .cmd("PTTL")
            .arg(&key.key)
            .query_async(conn)
            .await?;
        let name = String::from_utf8_lossy(&key.key);
        let encoding = encoding.unwrap_or_else(|| "(missing)".into());
        if key_type != key.key_type.name() || encoding != key.encoding {
            wrong.push(format!(
                "{name}: {key_type}/{encoding}, expected {}/{}",
                key.key_type.name(),
                key.encoding
            ));
        }
        let ttl_ok = match key.expiry {
            Expiry::Never => pttl == -1,
            Expiry::Seconds | Expiry::Millis => (3_000_000..=86_400_000).contains(&pttl),
            Expiry::FarFuture => pttl > 2_000_000_000_000,
            Expiry::Soon => (0..=60_000).contains(&pttl),
        };
        if !ttl_ok {
            wrong.push(format!("{name}: PTTL {pttl} for {:?}", key.expiry));
        }
        if let Some(representation) = key.hll_representation {
            let answer: String = conn.run_args(("PFDEBUG", "ENCODING", &key.key)).await?;
            if answer != representation {
                wrong.push(format!("{name}: HLL {answer}, expected {representation}"));
            }
        }
        found.insert(encoding);
    }
    assert!(
        wrong.is_empty(),
        "{version}: {} keys differ from the report, e.g. {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    Ok(found)
}

async fn check_big_keys(
    conn: &mut MultiplexedConnection,
    report: &DataReport,
) -> anyhow::Result<()> {
    let big: BTreeMap<String, usize> = report
        .keys
        .iter()
        .filter(|k| k.family == Family::Big)
        .map(|k| (String::from_utf8_lossy(&k.key).into_owned(), k.elements))
        .collect();
    assert_eq!(big.len(), 5, "a big string, hash, list, set and zset");
    select(conn, 0).await?;
    let (string_len, hash_len, list_len, set_len, zset_len): (usize, usize, usize, usize, usize) =
        redis::pipe()
            .cmd("STRLEN")
            .arg("big:string")
            .cmd("HLEN")
            .arg("big:hash")
            .cmd("LLEN")
            .arg("big:list")
            .cmd("SCARD")
            .arg("big:set")
            .cmd("ZCARD")
            .arg("big:zset")
            .query_async(conn)
            .await?;
    assert_eq!(string_len, BIG_KEY_BYTES);
    for (name, len) in [
        ("big:hash", hash_len),
        ("big:list", list_len),
        ("big:set", set_len),
        ("big:zset", zset_len),
    ] {
        assert_eq!(Some(&len), big.get(name), "{name}");
        assert!(
            (len + 1) * 100 >= BIG_KEY_BYTES,
            "{name} holds {len} elements"
        );
    }
    Ok(())
}

/// `DEBUG DIGEST-VALUE` of every key in `dbs` (content only: no TTLs, no stream groups).
async fn digests(
    conn: &mut MultiplexedConnection,
    dbs: &[i64],
) -> anyhow::Result<BTreeMap<(i64, Vec<u8>), String>> {
    let mut out = BTreeMap::new();
    for &db in dbs {
        select(conn, db).await?;
        let keys: Vec<Vec<u8>> = conn.run("KEYS *").await?;
        for key in keys {
            let digest: Vec<String> = conn.run_args(("DEBUG", "DIGEST-VALUE", &key)).await?;
            out.insert((db, key), digest.concat());
        }
    }
    Ok(out)
}

#[tokio::test]
async fn the_same_seed_writes_the_same_values() -> anyhow::Result<()> {
    let version = RedisVersion::V7_0;
    let spec = DataSpec::new(5, 6).soon_ttl(Duration::from_secs(60));
    let mut all = Vec::new();
    for seed in [5, 5, 6] {
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        let spec = DataSpec {
            seed,
            ..spec.clone()
        };
        DataSet::write(&server.redis_client()?, &spec).await?;
        all.push(digests(&mut server.client().await?, &spec.dbs).await?);
    }
    assert!(!all[0].is_empty());
    assert_eq!(all[0], all[1], "same seed, same keys and values");
    assert_ne!(all[0], all[2], "another seed, other content");
    Ok(())
}

/// A load of millions of elements and five 30 MB keys; run by hand
/// (`cargo test -p lockstep-testkit --test data -- --ignored`) to see the throughput.
#[tokio::test]
#[ignore = "heavy: millions of elements and 150 MB of big keys"]
async fn loads_millions_of_elements_and_big_keys() -> anyhow::Result<()> {
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let spec = DataSpec::new(3, 1000).big_keys(30 << 20);
    let report = DataSet::write(&server.redis_client()?, &spec).await?;
    eprintln!("{report}");
    assert!(report.elements() > 2_000_000);
    let mut conn = server.client().await?;
    let used: u64 = conn.run("MEMORY USAGE big:hash").await?;
    eprintln!("big:hash uses {used} bytes");
    Ok(())
}

#[tokio::test]
async fn keys_about_to_expire_are_gone_after_their_ttl_and_the_rest_stay() -> anyhow::Result<()> {
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let spec = DataSpec::new(8, 16).soon_ttl(Duration::from_millis(300));
    let report = DataSet::write(&server.redis_client()?, &spec).await?;
    let soon = report.expiring_soon_per_db();
    assert!(
        soon.values().sum::<usize>() > 0,
        "some keys are about to expire"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = server.client().await?;
    for (db, written) in report.keys_per_db() {
        select(&mut conn, db).await?;
        // Active expiry may lag; reading each key expires it for sure.
        let soon_keys: Vec<&Vec<u8>> = report
            .keys
            .iter()
            .filter(|k| k.db == db && k.expiry == Expiry::Soon)
            .map(|k| &k.key)
            .collect();
        for key in &soon_keys {
            let exists: bool = conn.run_args(("EXISTS", key)).await?;
            assert!(!exists, "{} outlived its TTL", String::from_utf8_lossy(key));
        }
        let size: usize = conn.run("DBSIZE").await?;
        assert_eq!(size, written - soon_keys.len(), "db {db}");
    }
    Ok(())
}

/// The data set written into a 3-primary cluster of every version: every key is on
/// the primary serving the slot `CLUSTER KEYSLOT` gives it (testkit's own slot
/// function agrees), with the type, encoding and TTL the report says; every primary
/// holds keys, the primaries together hold exactly the report's keys, and their
/// values are those the same spec writes into a standalone server.
#[tokio::test]
async fn a_cluster_gets_every_key_on_the_primary_serving_its_slot() -> anyhow::Result<()> {
    for version in RedisVersion::ALL {
        let cluster = Cluster::start(ClusterSpec::new(ServerConfig::new(version), 3, 0)).await?;
        let spec = DataSpec::new(13, 20)
            .dbs(&[0])
            .big_keys(64 << 10)
            .soon_ttl(Duration::from_secs(60));
        let report = DataSet::write_cluster(&cluster, &spec).await?;
        eprintln!("cluster: {report}");
        assert_eq!(
            report.keys_per_db().keys().copied().collect::<Vec<_>>(),
            vec![0]
        );

        // Slots as the server computes them, and who serves each one.
        let mut any = cluster.nodes[0].client().await?;
        let mut ask = redis::pipe();
        for key in &report.keys {
            ask.cmd("CLUSTER").arg("KEYSLOT").arg(&key.key);
        }
        let slots: Vec<u16> = ask.query_async(&mut any).await?;
        let slot_of: BTreeMap<Vec<u8>, u16> = report
            .keys
            .iter()
            .map(|k| k.key.clone())
            .zip(slots)
            .collect();
        for (key, slot) in &slot_of {
            assert_eq!(key_slot(key), *slot, "{}", String::from_utf8_lossy(key));
        }
        let mut owner = vec![usize::MAX; usize::from(SLOT_COUNT)];
        let mut conns = Vec::new();
        let mut ports = Vec::new();
        for view in cluster.node_views(&cluster.nodes[0]).await? {
            if !view.is_primary {
                continue;
            }
            for &(first, last) in &view.slots {
                for slot in first..=last {
                    owner[usize::from(slot)] = conns.len();
                }
            }
            let node = cluster
                .nodes
                .iter()
                .find(|n| n.port() == view.port)
                .ok_or_else(|| anyhow::anyhow!("primary {} is not ours", view.port))?;
            conns.push(node.client().await?);
            ports.push(view.port);
        }
        assert_eq!(conns.len(), 3);
        let route = |key: &[u8]| owner[usize::from(slot_of[key])];
        let found = check_every_key(&mut conns, route, &report).await?;
        let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
        assert_eq!(
            found,
            expected_encodings(version),
            "{version}: on the cluster"
        );
        assert_eq!(report.encodings(), expected_encodings(version), "{version}");

        let mut total = 0;
        for (conn, port) in conns.iter_mut().zip(&ports) {
            let size: usize = conn.run("DBSIZE").await?;
            let expected = report
                .keys
                .iter()
                .filter(|k| ports[route(&k.key)] == *port)
                .count();
            assert!(size > 0, "{version}: primary {port} holds no key");
            assert_eq!(size, expected, "{version}: DBSIZE of primary {port}");
            total += size;
        }
        assert_eq!(total, report.keys.len(), "{version}");

        // The same spec gives a standalone server the same keys and values.
        let mut on_cluster = BTreeMap::new();
        for conn in &mut conns {
            on_cluster.extend(digests(conn, &[0]).await?);
        }
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        DataSet::write(&server.redis_client()?, &spec).await?;
        let standalone = digests(&mut server.client().await?, &[0]).await?;
        assert_eq!(on_cluster, standalone, "{version}: cluster vs standalone");
    }
    Ok(())
}

#[tokio::test]
async fn a_cluster_takes_database_0_only() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec::new(
        ServerConfig::new(RedisVersion::V7_0),
        1,
        0,
    ))
    .await?;
    let err = DataSet::write_cluster(&cluster, &DataSpec::new(1, 2))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("dbs 0, 1, 5, 15 were accepted"))?;
    assert!(err.to_string().contains("database 0 only"), "{err:#}");
    Ok(())
}
