//! LZF decompression (the LibLZF format Redis compresses RDB strings with).
//!
//! Written here rather than taken from the `lzf` crate because it is the hot
//! path of parsing a typical RDB (46% of the time with the crate, which
//! zero-fills its output and checks every byte): literals and non-overlapping
//! back references are bulk copies, overlapping ones repeat a growing chunk.
//!
//! Format: a control byte `c`; `c < 32`: a literal run of `c + 1` bytes
//! follows. Otherwise a back reference: length `c >> 5` (7 means: add the
//! next byte), plus 2; offset `((c & 31) << 8) + next byte + 1` back from the
//! end of the output.

/// Why a compressed string does not decompress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LzfError(pub &'static str);

/// Decompresses `input` appending exactly `raw_len` bytes to `out`.
pub fn decompress_into(input: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<(), LzfError> {
    let base = out.len();
    let end = base + raw_len;
    out.reserve(raw_len);
    let mut i = 0;
    while i < input.len() {
        let c = input[i] as usize;
        i += 1;
        if c < 32 {
            let n = c + 1;
            let lit = input
                .get(i..i + n)
                .ok_or(LzfError("literal run past the end of the input"))?;
            if out.len() + n > end {
                return Err(LzfError("output longer than the stated length"));
            }
            out.extend_from_slice(lit);
            i += n;
        } else {
            let mut len = c >> 5;
            if len == 7 {
                len += *input
                    .get(i)
                    .ok_or(LzfError("length byte past the end of the input"))?
                    as usize;
                i += 1;
            }
            len += 2;
            let low = *input
                .get(i)
                .ok_or(LzfError("offset byte past the end of the input"))?
                as usize;
            i += 1;
            let offset = ((c & 0x1f) << 8) + low + 1;
            let produced = out.len() - base;
            if offset > produced {
                return Err(LzfError("back reference before the start of the output"));
            }
            if out.len() + len > end {
                return Err(LzfError("output longer than the stated length"));
            }
            let start = out.len() - offset;
            if offset >= len {
                out.extend_from_within(start..start + len);
            } else if offset == 1 {
                let b = out[start];
                out.resize(out.len() + len, b);
            } else {
                // Overlapping: the pattern of `offset` bytes repeats; copy in
                // chunks that double as the written region grows.
                let mut left = len;
                while left > 0 {
                    let avail = out.len() - start;
                    let n = left.min(avail);
                    out.extend_from_within(start..start + n);
                    left -= n;
                }
            }
        }
    }
    if out.len() != end {
        return Err(LzfError("output shorter than the stated length"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_implementation() {
        let mut data = Vec::new();
        for i in 0..5000u32 {
            data.extend_from_slice(format!("value:{} ", i % 97).as_bytes());
            if i % 7 == 0 {
                data.extend_from_slice(&[0u8; 40]);
            }
        }
        let compressed = lzf::compress(&data).expect("compresses");
        let mut out = Vec::new();
        decompress_into(&compressed, data.len(), &mut out).expect("decompresses");
        assert_eq!(out, data);
        let mut short = Vec::new();
        assert!(decompress_into(&compressed, data.len() - 1, &mut short).is_err());
        for cut in [1, compressed.len() / 2, compressed.len() - 1] {
            let mut o = Vec::new();
            assert!(decompress_into(&compressed[..cut], data.len(), &mut o).is_err());
        }
    }
}
