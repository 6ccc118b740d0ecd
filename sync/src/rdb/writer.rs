//! Encoders for the RDB primitives: lengths, strings, doubles. Used by the
//! DUMP encoder and to re-serialize module payloads.
//!
//! How it fits: the inverse of the byte layer's primitives, used by `dump` and by
//! the parser to re-serialize module payloads. It never fails and never writes a
//! form the parser would read back differently.

/// Appends an RDB length in the shortest form.
pub fn write_len(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.push(0x40 | (v >> 8) as u8);
        out.push(v as u8);
    } else if v <= u32::MAX as u64 {
        out.push(0x80);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends an RDB string, plain (no int or LZF encoding: every version reads it).
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    write_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Appends a string-encoded double (type 3 zset scores): a length byte
/// (253 NaN, 254 +inf, 255 -inf) and the shortest text that reads back exactly.
pub fn write_string_double(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.push(253);
    } else if v == f64::INFINITY {
        out.push(254);
    } else if v == f64::NEG_INFINITY {
        out.push(255);
    } else {
        let s = format!("{v:e}");
        debug_assert!(s.len() < 253);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

/// The shortest text of a finite score that reads back exactly, in a form
/// `strtod` accepts ("inf"/"-inf" for the infinities).
pub fn score_text(v: f64) -> String {
    if v == f64::INFINITY {
        "inf".into()
    } else if v == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        let plain = format!("{v}");
        if plain.len() <= 24 {
            plain
        } else {
            format!("{v:e}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdb::reader::Input;

    #[test]
    fn lengths_round_trip() {
        for v in [
            0u64,
            63,
            64,
            16383,
            16384,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_len(&mut out, v);
            let mut i = Input::new(&out[..], false, u64::MAX);
            assert_eq!(i.read_len("t").ok(), Some(v));
        }
    }

    #[test]
    fn doubles_round_trip() {
        for v in [
            0.0,
            -0.0,
            1.5,
            -3.25e-300,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            let mut out = Vec::new();
            write_string_double(&mut out, v);
            let mut i = Input::new(&out[..], false, u64::MAX);
            let got = i.read_string_double("t").expect("reads");
            assert_eq!(got.to_bits(), v.to_bits());
            let t = score_text(v);
            assert_eq!(
                crate::rdb::reader::parse_f64(t.as_bytes()).map(f64::to_bits),
                Some(v.to_bits())
            );
        }
    }
}
