//! Zipmap: the encoding of small hashes before Redis 2.6 (RDB type 9).
//!
//! Layout: zmlen byte, then `<len>key<len><free>value<free bytes>` pairs, then
//! 0xFF. A length below 254 is one byte; 254 is followed by a u32 LE length.
//! `free` is one byte: unused bytes after the value.
//!
//! How it fits: `compact` decodes a hash of type 9 with it. It reads only the blob
//! it is given and never panics.

use super::error::BlobError;

const WHAT: &str = "zipmap";
const END: u8 = 0xff;

fn read_len(blob: &[u8], p: &mut usize) -> Result<usize, BlobError> {
    let b = *blob
        .get(*p)
        .ok_or_else(|| BlobError::new(WHAT, *p, "length past the end"))?;
    match b {
        0..=253 => {
            *p += 1;
            Ok(b as usize)
        }
        254 => {
            let s = blob
                .get(*p + 1..*p + 5)
                .ok_or_else(|| BlobError::new(WHAT, *p, "4-byte length past the end"))?;
            *p += 5;
            Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
        }
        _ => Err(BlobError::new(
            WHAT,
            *p,
            "end marker where a length was expected",
        )),
    }
}

fn take<'a>(blob: &'a [u8], p: &mut usize, n: usize) -> Result<&'a [u8], BlobError> {
    let s = p
        .checked_add(n)
        .and_then(|e| blob.get(*p..e))
        .ok_or_else(|| BlobError::new(WHAT, *p, format!("{n} bytes past the end")))?;
    *p += n;
    Ok(s)
}

/// Calls `f(field, value)` for every pair; returns the pair count.
pub fn decode<'a>(
    blob: &'a [u8],
    mut f: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), BlobError>,
) -> Result<usize, BlobError> {
    if blob.len() < 2 {
        return Err(BlobError::new(WHAT, 0, "shorter than a zipmap"));
    }
    let mut p = 1;
    let mut count = 0;
    loop {
        if *blob
            .get(p)
            .ok_or_else(|| BlobError::new(WHAT, p, "no end marker"))?
            == END
        {
            break;
        }
        let klen = read_len(blob, &mut p)?;
        let key = take(blob, &mut p, klen)?;
        let vlen = read_len(blob, &mut p)?;
        let free = *blob
            .get(p)
            .ok_or_else(|| BlobError::new(WHAT, p, "free byte past the end"))?
            as usize;
        p += 1;
        let value = take(blob, &mut p, vlen)?;
        take(blob, &mut p, free)?;
        count += 1;
        f(key, value)?;
    }
    if p + 1 != blob.len() {
        return Err(BlobError::new(
            WHAT,
            p,
            "end marker before the end of the blob",
        ));
    }
    Ok(count)
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 254 {
        out.push(len as u8);
    } else {
        out.push(254);
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
}

/// Encodes pairs as a zipmap (no free bytes).
pub fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = vec![u8::try_from(pairs.len()).unwrap_or(254).min(254)];
    for (k, v) in pairs {
        write_len(&mut out, k.len());
        out.extend_from_slice(k);
        write_len(&mut out, v.len());
        out.push(0);
        out.extend_from_slice(v);
    }
    out.push(END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let big = vec![b'v'; 300];
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"", b""), (b"big", &big)];
        let blob = encode(&pairs);
        let mut got = Vec::new();
        decode(&blob, |k, v| {
            got.push((k, v));
            Ok(())
        })
        .expect("decodes");
        assert_eq!(got, pairs);
    }
}
