//! The scheduler: batches read ahead from a SCAN (or a key list) and compared
//! `workers` at a time, each on its own connection pair.
//!
//! It knows nothing of what a batch does; it must never hold more than `workers`
//! batches in flight (plus `workers` read ahead): that bounds verify's memory.

use std::future::Future;

use futures::stream::{self, Stream, StreamExt, TryStreamExt};

use crate::read::side::Conn;
use crate::walk::pools::Pools;
use crate::walk::scan::Batch;
use crate::walk::tally::{Outcome, Tally};

/// Runs `each` on every batch, `workers` at a time, batch `i` on connection pair
/// `i % workers`, and adds what they found to `tally`. The batches are read up to
/// `workers` ahead (SCAN runs while batches are being compared), so that neither
/// server waits for the other's reply to get its next command.
pub(crate) async fn run_batches<F, Fut>(
    pools: &Pools,
    batches: impl Stream<Item = anyhow::Result<Batch>>,
    tally: &mut Tally,
    each: F,
) -> anyhow::Result<()>
where
    F: Fn(Conn, Conn, Vec<Vec<u8>>) -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let workers = pools.src.len().max(1);
    let (ahead, behind) = tokio::sync::mpsc::channel(workers);
    let read_ahead = async move {
        let mut batches = std::pin::pin!(batches);
        while let Some(batch) = batches.next().await {
            if ahead.send(batch).await.is_err() {
                break;
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    let each = &each;
    let compare_all = async move {
        let batches = stream::unfold(behind, |mut behind| async move {
            behind.recv().await.map(|batch| (batch, behind))
        });
        let outcomes = batches
            .enumerate()
            .map(|(i, batch)| {
                let (s, d) = (
                    pools.src[i % workers].clone(),
                    pools.dst[i % workers].clone(),
                );
                async move {
                    let batch = batch?;
                    let mut outcome = each(s, d, batch.keys).await?;
                    outcome.counts.scanned = batch.scanned;
                    Ok::<_, anyhow::Error>(outcome)
                }
            })
            .buffer_unordered(workers);
        let mut outcomes = std::pin::pin!(outcomes);
        while let Some(outcome) = outcomes.try_next().await? {
            tally.absorb(outcome);
        }
        Ok(())
    };
    tokio::try_join!(read_ahead, compare_all)?;
    Ok(())
}
