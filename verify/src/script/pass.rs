//! The scripted pass over one database: every source key the script touches read,
//! recreated, run through the script, modelled and judged against the target
//! (see [`crate::script`]). It runs before the database's ordinary walk, so the
//! target pass knows which target names the script produced.
//!
//! Memory: the values and models of the keys in flight, and the produced names
//! ([`crate::script::ScriptScope`], bounded). `8 x workers` source keys are judged at
//! once, their reads multiplexed on one connection per side, each key's commands in
//! order; a batch's outcomes are added up in SCAN order.

use std::collections::BTreeMap;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};

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

/// What one source key gave.
#[derive(Default)]
struct KeyOutcome {
    /// TYPE of the key, when it was judged (not gone, not NOT VERIFIED as a whole).
    judged: Option<String>,
    diffs: Vec<Difference>,
    /// (key, why): the source key, or a target key it wrote.
    not_verified: Vec<(Vec<u8>, String)>,
}

impl ScriptTally {
    fn absorb(&mut self, db: u32, key: &[u8], outcome: KeyOutcome, max_listed: usize) {
        if let Some(kind) = outcome.judged {
            self.tally.counts.compared += 1;
            *self.tally.counts.per_type.entry(kind).or_insert(0) += 1;
        }
        for d in outcome.diffs {
            self.differs(db, key, d, max_listed);
        }
        for (name, why) in outcome.not_verified {
            self.not_verified(db, &name, why);
        }
    }
}

/// Source keys judged at once (their reads multiplexed on one connection per side).
fn in_flight(ctx: &Ctx) -> usize {
    ctx.options.workers.max(1) * 8
}

/// Judges `keys` of `db`, [`in_flight`] at a time, in order.
async fn judge_keys(
    ctx: &Ctx,
    scope: &ScriptScope,
    side: &Sides,
    db: u32,
    keys: Vec<Vec<u8>>,
    out: &mut ScriptTally,
) -> anyhow::Result<()> {
    let outcomes: Vec<(Vec<u8>, KeyOutcome)> = futures::stream::iter(keys)
        .map(|key| async move {
            let outcome = side.key(ctx, scope, db, &key).await?;
            Ok::<_, anyhow::Error>((key, outcome))
        })
        .buffered(in_flight(ctx))
        .try_collect()
        .await?;
    for (key, outcome) in outcomes {
        out.absorb(db, &key, outcome, ctx.options.max_listed);
    }
    Ok(())
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
    let side = Sides::open(pools).await;
    if ctx.threshold.is_some() {
        scope.names_unknown(
            db,
            "a sample: the target names of the keys not sampled are unknown".into(),
        );
    }
    while let Some(batch) = keys.next().await {
        judge_keys(ctx, scope, &side, db, batch?.keys, out).await?;
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
    let side = Sides::open(pools).await;
    judge_keys(ctx, scope, &side, db, keys.to_vec(), out).await
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

    /// A key too big to hold: NOT VERIFIED, and the names it would produce unknown.
    fn too_big(&self, scope: &ScriptScope, db: u32, key: &[u8], why: String) -> KeyOutcome {
        scope.names_unknown(
            db,
            format!(
                "scripted key {:?} was not read (too big), so the names it produces are unknown",
                String::from_utf8_lossy(key)
            ),
        );
        KeyOutcome {
            not_verified: vec![(key.to_vec(), why)],
            ..KeyOutcome::default()
        }
    }

    /// One source key: read, recreated, through the script, modelled, judged.
    async fn key(
        &self,
        ctx: &Ctx,
        scope: &ScriptScope,
        db: u32,
        key: &[u8],
    ) -> anyhow::Result<KeyOutcome> {
        let mut out = KeyOutcome::default();
        let (mut src, mut dst) = (self.src.clone(), self.dst.clone());
        let limits = Limits {
            value_bytes: scope.options.value_bytes,
        };
        let usage = recreate::memory_usage(&mut src, key).await?;
        if let Some(bytes) = usage.filter(|&b| b > limits.value_bytes as u64) {
            return Ok(self.too_big(scope, db, key, format!("MEMORY USAGE says {bytes} bytes, above verify's limit for a scripted key ({} bytes)", limits.value_bytes)));
        }
        // The budget of values held at once: the key's estimate, or all of it when
        // the server gives none (the key is then judged alone).
        let _held = scope.hold(usage).await?;
        let read = recreate::read(&mut src, key, limits, self.src_field_ttls)
            .await
            .with_context(|| {
                format!(
                    "reading scripted source key {:?}",
                    String::from_utf8_lossy(key)
                )
            })?;
        let (value, expiry) = match read {
            Read::Gone => return Ok(out),
            Read::TooBig(why) => return Ok(self.too_big(scope, db, key, why)),
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
            out.not_verified.push((key.to_vec(), why));
            return Ok(out);
        }
        out.judged = Some(kind_of(&value).to_owned());
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
                out.not_verified.push((key.to_vec(), format!("target key {:?} is written from two source keys; verify judges each source key's commands alone", String::from_utf8_lossy(target_key))));
                continue;
            }
            let judged = judge(&mut src, &mut dst, target_key, entry, &origin)
                .await
                .with_context(|| {
                    format!(
                        "reading target key {:?}",
                        String::from_utf8_lossy(target_key)
                    )
                })?;
            match judged {
                Judged::Same => {}
                Judged::Differs(d) => out.diffs.push(d),
                Judged::NotVerified(why) => out.not_verified.push((target_key.clone(), why)),
            }
        }
        Ok(out)
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
