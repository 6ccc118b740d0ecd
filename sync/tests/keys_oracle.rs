//! The key table of `lockstep_sync::keys` against the servers' own answer: for a
//! representative invocation of every command in the table, `COMMAND GETKEYS` on a
//! real 7.0 and a real 8.2 must name exactly the keys the table finds. A command a
//! server does not know (hash field TTLs before 7.4, XACKDEL before 8.2) is skipped
//! on that server only; every command must be known to the newest one.

use std::collections::BTreeSet;

use bytes::Bytes;
use lockstep_sync::keys::{key_indices, table};
use lockstep_testkit::{RedisServer, RedisVersion, ServerConfig};

/// One invocation per command of the table.
const EXAMPLES: &[&str] = &[
    "APPEND k v",
    "BITFIELD k SET u8 0 1",
    "BITOP AND d a b",
    "BLMOVE a b LEFT RIGHT 0",
    "BLMPOP 0 2 a b LEFT COUNT 2",
    "BLPOP a b 0",
    "BRPOP a b 0",
    "BRPOPLPUSH a b 0",
    "BZMPOP 0 2 a b MIN",
    "BZPOPMAX a b 0",
    "BZPOPMIN a b 0",
    "COPY a b DB 3 REPLACE",
    "DECR k",
    "DECRBY k 2",
    "DEL a b c",
    "EVAL return 2 a b x y",
    "EVALSHA 0123456789012345678901234567890123456789 2 a b x",
    "EVALSHA_RO 0123456789012345678901234567890123456789 1 a x",
    "EVAL_RO return 1 a x",
    "EXEC",
    "EXPIRE k 10",
    "EXPIREAT k 10",
    "FCALL f 2 a b x",
    "FCALL_RO f 1 a x",
    "FLUSHALL",
    "FLUSHDB",
    "FUNCTION DELETE lib",
    "GEOADD k 1 2 m",
    "GEORADIUS k 1 2 3 m STORE d",
    "GEORADIUSBYMEMBER k m 3 km STOREDIST d",
    "GEOSEARCHSTORE d s FROMMEMBER m BYRADIUS 1 km",
    "GETDEL k",
    "GETEX k PX 100",
    "GETSET k v",
    "HDEL k f g",
    "HEXPIRE k 10 FIELDS 1 f",
    "HEXPIREAT k 10 FIELDS 1 f",
    "HGETDEL k FIELDS 1 f",
    "HGETEX k PX 10 FIELDS 1 f",
    "HINCRBY k f 1",
    "HINCRBYFLOAT k f 1.5",
    "HMSET k f v g w",
    "HPERSIST k FIELDS 1 f",
    "HPEXPIRE k 10 FIELDS 1 f",
    "HPEXPIREAT k 10 FIELDS 1 f",
    "HSET k f v",
    "HSETEX k PX 10 FIELDS 1 f v",
    "HSETNX k f v",
    "INCR k",
    "INCRBY k 2",
    "INCRBYFLOAT k 1.5",
    "LINSERT k BEFORE p v",
    "LMOVE a b LEFT RIGHT",
    "LMPOP 2 a b LEFT",
    "LPOP k 2",
    "LPUSH k a b",
    "LPUSHX k a",
    "LREM k 0 v",
    "LSET k 0 v",
    "LTRIM k 0 1",
    "MOVE k 3",
    "MSET a 1 b 2 c 3",
    "MSETNX a 1 b 2",
    "MULTI",
    "PERSIST k",
    "PEXPIRE k 10",
    "PEXPIREAT k 10",
    "PFADD k a b",
    "PFCOUNT a b",
    "PFMERGE d a b",
    "PING",
    "PSETEX k 100 v",
    "PUBLISH ch msg",
    "RENAME a b",
    "RENAMENX a b",
    "REPLCONF GETACK *",
    "RESTORE k 0 payload REPLACE ABSTTL",
    "RESTORE-ASKING k 0 payload",
    "RPOP k",
    "RPOPLPUSH a b",
    "RPUSH k a b",
    "RPUSHX k a",
    "SADD k a b",
    "SCRIPT FLUSH",
    "SDIFFSTORE d a b",
    "SELECT 3",
    "SET k v PXAT 100",
    "SETBIT k 7 1",
    "SETEX k 10 v",
    "SETNX k v",
    "SETRANGE k 0 v",
    "SINTERSTORE d a b",
    "SMOVE a b m",
    "SORT k BY w_* GET o_* STORE d",
    "SPOP k 2",
    "SPUBLISH ch msg",
    "SREM k a",
    "SUNIONSTORE d a b",
    "SWAPDB 0 1",
    "TOUCH a b",
    "UNLINK a b",
    "XACK s g 0-1",
    "XACKDEL s g IDS 1 0-1",
    "XADD s * f v",
    "XAUTOCLAIM s g c 0 0-0",
    "XCLAIM s g c 0 0-1",
    "XDEL s 0-1",
    "XDELEX s IDS 1 0-1",
    "XGROUP CREATE s g $ MKSTREAM",
    "XSETID s 0-1",
    "XTRIM s MAXLEN 10",
    "ZADD k 1 m",
    "ZDIFFSTORE d 2 a b",
    "ZINCRBY k 1 m",
    "ZINTERSTORE d 2 a b WEIGHTS 1 2",
    "ZMPOP 2 a b MIN",
    "ZPOPMAX k",
    "ZPOPMIN k",
    "ZRANGESTORE d s 0 -1",
    "ZREM k m",
    "ZREMRANGEBYLEX k - +",
    "ZREMRANGEBYRANK k 0 1",
    "ZREMRANGEBYSCORE k 0 1",
    "ZUNIONSTORE d 2 a b AGGREGATE MAX",
];

fn argv(line: &str) -> Vec<Bytes> {
    line.split_whitespace()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect()
}

/// The keys the table finds, as a set of strings.
fn table_keys(argv: &[Bytes]) -> anyhow::Result<BTreeSet<String>> {
    Ok(key_indices(argv)?
        .map(|i| String::from_utf8_lossy(&argv[i]).into_owned())
        .collect())
}

/// The keys the server finds; `None` when the server does not know the command.
async fn server_keys(
    conn: &mut redis::aio::MultiplexedConnection,
    argv: &[Bytes],
) -> anyhow::Result<Option<BTreeSet<String>>> {
    let info: redis::Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg(&argv[0][..])
        .query_async(conn)
        .await?;
    if matches!(&info, redis::Value::Array(items) if items.first() == Some(&redis::Value::Nil)) {
        return Ok(None);
    }
    if argv.len() == 1 {
        // GETKEYS needs an argument; a command without any has no key.
        return Ok(Some(BTreeSet::new()));
    }
    let mut cmd = redis::cmd("COMMAND");
    cmd.arg("GETKEYS");
    for a in argv {
        cmd.arg(&a[..]);
    }
    match cmd.query_async::<Vec<String>>(conn).await {
        Ok(keys) => Ok(Some(keys.into_iter().collect())),
        Err(err) if err.to_string().contains("no key arguments") => Ok(Some(BTreeSet::new())),
        Err(err) => Ok(Some(BTreeSet::from([format!("error: {err}")]))),
    }
}

#[test]
fn every_command_of_the_table_has_an_example() {
    let examples: BTreeSet<&str> = EXAMPLES
        .iter()
        .filter_map(|e| e.split_whitespace().next())
        .collect();
    let names: BTreeSet<&str> = table().iter().map(|(n, _)| *n).collect();
    assert_eq!(examples, names);
}

#[tokio::test]
async fn the_table_agrees_with_command_getkeys_on_7_0_and_8_2() -> anyhow::Result<()> {
    for version in [RedisVersion::V7_0, RedisVersion::V8_2] {
        let server = RedisServer::start(ServerConfig::new(version)).await?;
        let mut conn = server.client().await?;
        let mut checked = 0;
        let mut disagreements = Vec::new();
        for example in EXAMPLES {
            let argv = argv(example);
            let Some(expected) = server_keys(&mut conn, &argv).await? else {
                assert!(version != RedisVersion::V8_2, "8.2 does not know {example}");
                continue;
            };
            let found = table_keys(&argv)?;
            if found != expected {
                disagreements.push(format!("{example}: table {found:?}, server {expected:?}"));
            }
            checked += 1;
        }
        assert!(
            disagreements.is_empty(),
            "{version:?}: {}",
            disagreements.join("\n")
        );
        assert!(
            checked > 100,
            "{version:?}: only {checked} commands checked"
        );
    }
    Ok(())
}
