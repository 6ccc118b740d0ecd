//! Real servers as the oracle for the RDB parser and the DUMP codec.
//!
//! On 6.2, 7.0 and 8.2: the testkit's data set (every type in every encoding
//! the version picks) is written, SAVEd, and
//! 1. the parsed dump.rdb equals the server's own view of every key (type,
//!    value, TTL, stream groups and PELs), and every live written key is in it;
//! 2. `DUMP` of every key decodes to the same value;
//! 3. our DUMP encoding of every value for each RDB version the server reads
//!    (9 = 6.2, 10 = 7.0, 11 = 7.2, 12 = 7.4+) is accepted by `RESTORE`, and
//!    the restored key reads back equal.
//!
//! The fixture files are also loaded into a 7.0 server and compared the same way.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use lockstep_sync::rdb::{
    decode_dump, encode_dump, parse_all, Consumer, HashField, Item, Key, Kind, ParseOptions,
    PendingEntry, Stream, StreamEntry, StreamGroup, StreamId, StreamMeta, Value,
};
use lockstep_testkit::data::{DataSet, DataSpec};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};
use redis::aio::MultiplexedConnection;
use redis::Value as RV;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/rdb");

fn rdb_version(v: RedisVersion) -> u16 {
    v.rdb_version()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn q(conn: &mut MultiplexedConnection, cmd: &mut redis::Cmd) -> Result<RV> {
    cmd.query_async(conn)
        .await
        .with_context(|| format!("{:?}", cmd.args_iter().next()))
}

fn bytes(v: &RV) -> Result<Vec<u8>> {
    Ok(match v {
        RV::BulkString(b) => b.clone(),
        RV::SimpleString(s) => s.clone().into_bytes(),
        RV::Int(i) => i.to_string().into_bytes(),
        RV::Okay => b"OK".to_vec(),
        other => bail!("expected a string, got {other:?}"),
    })
}

fn int(v: &RV) -> Result<i64> {
    Ok(match v {
        RV::Int(i) => *i,
        other => String::from_utf8_lossy(&bytes(other)?).parse()?,
    })
}

fn array(v: &RV) -> Result<&[RV]> {
    match v {
        RV::Array(a) | RV::Set(a) => Ok(a),
        RV::Nil => Ok(&[]),
        other => bail!("expected an array, got {other:?}"),
    }
}

/// A flat [k, v, k, v] reply (or a map) as pairs.
fn pairs(v: &RV) -> Result<Vec<(String, RV)>> {
    if let RV::Map(m) = v {
        return m
            .iter()
            .map(|(k, v)| Ok((String::from_utf8_lossy(&bytes(k)?).into_owned(), v.clone())))
            .collect();
    }
    let a = array(v)?;
    a.chunks(2)
        .map(|c| {
            Ok((
                String::from_utf8_lossy(&bytes(&c[0])?).into_owned(),
                c.get(1).cloned().unwrap_or(RV::Nil),
            ))
        })
        .collect()
}

fn field<'a>(p: &'a [(String, RV)], name: &str) -> Option<&'a RV> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn parse_id(b: &[u8]) -> Result<StreamId> {
    let s = String::from_utf8_lossy(b);
    let (ms, seq) = s.split_once('-').context("stream id")?;
    Ok(StreamId {
        ms: ms.parse()?,
        seq: seq.parse()?,
    })
}

fn score(b: &[u8]) -> Result<f64> {
    let s = String::from_utf8_lossy(b).to_ascii_lowercase();
    Ok(match s.as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => s.parse()?,
    })
}

/// The server's view of `key` in the selected db, in the value model.
async fn server_value(
    c: &mut MultiplexedConnection,
    key: &[u8],
    version: RedisVersion,
) -> Result<Option<Value>> {
    let t = bytes(&q(c, redis::cmd("TYPE").arg(key)).await?)?;
    Ok(Some(match t.as_slice() {
        b"none" => return Ok(None),
        b"string" => Value::String(bytes(&q(c, redis::cmd("GET").arg(key)).await?)?),
        b"list" => Value::List(
            array(&q(c, redis::cmd("LRANGE").arg(key).arg(0).arg(-1)).await?)?
                .iter()
                .map(bytes)
                .collect::<Result<_>>()?,
        ),
        b"set" => Value::Set(
            array(&q(c, redis::cmd("SMEMBERS").arg(key)).await?)?
                .iter()
                .map(bytes)
                .collect::<Result<_>>()?,
        ),
        b"zset" => {
            let r = q(
                c,
                redis::cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await?;
            let a = array(&r)?;
            Value::ZSet(
                a.chunks(2)
                    .map(|p| Ok((bytes(&p[0])?, score(&bytes(&p[1])?)?)))
                    .collect::<Result<_>>()?,
            )
        }
        b"hash" => {
            let r = q(c, redis::cmd("HGETALL").arg(key)).await?;
            let mut fields: Vec<HashField> = array(&r)?
                .chunks(2)
                .map(|p| {
                    Ok(HashField {
                        field: bytes(&p[0])?,
                        value: bytes(&p[1])?,
                        expire_ms: None,
                    })
                })
                .collect::<Result<_>>()?;
            if version >= RedisVersion::V8_2 && !fields.is_empty() {
                let mut cmd = redis::cmd("HPEXPIRETIME");
                cmd.arg(key).arg("FIELDS").arg(fields.len());
                for f in &fields {
                    cmd.arg(&f.field);
                }
                let r = q(c, &mut cmd).await?;
                for (f, t) in fields.iter_mut().zip(array(&r)?) {
                    let t = int(t)?;
                    f.expire_ms = if t > 0 { Some(t as u64) } else { None };
                }
            }
            Value::Hash(fields)
        }
        b"stream" => Value::Stream(Box::new(server_stream(c, key).await?)),
        other => bail!("type {}", String::from_utf8_lossy(other)),
    }))
}

async fn server_stream(c: &mut MultiplexedConnection, key: &[u8]) -> Result<Stream> {
    let r = q(c, redis::cmd("XRANGE").arg(key).arg("-").arg("+")).await?;
    let mut entries = Vec::new();
    for e in array(&r)? {
        let e = array(e)?;
        let id = parse_id(&bytes(&e[0])?)?;
        let fields = array(&e[1])?
            .chunks(2)
            .map(|p| Ok((bytes(&p[0])?, bytes(&p[1])?)))
            .collect::<Result<_>>()?;
        entries.push(StreamEntry { id, fields });
    }
    let info = pairs(&q(c, redis::cmd("XINFO").arg("STREAM").arg(key)).await?)?;
    let meta = StreamMeta {
        length: int(field(&info, "length").context("length")?)? as u64,
        last_id: parse_id(&bytes(
            field(&info, "last-generated-id").context("last id")?,
        )?)?,
        ..StreamMeta::default()
    };
    let mut groups = Vec::new();
    for g in array(&q(c, redis::cmd("XINFO").arg("GROUPS").arg(key)).await?)? {
        let g = pairs(g)?;
        let name = bytes(field(&g, "name").context("name")?)?;
        let last_id = parse_id(&bytes(field(&g, "last-delivered-id").context("last id")?)?)?;
        let pend = q(
            c,
            redis::cmd("XPENDING")
                .arg(key)
                .arg(&name)
                .arg("-")
                .arg("+")
                .arg(1_000_000),
        )
        .await?;
        let mut pel = Vec::new();
        let mut owners: BTreeMap<Vec<u8>, Vec<StreamId>> = BTreeMap::new();
        for p in array(&pend)? {
            let p = array(p)?;
            let id = parse_id(&bytes(&p[0])?)?;
            owners.entry(bytes(&p[1])?).or_default().push(id);
            pel.push(PendingEntry {
                id,
                delivery_time_ms: 0,
                delivery_count: int(&p[3])? as u64,
            });
        }
        let mut consumers = Vec::new();
        for cons in array(&q(c, redis::cmd("XINFO").arg("CONSUMERS").arg(key).arg(&name)).await?)? {
            let cons = pairs(cons)?;
            let cname = bytes(field(&cons, "name").context("consumer name")?)?;
            let pending = owners.remove(&cname).unwrap_or_default();
            consumers.push(Consumer {
                name: cname,
                seen_time_ms: 0,
                active_time_ms: None,
                pending,
            });
        }
        groups.push(StreamGroup {
            name,
            last_id,
            entries_read: None,
            pel,
            consumers,
        });
    }
    Ok(Stream {
        entries,
        meta,
        groups,
    })
}

/// A comparable form: unordered collections sorted, and the stream fields
/// commands cannot show exactly (times, v2 metadata) blanked.
fn canon(v: &Value) -> Value {
    let mut v = v.clone();
    match &mut v {
        Value::Set(s) => s.sort(),
        Value::ZSet(z) => z.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0))),
        Value::Hash(h) => h.sort_by(|a, b| a.field.cmp(&b.field)),
        Value::Stream(s) => {
            s.meta.first_id = None;
            s.meta.max_deleted_id = None;
            s.meta.entries_added = None;
            s.groups.sort_by(|a, b| a.name.cmp(&b.name));
            for g in &mut s.groups {
                g.entries_read = None;
                for p in &mut g.pel {
                    p.delivery_time_ms = 0;
                }
                g.pel.sort_by_key(|p| p.id);
                g.consumers.sort_by(|a, b| a.name.cmp(&b.name));
                for c in &mut g.consumers {
                    c.seen_time_ms = 0;
                    c.active_time_ms = None;
                    c.pending.sort();
                }
            }
        }
        _ => {}
    }
    v
}

async fn select(c: &mut MultiplexedConnection, db: u64) -> Result<()> {
    q(c, redis::cmd("SELECT").arg(db)).await?;
    Ok(())
}

async fn pexpiretime(
    c: &mut MultiplexedConnection,
    key: &[u8],
    version: RedisVersion,
) -> Result<Option<i64>> {
    if version >= RedisVersion::V7_0 {
        let t = int(&q(c, redis::cmd("PEXPIRETIME").arg(key)).await?)?;
        return Ok((t > 0).then_some(t));
    }
    let t = int(&q(c, redis::cmd("PTTL").arg(key)).await?)?;
    Ok((t > 0).then(|| now_ms() + t))
}

/// Compares every parsed key with the server; returns the number compared.
async fn compare_with_server(server: &RedisServer, keys: &[&Key]) -> Result<usize> {
    let version = server.version();
    let mut c = server.client().await?;
    let mut compared = 0;
    for k in keys {
        select(&mut c, k.meta.db).await?;
        let name = String::from_utf8_lossy(&k.meta.key).into_owned();
        let Some(sv) = server_value(&mut c, &k.meta.key, version).await? else {
            // Only keys that expired (or empty ones Redis drops) may be missing.
            let expired = k.meta.expire_ms.is_some_and(|e| e <= now_ms());
            if !(expired || k.value.is_empty()) {
                bail!("{name}: parsed but absent on {version:?}");
            }
            continue;
        };
        if canon(&k.value) != canon(&sv) {
            bail!(
                "{name}: parsed {:?}\n server {:?}",
                canon(&k.value),
                canon(&sv)
            );
        }
        let ttl = pexpiretime(&mut c, &k.meta.key, version).await?;
        match (k.meta.expire_ms, ttl) {
            (None, None) => {}
            (Some(a), Some(b)) if version >= RedisVersion::V7_0 && a == b => {}
            (Some(a), Some(b)) if version < RedisVersion::V7_0 && (a - b).abs() < 5_000 => {}
            other => bail!("{name}: expire parsed/server {other:?}"),
        }
        compared += 1;
    }
    Ok(compared)
}

fn parse_file(path: &Path) -> Result<Vec<Item>> {
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    Ok(parse_all(
        std::io::BufReader::new(f),
        ParseOptions::default(),
    )?)
}

fn keys_of(items: &[Item]) -> Vec<&Key> {
    items
        .iter()
        .filter_map(|i| if let Item::Key(k) = i { Some(k) } else { None })
        .collect()
}

async fn oracle(version: RedisVersion) -> Result<()> {
    let server = RedisServer::start(ServerConfig::new(version)).await?;
    let spec = DataSpec::new(7, 12)
        .big_keys(300_000)
        .soon_ttl(Duration::from_secs(600));
    let report = DataSet::write(&server.redis_client()?, &spec).await?;
    let mut c = server.client().await?;
    q(&mut c, &mut redis::cmd("SAVE")).await?;
    let items = parse_file(&server.rdb_path())?;
    match items.first() {
        Some(Item::Event(lockstep_sync::rdb::Event::Header { version: v })) => {
            assert_eq!(
                *v,
                rdb_version(version) as u32,
                "RDB version written by {version:?}"
            )
        }
        other => bail!("no header: {other:?}"),
    }
    let keys = keys_of(&items);

    // 1. Parsed file == server view; every written key is in the file.
    let n = compare_with_server(&server, &keys).await?;
    let parsed: std::collections::BTreeSet<(u64, Vec<u8>)> = keys
        .iter()
        .map(|k| (k.meta.db, k.meta.key.clone()))
        .collect();
    for w in &report.keys {
        assert!(
            parsed.contains(&(w.db as u64, w.key.clone())),
            "{:?}: written key {:?} not in the RDB",
            version,
            String::from_utf8_lossy(&w.key)
        );
    }
    let kinds: std::collections::BTreeSet<Kind> =
        keys.iter().map(|k| k.meta.rdb_type.kind()).collect();
    let types: std::collections::BTreeSet<&str> = keys
        .iter()
        .map(|k| k.meta.rdb_type.encoding_name())
        .collect();
    eprintln!("{version:?}: {n} keys compared; kinds {kinds:?}; encodings {types:?}");
    assert!(n >= report.keys.len() / 2, "too few keys compared");

    // 2. DUMP of every key decodes to the server's view.
    for k in &keys {
        select(&mut c, k.meta.db).await?;
        let payload = bytes(&q(&mut c, redis::cmd("DUMP").arg(&k.meta.key)).await?)?;
        let d = decode_dump(&payload, &Default::default()).with_context(|| {
            format!(
                "{version:?} DUMP of {:?}",
                String::from_utf8_lossy(&k.meta.key)
            )
        })?;
        assert_eq!(d.version, rdb_version(version));
        assert_eq!(
            canon(&d.value),
            canon(&k.value),
            "DUMP of {:?}",
            String::from_utf8_lossy(&k.meta.key)
        );
    }

    // 3. Our encodings for every version <= the server's restore and read back equal.
    select(&mut c, 0).await?;
    let mut restored = 0;
    for target in [9u16, 10, 11, 12]
        .into_iter()
        .filter(|t| *t <= rdb_version(version))
    {
        for (i, k) in keys.iter().enumerate() {
            let Ok(payload) = encode_dump(&k.value, target) else {
                continue;
            };
            if k.value.is_empty() {
                continue;
            }
            let dest = format!("restored:{target}:{i}");
            q(
                &mut c,
                redis::cmd("RESTORE")
                    .arg(&dest)
                    .arg(0)
                    .arg(&payload)
                    .arg("REPLACE"),
            )
            .await
            .with_context(|| {
                format!(
                    "RESTORE of {:?} encoded for RDB {target} on {version:?}",
                    String::from_utf8_lossy(&k.meta.key)
                )
            })?;
            let back = server_value(&mut c, dest.as_bytes(), version)
                .await?
                .context("restored key missing")?;
            // Field TTLs survive only with RDB 12.
            assert_eq!(
                canon(&back),
                canon(&k.value),
                "restored {dest} from {:?}",
                String::from_utf8_lossy(&k.meta.key)
            );
            restored += 1;
        }
    }
    eprintln!("{version:?}: {restored} RESTOREs of our encodings verified");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_6_2() -> Result<()> {
    oracle(RedisVersion::V6_2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_7_0() -> Result<()> {
    oracle(RedisVersion::V7_0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_8_2() -> Result<()> {
    oracle(RedisVersion::V8_2).await
}

/// Valkey 8.1's RDB 11 (its own `valkey-ver` aux field, Redis 7.2's types).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_valkey_8_1() -> Result<()> {
    oracle(RedisVersion::Valkey8_1).await
}

/// Each loadable fixture, loaded by a real 7.0, equals our parse of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_equal_what_redis_loads() -> Result<()> {
    let mut server = RedisServer::start(ServerConfig::new(RedisVersion::V7_0)).await?;
    let mut checked = 0;
    for sub in ["rdbtools-dumps", "redis-tests-assets"] {
        let mut paths: Vec<_> = std::fs::read_dir(Path::new(FIXTURES).join(sub))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if !name.ends_with(".rdb") || name.contains("module") || name.starts_with("corrupt") {
                continue;
            }
            let items = parse_file(&path)?;
            server.stop().await?;
            std::fs::copy(&path, server.dir().join("dump.rdb"))?;
            server
                .start_again()
                .await
                .with_context(|| format!("7.0 loading {name}: {}", server.log_tail(5)))?;
            let keys = keys_of(&items);
            let n = compare_with_server(&server, &keys)
                .await
                .with_context(|| name.clone())?;
            eprintln!("{name}: {n} of {} keys compared", keys.len());
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} fixtures loaded");
    Ok(())
}

/// Strings longer than a batch come out of the parser in pieces, never whole: plain
/// ones and LZF-compressed ones (decompressed as they stream), each piece at most a
/// batch (plus one LZF instruction), in order and without gaps, and joined they are
/// what the server returns for the key. On every version (each writes its own RDB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_strings_come_in_pieces_that_join_to_the_server_value() -> Result<()> {
    use lockstep_sync::rdb::{Elements, Event, RdbParser};
    for version in RedisVersion::ALL {
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        let mut c = server.client().await?;
        let pattern: Vec<u8> = (0..5_000_000u32)
            .flat_map(|i| format!("{}:", i % 1000).into_bytes())
            .take(5_000_000)
            .collect();
        let values: [(&str, Vec<u8>); 5] = [
            ("plain", random_bytes(3_000_000)),
            ("lzf-pattern", pattern),
            ("lzf-one-byte", vec![b's'; 2_500_000]),
            ("just-over-a-batch", vec![b'x'; (1 << 20) + 1]),
            ("exactly-a-batch", random_bytes(1 << 20)),
        ];
        for (key, value) in &values {
            q(&mut c, redis::cmd("SET").arg(*key).arg(value)).await?;
        }
        q(&mut c, &mut redis::cmd("SAVE")).await?;
        let options = ParseOptions::default();
        let batch_max = options.limits.batch_bytes_max;
        let file = std::fs::File::open(server.rdb_path())?;
        let mut parser = RdbParser::new(file, options);
        let mut current: Option<(Vec<u8>, Vec<u8>, usize)> = None; // key, joined, pieces
        let mut seen = 0;
        while let Some(event) = parser.next_event()? {
            match event {
                Event::KeyStart(meta) => current = Some((meta.key, Vec::new(), 0)),
                Event::Elements(Elements::String(s)) => {
                    let (_, joined, _) = current.as_mut().context("elements outside a key")?;
                    assert!(s.len() <= batch_max, "a whole string of {} bytes", s.len());
                    joined.extend_from_slice(&s);
                }
                Event::Elements(Elements::StringPiece {
                    offset,
                    total_len,
                    bytes,
                }) => {
                    let (_, joined, pieces) = current.as_mut().context("elements outside a key")?;
                    assert_eq!(offset, joined.len() as u64, "a gap or overlap");
                    assert!(bytes.len() <= batch_max + 264, "a piece of {}", bytes.len());
                    assert!(total_len > batch_max as u64);
                    joined.extend_from_slice(&bytes);
                    *pieces += 1;
                }
                Event::KeyEnd { .. } => {
                    let (key, joined, pieces) = current.take().context("KeyEnd without key")?;
                    let name = String::from_utf8_lossy(&key).into_owned();
                    let (_, written) = values
                        .iter()
                        .find(|(k, _)| k.as_bytes() == key.as_slice())
                        .context("an unknown key")?;
                    assert!(
                        &joined == written,
                        "{version:?} {name}: joined pieces differ"
                    );
                    let expected_pieces = written.len().div_ceil(batch_max);
                    if written.len() > batch_max {
                        assert!(
                            pieces >= expected_pieces - 1 && pieces <= expected_pieces,
                            "{version:?} {name}: {pieces} pieces for {} bytes",
                            written.len()
                        );
                    } else {
                        assert_eq!(
                            pieces, 0,
                            "{version:?} {name}: a batch-sized string in pieces"
                        );
                    }
                    seen += 1;
                }
                _ => {}
            }
        }
        assert_eq!(seen, values.len(), "{version:?}: keys parsed");
    }
    Ok(())
}

/// `len` pseudo-random bytes (incompressible: stored plain).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}
