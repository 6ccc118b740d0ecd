//! The scripted pass over one database: every source key the script touches read,
//! recreated, run through the script, modelled and judged against the target
//! (see [`crate::script`]). It runs before the database's ordinary walk, so the
//! target pass knows which target names the script produced.
//!
//! Memory: one source key's value and its model at a time, and the produced names
//! ([`crate::script::ScriptScope`], bounded). Keys are read one after the other on
//! one connection per side (verify's script path favours plain code over speed).

use std::collections::BTreeMap;

use anyhow::Context;
use futures::StreamExt;

use crate::read::side::Conn;
use crate::report::difference::Difference;
use crate::script::judge::{judge, Judged, Origin};
use crate::script::lua::Output;
use crate::script::model::Model;
use crate::script::recreate::{self, Limits, Read, SourceValue};
use crate::script::ScriptScope;
use crate::walk::context::Ctx;
use crate::walk::pools::Pools;
use crate::walk::scan::{scan, Limiter};
use crate::walk::tally::Tally;

/// Keys listed as NOT VERIFIED at most (the rest counted).
const NOT_VERIFIED_LISTED: usize = 100;

/// What the scripted passes found.
pub(crate) struct ScriptTally {
    pub(crate) tally: Tally,
    /// (db, source key, reason), at most [`NOT_VERIFIED_LISTED`].
    pub(crate) not_verified: Vec<(u32, Vec<u8>, String)>,
    pub(crate) not_verified_count: u64,
    /// Source keys with a difference, by database, to read again in a later round
    /// (None once more than `max_listed`: the differences then stand as found).
    pub(crate) differing: Option<BTreeMap<u32, Vec<Vec<u8>>>>,
}

impl ScriptTally {
    pub(crate) fn new(max_listed: usize) -> ScriptTally {
        ScriptTally {
            tally: Tally::new(max_listed),
            not_verified: Vec::new(),
            not_verified_count: 0,
            differing: Some(BTreeMap::new()),
        }
    }

    fn not_verified(&mut self, db: u32, key: &[u8], why: String) {
        self.not_verified_count += 1;
        if self.not_verified.len() < NOT_VERIFIED_LISTED {
            self.not_verified.push((db, key.to_vec(), why));
        }
    }

    fn differs(&mut self, db: u32, source_key: &[u8], d: Difference, max_listed: usize) {
        self.tally.diffs.push(d);
        if let Some(map) = &mut self.differing {
            let keys = map.entry(db).or_default();
            if keys.last().map(Vec::as_slice) != Some(source_key) {
                keys.push(source_key.to_vec());
            }
            if map.values().map(Vec::len).sum::<usize>() > max_listed {
                self.differing = None;
            }
        }
    }
}

/// One database's scripted keys: scanned on the source, each judged.
pub(crate) async fn script_db(
    ctx: &Ctx,
    scope: &ScriptScope,
    pools: &Pools,
    db: u32,
    out: &mut ScriptTally,
) -> anyhow::Result<()> {
    let touched = |k: &[u8]| scope.touches(k);
    let mut keys = Box::pin(scan(
        ctx,
        pools.src[0].clone(),
        false,
        Limiter::new(ctx.options.keys_per_second),
        &touched,
    ));
    let mut side = Sides::open(pools).await;
    if ctx.threshold.is_some() {
        scope.names_unknown(
            db,
            "a sample: the target names of the keys not sampled are unknown".into(),
        );
    }
    while let Some(batch) = keys.next().await {
        for key in batch?.keys {
            side.key(ctx, scope, db, &key, out).await?;
        }
    }
    Ok(())
}

/// Reads again the scripted source keys of an earlier round's differences.
pub(crate) async fn recheck(
    ctx: &Ctx,
    scope: &ScriptScope,
    pools: &Pools,
    db: u32,
    keys: &[Vec<u8>],
    out: &mut ScriptTally,
) -> anyhow::Result<()> {
    let mut side = Sides::open(pools).await;
    for key in keys {
        side.key(ctx, scope, db, key, out).await?;
    }
    Ok(())
}

/// One connection per side, and whether each side answers HPEXPIRETIME.
struct Sides {
    src: Conn,
    dst: Conn,
    src_field_ttls: bool,
    dst_field_ttls: bool,
}

impl Sides {
    async fn open(pools: &Pools) -> Sides {
        let (mut src, mut dst) = (pools.src[0].clone(), pools.dst[0].clone());
        let src_field_ttls = recreate::has_field_ttls(&mut src).await;
        let dst_field_ttls = recreate::has_field_ttls(&mut dst).await;
        Sides {
            src,
            dst,
            src_field_ttls,
            dst_field_ttls,
        }
    }

    /// One source key: read, recreated, through the script, modelled, judged.
    async fn key(
        &mut self,
        ctx: &Ctx,
        scope: &ScriptScope,
        db: u32,
        key: &[u8],
        out: &mut ScriptTally,
    ) -> anyhow::Result<()> {
        let limits = Limits {
            value_bytes: scope.options.value_bytes,
        };
        let read = recreate::read(&mut self.src, key, limits, self.src_field_ttls)
            .await
            .with_context(|| {
                format!(
                    "reading scripted source key {:?}",
                    String::from_utf8_lossy(key)
                )
            })?;
        let (value, expiry) = match read {
            Read::Gone => return Ok(()),
            Read::TooBig(why) => {
                scope.names_unknown(db, format!("scripted key {:?} was not read (too big), so the names it produces are unknown", String::from_utf8_lossy(key)));
                out.not_verified(db, key, why);
                return Ok(());
            }
            Read::Value(value, expiry) => (value, expiry),
        };
        let extension = ctx.options.ttl_extension.as_millis() as i64;
        let expiry = match ctx.options.ttl_rule {
            crate::options::TtlRule::Remove => None,
            _ => expiry.map(|at| at + extension),
        };
        let now = recreate::unix_ms();
        let mut model = Model::default();
        for argv in recreate::commands(key, &value, expiry, &ctx.rules.drops) {
            match scope.runner.call(db, &argv)? {
                Output::Unchanged => model.apply(&argv, now),
                Output::Commands(commands) => {
                    for command in &commands {
                        model.apply(command, now);
                    }
                }
            }
        }
        if let Some(why) = model.unknown {
            scope.names_unknown(
                db,
                format!(
                    "scripted key {:?} is not verified, so the names it produces are unknown",
                    String::from_utf8_lossy(key)
                ),
            );
            out.not_verified(db, key, why);
            return Ok(());
        }
        out.tally.counts.compared += 1;
        *out.tally
            .counts
            .per_type
            .entry(kind_of(&value).to_owned())
            .or_insert(0) += 1;
        let payload = match &value {
            SourceValue::Dump { payload, .. } => Some(payload.as_slice()),
            _ => None,
        };
        let origin = Origin {
            db,
            source_key: key,
            source_kind: kind_of(&value),
            source_payload: payload,
            tolerance_ms: ctx.options.ttl_tolerance.as_millis() as i64,
            field_ttls: self.dst_field_ttls,
        };
        for (target_key, entry) in &model.keys {
            let Some(entry) = entry else {
                continue; // deleted: the target pass finds it if it is there
            };
            if !scope.record(db, target_key, key) {
                out.not_verified(db, key, format!("target key {:?} is written from two source keys; verify judges each source key's commands alone", String::from_utf8_lossy(target_key)));
                continue;
            }
            let judged = judge(&mut self.src, &mut self.dst, target_key, entry, &origin)
                .await
                .with_context(|| {
                    format!(
                        "reading target key {:?}",
                        String::from_utf8_lossy(target_key)
                    )
                })?;
            match judged {
                Judged::Same => {}
                Judged::Differs(d) => out.differs(db, key, d, ctx.options.max_listed),
                Judged::NotVerified(why) => out.not_verified(db, target_key, why),
            }
        }
        Ok(())
    }
}

/// TYPE's name of a source value.
fn kind_of(value: &SourceValue) -> &str {
    match value {
        SourceValue::String(_) => "string",
        SourceValue::List(_) => "list",
        SourceValue::Set(_) => "set",
        SourceValue::ZSet(_) => "zset",
        SourceValue::Hash(_) => "hash",
        SourceValue::Dump { kind, .. } => kind,
    }
}
