//! One primary of the target cluster: its plain [`Conn`] (set to record
//! redirections instead of failing on them), its address, and the units it has not
//! answered yet ([`Unanswered`], pure state); and asking a node whether it is a
//! cluster node at all.
//!
//! Never: route anything; it knows nothing about slots.

use crate::conn::{is_redirection, ApplyError, ApplyOptions, Conn};
use crate::endpoint::Endpoint;

use super::units::Unanswered;

/// A primary of the target cluster: its writer, its address, and what was sent to
/// it and not yet answered, kept to be sent again if it is redirected.
pub(super) struct Primary {
    pub writer: Conn,
    pub host: String,
    pub port: u16,
    /// Units sent and not wholly answered.
    pub unanswered: Unanswered,
}

impl Primary {
    pub async fn connect(
        seed: &Endpoint,
        options: &ApplyOptions,
        host: &str,
        port: u16,
    ) -> Result<Primary, ApplyError> {
        let mut node = seed.clone();
        node.host = host.to_owned();
        node.port = port;
        node.db = None;
        let mut writer = Conn::connect(&node, options.clone()).await?;
        writer.record_redirections();
        Ok(Primary {
            writer,
            host: host.to_owned(),
            port,
            unanswered: Unanswered::default(),
        })
    }
}

/// A redirection (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY: the cluster is
/// changing or failing over) where the router does not send again by itself (the
/// checkpoint reads at start, a query): the session ends and the next one retries.
pub(super) fn redirected(err: ApplyError) -> ApplyError {
    match err {
        ApplyError::Rejected {
            endpoint,
            command,
            reply,
            ..
        } if is_redirection(&reply) => ApplyError::Redirected {
            endpoint,
            command,
            reply,
        },
        other => other,
    }
}

/// Whether the server `node` is connected to is a node of a Redis Cluster (`INFO
/// cluster` says `cluster_enabled:1`): how both sides recognise a cluster.
pub(crate) async fn is_cluster_node(node: &mut Conn) -> Result<bool, ApplyError> {
    let info = node.query(&[b"INFO".as_slice(), b"cluster"]).await?;
    Ok(info.as_bytes().is_some_and(|text| {
        text.split(|&b| b == b'\n')
            .any(|l| l.trim_ascii() == b"cluster_enabled:1")
    }))
}
