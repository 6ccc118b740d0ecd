//! A key the script wrote, as the model says ([`crate::script::model::Entry`]),
//! against the target's key of that name: its type, value and expiry (within the
//! TTL tolerance), hash field expiries where the target has them. The target's
//! value is read only when its length matches the model's (so a wrong big value is
//! never held). A stream whose `RESTORE` the script passed with its payload as
//! given is compared in canonical form ([`crate::canonical`]) with the source key
//! it came from; any other opaque payload (a module value, a payload the script
//! changed) only byte for byte with the target's DUMP, and NOT VERIFIED when they
//! differ (verify never decodes DUMP).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use redis::aio::ConnectionLike;

use crate::canonical;
use crate::report::difference::{Difference, DifferenceKind};
use crate::script::model::{self, Entry, Expiry, Value};
use crate::script::recreate::{field_expiries, unix_ms};

/// What the target's key was found to be.
#[derive(Debug)]
pub(crate) enum Judged {
    Same,
    Differs(Difference),
    NotVerified(String),
}

/// Where the key came from and how expiries are judged.
pub(crate) struct Origin<'a> {
    pub(crate) db: u32,
    pub(crate) source_key: &'a [u8],
    /// TYPE of the source key.
    pub(crate) source_kind: &'a str,
    /// The source's DUMP payload (a stream or module value).
    pub(crate) source_payload: Option<&'a [u8]>,
    pub(crate) tolerance_ms: i64,
    /// Whether the target answers HPEXPIRETIME.
    pub(crate) field_ttls: bool,
}

/// Judges target key `key` against `entry`.
pub(crate) async fn judge<C: ConnectionLike + Send>(
    src: &mut C,
    dst: &mut C,
    key: &[u8],
    entry: &Entry,
    origin: &Origin<'_>,
) -> anyhow::Result<Judged> {
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(dst)
        .await
        .context("TYPE")?;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(dst)
        .await
        .context("PTTL")?;
    let now = unix_ms();
    let expected_kind = match &entry.value {
        Value::Opaque(_) => origin.source_kind,
        other => other.kind(),
    };
    let differs = |kind: DifferenceKind, target_type: &str, detail: String| {
        Judged::Differs(Difference {
            db: origin.db,
            key: key.to_vec(),
            kind,
            detail: format!(
                "written by the script from source key {:?}: {detail}",
                String::from_utf8_lossy(origin.source_key)
            ),
            source_type: expected_kind.to_owned(),
            target_type: target_type.to_owned(),
            source_pttl: model_pttl(entry.expiry, now),
            target_pttl: pttl,
        })
    };
    if kind == "none" {
        if expiring(entry.expiry, now, origin.tolerance_ms) {
            return Ok(Judged::Same);
        }
        return Ok(differs(
            DifferenceKind::MissingOnTarget,
            "none",
            "absent from the target".into(),
        ));
    }
    if kind != expected_kind {
        return Ok(differs(
            DifferenceKind::Type,
            &kind,
            format!("a {kind} instead of a {expected_kind}"),
        ));
    }
    let value = match &entry.value {
        Value::Opaque(payload) => opaque(src, dst, key, payload, origin).await?,
        value => plain(dst, key, value, origin).await?,
    };
    match value {
        Ok(None) => {}
        Ok(Some(detail)) => return Ok(differs(DifferenceKind::Value, &kind, detail)),
        Err(why) => return Ok(Judged::NotVerified(why)),
    }
    if let Some(detail) = ttl_difference(entry.expiry, pttl, now, origin.tolerance_ms) {
        return Ok(differs(DifferenceKind::Ttl, &kind, detail));
    }
    Ok(Judged::Same)
}

/// A model expiry as a PTTL read now (-1: none).
fn model_pttl(expiry: Option<Expiry>, now: i64) -> i64 {
    match expiry {
        None => -1,
        Some(Expiry::At(t) | Expiry::AtMost(t)) => (t - now).max(0),
    }
}

/// Whether the key is due to expire within the tolerance (then its absence is its
/// expiry).
fn expiring(expiry: Option<Expiry>, now: i64, tolerance: i64) -> bool {
    matches!(expiry, Some(Expiry::At(t) | Expiry::AtMost(t)) if t - now <= tolerance)
}

/// What is wrong with the target's expiry, if anything.
pub(crate) fn ttl_difference(
    expiry: Option<Expiry>,
    pttl: i64,
    now: i64,
    tolerance: i64,
) -> Option<String> {
    let target = (pttl >= 0).then_some(now + pttl);
    let ok = match (expiry, target) {
        (None, None) => true,
        (Some(Expiry::At(t)), Some(at)) => (at - t).abs() <= tolerance,
        (Some(Expiry::AtMost(t)), Some(at)) => at <= t + tolerance,
        _ => false,
    };
    let show = |e: Option<Expiry>| match e {
        None => "none".to_owned(),
        Some(Expiry::At(t)) => format!("at {t}"),
        Some(Expiry::AtMost(t)) => format!("at most {t} (a relative expiry)"),
    };
    (!ok).then(|| {
        format!(
            "expiry (unix ms) {} expected, the target's is {}",
            show(expiry),
            target.map_or("none".to_owned(), |t| t.to_string())
        )
    })
}

/// A string, list, set, sorted set or hash against the target's: None when equal,
/// else what differs.
async fn plain<C: ConnectionLike + Send>(
    dst: &mut C,
    key: &[u8],
    value: &Value,
    origin: &Origin<'_>,
) -> anyhow::Result<Result<Option<String>, String>> {
    let (len_cmd, want) = match value {
        Value::String(s) => ("STRLEN", s.len()),
        Value::List(v) => ("LLEN", v.len()),
        Value::Set(v) => ("SCARD", v.len()),
        Value::ZSet(v) => ("ZCARD", v.len()),
        Value::Hash(v) => ("HLEN", v.len()),
        Value::Opaque(_) => return Ok(Err("an opaque value".into())),
    };
    let have: usize = redis::cmd(len_cmd)
        .arg(key)
        .query_async(dst)
        .await
        .context(len_cmd)?;
    if have != want {
        return Ok(Ok(Some(format!(
            "{len_cmd} {want} expected, the target's is {have}"
        ))));
    }
    let same = match value {
        Value::String(s) => {
            let got: Vec<u8> = redis::cmd("GET")
                .arg(key)
                .query_async(dst)
                .await
                .context("GET")?;
            got == *s
        }
        Value::List(v) => {
            let got: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(dst)
                .await
                .context("LRANGE")?;
            got.iter().eq(v.iter())
        }
        Value::Set(v) => {
            let got: BTreeSet<Vec<u8>> = redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(dst)
                .await
                .context("SMEMBERS")?;
            got == *v
        }
        Value::ZSet(v) => {
            let got: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(dst)
                .await
                .context("ZRANGE")?;
            let got: Option<BTreeMap<Vec<u8>, u64>> = got
                .into_iter()
                .map(|(m, s)| model::score(&s).ok().map(|s| (m, s.to_bits())))
                .collect();
            let want: BTreeMap<Vec<u8>, u64> =
                v.iter().map(|(m, s)| (m.clone(), s.to_bits())).collect();
            got.as_ref() == Some(&want)
        }
        Value::Hash(v) => return hash(dst, key, v, origin).await.map(Ok),
        Value::Opaque(_) => false,
    };
    Ok(Ok((!same).then(|| "the value differs".to_owned())))
}

/// A hash: its fields and values, and each field's expiry where the target has them.
async fn hash<C: ConnectionLike + Send>(
    dst: &mut C,
    key: &[u8],
    want: &BTreeMap<Vec<u8>, (Vec<u8>, Option<i64>)>,
    origin: &Origin<'_>,
) -> anyhow::Result<Option<String>> {
    let got: BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
        .arg(key)
        .query_async(dst)
        .await
        .context("HGETALL")?;
    let values: BTreeMap<Vec<u8>, Vec<u8>> = want
        .iter()
        .map(|(f, (v, _))| (f.clone(), v.clone()))
        .collect();
    if got != values {
        let field = want
            .keys()
            .chain(got.keys())
            .find(|f| got.get(*f) != values.get(*f))
            .map(|f| String::from_utf8_lossy(f).into_owned());
        return Ok(Some(format!("the fields differ (first: {field:?})")));
    }
    let wanted_ttls = want.values().any(|(_, at)| at.is_some());
    if !origin.field_ttls {
        return Ok(wanted_ttls
            .then(|| "field expiries expected, but the target has no HPEXPIRETIME".into()));
    }
    let fields: Vec<&[u8]> = want.keys().map(Vec::as_slice).collect();
    let times = field_expiries(dst, key, fields.iter().copied()).await?;
    for ((field, (_, at)), time) in want.iter().zip(times) {
        let ok = match (at, time) {
            (None, None) => true,
            (Some(a), Some(b)) => (a - b).abs() <= origin.tolerance_ms,
            _ => false,
        };
        if !ok {
            return Ok(Some(format!(
                "field {:?}: expiry {at:?} expected, the target's is {time:?}",
                String::from_utf8_lossy(field)
            )));
        }
    }
    Ok(None)
}

/// A RESTORE payload against the target's key (see the module doc).
async fn opaque<C: ConnectionLike + Send>(
    src: &mut C,
    dst: &mut C,
    key: &[u8],
    payload: &[u8],
    origin: &Origin<'_>,
) -> anyhow::Result<Result<Option<String>, String>> {
    let passed_as_is = origin.source_payload == Some(payload);
    if passed_as_is && origin.source_kind == "stream" {
        let source = canonical::read(src, origin.source_key)
            .await
            .context("reading the source stream")?;
        let target = canonical::read(dst, key)
            .await
            .context("reading the target stream")?;
        if source == canonical::Canonical::Gone {
            return Ok(Err(
                "the source stream went away while it was compared".into()
            ));
        }
        return Ok(Ok(
            (source != target).then(|| "the stream differs (entries or groups)".to_owned())
        ));
    }
    let got: Option<Vec<u8>> = redis::cmd("DUMP")
        .arg(key)
        .query_async(dst)
        .await
        .context("DUMP")?;
    if got.as_deref() == Some(payload) {
        return Ok(Ok(None));
    }
    Ok(Err(format!(
        "a {} value: the target's DUMP payload is not byte for byte the one the script wrote, and verify never decodes DUMP",
        origin.source_kind
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_judged_within_the_tolerance() {
        let now = 1_000_000;
        assert_eq!(ttl_difference(None, -1, now, 2000), None);
        assert!(ttl_difference(None, 5000, now, 2000).is_some());
        assert_eq!(
            ttl_difference(Some(Expiry::At(now + 5000)), 4000, now, 2000),
            None
        );
        assert!(ttl_difference(Some(Expiry::At(now + 5000)), 1000, now, 2000).is_some());
        assert!(ttl_difference(Some(Expiry::At(now + 5000)), -1, now, 2000).is_some());
        assert_eq!(
            ttl_difference(Some(Expiry::AtMost(now + 5000)), 10, now, 2000),
            None
        );
        assert!(ttl_difference(Some(Expiry::AtMost(now + 5000)), 9000, now, 2000).is_some());
        assert!(expiring(Some(Expiry::At(now + 10)), now, 2000));
        assert!(!expiring(None, now, 2000));
    }
}
