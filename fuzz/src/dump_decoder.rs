//! The DUMP payload decoder ([`decode_dump`]): what a source's `DUMP` answers
//! (the full copy reads some keys that way) on any bytes.
//!
//! Most inputs get a correct CRC64 written into their trailer first (even
//! lengths), or the checksum would stop nearly every mutation before the body;
//! odd lengths keep the input's trailer, to exercise the check itself.
//!
//! Asserts: no panic; every string in the value at most the limit set here; and
//! a decoded value that [`encode_dump`] can write for the payload's version
//! decodes back to the same value (compared through `Debug`, so that NaN scores
//! compare equal).

use lockstep_sync::rdb::crc64::crc64;
use lockstep_sync::rdb::{decode_dump, encode_dump, DumpOptions, ParseOptions, Value};

use crate::rdb_parser::limits;

pub fn run(data: &[u8]) {
    let mut payload = data.to_vec();
    if payload.len() >= 11 && payload.len() % 2 == 0 {
        let body_end = payload.len() - 8;
        let crc = crc64(&payload[..body_end]);
        payload[body_end..].copy_from_slice(&crc.to_le_bytes());
    }
    let opts = DumpOptions {
        parse: ParseOptions {
            limits: limits(),
            ..ParseOptions::default()
        },
    };
    let Ok(dump) = decode_dump(&payload, &opts) else {
        return;
    };
    let string_max = opts.parse.limits.string_bytes_max as usize;
    assert!(strings(&dump.value).all(|len| len <= string_max));
    let Ok(encoded) = encode_dump(&dump.value, dump.version) else {
        return;
    };
    let again = decode_dump(&encoded, &opts).expect("what encode_dump wrote decodes");
    assert_eq!(
        format!("{:?}", again.value),
        format!("{:?}", dump.value),
        "the value changed in a DUMP round trip"
    );
}

/// The lengths of the strings of a value.
fn strings(value: &Value) -> Box<dyn Iterator<Item = usize> + '_> {
    match value {
        Value::String(s) => Box::new(std::iter::once(s.len())),
        Value::List(v) | Value::Set(v) => Box::new(v.iter().map(Vec::len)),
        Value::ZSet(v) => Box::new(v.iter().map(|(m, _)| m.len())),
        Value::Hash(v) => Box::new(v.iter().flat_map(|f| [f.field.len(), f.value.len()])),
        Value::Stream(s) => Box::new(
            s.entries
                .iter()
                .flat_map(|e| e.fields.iter().flat_map(|(f, v)| [f.len(), v.len()])),
        ),
        Value::Module(m) => Box::new(std::iter::once(m.raw.len())),
    }
}
