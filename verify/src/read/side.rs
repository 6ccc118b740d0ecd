//! One side of a comparison: a standalone Redis, or a Redis Cluster read through its
//! primaries.
//!
//! [`Conn`] is what every read of a comparison goes through. For a standalone
//! server it is a plain multiplexed connection. For a cluster (recognised from any
//! node's URL: `INFO cluster` says `cluster_enabled:1`) it holds one connection per
//! primary and the slot map from `CLUSTER SLOTS`, and gives every command the meaning
//! it has against the whole cluster:
//! - a command on one key goes to the primary serving the key's hash slot; a pipeline
//!   is split into one pipeline per primary, sent at once, and its replies put back
//!   in order;
//! - `MGET` and `EXISTS` over keys of several slots become one command per key, their
//!   replies joined (an array, a sum);
//! - `SCAN` walks the primaries one after the other: the cursor carries the primary's
//!   index in its top byte (a node's own cursor never reaches 2^56);
//! - `DBSIZE` is the sum over the primaries; `INFO` is answered with an error, which
//!   turns off the count proof ([`crate::judge::counts`]) (the target is then scanned).
//!
//! A cluster has database 0 only: any other database of a cluster side is an empty
//! one ([`Conn::Absent`]), so keys in it on the other side are reported as extra or
//! missing, never skipped.
//!
//! The slot map is read once per connection: a cluster that reshards during a
//! comparison answers `MOVED`, which reads as a difference and is read again in the
//! next round.

use std::sync::Arc;

use anyhow::Context;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisFuture, Value};

use crate::read::slot::{key_slot, SLOTS as SLOT_COUNT};

/// A connection to one side.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConn),
    /// A database a cluster does not have (any but 0): empty, so that keys in that
    /// database on the other side are reported, not skipped.
    Absent,
}

/// The primaries of a cluster and which one serves each slot.
#[derive(Clone)]
pub struct ClusterConn {
    primaries: Arc<Vec<MultiplexedConnection>>,
    /// Index into `primaries` per slot.
    owners: Arc<Vec<u16>>,
}

const SLOTS: usize = SLOT_COUNT as usize;
/// A SCAN cursor's top byte names the primary being walked.
const NODE_SHIFT: u32 = 56;

/// `n` connections to database `db` of the deployment `client` points at (any node
/// of a cluster will do), without a response timeout (a big pipeline may take longer
/// than the client's default of 500 ms).
pub async fn connect(client: &redis::Client, db: u32, n: usize) -> anyhow::Result<Vec<Conn>> {
    // Asked on database 0: a cluster refuses SELECT of any other.
    let mut probe = open(client, 0).await?;
    // A user without INFO (a restricted audit account) is taken to be on a
    // standalone server: a cluster would answer its reads with MOVED, which show as
    // differences, not as a silent pass.
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut probe)
        .await
        .unwrap_or_default();
    if !info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let conn = open(client, db)
                .await
                .with_context(|| format!("database {db}"))?;
            out.push(Conn::Single(conn));
        }
        return Ok(out);
    }
    if db != 0 {
        return Ok(vec![Conn::Absent; n.max(1)]);
    }
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut probe)
        .await
        .context("CLUSTER SLOTS")?;
    let seed_host = match client.get_connection_info().addr() {
        ConnectionAddr::Tcp(host, _) | ConnectionAddr::TcpTls { host, .. } => host.clone(),
        other => anyhow::bail!("a cluster reached through {other:?}"),
    };
    let map = slot_map(&slots, &seed_host)?;
    let cluster = ClusterConn {
        primaries: Arc::new(open_primaries(client, &map.primaries).await?),
        owners: Arc::new(map.owners),
    };
    // The primaries' connections are multiplexed: the workers share them.
    Ok(vec![Conn::Cluster(cluster); n.max(1)])
}

/// A cluster's primaries (host, port) and the index of the one serving each slot.
#[derive(Debug, PartialEq, Eq)]
struct SlotMap {
    primaries: Vec<(String, u16)>,
    owners: Vec<u16>,
}

/// The slot map a `CLUSTER SLOTS` reply describes; a primary announced without a
/// host (empty or `?`) is on `seed_host`. Every slot must have a primary.
fn slot_map(slots: &Value, seed_host: &str) -> anyhow::Result<SlotMap> {
    let mut primaries: Vec<(String, u16)> = Vec::new();
    let mut owners = vec![u16::MAX; SLOTS];
    let Value::Array(ranges) = slots else {
        anyhow::bail!("CLUSTER SLOTS answered {slots:?}");
    };
    for range in ranges {
        let Value::Array(fields) = range else {
            anyhow::bail!("a CLUSTER SLOTS entry is {range:?}");
        };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            anyhow::bail!("a CLUSTER SLOTS entry is {fields:?}");
        };
        let host = match primary.first() {
            Some(Value::BulkString(h)) if !h.is_empty() && h.as_slice() != b"?" => {
                String::from_utf8_lossy(h).into_owned()
            }
            _ => seed_host.to_owned(),
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            anyhow::bail!("a CLUSTER SLOTS primary without a port: {primary:?}");
        };
        let address = (host, u16::try_from(*port).context("a primary's port")?);
        let index = match primaries.iter().position(|a| *a == address) {
            Some(index) => index,
            None => {
                primaries.push(address);
                primaries.len() - 1
            }
        };
        for slot in *first..=(*last).min(SLOTS as i64 - 1) {
            owners[usize::try_from(slot).context("a slot number")?] = index as u16;
        }
    }
    if let Some(slot) = owners.iter().position(|&o| o == u16::MAX) {
        anyhow::bail!("slot {slot} is served by no primary of the cluster");
    }
    Ok(SlotMap { primaries, owners })
}

/// One connection per primary, with the seed's settings (TLS, credentials).
async fn open_primaries(
    client: &redis::Client,
    addresses: &[(String, u16)],
) -> anyhow::Result<Vec<MultiplexedConnection>> {
    let mut primaries = Vec::with_capacity(addresses.len());
    for (host, port) in addresses {
        let info = client.get_connection_info().clone();
        let addr = match info.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.clone(), *port),
        };
        let node = redis::Client::open(info.set_addr(addr))?;
        primaries.push(
            open(&node, 0)
                .await
                .with_context(|| format!("the cluster primary {host}:{port}"))?,
        );
    }
    Ok(primaries)
}

pub(crate) async fn open(client: &redis::Client, db: u32) -> anyhow::Result<MultiplexedConnection> {
    let info = client.get_connection_info().clone();
    let settings = info.redis_settings().clone().set_db(i64::from(db));
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

impl Conn {
    /// Whether this side is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }
}

/// How one command of a pipeline is sent to a cluster.
enum Route {
    /// To this primary, as it is.
    Node(usize),
    /// One `GET`/`EXISTS` per key: join the replies as an array (MGET) or a sum.
    PerKey {
        name: &'static str,
        keys: Vec<Vec<u8>>,
        sum: bool,
    },
    /// Answered here.
    Local(Value),
}

impl ClusterConn {
    fn node_of(&self, key: &[u8]) -> usize {
        usize::from(self.owners[usize::from(key_slot(key))])
    }

    fn route(&self, cmd: &Cmd) -> Route {
        let (name, args) = words(cmd);
        match name.as_slice() {
            b"MGET" | b"EXISTS" if args.len() > 2 => Route::PerKey {
                name: if name == b"MGET" { "GET" } else { "EXISTS" },
                keys: args[1..].iter().map(|k| k.to_vec()).collect(),
                sum: name == b"EXISTS",
            },
            b"INFO" | b"SCAN" | b"DBSIZE" => Route::Local(
                redis::parse_redis_value(
                    b"-ERR not answered for a whole cluster inside a pipeline\r\n",
                )
                .unwrap_or(Value::Nil),
            ),
            b"XINFO" => Route::Node(args.get(2).map_or(0, |k| self.node_of(k))),
            _ => Route::Node(args.get(1).map_or(0, |k| self.node_of(k))),
        }
    }

    /// The replies of `commands`, in order: one pipeline per primary, all at once.
    async fn run(&self, commands: Vec<Cmd>) -> redis::RedisResult<Vec<Value>> {
        // Per command: where its replies come from (primary, index in its pipeline).
        let mut pipes: Vec<Pipeline> = (0..self.primaries.len()).map(|_| redis::pipe()).collect();
        let mut plans = Vec::with_capacity(commands.len());
        for cmd in &commands {
            let plan = match self.route(cmd) {
                Route::Node(node) => {
                    pipes[node].add_command(cmd.clone());
                    Plan::One(node, pipes[node].len() - 1)
                }
                Route::PerKey { name, keys, sum } => {
                    let parts = keys
                        .iter()
                        .map(|key| {
                            let node = self.node_of(key);
                            pipes[node].add_command(redis::cmd(name).arg(key).clone());
                            (node, pipes[node].len() - 1)
                        })
                        .collect();
                    Plan::Joined { parts, sum }
                }
                Route::Local(value) => Plan::Local(value),
            };
            plans.push(plan);
        }
        let sent = pipes.iter().enumerate().map(|(node, pipe)| {
            let mut conn = self.primaries[node].clone();
            async move {
                if pipe.is_empty() {
                    return Ok(Vec::new());
                }
                conn.req_packed_commands(pipe, 0, pipe.len()).await
            }
        });
        let replies = futures::future::try_join_all(sent).await?;
        let take = |node: usize, at: usize| replies[node].get(at).cloned().unwrap_or(Value::Nil);
        Ok(plans
            .into_iter()
            .map(|plan| match plan {
                Plan::One(node, at) => take(node, at),
                // MGET answers nil for a key that holds no string; GET, WRONGTYPE.
                Plan::Joined { parts, sum: false } => Value::Array(
                    parts
                        .into_iter()
                        .map(|(n, at)| match take(n, at) {
                            Value::ServerError(_) => Value::Nil,
                            value => value,
                        })
                        .collect(),
                ),
                Plan::Joined { parts, sum: true } => Value::Int(
                    parts
                        .into_iter()
                        .map(|(n, at)| match take(n, at) {
                            Value::Int(i) => i,
                            _ => 0,
                        })
                        .sum(),
                ),
                Plan::Local(value) => value,
            })
            .collect())
    }

    /// One command; SCAN and DBSIZE over every primary.
    async fn one(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        let (name, args) = words(cmd);
        match name.as_slice() {
            b"DBSIZE" => {
                let mut total = 0i64;
                for node in self.primaries.iter() {
                    let mut node = node.clone();
                    let size: i64 = redis::cmd("DBSIZE").query_async(&mut node).await?;
                    total += size;
                }
                Ok(Value::Int(total))
            }
            b"SCAN" => self.scan(&args).await,
            _ => {
                let mut replies = self.run(vec![cmd.clone()]).await?;
                Ok(replies.pop().unwrap_or(Value::Nil))
            }
        }
    }

    /// `SCAN cursor [options]` over the primaries in turn.
    async fn scan(&self, args: &[&[u8]]) -> redis::RedisResult<Value> {
        let cursor: u64 = args
            .get(1)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut node = (cursor >> NODE_SHIFT) as usize;
        let mut node_cursor = cursor & ((1 << NODE_SHIFT) - 1);
        while node < self.primaries.len() {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(node_cursor);
            for extra in args.iter().skip(2) {
                cmd.arg(*extra);
            }
            let mut conn = self.primaries[node].clone();
            let (next, keys): (u64, Vec<Vec<u8>>) = cmd.query_async(&mut conn).await?;
            let next = if next != 0 {
                ((node as u64) << NODE_SHIFT) | next
            } else if node + 1 < self.primaries.len() {
                (node as u64 + 1) << NODE_SHIFT // the next primary, from its start
            } else {
                0
            };
            if !keys.is_empty() || next == 0 {
                return Ok(Value::Array(vec![
                    Value::BulkString(next.to_string().into_bytes()),
                    Value::Array(keys.into_iter().map(Value::BulkString).collect()),
                ]));
            }
            node = (next >> NODE_SHIFT) as usize;
            node_cursor = next & ((1 << NODE_SHIFT) - 1);
        }
        Ok(Value::Array(vec![
            Value::BulkString(b"0".to_vec()),
            Value::Array(Vec::new()),
        ]))
    }
}

/// Where the replies of one command of a pipeline are.
enum Plan {
    One(usize, usize),
    Joined {
        parts: Vec<(usize, usize)>,
        sum: bool,
    },
    Local(Value),
}

/// A command's name in upper case, and all its words (the name first).
fn words(cmd: &Cmd) -> (Vec<u8>, Vec<&[u8]>) {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    let name = args
        .first()
        .map(|n| n.to_ascii_uppercase())
        .unwrap_or_default();
    (name, args)
}

/// What an empty database answers to `cmd`.
fn absent_reply(cmd: &Cmd) -> Value {
    let (name, _) = words(cmd);
    match name.as_slice() {
        b"SCAN" => Value::Array(vec![
            Value::BulkString(b"0".to_vec()),
            Value::Array(Vec::new()),
        ]),
        b"DBSIZE" | b"EXISTS" => Value::Int(0),
        b"PTTL" | b"TTL" => Value::Int(-2),
        b"TYPE" => Value::SimpleString("none".into()),
        b"MGET" => Value::Array(vec![Value::Nil; cmd.args_iter().len().saturating_sub(1)]),
        b"INFO" => redis::parse_redis_value(b"-ERR no such database in a cluster\r\n")
            .unwrap_or(Value::Nil),
        b"LRANGE" | b"ZRANGE" | b"SMEMBERS" | b"HGETALL" | b"XRANGE" => Value::Array(Vec::new()),
        _ => Value::Nil,
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(cluster) => Box::pin(cluster.one(cmd)),
            Conn::Absent => Box::pin(async move { Ok(absent_reply(cmd)) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(cluster) => Box::pin(async move {
                // Plain pipelines only (verify sends no MULTI/EXEC).
                let replies = cluster.run(pipeline.cmd_iter().cloned().collect()).await?;
                Ok(replies.into_iter().skip(offset).take(count).collect())
            }),
            Conn::Absent => Box::pin(async move {
                Ok(pipeline
                    .cmd_iter()
                    .map(absent_reply)
                    .skip(offset)
                    .take(count)
                    .collect())
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(_) | Conn::Absent => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: i64, last: i64, host: &[u8], port: i64) -> Value {
        Value::Array(vec![
            Value::Int(first),
            Value::Int(last),
            Value::Array(vec![Value::BulkString(host.to_vec()), Value::Int(port)]),
        ])
    }

    #[test]
    fn cluster_slots_give_every_slot_a_primary() {
        let reply = Value::Array(vec![
            range(0, 8191, b"10.0.0.1", 7000),
            range(8192, 16383, b"", 7001),
            range(100, 200, b"10.0.0.1", 7000),
        ]);
        let map = slot_map(&reply, "seed").expect("a full map");
        assert_eq!(
            map.primaries,
            vec![("10.0.0.1".to_owned(), 7000), ("seed".to_owned(), 7001)]
        );
        assert_eq!(
            (map.owners[0], map.owners[8191], map.owners[8192]),
            (0, 0, 1)
        );
        assert_eq!(map.owners[16383], 1);
    }

    #[test]
    fn a_slot_without_a_primary_or_a_malformed_entry_is_an_error() {
        let partial = Value::Array(vec![range(0, 16000, b"h", 1)]);
        let error = slot_map(&partial, "seed").unwrap_err().to_string();
        assert!(
            error.contains("slot 16001 is served by no primary"),
            "{error}"
        );
        assert!(slot_map(&Value::Nil, "seed").is_err());
        assert!(slot_map(&Value::Array(vec![Value::Int(1)]), "seed").is_err());
    }
}
