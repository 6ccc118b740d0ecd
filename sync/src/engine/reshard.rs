//! For a shard of a cluster source: a watcher that ends the stream when the shard's
//! slots move (see [`crate::source::cluster`]).
//!
//! It only asks the cluster and tells the session; it never changes the task's
//! endpoints (the retry loop does, before each session) and stops with the session.

use std::time::Duration;

use super::error::SyncError;
use super::options::SyncOptions;

/// For a shard of a cluster source: a task that asks the cluster every
/// [`RESHARD_POLL`] whether the shard still serves exactly its slots, so that a
/// reshard while the stream runs stops the task with the message of
/// [`crate::source::cluster::SourceCluster::current_nodes`] instead of applying moved keys out of order.
/// Stopped when dropped (the session ends).
pub(super) struct ReshardWatch {
    moved: Option<tokio::sync::oneshot::Receiver<String>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// How often a shard of a cluster source checks its slots while streaming.
const RESHARD_POLL: Duration = Duration::from_secs(5);

impl ReshardWatch {
    pub(super) fn start(options: &SyncOptions) -> ReshardWatch {
        let Some(cluster) = options.source_cluster.clone() else {
            return ReshardWatch {
                moved: None,
                task: None,
            };
        };
        let options = options.clone();
        let (tell, moved) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESHARD_POLL).await;
                // A failover or an unreachable seed is the link's business; only a
                // changed slot layout is this watcher's.
                if let Err(SyncError::Resharded(message)) = cluster.current_nodes(&options).await {
                    let _ = tell.send(message);
                    return;
                }
            }
        });
        ReshardWatch {
            moved: Some(moved),
            task: Some(task),
        }
    }

    /// Completes (with the message) when the shard's slots have changed; never for a
    /// task that is not a shard of a cluster source.
    pub(super) async fn moved(&mut self) -> String {
        if let Some(moved) = self.moved.as_mut() {
            let told = moved.await;
            // A completed receiver is never polled again.
            self.moved = None;
            if let Ok(message) = told {
                return message;
            }
        }
        std::future::pending().await
    }
}

impl Drop for ReshardWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
