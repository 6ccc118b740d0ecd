//! Topologies: a primary with replicas, and Redis Cluster.
//! (Standalone is a single [`RedisServer`].)
pub struct ReplicaSet;
pub struct Cluster;
pub struct ClusterSpec;
