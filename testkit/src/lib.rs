//! # lockstep-testkit
//!
//! Real, throwaway Redis servers for lockstep's tests, in any topology, and the
//! faults that a sync's consistency is judged by. Nothing here is a mock: every
//! server is a real `redis-server` process of a chosen version (6.2, 7.0, 8.2),
//! installed into the project by `scripts/install-redis.sh`.
//!
//! # Layout
//! - [`version`]: which Redis versions exist and where their binaries are.
//! - [`server`]: one redis-server process: start on a free loopback port in its own
//!   temporary directory, wait until it answers, kill/stop/continue/restart, log tail,
//!   killed on drop.
//! - [`tls`]: a throwaway CA and certificates for `rediss://` tests.
//! - [`topology`]: standalone, primary with replicas, Redis Cluster; auth variants.
//! - [`faults`]: failover, flush, eviction, replication backlog overflow.
//! - [`proxy`]: a TCP fault proxy (cut, black-hole, latency, bandwidth cap).
//! - [`data`]: a seeded data set of every type in every encoding each version offers.
//! - [`churn`]: a seeded, rate-paced workload of every synchronized write command.
//! - [`command`]: "run this command line on this server" ([`Run`] on a connection,
//!   [`RedisServer::run`]), a typed reply and an error naming the command.
//! - [`info`]: small helpers to read `INFO` fields.
//! - [`guard`]: the TTL guard invariant: no key left with a guard expiry (year 3000).
//! - `harness` (feature `harness`): an engine task run in-process, catch-up waits and
//!   verify's verdicts, shared by the chaos catalog and the end-to-end tests.

pub mod churn;
pub mod command;
pub mod data;
pub mod faults;
pub mod guard;
#[cfg(feature = "harness")]
pub mod harness;
pub mod info;
pub mod proxy;
pub mod server;
pub mod tls;
pub mod topology;
pub mod version;

pub use command::Run;
pub use proxy::FaultProxy;
pub use server::{Auth, RedisServer, ServerConfig};
pub use tls::TlsMaterial;
pub use topology::{Cluster, ClusterSpec, FailoverMode, ReplicaSet};
pub use version::RedisVersion;

/// Errors of the testkit carry their context (which server, which log) as text;
/// tests print them and fail, so `anyhow` is the right tool.
pub type Result<T> = anyhow::Result<T>;
