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
//!
//! How it fits: the byte layer (`reader`) decompresses LZF strings with it, whole
//! or in pieces. It must never write more than the announced raw length nor read a
//! back reference before the start of the output: both are errors, not panics.

/// Why a compressed string does not decompress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LzfError(pub &'static str);

/// How far back a back reference can reach: a streaming decoder keeps this much
/// of its earlier output.
pub const WINDOW_BYTES: usize = 8192;

/// Longest single instruction in the compressed input (a control byte and a literal
/// run of 32 bytes): a streaming decoder that holds this much input can always make
/// progress.
pub const INSTRUCTION_BYTES_MAX: usize = 33;

/// Decompresses `input` appending exactly `raw_len` bytes to `out`.
pub fn decompress_into(input: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<(), LzfError> {
    let base = out.len();
    let end = base + raw_len;
    out.reserve(raw_len);
    let consumed = decode_some(input, out, base, end, end)?;
    if consumed != input.len() {
        return Err(LzfError("an instruction runs past the end of the input"));
    }
    if out.len() != end {
        return Err(LzfError("output shorter than the stated length"));
    }
    Ok(())
}

/// Decodes whole instructions from `input`, appending their output to `out`, until
/// the input has no complete instruction left or `out` has reached `stop_len`.
/// Returns how many input bytes were consumed; the rest (an instruction cut at the
/// end of `input`) is for the next call, with more input behind it.
///
/// Back references may reach into `out[floor..]` (a streaming decoder passes the
/// last [`WINDOW_BYTES`] of earlier output at the front of `out`); the output never
/// grows past `end_len`, the stated length of the whole string.
pub fn decode_some(
    input: &[u8],
    out: &mut Vec<u8>,
    floor: usize,
    stop_len: usize,
    end_len: usize,
) -> Result<usize, LzfError> {
    let mut i = 0;
    while i < input.len() && out.len() < stop_len {
        let c = input[i] as usize;
        if c < 32 {
            let n = c + 1;
            let Some(lit) = input.get(i + 1..i + 1 + n) else {
                break; // cut: the rest comes with the next input
            };
            if out.len() + n > end_len {
                return Err(LzfError("output longer than the stated length"));
            }
            out.extend_from_slice(lit);
            i += 1 + n;
        } else {
            let mut len = c >> 5;
            let mut at = i + 1;
            if len == 7 {
                let Some(&extra) = input.get(at) else { break };
                len += extra as usize;
                at += 1;
            }
            len += 2;
            let Some(&low) = input.get(at) else { break };
            at += 1;
            let offset = ((c & 0x1f) << 8) + low as usize + 1;
            if offset > out.len() - floor {
                return Err(LzfError("back reference before the start of the output"));
            }
            if out.len() + len > end_len {
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
            i = at;
        }
    }
    Ok(i)
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

    /// Fed a few bytes at a time with only the last window of output kept, the
    /// streaming decoder produces exactly what the whole one does.
    #[test]
    fn streaming_in_small_steps_equals_whole() {
        let mut data = Vec::new();
        for i in 0..20_000u32 {
            data.extend_from_slice(format!("{}-", i % 311).as_bytes());
            if i % 13 == 0 {
                data.extend_from_slice(&[b'z'; 300]);
            }
        }
        let compressed = lzf::compress(&data).expect("compresses");
        for step in [1, 7, 33, 1000] {
            let mut produced = Vec::new();
            let mut window = Vec::new();
            let mut input = &compressed[..];
            let mut total = 0;
            while total < data.len() {
                let feed = &input[..input.len().min(step.max(INSTRUCTION_BYTES_MAX))];
                let hist = window.len();
                let stop = hist + 5000;
                let end = hist + (data.len() - total);
                let used = decode_some(feed, &mut window, 0, stop, end).expect("decodes");
                assert!(used > 0 || feed.is_empty(), "no progress at step {step}");
                input = &input[used..];
                produced.extend_from_slice(&window[hist..]);
                total += window.len() - hist;
                let keep = window.len().saturating_sub(WINDOW_BYTES);
                window.drain(..keep);
            }
            assert!(input.is_empty());
            assert_eq!(produced, data, "step {step}");
        }
    }
}
