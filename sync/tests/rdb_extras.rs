//! Real-server checks of what the data set does not cover: function
//! libraries, quicklist plain nodes, LFU/LRU metadata, cluster slot info, raw
//! object passthrough to RESTORE, and the batch bound on a big list.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lockstep_sync::rdb::{dump::wrap_raw, Event, Item, ParseOptions, RdbParser, RdbType, Value};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;

async fn cmd(c: &mut MultiplexedConnection, args: &[&str]) -> Result<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.with_context(|| args.join(" "))
}

fn parse(server: &RedisServer, opts: ParseOptions) -> Result<Vec<Item>> {
    let f = std::fs::File::open(server.rdb_path())?;
    let mut p = RdbParser::new(std::io::BufReader::new(f), opts);
    let mut out = Vec::new();
    while let Some(i) = p.next_item()? {
        out.push(i);
    }
    Ok(out)
}

fn find<'a>(items: &'a [Item], key: &str) -> Result<&'a lockstep_sync::rdb::Key> {
    items
        .iter()
        .find_map(|i| match i {
            Item::Key(k) if k.meta.key == key.as_bytes() => Some(k),
            _ => None,
        })
        .with_context(|| format!("key {key} not in the RDB"))
}

const LIBRARY: &str = "#!lua name=rdbtest\nredis.register_function('rdbtest_echo', function(keys, args) return args[1] end)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_plain_nodes_lfu_and_raw_passthrough() -> Result<()> {
    for version in [RedisVersion::V7_0, RedisVersion::V8_2] {
        let server =
            RedisServer::start(ServerConfig::new(version).set("maxmemory-policy", "allkeys-lfu"))
                .await?;
        let mut c = server.client().await?;
        cmd(&mut c, &["FUNCTION", "LOAD", LIBRARY]).await?;
        // Elements of at least 100 bytes go to plain quicklist nodes.
        cmd(&mut c, &["DEBUG", "QUICKLIST-PACKED-THRESHOLD", "100"]).await?;
        let big = "x".repeat(300);
        cmd(&mut c, &["RPUSH", "plain", "a", &big, "b", &big, "c"]).await?;
        cmd(&mut c, &["SET", "hot", "1"]).await?;
        for _ in 0..50 {
            cmd(&mut c, &["GET", "hot"]).await?;
        }
        cmd(&mut c, &["SAVE"]).await?;
        let items = parse(
            &server,
            ParseOptions {
                capture_raw: true,
                ..ParseOptions::default()
            },
        )?;

        let functions: Vec<&Vec<u8>> = items
            .iter()
            .filter_map(|i| match i {
                Item::Event(Event::Function { code }) => Some(code),
                _ => None,
            })
            .collect();
        assert_eq!(functions, vec![&LIBRARY.as_bytes().to_vec()], "{version:?}");

        let plain = find(&items, "plain")?;
        assert_eq!(plain.meta.rdb_type, RdbType::ListQuicklist2);
        let want: Vec<Vec<u8>> = ["a", &big, "b", &big, "c"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(plain.value, Value::List(want));

        let hot = find(&items, "hot")?;
        assert!(
            hot.meta.lfu_freq.is_some_and(|f| f > 0),
            "{version:?}: LFU counter {:?}",
            hot.meta.lfu_freq
        );

        // Raw objects RESTORE unchanged on the same version.
        let rdb_version = if version == RedisVersion::V7_0 {
            10
        } else {
            12
        };
        for name in ["plain", "hot"] {
            let k = find(&items, name)?;
            let payload = wrap_raw(k.raw.as_deref().context("raw captured")?, rdb_version);
            let dest = format!("{name}:copy");
            redis::cmd("RESTORE")
                .arg(&dest)
                .arg(0)
                .arg(&payload)
                .query_async::<()>(&mut c)
                .await?;
            let orig: Vec<u8> = redis::cmd("DUMP").arg(name).query_async(&mut c).await?;
            let copy: Vec<u8> = redis::cmd("DUMP").arg(&dest).query_async(&mut c).await?;
            assert_eq!(
                orig, copy,
                "{version:?}: {name} restored from raw bytes differs"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lru_idle_is_read() -> Result<()> {
    let server = RedisServer::start(
        ServerConfig::new(RedisVersion::V6_2).set("maxmemory-policy", "allkeys-lru"),
    )
    .await?;
    let mut c = server.client().await?;
    cmd(&mut c, &["SET", "k", "v"]).await?;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    cmd(&mut c, &["SAVE"]).await?;
    let items = parse(&server, ParseOptions::default())?;
    let k = find(&items, "k")?;
    assert!(
        k.meta.lru_idle_secs.is_some_and(|s| s >= 1),
        "idle {:?}",
        k.meta.lru_idle_secs
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_info_in_cluster_mode() -> Result<()> {
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V8_2).cluster(true)).await?;
    let mut c = server.client().await?;
    cmd(&mut c, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(()) = redis::cmd("SET")
            .arg("{a}k")
            .arg("v")
            .query_async::<()>(&mut c)
            .await
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("cluster did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cmd(&mut c, &["SET", "{b}k", "v"]).await?;
    cmd(&mut c, &["SAVE"]).await?;
    let items = parse(&server, ParseOptions::default())?;
    let slots: Vec<(u64, u64)> = items
        .iter()
        .filter_map(|i| match i {
            Item::Event(Event::SlotInfo { slot, size, .. }) => Some((*slot, *size)),
            _ => None,
        })
        .collect();
    // CLUSTER KEYSLOT {a} = 15495, {b} = 3300.
    assert!(
        slots.contains(&(15495, 1)) && slots.contains(&(3300, 1)),
        "slot info {slots:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_list_streams_in_bounded_batches() -> Result<()> {
    let server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut c = server.client().await?;
    let n = 200_000usize;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg("big");
        for i in chunk {
            cmd.arg(format!("element-{i}"));
        }
        cmd.query_async::<()>(&mut c).await?;
    }
    cmd(&mut c, &["SAVE"]).await?;
    let mut opts = ParseOptions::default();
    opts.limits.batch_elements_max = 1000;
    let f = std::fs::File::open(server.rdb_path())?;
    let mut p = RdbParser::new(f, opts);
    let (mut batches, mut total, mut next) = (0, 0, 0usize);
    while let Some(ev) = p.next_event()? {
        if let Event::Elements(lockstep_sync::rdb::Elements::List(v)) = ev {
            // A batch may exceed the limit by at most one quicklist node.
            assert!(v.len() < 1000 + 1000, "batch of {}", v.len());
            for e in &v {
                assert_eq!(e, format!("element-{next}").as_bytes());
                next += 1;
            }
            total += v.len();
            batches += 1;
        }
    }
    assert_eq!(total, n);
    assert!(batches >= n / 2000, "{batches} batches");
    Ok(())
}
