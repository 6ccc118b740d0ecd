//! The connections of one database: `workers` per side, or why a side refused the
//! database (then it is "not read", a gap of the coverage, never skipped silently).

use anyhow::Context;

use crate::read::side::Conn;
use crate::walk::context::Ctx;

/// `workers` connections to one database on each side.
pub(crate) struct Pools {
    pub(crate) src: Vec<Conn>,
    pub(crate) dst: Vec<Conn>,
}

impl Pools {
    /// The connections, or why a side refused the database (then it is not read):
    /// source database `db`, and on the target the database it is written into.
    pub(crate) async fn connect(
        ctx: &Ctx,
        source: &redis::Client,
        target: &redis::Client,
        db: u32,
    ) -> anyhow::Result<Result<Pools, String>> {
        let workers = ctx.options.workers.max(1);
        let src = connect_db(source, db, workers)
            .await
            .context("connecting to the source")?;
        let dst = connect_db(target, ctx.map.target_db(db), workers)
            .await
            .context("connecting to the target")?;
        Ok(match (src, dst) {
            (Ok(src), Ok(dst)) => Ok(Pools { src, dst }),
            (Err(why), _) => Err(format!("the source refused it: {why}")),
            (_, Err(why)) => Err(format!("the target refused it: {why}")),
        })
    }
}

/// `n` connections to database `db`: an empty database ([`Conn::Absent`]) when the
/// side has no such database ("DB index is out of range": its `databases` is smaller,
/// so the other side's keys there are reported), the reason when the side refuses
/// it (an ACL without SELECT), an error when the side cannot be reached.
pub(crate) async fn connect_db(
    client: &redis::Client,
    db: u32,
    n: usize,
) -> anyhow::Result<Result<Vec<Conn>, String>> {
    match crate::side::connect(client, db, n).await {
        Ok(conns) => Ok(Ok(conns)),
        Err(e) => {
            let Some(refusal) = e
                .chain()
                .find_map(|c| c.downcast_ref::<redis::RedisError>())
                .filter(|r| !r.is_io_error() && !r.is_unrecoverable_error())
                .map(|r| r.to_string())
            else {
                return Err(e);
            };
            if refusal.contains("out of range") {
                Ok(Ok(vec![Conn::Absent; n.max(1)]))
            } else {
                Ok(Err(format!("SELECT {db}: {refusal}")))
            }
        }
    }
}
