//! Intset: the encoding of small sets of integers (RDB type 11).
//!
//! Layout: u32 LE element width (2, 4 or 8), u32 LE count, then the sorted
//! little-endian signed integers.
//!
//! How it fits: `compact` decodes a set of type 11 with it. It reads only the blob
//! it is given, never panics, and rejects a width or a count that does not fill
//! the blob exactly.

use super::error::BlobError;

const WHAT: &str = "intset";

/// Calls `f` for every integer in order; returns the count.
pub fn decode(
    blob: &[u8],
    mut f: impl FnMut(i64) -> Result<(), BlobError>,
) -> Result<usize, BlobError> {
    if blob.len() < 8 {
        return Err(BlobError::new(
            WHAT,
            0,
            format!("{} bytes is shorter than a header", blob.len()),
        ));
    }
    let width = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
    let count = u32::from_le_bytes([blob[4], blob[5], blob[6], blob[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(BlobError::new(
            WHAT,
            0,
            format!("element width {width} is not 2, 4 or 8"),
        ));
    }
    if count.checked_mul(width).and_then(|n| n.checked_add(8)) != Some(blob.len()) {
        return Err(BlobError::new(
            WHAT,
            4,
            format!(
                "{count} elements of {width} bytes do not fill {} bytes",
                blob.len()
            ),
        ));
    }
    for (i, c) in blob[8..].chunks_exact(width).enumerate() {
        let v = match width {
            2 => i16::from_le_bytes([c[0], c[1]]) as i64,
            4 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
            _ => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        };
        f(v).map_err(|mut e| {
            e.at = 8 + i * width;
            e
        })?;
    }
    Ok(count)
}

/// Encodes `values` (sorted and deduplicated here) as an intset.
pub fn encode(values: &[i64]) -> Vec<u8> {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    let width = if v.iter().all(|x| i16::try_from(*x).is_ok()) {
        2
    } else if v.iter().all(|x| i32::try_from(*x).is_ok()) {
        4
    } else {
        8
    };
    let mut out = Vec::with_capacity(8 + width * v.len());
    out.extend_from_slice(&(width as u32).to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    for x in v {
        match width {
            2 => out.extend_from_slice(&(x as i16).to_le_bytes()),
            4 => out.extend_from_slice(&(x as i32).to_le_bytes()),
            _ => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for set in [
            vec![1i64, -2, 3],
            vec![70000, -1],
            vec![i64::MIN, 0, i64::MAX],
        ] {
            let blob = encode(&set);
            let mut got = Vec::new();
            decode(&blob, |v| {
                got.push(v);
                Ok(())
            })
            .expect("decodes");
            let mut want = set.clone();
            want.sort_unstable();
            assert_eq!(got, want);
        }
    }
}
