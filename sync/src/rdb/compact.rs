//! Values stored as one blob (RDB types 9-20 and 24-25: zipmap, ziplist,
//! intset, listpack, listpack with field TTLs): one blob in, one batch of
//! [`Elements`] out.
//!
//! The parser ([`super::parser`]) reads the blob and calls [`decode`]; this
//! module only turns the blob's entries into elements (pairs for hashes and
//! zsets, triplets for hashes with field TTLs), using the encodings'
//! decoders ([`super::ziplist`], [`super::listpack`], [`super::intset`],
//! [`super::zipmap`]). It never reads input and never panics: every failure
//! is a [`BlobError`] the parser places at the blob's offset.

use super::elem::Elem;
use super::error::BlobError;
use super::reader::parse_f64;
use super::value::{Elements, HashField, RdbType};
use super::{intset, listpack, ziplist, zipmap};

/// Decodes the blob of a value of type `ty`; None when `ty` is not stored
/// as one blob.
pub(super) fn decode(ty: RdbType, blob: &[u8]) -> Option<Result<Elements, BlobError>> {
    use RdbType as T;
    Some(match ty {
        T::HashZipmap => zipmap_hash(blob),
        T::SetIntset => intset_set(blob),
        T::ListZiplist => ziplist_elements(blob).map(Elements::List),
        T::SetListpack => listpack_elements(blob).map(Elements::Set),
        T::ZSetZiplist => ziplist::decode_all(blob).and_then(|e| zset_pairs(&e)),
        T::ZSetListpack => listpack::decode_all(blob).and_then(|e| zset_pairs(&e)),
        T::HashZiplist => ziplist::decode_all(blob).and_then(|e| hash_pairs(&e)),
        T::HashListpack => listpack::decode_all(blob).and_then(|e| hash_pairs(&e)),
        T::HashListpackEx | T::HashListpackExPreGa => {
            listpack::decode_all(blob).and_then(|e| hash_triplets(&e))
        }
        _ => return None,
    })
}

fn zipmap_hash(blob: &[u8]) -> Result<Elements, BlobError> {
    let mut v = Vec::new();
    zipmap::decode(blob, |f, x| {
        v.push(HashField {
            field: f.to_vec(),
            value: x.to_vec(),
            expire_ms: None,
        });
        Ok(())
    })?;
    Ok(Elements::Hash(v))
}

fn intset_set(blob: &[u8]) -> Result<Elements, BlobError> {
    let mut v = Vec::new();
    intset::decode(blob, |x| {
        v.push(Elem::Int(x).to_bytes());
        Ok(())
    })?;
    Ok(Elements::Set(v))
}

fn ziplist_elements(blob: &[u8]) -> Result<Vec<Vec<u8>>, BlobError> {
    let mut v = Vec::new();
    ziplist::decode(blob, |e| {
        v.push(e.to_bytes());
        Ok(())
    })?;
    Ok(v)
}

fn listpack_elements(blob: &[u8]) -> Result<Vec<Vec<u8>>, BlobError> {
    let mut v = Vec::new();
    listpack::decode(blob, |e| {
        v.push(e.to_bytes());
        Ok(())
    })?;
    Ok(v)
}

/// Member, score pairs; a score is an integer entry or a number as a string.
fn zset_pairs(elems: &[Elem<'_>]) -> Result<Elements, BlobError> {
    if !elems.len().is_multiple_of(2) {
        return Err(BlobError::new("zset pairs", 0, "odd number of elements"));
    }
    let mut v = Vec::with_capacity(elems.len() / 2);
    for (i, pair) in elems.chunks_exact(2).enumerate() {
        let score = match pair[1] {
            Elem::Int(x) => x as f64,
            Elem::Str(s) => parse_f64(s)
                .ok_or_else(|| BlobError::new("zset score", i * 2 + 1, "score is not a number"))?,
        };
        v.push((pair[0].to_bytes(), score));
    }
    Ok(Elements::ZSet(v))
}

/// Field, value pairs.
fn hash_pairs(elems: &[Elem<'_>]) -> Result<Elements, BlobError> {
    if !elems.len().is_multiple_of(2) {
        return Err(BlobError::new("hash pairs", 0, "odd number of elements"));
    }
    let v = elems
        .chunks_exact(2)
        .map(|p| HashField {
            field: p[0].to_bytes(),
            value: p[1].to_bytes(),
            expire_ms: None,
        })
        .collect();
    Ok(Elements::Hash(v))
}

/// Field, value, TTL triplets (TTL 0: the field does not expire).
fn hash_triplets(elems: &[Elem<'_>]) -> Result<Elements, BlobError> {
    if !elems.len().is_multiple_of(3) {
        return Err(BlobError::new(
            "hash triplets",
            0,
            "element count not a multiple of 3",
        ));
    }
    let mut v = Vec::with_capacity(elems.len() / 3);
    for (i, t) in elems.chunks_exact(3).enumerate() {
        let ttl = t[2]
            .as_int()
            .ok_or_else(|| BlobError::new("hash field TTL", i * 3 + 2, "TTL is not an integer"))?;
        v.push(HashField {
            field: t[0].to_bytes(),
            value: t[1].to_bytes(),
            expire_ms: if ttl == 0 { None } else { Some(ttl as u64) },
        });
    }
    Ok(Elements::Hash(v))
}
